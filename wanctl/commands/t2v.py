"""`wanctl t2v`: text-to-video, with --half-frame and CFG truncation, and a visible step plan."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from wanctl.commands._common import (
    CfgBatchOpt,
    DeviceOpt,
    DtypeOpt,
    ForceOpt,
    GridOpt,
    GuidanceLowOpt,
    GuidanceOpt,
    JsonOpt,
    ModelOpt,
    NegativeOpt,
    AttentionOpt,
    CacheIntervalOpt,
    CacheThresholdOpt,
    CompileOpt,
    NoCacheOpt,
    OffloadOpt,
    TextEncoderDeviceOpt,
    VaeTilingOpt,
    SeedOpt,
    ShiftOpt,
    StepCacheOpt,
    StepsOpt,
    describe_output,
    emit_json,
    handle_errors,
    info,
    load_options,
    notice,
    out_console,
    parse_size,
    progress,
)


def _plan_table(plan, fam) -> object:
    from rich.table import Table

    t = Table(title=f"step plan: {fam.name}, {plan.schedule.num_steps} steps, solver {plan.solver}", title_justify="left")
    for col in ("step", "s", "t", "expert", "latent frames", "CFG", "DiT forwards"):
        t.add_column(col, justify="right")
    for p in plan.steps:
        expert = "high" if p.expert == "transformer" else "low"
        if fam.experts == 1:
            expert = "dit"
        t.add_row(str(p.index + 1), f"{p.s:.4f}", str(p.t), expert, str(p.frames), "yes" if p.cfg else "no", str(p.forwards))
    return t


@handle_errors
def t2v(
    prompt: Annotated[str, typer.Option("--prompt", "-p", help="What the video shows.", show_default=False)],
    output: Annotated[Optional[str], typer.Option("--output", "-o", help="Latent artifact (.safetensors, .zarr, or -).", show_default=False)] = None,
    model: ModelOpt = None,
    size: Annotated[Optional[str], typer.Option("--size", help="WIDTHxHEIGHT. Default: the family preset (t2v-a14b 1280x720, ti2v-5b 1280x704).")] = None,
    frames: Annotated[Optional[int], typer.Option("--frames", help="Frame count, 4n+1. Default: the preset (81, ti2v-5b 121).")] = None,
    steps: StepsOpt = None,
    shift: ShiftOpt = None,
    grid: GridOpt = "unipc",
    guidance: GuidanceOpt = None,
    guidance_low: GuidanceLowOpt = None,
    boundary: Annotated[Optional[float], typer.Option("--boundary", help="A14B expert switch as a fraction of 1000 timesteps (default: the model's, 0.875).")] = None,
    negative_prompt: NegativeOpt = None,
    seed: SeedOpt = 0,
    solver: Annotated[str, typer.Option("--solver", help="unipc (official default), euler, midpoint or fireflow.")] = "unipc",
    half_frame: Annotated[bool, typer.Option("--half-frame", help="High-noise phase on ceil(T/2) latent frames, completed to T at the switch.")] = False,
    completion: Annotated[str, typer.Option("--completion", help="How --half-frame completes the frames: renoise, repeat or interpolate.")] = "renoise",
    half_frame_until: Annotated[Optional[float], typer.Option("--half-frame-until", help="Dense models (ti2v-5b): the noise level at which to complete the frames.")] = None,
    cfg_truncate_steps: Annotated[int, typer.Option("--cfg-truncate-steps", help="The last N steps use the conditional prediction only (1 model call).")] = 0,
    cfg_truncate_high_noise_steps: Annotated[int, typer.Option("--cfg-truncate-high-noise-steps", help="The last M high-noise-expert steps use the conditional prediction only.")] = 0,
    cfg_batch: CfgBatchOpt = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the step plan and the FLOP estimate, then stop (loads no weights).")] = False,
    decode_to: Annotated[Optional[str], typer.Option("--decode", help="Also decode the result to this video file (.mp4/.webm/.gif).")] = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = "bf16",
    cache: StepCacheOpt = "none",
    cache_threshold: CacheThresholdOpt = None,
    cache_interval: CacheIntervalOpt = None,
    attention: AttentionOpt = None,
    compile: CompileOpt = False,
    no_cache: NoCacheOpt = False,
    offload: OffloadOpt = "none",
    text_encoder_device: TextEncoderDeviceOpt = None,
    vae_tiling: VaeTilingOpt = False,
    force: ForceOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Generate a video from text with t2v-a14b (two experts) or ti2v-5b (text mode).

    Presets give the official defaults (t2v-a14b: 40 steps, shift 12, guidance 4.0 high-noise /
    3.0 low-noise, boundary 0.875; ti2v-5b: 50 steps, shift 5, guidance 5). --half-frame runs the
    high-noise expert on half the latent frames; --dry-run shows which expert runs each step, on
    how many frames, with how many DiT forwards, and the FLOPs relative to a plain run.

    Examples:

      wanctl t2v -p "a red circle moving right" --size 832x480 -o out.safetensors --decode out.mp4

      wanctl t2v -p "..." --half-frame --completion renoise --cfg-truncate-steps 5 --dry-run

      wanctl t2v -m ti2v-folder -p "..." --half-frame --half-frame-until 0.9 -o out.safetensors
    """
    from wanctl.core.io import video as vio
    from wanctl.core.io.artifact import check_output, check_output_file
    from wanctl.core.errors import BadInputError
    from wanctl.core.families import check_frames, check_size
    from wanctl.core.workflows.denoise import resolve_guidance
    from wanctl.core.models.bundle import open_bundle
    from wanctl.core.sampling.schedule import make_schedule

    if output is None and not dry_run:
        raise BadInputError("missing -o/--output (or use --dry-run)")
    if output is not None:
        check_output(output, force)
    if decode_to:
        vio.output_kind(decode_to)
        check_output_file(decode_to, force)
    opts = load_options(device, dtype=dtype, no_cache=no_cache, offload=offload,
                        text_encoder_device=text_encoder_device, vae_tiling=vae_tiling)
    bundle = open_bundle(model, notice=notice, options=opts)
    fam = bundle.family
    if fam.name not in ("t2v-a14b", "ti2v-5b"):
        raise BadInputError(f"t2v needs a t2v-a14b or ti2v-5b model; {fam.name} needs a first frame (use `wanctl denoise`)")
    pre = fam.preset
    width, height = parse_size(size) or pre.default_size
    check_size(fam, width, height)
    n_frames = frames or pre.frames
    check_frames(n_frames)
    if boundary is not None and fam.experts == 1:
        raise BadInputError(f"--boundary applies to two-expert models; {fam.name} has one")
    bnd = boundary if boundary is not None else bundle.spec.boundary
    sched = make_schedule(steps or pre.steps, shift if shift is not None else pre.shift, grid)
    g = resolve_guidance(fam, guidance, guidance_low)
    from wanctl.core.workflows.t2v import plan_t2v

    plan = plan_t2v(bundle, sched, frames=n_frames, width=width, height=height, guidance=g, solver=solver,
                    half_frame=half_frame, completion=completion, half_frame_until=half_frame_until,
                    cfg_truncate_steps=cfg_truncate_steps, cfg_truncate_high_noise_steps=cfg_truncate_high_noise_steps,
                    cfg_batch=cfg_batch, boundary=bnd)
    for n in plan.notes:
        notice(n)
    if dry_run:
        summary = {"family": fam.name, "steps": sched.num_steps, "size": [width, height], "frames": n_frames,
                   **plan.to_meta(), "plan": [p.__dict__ for p in plan.steps]}
        if as_json:
            emit_json(summary)
        else:
            out_console().print(_plan_table(plan, fam))
            out_console().print(
                f"{summary['forwards']} DiT forwards; FLOPs relative to a plain run (same steps, CFG on every step, "
                f"full frames): {plan.relative_flops:.3f} (speedup x{1 / plan.relative_flops:.2f})"
            )
        return
    accel = dict(cache=cache, threshold=cache_threshold, interval=cache_interval, attention=attention, compile=compile)
    _generate(bundle, plan, prompt=prompt, negative_prompt=negative_prompt, guidance=g, seed=seed, width=width,
              height=height, frames=n_frames, boundary=bnd, output=output, decode_to=decode_to, force=force,
              as_json=as_json, accel=accel)


def _generate(bundle, plan, *, prompt, negative_prompt, guidance, seed, width, height, frames, boundary, output,
              decode_to, force, as_json, accel) -> None:
    from wanctl.core.io import video as vio
    from wanctl.core.sampling.acceleration import accelerated
    from wanctl.core.io.artifact import Artifact, new_meta, write_artifact
    from wanctl.core.workflows.encode import decode
    from wanctl.core.families import DEFAULT_NEGATIVE_PROMPT
    from wanctl.core.workflows.t2v import run_t2v
    from wanctl.core.models.text import encode_prompts

    fam = bundle.family
    uses_cfg = any(p.cfg for p in plan.steps)
    negative = (DEFAULT_NEGATIVE_PROMPT if negative_prompt is None else negative_prompt) if uses_cfg else None
    emb = encode_prompts(bundle, [prompt] + ([negative] if negative is not None else []))
    segments = [(0, plan.switch, "transformer"), (plan.switch, plan.schedule.num_steps, None)] if plan.half_frame else None
    with accelerated(bundle, plan.schedule, plan.solver, segments=segments, notice=notice, **accel) as speed, \
            progress("generating", plan.schedule.num_steps, "steps") as advance:
        res = run_t2v(bundle, plan, embeds=emb[prompt], negative=emb[negative] if negative is not None else None,
                      guidance=guidance, seed=seed, width=width, height=height, boundary=boundary, progress=advance)
    params = {
        "prompt": prompt,
        "negative_prompt": negative,
        "seed": seed,
        "schedule": plan.schedule.to_meta(),
        "solver": plan.solver,
        "guidance": guidance.to_meta(),
        "boundary": boundary,
        "cfg_batch": plan.cfg_batch,
        "acceleration": speed,
        **plan.to_meta(),
    }
    meta = new_meta("latent", family=fam.name, command="t2v", noise_level=0.0,
                    video={"width": width, "height": height, "frames": frames, "fps": fam.preset.fps},
                    model=bundle.record(bundle.experts() + ["text_encoder", "tokenizer", "vae"]), params=params)
    art = Artifact({"latents": res.latents.float().cpu()}, meta)
    write_artifact(output, art, force=force)
    if decode_to:
        with progress("decoding", plan.latent_frames, "latent frames") as advance:
            with vio.VideoWriter(decode_to, fam.preset.fps, force=force) as w:
                for f in decode(bundle, art, progress=advance):
                    w.write(f)
    if as_json:
        emit_json({"output": describe_output(output), "kind": "latent", "decoded": decode_to, "forwards": len(res.calls),
                   "relative_flops": round(plan.relative_flops, 4)})
    else:
        info(f"wrote {describe_output(output)}" + (f" and {decode_to}" if decode_to else "")
             + f" ({len(res.calls)} DiT forwards, {plan.relative_flops:.2f}x the FLOPs of a plain run)")
