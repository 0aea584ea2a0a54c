"""`wanctl flf2v`: first-last-frame to video on i2v-a14b, with a real bidirectional sampler."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from wanctl.commands._common import (
    DeviceOpt,
    DtypeOpt,
    ForceOpt,
    GridOpt,
    GuidanceLowOpt,
    JsonOpt,
    ModelOpt,
    NegativeOpt,
    NoCacheOpt,
    OffloadOpt,
    TextEncoderDeviceOpt,
    VaeTilingOpt,
    SeedOpt,
    describe_output,
    emit_json,
    handle_errors,
    info,
    load_options,
    notice,
    parse_size,
    progress,
)

# The seed repository's recommended run (not the official i2v default: 40 steps, shift 5, 3.5).
FLF2V_STEPS, FLF2V_SHIFT, FLF2V_GUIDANCE, FLF2V_FRAMES = 40, 16.0, 5.0, 81


@handle_errors
def flf2v(
    first_frame: Annotated[str, typer.Option("--first-frame", "-i", help="First frame (image).", show_default=False)],
    last_frame: Annotated[str, typer.Option("--last-frame", "-l", help="Last frame (image); resized and cropped to the first frame's size if needed.", show_default=False)],
    prompt: Annotated[str, typer.Option("--prompt", "-p", help="What happens between the two frames.", show_default=False)],
    output: Annotated[str, typer.Option("--output", "-o", help="Latent artifact (.safetensors, .zarr, or -).", show_default=False)],
    model: ModelOpt = None,
    size: Annotated[Optional[str], typer.Option("--size", help="WIDTHxHEIGHT. Default: the first frame's size, cropped to a multiple of 16.")] = None,
    frames: Annotated[int, typer.Option("--frames", help="Frame count (4n+1).")] = FLF2V_FRAMES,
    steps: Annotated[int, typer.Option("--steps", help="Steps (official i2v default: 40).")] = FLF2V_STEPS,
    shift: Annotated[float, typer.Option("--shift", help="Flow shift (official i2v default: 5; the FLF2V recipe uses 16).")] = FLF2V_SHIFT,
    grid: GridOpt = "unipc",
    guidance: Annotated[float, typer.Option("--guidance", "-g", help="CFG scale of the high-noise expert, and of the low-noise one unless --guidance-low (official i2v default: 3.5).")] = FLF2V_GUIDANCE,
    guidance_low: GuidanceLowOpt = None,
    negative_prompt: NegativeOpt = None,
    seed: SeedOpt = 0,
    noise: Annotated[Optional[str], typer.Option("--noise", help="Start from an inverted source noise (from `wanctl invert`) instead of seeded noise; its grid is used.")] = None,
    solver: Annotated[Optional[str], typer.Option("--solver", help="Default: unipc forward-only, euler with --bidirectional (which needs euler or midpoint).")] = None,
    bidirectional: Annotated[bool, typer.Option("--bidirectional", help="Fuse a forward pass with a backward pass on the time-flipped latent, conditioned on the re-encoded [last, ..., first] video.")] = False,
    bidirectional_mode: Annotated[str, typer.Option("--bidirectional-mode", help="reencode (wanctl's) or mirror (the published construction, which equals forward-only sampling).")] = "reencode",
    reverse_rope: Annotated[bool, typer.Option("--reverse-rope", help="Reverse temporal RoPE positions in the backward pass.")] = False,
    fusion: Annotated[str, typer.Option("--fusion", help="uniform (0.5/0.5) or linear (forward trusted near the first frame, backward near the last).")] = "uniform",
    batch_passes: Annotated[bool, typer.Option("--batch-passes/--no-batch-passes", help="Run forward and backward, conditional and unconditional, as one batch (more memory, fewer launches).")] = True,
    decode_to: Annotated[Optional[str], typer.Option("--decode", help="Also decode the result to this video file.")] = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = "bf16",
    no_cache: NoCacheOpt = False,
    offload: OffloadOpt = "none",
    text_encoder_device: TextEncoderDeviceOpt = None,
    vae_tiling: VaeTilingOpt = False,
    force: ForceOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Generate the video between a first and a last frame (i2v-a14b only).

    Defaults follow the FLF2V recipe the bidirectional idea comes from: 81 frames, 40 steps,
    shift 16, guidance 5 (the official i2v defaults are 40 steps, shift 5, guidance 3.5).
    Forward-only is the i2v condition built from [first, zeros..., last] (as diffusers'
    WanImageToVideoPipeline with last_image). --bidirectional adds a backward pass that really
    sees the last frame first (see the README); --bidirectional-mode mirror reproduces the
    published construction so its equivalence with forward-only sampling can be checked.

    Examples:

      wanctl flf2v -i first.png -l last.png -p "the circle rolls to the right" -o out.safetensors --decode out.mp4

      wanctl flf2v -i a.png -l b.png -p "..." --bidirectional --fusion linear --steps 30 -o out.safetensors

      wanctl flf2v -i a.png -l b.png -p "..." --noise source.noise.safetensors -o out.safetensors
    """
    from wanctl.core.io import video as vio
    from wanctl.core.io.artifact import Artifact, check_output, check_output_file, input_record, new_meta, read_artifact, sha256_file, write_artifact
    from wanctl.core.workflows.encode import decode
    from wanctl.core.errors import BadInputError
    from wanctl.core.families import DEFAULT_NEGATIVE_PROMPT, check_frames, check_size
    from wanctl.core.workflows.flf2v import BIDIRECTIONAL_SOLVERS, FUSIONS, MODES, run_flf2v
    from wanctl.core.workflows.denoise import fresh_noise, noise_from_artifact, resolve_guidance
    from wanctl.core.models.bundle import open_bundle
    from wanctl.core.sampling.schedule import make_schedule
    from wanctl.core.sampling.solvers import get_solver
    from wanctl.core.models.text import encode_prompts
    from wanctl.core.io.video import aspect_differs, fit_size, load_image, resize_crop

    check_output(output, force)
    if decode_to:
        vio.output_kind(decode_to)
        check_output_file(decode_to, force)
    if fusion not in FUSIONS:
        raise BadInputError(f"unknown fusion {fusion!r}; use one of {', '.join(FUSIONS)}")
    if bidirectional_mode not in MODES:
        raise BadInputError(f"unknown bidirectional mode {bidirectional_mode!r}; use one of {', '.join(MODES)}")
    solver = solver or ("euler" if bidirectional else "unipc")
    get_solver(solver)
    if bidirectional and solver not in BIDIRECTIONAL_SOLVERS:
        raise BadInputError(f"--bidirectional needs --solver euler or midpoint (fused velocities break {solver}'s history)")
    first = load_image(first_frame)
    last = load_image(last_frame)
    art = read_artifact(noise, kinds=("noise",)) if noise else None
    opts = load_options(device, dtype=dtype, no_cache=no_cache, offload=offload,
                        text_encoder_device=text_encoder_device, vae_tiling=vae_tiling)
    bundle = open_bundle(model, family=art.family if art else "i2v-a14b", recorded=art.meta.get("model") if art else None,
                         notice=notice, options=opts)
    fam = bundle.family
    if fam.conditioning != "mask-concat":
        raise BadInputError(f"flf2v needs an i2v-a14b model: {fam.name} has no last-frame conditioning "
                            "(ti2v-5b has no first-party FLF2V, and diffusers silently ignores last_image there)")
    g = resolve_guidance(fam, guidance, guidance_low)
    if art is not None:
        src = noise_from_artifact(art, bundle, None)
        width, height, n_frames = src.width, src.height, src.frames
    else:
        width, height = parse_size(size) or fit_size(first.shape[1], first.shape[0], fam.size_multiple, None)
        check_size(fam, width, height)
        check_frames(frames)
        n_frames = frames
        src = fresh_noise(bundle, seed=seed, frames=n_frames, width=width, height=height,
                          schedule=make_schedule(steps, shift, grid))
    if (first.shape[1], first.shape[0]) != (width, height):
        notice(f"first frame {first.shape[1]}x{first.shape[0]} resized and center-cropped to {width}x{height}")
    if (last.shape[1], last.shape[0]) != (first.shape[1], first.shape[0]):
        how = "resized and center-cropped" if aspect_differs(last.shape[1], last.shape[0], width, height) else "resized"
        notice(f"last frame {last.shape[1]}x{last.shape[0]} {how} to the first frame's {width}x{height}")
    if sha256_file(first_frame) == sha256_file(last_frame):
        notice("first and last frame are the same image: generating a loop")
    first, last = resize_crop(first, width, height), resize_crop(last, width, height)
    negative = DEFAULT_NEGATIVE_PROMPT if negative_prompt is None else negative_prompt
    uses_cfg = g.high != 1.0 or g.low != 1.0
    emb = encode_prompts(bundle, [prompt] + ([negative] if uses_cfg else []))
    with progress("generating", src.schedule.num_steps, "steps") as advance:
        latents, calls = run_flf2v(
            bundle, first=first, last=last, frames=n_frames, width=width, height=height, embeds=emb[prompt],
            negative=emb[negative] if uses_cfg else None, guidance=g, schedule=src.schedule, noise=src.latents,
            solver=solver, bidirectional=bidirectional, mode=bidirectional_mode, reverse_rope=reverse_rope,
            fusion=fusion, batch_passes=batch_passes, progress=advance)
    import numpy as np
    import torch

    def pix(img):
        return torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1).unsqueeze(0).contiguous()

    params = {
        "prompt": prompt, "negative_prompt": negative if uses_cfg else None, "guidance": g.to_meta(),
        "boundary": bundle.spec.boundary, "schedule": src.schedule.to_meta(), "solver": solver,
        "bidirectional": bidirectional, "bidirectional_mode": bidirectional_mode if bidirectional else None,
        "reverse_rope": (reverse_rope or bidirectional_mode == "mirror") if bidirectional else None,
        "fusion": (fusion if bidirectional_mode != "mirror" else "uniform") if bidirectional else None,
        "batch_passes": batch_passes if bidirectional else None, "dit_forwards": len(calls),
        "first_frame": first_frame, "last_frame": last_frame, **src.describe(),
    }
    inputs = [input_record("first_frame", first_frame, sha256_file(first_frame)),
              input_record("last_frame", last_frame, sha256_file(last_frame))]
    meta = new_meta("latent", family=fam.name, command="flf2v", noise_level=0.0,
                    video={"width": width, "height": height, "frames": n_frames, "fps": src.fps},
                    model=bundle.record(bundle.experts() + ["text_encoder", "tokenizer", "vae"]), params=params, inputs=inputs)
    result = Artifact({"latents": latents.float().cpu(), "first_frame": pix(first), "last_frame": pix(last)}, meta)
    write_artifact(output, result, force=force)
    if decode_to:
        with progress("decoding", latents.shape[2], "latent frames") as advance:
            with vio.VideoWriter(decode_to, src.fps, force=force) as w:
                for f in decode(bundle, result, progress=advance):
                    w.write(f)
    if as_json:
        emit_json({"output": describe_output(output), "kind": "latent", "decoded": decode_to, "forwards": len(calls),
                   "bidirectional": bidirectional})
    else:
        info(f"wrote {describe_output(output)}" + (f" and {decode_to}" if decode_to else "") + f" ({len(calls)} DiT forwards)")
