"""`wanctl invert`: clean latent -> noise artifact (flow ODE integrated backwards)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from wanctl.commands._options import (
    DeviceOpt,
    DryRunOpt,
    DtypeOpt,
    ForceOpt,
    GridOpt,
    JsonOpt,
    LoraHighOpt,
    LoraLowOpt,
    LoraOpt,
    LoraUnfusedOpt,
    ModelOpt,
    NoCacheOpt,
    OffloadOpt,
    ParallelOpt,
    PresetOpt,
    ShiftOpt,
    SigmasOpt,
    StepsOpt,
    TextEncoderDeviceOpt,
    VaeTilingOpt,
    WeightsDtypeOpt,
    load_options,
    sampling_options,
)
from wanctl.commands._report import (
    describe_output,
    emit_json,
    handle_errors,
    info,
    notice,
    print_plan,
    progress,
)


@handle_errors
def invert(
    latent: Annotated[str, typer.Argument(help="Clean latent artifact from `wanctl encode` (or - for stdin).", show_default=False)],
    prompt: Annotated[str, typer.Option("--prompt", "-p", help="Prompt describing the SOURCE video.", show_default=False)],
    output: Annotated[Optional[str], typer.Option("--output", "-o", help="Noise artifact: .safetensors, .zarr, or - for stdout.", show_default=False)] = None,
    model: ModelOpt = None,
    lora: LoraOpt = None,
    lora_high: LoraHighOpt = None,
    lora_low: LoraLowOpt = None,
    lora_unfused: LoraUnfusedOpt = False,
    steps: StepsOpt = None,
    shift: ShiftOpt = None,
    grid: GridOpt = None,
    sigmas: SigmasOpt = None,
    preset: PresetOpt = None,
    solver: Annotated[Optional[str], typer.Option("--solver", rich_help_panel="Sampling", show_default=False, help="euler (1 call/step; the default), midpoint (2 calls/step, 2nd order) or fireflow (~1 call/step, 2nd order).")] = None,
    refine: Annotated[int, typer.Option("--refine", min=0, rich_help_panel="Sampling", help="Euler only: K fixed-point iterations per step (1+K calls/step) so that an Euler denoise step undoes each inversion step exactly.")] = 0,
    strength: Annotated[float, typer.Option("--strength", rich_help_panel="Sampling", help="Invert only up to this noise level (partial inversion); 1 = all the way.")] = 1.0,
    unconditional: Annotated[bool, typer.Option("--unconditional", help="Invert with text only (no first-frame condition); the default keeps the source's first frame as the condition.")] = False,
    save_trajectory: Annotated[Optional[str], typer.Option("--save-trajectory", help="Also write every step's latent to this artifact (.zarr recommended).")] = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = "bf16",
    weights_dtype: WeightsDtypeOpt = "auto",
    no_cache: NoCacheOpt = False,
    offload: OffloadOpt = "none",
    parallel: ParallelOpt = None,
    text_encoder_device: TextEncoderDeviceOpt = None,
    vae_tiling: VaeTilingOpt = False,
    dry_run: DryRunOpt = False,
    force: ForceOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Invert a clean latent to noise, once, so it can be denoised with many new first frames.

    Integrates the flow ODE from s = 0 up to the grid's top level with the conditional velocity
    (no CFG) and the source prompt. Deterministic (no seed). The noise records its grid, solver,
    prompt, model fingerprints and source, and `wanctl denoise` uses that grid by default.
    Results are cached (keyed by the latent's content, the model and every parameter): running
    the same inversion again returns at once without loading the DiT.

    Examples:

      wanctl invert clip.safetensors -p "a red circle moving right" -o noise.safetensors

      wanctl invert clip.safetensors -p "..." --solver euler --refine 5 --steps 30 -o noise.safetensors

      wanctl invert clip.safetensors -p "..." --strength 0.7 --save-trajectory traj.zarr -o noise.safetensors
    """
    from wanctl.core.errors import BadInputError
    from wanctl.core.files import together
    from wanctl.core.io import cache, comfy
    from wanctl.core.io.artifact import check_output, now_iso, write_artifact
    from wanctl.core.io.inputs import read_input
    from wanctl.core.models.bundle import open_bundle
    from wanctl.core.sampling.plan import with_parallel
    from wanctl.core.workflows.invert import inversion_key, plan_invert, run_inversion

    if output is None and not dry_run:
        raise BadInputError("missing -o/--output (or use --dry-run)")
    if output is not None:
        check_output(output, force)
    if save_trajectory:
        if output is not None and save_trajectory == output:
            raise BadInputError("--save-trajectory must not be the same file as -o")
        check_output(save_trajectory, force)
    so = sampling_options(preset, steps=steps, shift=shift, grid=grid, sigmas=sigmas, solver=solver)
    art = read_input(latent, kinds=("latent",), notice=notice)
    comfy.check_model_given(art, model)
    opts = load_options(device, dtype=dtype, no_cache=no_cache, offload=offload,
                        text_encoder_device=text_encoder_device, vae_tiling=vae_tiling,
                        lora=lora, lora_high=lora_high, lora_low=lora_low, lora_unfused=lora_unfused,
                        weights_dtype=weights_dtype, parallel=parallel)
    bundle = open_bundle(model, family=art.family, recorded=art.meta.get("model"), notice=notice, options=opts)
    art = comfy.to_normalized(art, bundle.spec)
    plan = plan_invert(bundle, art, steps=so.steps, shift=so.shift, grid=so.grid, sigmas=so.sigmas, strength=strength,
                       solver=so.solver or "euler", refine=refine)
    plan = with_parallel(plan, bundle.spec, opts.parallel, launched=not dry_run)
    if dry_run:
        print_plan(plan, as_json)
        return
    schedule = plan.schedule
    total = plan.num_steps
    use_cache = cache.enabled(no_cache)
    key = inversion_key(bundle, art, plan, prompt=prompt, conditional=not unconditional) if use_cache else None
    noise = cache.get("inversions", key, notice) if use_cache and not save_trajectory else None
    if noise is not None:
        noise.meta["provenance"]["created"] = now_iso()
        noise.meta["provenance"]["inputs"][0]["path"] = latent if latent != "-" else "<stdin>"
        noise.meta["params"]["cache"] = "hit"
        calls, note = 0, "from the cache"
    else:
        with progress("inverting", total, "steps") as advance:
            res = run_inversion(bundle, art, plan, prompt=prompt, conditional=not unconditional,
                                save_trajectory=bool(save_trajectory), progress=advance, notice=notice)
        noise, calls, note = res.noise, res.calls, f"{res.calls} model calls"
        if use_cache and (plan.parallel is None or plan.parallel.writes):
            cache.put("inversions", key, noise)
    if plan.parallel is not None and not plan.parallel.writes:
        return  # --parallel: rank 0 writes
    with together():  # the noise and its trajectory: both or neither
        if save_trajectory and res.trajectory is not None:  # (a cache hit never has a trajectory)
            write_artifact(save_trajectory, res.trajectory, force=force)
        write_artifact(output, noise, force=force)
    p = noise.meta["params"]
    if as_json:
        emit_json({"output": describe_output(output), "kind": "noise", "noise_level": schedule.s_max, "steps": total,
                   "solver": plan.solver, "model_calls": calls, "conditioning": p["conditioning"], "cached": calls == 0})
    else:
        info(f"wrote {describe_output(output)}: noise at s = {schedule.s_max:.4f} after {total} {plan.solver} steps "
             f"({note}, {p['conditioning']} conditioning)")
