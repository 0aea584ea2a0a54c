"""`wanctl flf2v`: first-last-frame to video on i2v-a14b, with a real bidirectional sampler."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Annotated, Optional

import typer

from wanctl.commands._options import (
    OUTPUT,
    SAMPLING,
    BackgroundOpt,
    CfgBatchOpt,
    DecodeOpt,
    DeviceOpt,
    DryRunOpt,
    DtypeOpt,
    ForceOpt,
    GridOpt,
    GuidanceLowOpt,
    GuidanceOpt,
    JsonOpt,
    LoraHighOpt,
    LoraLowOpt,
    LoraOpt,
    LoraUnfusedOpt,
    ModelOpt,
    NegativeOpt,
    NoCacheOpt,
    OffloadOpt,
    ParallelOpt,
    SeedOpt,
    ShardOpt,
    PresetOpt,
    SigmasOpt,
    StepsOpt,
    TextEncoderDeviceOpt,
    VaeTilingOpt,
    WeightsDtypeOpt,
    load_options,
    parse_background,
    sampling_options,
    parse_size,
)
from wanctl.commands._report import (
    describe_output,
    emit_json,
    handle_errors,
    info,
    notice,
    print_plan,
    progress,
    row_summary,
    warn,
)

BIDI = "Bidirectional sampling"


@handle_errors
def flf2v(
    first_frame: Annotated[Optional[str], typer.Option("--first-frame", "-i", help="First frame (image).", show_default=False)] = None,
    last_frame: Annotated[Optional[str], typer.Option("--last-frame", "-l", help="Last frame (image); resized and cropped to the first frame's size if needed.", show_default=False)] = None,
    prompt: Annotated[Optional[str], typer.Option("--prompt", "-p", help="What happens between the two frames (with --manifest: for rows without a prompt).", show_default=False)] = None,
    output: Annotated[Optional[str], typer.Option("--output", "-o", rich_help_panel=OUTPUT, help="Latent artifact (.safetensors, .zarr, or -); with --manifest, a folder.", show_default=False)] = None,
    manifest: Annotated[Optional[str], typer.Option("--manifest", rich_help_panel=OUTPUT, show_default=False, help="CSV (header first_frame,last_frame,prompt,seed,output) or JSONL, one video per frame pair; paths relative to the manifest; seed defaults to --seed, output to <-o>/row-N.safetensors. A row that cannot be read fails alone (exit 3 at the end).")] = None,
    allow_outside: Annotated[bool, typer.Option("--allow-outside", rich_help_panel=OUTPUT, help="Let manifest outputs resolve outside the manifest's folder and -o.")] = False,
    model: ModelOpt = None,
    background: BackgroundOpt = "black",
    lora: LoraOpt = None,
    lora_high: LoraHighOpt = None,
    lora_low: LoraLowOpt = None,
    lora_unfused: LoraUnfusedOpt = False,
    size: Annotated[Optional[str], typer.Option("--size", rich_help_panel=SAMPLING, show_default=False, help="WIDTHxHEIGHT. Default: the first frame's size, cropped to a multiple of 16.")] = None,
    frames: Annotated[Optional[int], typer.Option("--frames", min=1, rich_help_panel=SAMPLING, show_default=False, help="Frame count (4n+1). Default: the model's presets (official 81).")] = None,
    steps: StepsOpt = None,
    shift: Annotated[Optional[float], typer.Option("--shift", rich_help_panel=SAMPLING, show_default=False, help="Flow shift. Default: 16, the FLF2V recipe (the official i2v default is 5).")] = None,
    grid: GridOpt = None,
    sigmas: SigmasOpt = None,
    preset: PresetOpt = None,
    solver: Annotated[Optional[str], typer.Option("--solver", rich_help_panel=SAMPLING, show_default=False, help="Default: unipc forward-only, euler with --bidirectional (which needs euler or midpoint).")] = None,
    seed: SeedOpt = None,
    noise: Annotated[Optional[str], typer.Option("--noise", rich_help_panel=SAMPLING, show_default=False, help="Start from an inverted source noise (from `wanctl invert`) instead of seeded noise: its grid, frames and size are used; --steps, --shift, --grid or --sigmas rebuild the grid at its level.")] = None,
    guidance: GuidanceOpt = None,
    guidance_low: GuidanceLowOpt = None,
    negative_prompt: NegativeOpt = None,
    bidirectional: Annotated[bool, typer.Option("--bidirectional", rich_help_panel=BIDI, help="Fuse a forward pass with a backward pass on the time-flipped latent, conditioned on the re-encoded \\[last, ..., first] video. Twice the DiT forwards; on the toy models it has not beaten forward-only on the last frame (benchmarks/RESULTS.md).")] = False,
    bidirectional_mode: Annotated[Optional[str], typer.Option("--bidirectional-mode", rich_help_panel=BIDI, show_default=False, help="reencode (wanctl's, default) or mirror (the published construction, which equals forward-only sampling; fixes uniform fusion and reversed RoPE).")] = None,
    reverse_rope: Annotated[bool, typer.Option("--reverse-rope", rich_help_panel=BIDI, help="Reverse temporal RoPE positions in the backward pass.")] = False,
    fusion: Annotated[Optional[str], typer.Option("--fusion", rich_help_panel=BIDI, show_default=False, help="uniform (0.5/0.5, default) or linear (forward trusted near the first frame, backward near the last).")] = None,
    cfg_batch: CfgBatchOpt = False,
    device: DeviceOpt = None,
    dtype: DtypeOpt = "bf16",
    weights_dtype: WeightsDtypeOpt = "auto",
    no_cache: NoCacheOpt = False,
    offload: OffloadOpt = "none",
    parallel: ParallelOpt = None,
    text_encoder_device: TextEncoderDeviceOpt = None,
    vae_tiling: VaeTilingOpt = False,
    dry_run: DryRunOpt = False,
    decode_to: DecodeOpt = None,
    force: ForceOpt = False,
    shard: ShardOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Generate the video between a first and a last frame (i2v-a14b only).

    Defaults: the model's steps and frame count, with the FLF2V recipe the bidirectional idea comes from for shift (16) and guidance (5); the official i2v defaults are shift 5, guidance 3.5. Forward-only is the i2v condition built from \\[first, zeros..., last] (as diffusers' WanImageToVideoPipeline with last_image). --bidirectional adds a backward pass that really sees the last frame first (see the README); --bidirectional-mode mirror reproduces the published construction so its equivalence with forward-only sampling can be checked. --cfg-batch runs forward and backward, conditional and unconditional as one batched DiT forward.

    Examples:

      wanctl flf2v -i first.png -l last.png -p "the circle rolls to the right" -o out.safetensors --decode out.mp4

      wanctl flf2v -i a.png -l b.png -p "..." --bidirectional --fusion linear --steps 30 -o out.safetensors

      wanctl flf2v -i a.png -l b.png -p "..." --noise source.noise.safetensors -o out.safetensors
    """
    from wanctl.core.errors import BadInputError
    from wanctl.core.io import video as vio
    from wanctl.core.io.artifact import check_output, check_output_file, read_artifact
    from wanctl.core.io.video import fit_size, load_image
    from wanctl.core.models.bundle import open_bundle
    from wanctl.core.workflows.denoise import noise_source
    from wanctl.core.workflows.encode import write_latent
    from wanctl.core.sampling.plan import with_parallel
    from wanctl.core.workflows.flf2v import FLF2V_SHIFT, check_bidirectional_options, generate_flf2v, plan_flf2v

    if output is None and not dry_run:
        raise BadInputError("missing -o/--output (or use --dry-run)")
    if manifest is not None:
        if first_frame or last_frame or noise or decode_to or dry_run:
            raise BadInputError("--manifest names the frames of each row; -i/-l, --noise, --decode and --dry-run "
                                "apply to one video")
        if parallel is not None and shard is not None:
            raise BadInputError("--parallel splits one video across the ranks and --shard splits the rows; give one")
        check_bidirectional_options(bidirectional, bidirectional_mode, fusion, reverse_rope)
        _manifest_run(manifest, output, prompt=prompt, seed=seed or 0, shard=shard, force=force, allow_outside=allow_outside,
                      as_json=as_json, sampling=sampling_options(preset, steps=steps, shift=shift, grid=grid, sigmas=sigmas,
                                                                 solver=solver, guidance=guidance,
                                                                 guidance_low=guidance_low),
                      background=parse_background(background), size=parse_size(size), frames=frames, model=model,
                      negative_prompt=negative_prompt, bidirectional=bidirectional, cfg_batch=cfg_batch,
                      mode=bidirectional_mode or "reencode", reverse_rope=reverse_rope, fusion=fusion or "uniform",
                      parallel=parallel,
                      load=lambda: load_options(device, dtype=dtype, no_cache=no_cache, offload=offload,
                                                text_encoder_device=text_encoder_device, vae_tiling=vae_tiling, lora=lora,
                                                lora_high=lora_high, lora_low=lora_low, lora_unfused=lora_unfused,
                                                weights_dtype=weights_dtype, parallel=parallel))
        return
    missing = [o for o, v in (("-i/--first-frame", first_frame), ("-l/--last-frame", last_frame), ("-p/--prompt", prompt))
               if not v]
    if missing:  # required without a manifest: a usage error (exit 2), as before --manifest existed
        from wanctl.commands._report import error_line

        error_line(f"missing option {', '.join(missing)} (or --manifest)")
        raise typer.Exit(2)
    if output is not None:
        check_output(output, force)
    if decode_to:
        vio.output_kind(decode_to)
        check_output_file(decode_to, force)
    check_bidirectional_options(bidirectional, bidirectional_mode, fusion, reverse_rope)
    so = sampling_options(preset, steps=steps, shift=shift, grid=grid, sigmas=sigmas, solver=solver,
                          guidance=guidance, guidance_low=guidance_low)
    bg = parse_background(background)
    read_notes: list[str] = []
    # read once, before any model loads
    first = load_image(first_frame, background=bg, notices=read_notes)
    last = load_image(last_frame, background=bg, notices=read_notes)
    for n in read_notes:
        notice(n)
    art = read_artifact(noise, kinds=("noise",), notice=notice) if noise else None
    opts = load_options(device, dtype=dtype, no_cache=no_cache, offload=offload,
                        text_encoder_device=text_encoder_device, vae_tiling=vae_tiling,
                        lora=lora, lora_high=lora_high, lora_low=lora_low, lora_unfused=lora_unfused,
                        weights_dtype=weights_dtype, parallel=parallel)
    bundle = open_bundle(model, family=art.family if art else "i2v-a14b", recorded=art.meta.get("model") if art else None,
                         notice=notice, options=opts)
    wh = parse_size(size)
    if art is None and wh is None:
        wh = fit_size(first.shape[1], first.shape[0], bundle.family.size_multiple, None, what=f"{first_frame} (the first frame)")
    shift = so.shift
    if art is None and shift is None and so.sigmas is None:
        shift = FLF2V_SHIFT
    src = noise_source(bundle, art, seed=seed, frames=frames, size=wh if art is None else parse_size(size), steps=so.steps,
                       shift=shift, grid=so.grid, sigmas=so.sigmas)
    plan = plan_flf2v(bundle, src, solver=so.solver, guidance=so.guidance, guidance_low=so.guidance_low,
                      negative_prompt=negative_prompt, bidirectional=bidirectional, cfg_batch=cfg_batch)
    plan = with_parallel(plan, bundle.spec, opts.parallel, launched=not dry_run)
    if dry_run:
        print_plan(plan, as_json)
        return
    with progress("generating", plan.num_steps, "steps") as advance:
        result, forwards = generate_flf2v(bundle, plan, src, first_frame=first_frame, last_frame=last_frame, first=first,
                                          last=last, prompt=prompt,
                                          mode=bidirectional_mode or "reencode", reverse_rope=reverse_rope, fusion=fusion or "uniform",
                                          progress=advance, notice=notice)
    if plan.parallel is not None and not plan.parallel.writes:
        return  # --parallel: rank 0 writes (and decodes)
    with progress("decoding", plan.latent_frames, "latent frames") if decode_to else nullcontext() as advance:
        write_latent(bundle, result, output, video=decode_to, fps=src.fps, force=force, progress=advance)
    if as_json:
        emit_json({"output": describe_output(output), "kind": "latent", "decoded": decode_to, "forwards": forwards,
                   "bidirectional": bidirectional})
    else:
        info(f"wrote {describe_output(output)}" + (f" and {decode_to}" if decode_to else "") + f" ({forwards} DiT forwards)")


def _manifest_run(manifest: str, output: str, *, prompt, seed: int, shard, force: bool, allow_outside: bool, as_json: bool,
                  sampling, background, size, frames, model, negative_prompt, bidirectional: bool, cfg_batch: bool,
                  mode: str, reverse_rope: bool, fusion: str, parallel, load) -> None:
    """One video per manifest row (first_frame, last_frame, prompt, seed, output), this
    process's share of them (wanctl/core/shard.py), skipping outputs that exist when sharded.
    Each row is planned at its own first frame's size (unless --size); the model loads once."""
    from contextlib import ExitStack

    from wanctl.core.errors import BadInputError
    from wanctl.core.io.artifact import write_artifact
    from wanctl.core.io.video import fit_size, load_image
    from wanctl.core.models.bundle import open_bundle
    from wanctl.core.sampling.plan import with_parallel
    from wanctl.core.shard import resolve_shard
    from wanctl.core.workflows.denoise import noise_source
    from wanctl.core.workflows.flf2v import FLF2V_SHIFT, generate_flf2v, plan_flf2v
    from wanctl.core.workflows.manifest import plan_rows, prepare_outputs

    share = resolve_shard(shard, env={} if parallel is not None else None)  # --parallel: every rank, every row
    rows = plan_rows(manifest, columns=("first_frame", "last_frame", "prompt", "seed", "output"),
                     required=("first_frame", "last_frame"), prompt=prompt, output=output, allow_outside=allow_outside,
                     shard=share, force=force)
    with ExitStack() as cleanup:  # a failed run leaves no new empty output folder
        run = [r for r in rows if r.mine and not r.skipped and not r.error]
        prepare_outputs(rows, output, shared=share.active or parallel is not None, force=force, dry_run=False,
                        cleanup=cleanup)
        images = {}
        for r in run:  # read before any model loads; an unreadable frame fails its row alone
            notes: list[str] = []
            try:
                images[r.row] = tuple(load_image(r.paths[k], background=background, notices=notes)
                                      for k in ("first_frame", "last_frame"))
            except BadInputError as e:
                r.error = e.message
            for n in notes:
                notice(n)
        for r in rows:
            if r.mine and r.error:
                warn(f"{r.label}: {r.error}; skipping it")
        run = [r for r in run if not r.error]
        written = 0
        if run:
            opts = load()
            bundle = open_bundle(model, family="i2v-a14b", notice=notice, options=opts)
            shift = sampling.shift if sampling.shift is not None or sampling.sigmas is not None else FLF2V_SHIFT
            planned = []
            for r in run:  # every row planned before any weights load; a row the model cannot run fails alone
                first = images[r.row][0]
                try:
                    wh = size or fit_size(first.shape[1], first.shape[0], bundle.family.size_multiple, None,
                                          what=f"{r.paths['first_frame']} (the first frame)")
                    src = noise_source(bundle, None, seed=r.seed if r.seed is not None else seed, frames=frames, size=wh,
                                       steps=sampling.steps, shift=shift, grid=sampling.grid, sigmas=sampling.sigmas)
                    plan = plan_flf2v(bundle, src, solver=sampling.solver, guidance=sampling.guidance,
                                      guidance_low=sampling.guidance_low, negative_prompt=negative_prompt,
                                      bidirectional=bidirectional, cfg_batch=cfg_batch)
                    plan = with_parallel(plan, bundle.spec, opts.parallel, launched=True)
                except BadInputError as e:
                    r.error = e.message
                    warn(f"{r.label}: {r.error}; skipping it")
                    continue
                planned.append((r, src, plan))
            for r, src, plan in planned:
                first, last = images.pop(r.row)
                with progress("generating", plan.num_steps, "steps") as advance:
                    result, forwards = generate_flf2v(bundle, plan, src, first_frame=r.paths["first_frame"],
                                                      last_frame=r.paths["last_frame"], first=first, last=last,
                                                      prompt=r.prompt, mode=mode, reverse_rope=reverse_rope, fusion=fusion,
                                                      progress=advance, notice=notice)
                if plan.parallel is not None and not plan.parallel.writes:
                    continue  # --parallel: rank 0 writes
                write_artifact(r.output, result, force=force)
                written += 1
                if as_json:
                    emit_json({"output": r.output, "kind": "latent", "row": r.row, "prompt": r.prompt, "forwards": forwards})
                else:
                    info(f"wrote {r.output}")
            if opts.parallel is not None and not opts.parallel.writes:
                return
        row_summary(share, rows, written, as_json)
