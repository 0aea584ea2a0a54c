"""`wanctl t2v`: text-to-video, with --half-frame and CFG truncation, and a visible run plan."""

from __future__ import annotations

from contextlib import ExitStack, nullcontext
from typing import Annotated, Optional

import typer

from wanctl.commands._options import (
    GUIDANCE,
    HALF_FRAME,
    OUTPUT,
    SAMPLING,
    AttentionOpt,
    CacheIntervalOpt,
    CacheThresholdOpt,
    CfgBatchOpt,
    CompileOpt,
    DecodeOpt,
    DeviceOpt,
    DryRunOpt,
    DtypeOpt,
    ForceOpt,
    GridOpt,
    GuidanceLowOpt,
    PresetOpt,
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
    ShiftOpt,
    SigmasOpt,
    StepCacheOpt,
    StepsOpt,
    TextEncoderDeviceOpt,
    VaeTilingOpt,
    WeightsDtypeOpt,
    load_options,
    sampling_options,
    parse_size,
    speed_options,
    unit_interval,
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


@handle_errors
def t2v(
    prompt: Annotated[Optional[str], typer.Option("--prompt", "-p", help="What the video shows (with --manifest: for rows without a prompt).", show_default=False)] = None,
    output: Annotated[Optional[str], typer.Option("--output", "-o", rich_help_panel=OUTPUT, help="Latent artifact (.safetensors, .zarr, or -); with --manifest, a folder.", show_default=False)] = None,
    manifest: Annotated[Optional[str], typer.Option("--manifest", rich_help_panel=OUTPUT, show_default=False, help="CSV (header prompt,seed,output) or JSONL, one video per row; seed defaults to --seed, output (relative to the manifest) to <-o>/row-N.safetensors. A row that cannot be read fails alone (exit 3 at the end).")] = None,
    allow_outside: Annotated[bool, typer.Option("--allow-outside", rich_help_panel=OUTPUT, help="Let manifest outputs resolve outside the manifest's folder and -o.")] = False,
    model: ModelOpt = None,
    lora: LoraOpt = None,
    lora_high: LoraHighOpt = None,
    lora_low: LoraLowOpt = None,
    lora_unfused: LoraUnfusedOpt = False,
    size: Annotated[Optional[str], typer.Option("--size", rich_help_panel=SAMPLING, show_default=False, help="WIDTHxHEIGHT. Default: the model's presets (official: t2v-a14b 1280x720, ti2v-5b 1280x704; toys 64x64).")] = None,
    frames: Annotated[Optional[int], typer.Option("--frames", min=1, rich_help_panel=SAMPLING, show_default=False, help="Frame count, 4n+1. Default: the model's presets (official 81, ti2v-5b 121; toys 17).")] = None,
    steps: StepsOpt = None,
    shift: ShiftOpt = None,
    grid: GridOpt = None,
    sigmas: SigmasOpt = None,
    preset: PresetOpt = None,
    solver: Annotated[Optional[str], typer.Option("--solver", rich_help_panel=SAMPLING, show_default=False, help="unipc (official default), euler, midpoint or fireflow. Default: unipc, or the --preset's.")] = None,
    seed: SeedOpt = None,
    guidance: GuidanceOpt = None,
    guidance_low: GuidanceLowOpt = None,
    boundary: Annotated[Optional[float], typer.Option("--boundary", callback=unit_interval, rich_help_panel=GUIDANCE, show_default=False, help="A14B expert switch as a fraction of 1000 timesteps (default: the model's, 0.875).")] = None,
    negative_prompt: NegativeOpt = None,
    cfg_truncate_steps: Annotated[int, typer.Option("--cfg-truncate-steps", min=0, rich_help_panel="CFG truncation", help="The last N steps use the conditional prediction only (one forward per evaluation).")] = 0,
    cfg_truncate_high_noise_steps: Annotated[int, typer.Option("--cfg-truncate-high-noise-steps", min=0, rich_help_panel="CFG truncation", help="The last M steps of the high-noise expert use the conditional prediction only.")] = 0,
    half_frame: Annotated[bool, typer.Option("--half-frame", rich_help_panel=HALF_FRAME, help="High-noise phase on ceil(T/2) latent frames, completed to T at the switch.")] = False,
    completion: Annotated[Optional[str], typer.Option("--completion", rich_help_panel=HALF_FRAME, show_default=False, help="How --half-frame completes the frames: renoise (default: keeps every frame at the switch's noise level), repeat or interpolate (on the toy models interpolate and repeat land nearer the full run than renoise: benchmarks/RESULTS.md).")] = None,
    half_frame_until: Annotated[Optional[float], typer.Option("--half-frame-until", rich_help_panel=HALF_FRAME, show_default=False, help="The noise level at which to complete the frames (needed for ti2v-5b; A14B: default the expert switch).")] = None,
    cfg_batch: CfgBatchOpt = False,
    device: DeviceOpt = None,
    dtype: DtypeOpt = "bf16",
    weights_dtype: WeightsDtypeOpt = "auto",
    step_cache: StepCacheOpt = "none",
    cache_threshold: CacheThresholdOpt = None,
    cache_interval: CacheIntervalOpt = None,
    attention: AttentionOpt = None,
    compile: CompileOpt = False,
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
    """Generate a video from text with t2v-a14b (two experts) or ti2v-5b (text mode).

    The model's presets give the defaults (real Wan2.2 folders: the official ones, t2v-a14b 40 steps, shift 12, guidance 4.0 high-noise / 3.0 low-noise, boundary 0.875, on the official UniPC grid; the built-in toys: their training size, 17 frames, 30 steps). --half-frame runs the high-noise expert on half the latent frames; --dry-run shows the run plan: which expert runs each step, on how many frames, with which guidance and how many DiT forwards, and the FLOPs relative to a plain run.

    Examples:

      wanctl t2v -p "a red circle moving right on a black background" -o out.safetensors --decode out.mp4

      wanctl t2v -m t2v-folder -p "..." --size 832x480 --half-frame --cfg-truncate-steps 5 --dry-run

      wanctl t2v -m ti2v-folder -p "..." --half-frame --half-frame-until 0.9 -o out.safetensors

      torchrun --nproc-per-node 8 -m wanctl t2v --manifest prompts.csv -o videos/
    """
    from wanctl.core.errors import BadInputError
    from wanctl.core.io import video as vio
    from wanctl.core.io.artifact import check_output, check_output_file, write_artifact
    from wanctl.core.models.bundle import open_bundle
    from wanctl.core.workflows.encode import write_latent
    from wanctl.core.sampling.plan import with_parallel
    from wanctl.core.shard import resolve_shard
    from wanctl.core.workflows.manifest import plan_rows, prepare_outputs
    from wanctl.core.workflows.t2v import generate_t2v, plan_t2v

    with ExitStack() as cleanup:  # a failed run leaves no new empty output folder
        if output is None and not dry_run:
            raise BadInputError("missing -o/--output (or use --dry-run)")
        rows = None
        if manifest is None:
            if not prompt:  # a usage error (exit 2), as before --manifest existed
                from wanctl.commands._report import error_line

                error_line("missing option -p/--prompt (or --manifest)")
                raise typer.Exit(2)
            if shard is not None:
                raise BadInputError("--shard splits the rows of a --manifest")
        else:
            if parallel is not None and shard is not None:
                raise BadInputError("--parallel splits one video across the ranks and --shard splits the rows; give one")
            if decode_to:
                raise BadInputError("--decode is not supported with --manifest; decode each latent with `wanctl decode`")
            share = resolve_shard(shard, env={} if parallel is not None else None)  # --parallel: every rank, every row
            rows = plan_rows(manifest, columns=("prompt", "seed", "output"), prompt=prompt, output=output or ".",
                             allow_outside=allow_outside, shard=share, force=force)
            run = [r for r in rows if r.mine and not r.skipped and not r.error]
            prepare_outputs(rows, output or ".", shared=share.active or parallel is not None, force=force, dry_run=dry_run,
                            cleanup=cleanup)
            for r in rows:
                if r.mine and r.error:
                    warn(f"{r.label}: {r.error}; skipping it")
            if not run and not dry_run:
                row_summary(share, rows, 0, as_json)  # all written already (or failed): no model loads
                return
        if output is not None and rows is None:
            check_output(output, force)
        if decode_to:
            vio.output_kind(decode_to)
            check_output_file(decode_to, force)
        so = sampling_options(preset, steps=steps, shift=shift, grid=grid, sigmas=sigmas, solver=solver,
                              guidance=guidance, guidance_low=guidance_low)
        speed = speed_options(step_cache, cache_threshold, cache_interval, attention, compile)
        opts = load_options(device, dtype=dtype, no_cache=no_cache, offload=offload,
                            text_encoder_device=text_encoder_device, vae_tiling=vae_tiling,
                            lora=lora, lora_high=lora_high, lora_low=lora_low, lora_unfused=lora_unfused,
                            weights_dtype=weights_dtype, parallel=parallel)
        bundle = open_bundle(model, notice=notice, options=opts)
        plan = plan_t2v(bundle, size=parse_size(size), frames=frames, steps=so.steps, shift=so.shift, grid=so.grid,
                        sigmas=so.sigmas, guidance=so.guidance, guidance_low=so.guidance_low, boundary=boundary,
                        negative_prompt=negative_prompt, solver=so.solver or "unipc", half_frame=half_frame, completion=completion,
                        half_frame_until=half_frame_until, cfg_truncate_steps=cfg_truncate_steps,
                        cfg_truncate_high_noise_steps=cfg_truncate_high_noise_steps, cfg_batch=cfg_batch)
        plan = with_parallel(plan, bundle.spec, opts.parallel, speed=speed, launched=not dry_run)
        for n in plan.notes:
            notice(n)
        if dry_run:
            print_plan(plan, as_json)
            return
        if rows is not None:
            written = 0
            with progress("generating", len(run) * plan.num_steps, "row-steps") as advance:
                for r in run:
                    row_seed = r.seed if r.seed is not None else (seed or 0)
                    art, forwards = generate_t2v(bundle, plan, prompt=r.prompt, seed=row_seed, speed=speed, progress=advance,
                                                 notice=notice)
                    if plan.parallel is not None and not plan.parallel.writes:
                        continue  # --parallel: rank 0 writes
                    write_artifact(r.output, art, force=force)
                    written += 1
                    if as_json:
                        emit_json({"output": r.output, "kind": "latent", "row": r.row, "prompt": r.prompt, "seed": row_seed,
                                   "forwards": forwards})
                    else:
                        info(f"wrote {r.output}")
            if plan.parallel is None or plan.parallel.writes:
                row_summary(share, rows, written, as_json)
            return
        with progress("generating", plan.num_steps, "steps") as advance:
            art, forwards = generate_t2v(bundle, plan, prompt=prompt, seed=seed or 0, speed=speed, progress=advance, notice=notice)
        if plan.parallel is not None and not plan.parallel.writes:
            return  # --parallel: rank 0 writes (and decodes)
        with progress("decoding", plan.latent_frames, "latent frames") if decode_to else nullcontext() as advance:
            write_latent(bundle, art, output, video=decode_to, fps=bundle.preset.fps, force=force, progress=advance)
        if as_json:
            emit_json({"output": describe_output(output), "kind": "latent", "decoded": decode_to, "forwards": forwards,
                       "relative_flops": round(plan.relative_flops, 4)})
        else:
            info(f"wrote {describe_output(output)}" + (f" and {decode_to}" if decode_to else "")
                 + f" ({forwards} DiT forwards, {plan.relative_flops:.2f}x the FLOPs of a plain run)")
