"""`wanctl denoise`: noise artifact (or seeded noise) -> clean latents, for one or many targets."""

from __future__ import annotations

from contextlib import ExitStack
from typing import Annotated, Optional

import typer

from wanctl.commands._options import (
    AttentionOpt,
    BackgroundOpt,
    BatchOpt,
    CacheIntervalOpt,
    CacheThresholdOpt,
    CfgBatchOpt,
    CompileOpt,
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
    ShiftOpt,
    PresetOpt,
    SigmasOpt,
    StepCacheOpt,
    StepsOpt,
    TextEncoderDeviceOpt,
    VaeTilingOpt,
    WeightsDtypeOpt,
    load_options,
    parse_background,
    sampling_options,
    parse_size,
    speed_options,
)
from wanctl.commands._report import emit_json, handle_errors, info, notice, print_plan, progress, row_summary, warn


@handle_errors
def denoise(
    noise: Annotated[Optional[str], typer.Argument(help="Noise artifact from `wanctl invert` (or -). Omit to start from seeded noise.", show_default=False)] = None,
    prompt: Annotated[Optional[str], typer.Option("--prompt", "-p", help="Target prompt (manifest rows may set their own).", show_default=False)] = None,
    output: Annotated[Optional[str], typer.Option("--output", "-o", help="Output artifact; with several targets, a folder.", show_default=False)] = None,
    first_frame: Annotated[Optional[list[str]], typer.Option("--first-frame", "-i", help="Target first frame (image), repeatable; a folder adds every image in it.")] = None,
    manifest: Annotated[Optional[str], typer.Option("--manifest", help="CSV (header first_frame,prompt,output) or JSONL of targets; paths relative to the manifest. A row that cannot be read fails alone (exit 3 at the end).")] = None,
    allow_outside: Annotated[bool, typer.Option("--allow-outside", help="Let manifest outputs resolve outside the manifest's folder and -o.")] = False,
    background: BackgroundOpt = "black",
    model: ModelOpt = None,
    lora: LoraOpt = None,
    lora_high: LoraHighOpt = None,
    lora_low: LoraLowOpt = None,
    lora_unfused: LoraUnfusedOpt = False,
    negative_prompt: NegativeOpt = None,
    guidance: GuidanceOpt = None,
    guidance_low: GuidanceLowOpt = None,
    solver: Annotated[Optional[str], typer.Option("--solver", rich_help_panel="Sampling", show_default=False, help="unipc (official default), euler, midpoint or fireflow. Default: the noise's inversion solver, else unipc.")] = None,
    steps: StepsOpt = None,
    shift: ShiftOpt = None,
    grid: GridOpt = None,
    sigmas: SigmasOpt = None,
    preset: PresetOpt = None,
    seed: SeedOpt = None,
    init: Annotated[Optional[str], typer.Option("--init", rich_help_panel="Sampling", show_default=False, help="Video-to-video: a clean latent (from `wanctl encode`, or -) noised with seeded noise to --strength and denoised from there (SDEdit). Instead of a noise artifact.")] = None,
    strength: Annotated[Optional[float], typer.Option("--strength", min=0.0, max=1.0, rich_help_panel="Sampling", show_default=False, help="With --init: how much of the video is redrawn, 0 (the source) .. 1 (a new video from --seed). Default 0.7.")] = None,
    frames: Annotated[Optional[int], typer.Option("--frames", min=1, rich_help_panel="Sampling", show_default=False, help="Without a noise artifact: frame count (4n+1). Default: the family preset.")] = None,
    size: Annotated[Optional[str], typer.Option("--size", rich_help_panel="Sampling", show_default=False, help="Without a noise artifact: WIDTHxHEIGHT. Default: the first frame's size (cropped to the family multiple), else the preset.")] = None,
    batch_size: BatchOpt = 1,
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
    force: ForceOpt = False,
    shard: ShardOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Denoise a noise artifact with a new first frame and prompt (or many), or seeded noise.

    With a noise artifact, its grid is used; --steps/--shift/--grid/--sigmas rebuild it (on the noise's own grid and shift unless given), and the default solver is the one it was inverted with. Without --first-frame, a conditionally inverted noise keeps its source's first frame (regenerate under a new prompt). The noise, the models and each distinct prompt's embedding load once for all targets; a target whose image cannot be read is reported and the others still run (exit 3 at the end). --init LATENT --strength S is video-to-video (SDEdit): the clean latent noised to level S with seeded noise, then denoised (0 returns the source, 1 is a new video from --seed; i2v-a14b keeps the source's first frame as its condition unless -i is given). --dry-run prints the run plan of one batch.

    Examples:

      wanctl denoise noise.safetensors -i new_first.png -p "a green triangle moving right" -o edit.safetensors

      wanctl denoise noise.safetensors -i frames/ -p "..." -o edits/ --batch-size 4

      wanctl denoise noise.safetensors --manifest targets.csv -o edits/

      wanctl denoise -i first.png -p "a cat on a beach" --seed 1 --size 832x480 --frames 81 -o out.safetensors

      wanctl denoise --init clip.safetensors --strength 0.6 -p "the same scene as a watercolour" -o v2v.safetensors
    """
    from wanctl.core.errors import BadInputError
    from wanctl.core.io import comfy
    from wanctl.core.io.artifact import check_output, check_output_file, output_format, read_artifact, write_artifact
    from wanctl.core.io.inputs import read_input
    from wanctl.core.models.bundle import open_bundle
    from wanctl.core.workflows.manifest import prepare_outputs
    from wanctl.core.shard import resolve_shard
    from wanctl.core.sampling.plan import with_parallel
    from wanctl.core.workflows import denoise as gen

    # a failed run leaves no new empty output folder
    with ExitStack() as cleanup:
        if output is None and not dry_run:
            raise BadInputError("missing -o/--output (or use --dry-run)")
        speed = speed_options(step_cache, cache_threshold, cache_interval, attention, compile)
        bg = parse_background(background)
        so = sampling_options(preset, steps=steps, shift=shift, grid=grid, sigmas=sigmas, solver=solver,
                              guidance=guidance, guidance_low=guidance_low)
        if parallel is not None and shard is not None:
            raise BadInputError("--parallel splits one video across the ranks and --shard splits the rows; give one")
        share = resolve_shard(shard, env={} if parallel is not None else None)  # --parallel: RANK is not a row share
        targets = gen.plan_targets(first_frames=first_frame or [], manifest=manifest, prompt=prompt, output=output or "-",
                                   allow_outside=allow_outside, shard=share, force=force, notice=notice)
        multi = len(targets) > 1
        if share.active and not multi:
            raise BadInputError(f"--shard / {share.source} ranks split the targets of a manifest or of several "
                                "--first-frame; this run has one")
        run = [t for t in targets if t.mine and not t.skipped]  # this process's work
        if multi and output is not None:
            prepare_outputs(targets, output, shared=share.active or parallel is not None, force=force, dry_run=dry_run,
                            cleanup=cleanup)
        elif output is not None:
            for t in run:
                if t.error:
                    continue
                if t.output != "-":
                    output_format(t.output)
                    check_output_file(t.output, force)
                else:
                    check_output(t.output, force)
        if share.active and not dry_run and not any(not t.error for t in run):
            row_summary(share, targets, 0, as_json)  # all written already (or failed): no model loads
            return
        art = read_artifact(noise, kinds=("noise",), notice=notice) if noise else None
        if init is not None and noise is not None:
            raise BadInputError("--init and a noise artifact are two starting points; give one")
        init_art = read_input(init, kinds=("latent",), notice=notice) if init is not None else None
        start = art or init_art
        opts = load_options(device, dtype=dtype, no_cache=no_cache, offload=offload,
                            text_encoder_device=text_encoder_device, vae_tiling=vae_tiling,
                            lora=lora, lora_high=lora_high, lora_low=lora_low, lora_unfused=lora_unfused,
                            weights_dtype=weights_dtype, parallel=parallel)
        bundle = open_bundle(model, family=start.family if start else None,
                             recorded=start.meta.get("model") if start else None, notice=notice, options=opts)
        if init_art is not None:
            init_art = comfy.to_normalized(init_art, bundle.spec)
        fam = bundle.family
        if fam.conditioning == "text" and any(t.first_frame for t in targets):
            raise BadInputError(f"{fam.name} is text-only: --first-frame needs a ti2v-5b or i2v-a14b model")
        src = gen.noise_source(bundle, art, seed=seed, frames=frames, size=parse_size(size), steps=so.steps,
                               shift=so.shift, grid=so.grid, sigmas=so.sigmas, init=init_art, strength=strength, warn=warn,
                               first_images=[t.first_frame for t in targets if t.first_frame])
        default_solver = ((art.meta.get("params") or {}).get("solver") or "unipc") if art is not None else "unipc"
        solver = so.solver or default_solver
        plan = gen.plan_denoise(bundle, src, solver=solver, guidance=so.guidance, guidance_low=so.guidance_low,
                                negative_prompt=negative_prompt, batch_size=min(batch_size, max(1, len(run))),
                                cfg_batch=cfg_batch)
        plan = with_parallel(plan, bundle.spec, opts.parallel, speed=speed, launched=not dry_run)
        if dry_run:
            print_plan(plan, as_json)
            return
        if solver != default_solver and art is not None:
            notice(f"denoising with {solver}; the noise was inverted with {default_solver}")
        gen.prepare_images(run, src.width, src.height, background=bg)
        for t in run:
            if t.error:
                warn(f"{t.label}: {t.error}; skipping it")
        written = []

        def write(t: gen.Target, result) -> None:
            if plan.parallel is not None and not plan.parallel.writes:
                return  # --parallel: rank 0 writes
            write_artifact(t.output, result, force=force)
            written.append(t)
            if as_json:
                emit_json({"output": t.output if t.output != "-" else "<stdout>", "kind": "latent", "row": t.row,
                           "first_frame": t.first_frame, "prompt": t.prompt})
            elif t.output != "-":
                info(f"wrote {t.output}")

        todo = sum(1 for t in run if not t.error)
        with progress("denoising", todo * plan.num_steps, "target-steps") as advance:
            gen.run_denoise(bundle, plan, src, run, on_result=write, speed=speed, progress=advance, notice=notice)
        if share.active:
            row_summary(share, targets, len(written), as_json)
            return
        failed = [t for t in targets if t.error]
        if failed:
            rows = "; ".join(f"{t.label}: {t.error}" for t in failed)
            raise BadInputError(f"{len(failed)} of {len(targets)} targets failed ({rows}); {len(written)} written")
