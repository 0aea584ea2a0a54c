"""`wanctl invert`: clean latent -> noise artifact (flow ODE integrated backwards)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from wanctl.commands._common import (
    DeviceOpt,
    DtypeOpt,
    ForceOpt,
    GridOpt,
    JsonOpt,
    ModelOpt,
    ShiftOpt,
    StepsOpt,
    describe_output,
    emit_json,
    handle_errors,
    info,
    load_options,
    notice,
    progress,
)


@handle_errors
def invert(
    latent: Annotated[str, typer.Argument(help="Clean latent artifact from `wanctl encode` (or - for stdin).", show_default=False)],
    prompt: Annotated[str, typer.Option("--prompt", "-p", help="Prompt describing the SOURCE video.", show_default=False)],
    output: Annotated[str, typer.Option("--output", "-o", help="Noise artifact: .safetensors, .zarr, or - for stdout.", show_default=False)],
    model: ModelOpt = None,
    steps: StepsOpt = None,
    shift: ShiftOpt = None,
    grid: GridOpt = "unipc",
    solver: Annotated[str, typer.Option("--solver", help="euler (1 call/step), midpoint (2 calls/step, 2nd order) or fireflow (~1 call/step, 2nd order).")] = "euler",
    refine: Annotated[int, typer.Option("--refine", help="Euler only: K fixed-point iterations per step (1+K calls/step) so that an Euler denoise step undoes each inversion step exactly.")] = 0,
    strength: Annotated[float, typer.Option("--strength", help="Invert only up to this noise level (partial inversion); 1 = all the way.")] = 1.0,
    unconditional: Annotated[bool, typer.Option("--unconditional", help="Invert with text only (no first-frame condition); the default keeps the source's first frame as the condition.")] = False,
    save_trajectory: Annotated[Optional[str], typer.Option("--save-trajectory", help="Also write every step's latent to this artifact (.zarr recommended).")] = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = "bf16",
    force: ForceOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Invert a clean latent to noise, once, so it can be denoised with many new first frames.

    Integrates the flow ODE from s = 0 up to the grid's top level with the conditional velocity
    (no CFG) and the source prompt. Deterministic (no seed). The noise records its grid, solver,
    prompt, model fingerprints and source, and `wanctl denoise` uses that grid by default.

    Examples:

      wanctl invert clip.safetensors -p "a red circle moving right" -o noise.safetensors

      wanctl invert clip.safetensors -p "..." --solver euler --refine 5 --steps 30 -o noise.safetensors

      wanctl invert clip.safetensors -p "..." --strength 0.7 --save-trajectory traj.zarr -o noise.safetensors
    """
    from wanctl.core.artifact import check_output, read_artifact, write_artifact
    from wanctl.core.inversion import run_inversion
    from wanctl.core.models import open_bundle
    from wanctl.core.schedule import make_schedule
    from wanctl.core.solvers import get_solver

    check_output(output, force)
    if save_trajectory:
        check_output(save_trajectory, force)
    get_solver(solver, inversion=True)
    art = read_artifact(latent, kinds=("latent",))
    opts = load_options(device, dtype=dtype)
    bundle = open_bundle(model, family=art.family, recorded=art.meta.get("model"), notice=notice, options=opts)
    pre = bundle.family.preset
    schedule = make_schedule(steps or pre.steps, shift if shift is not None else pre.shift, grid, strength)
    total = schedule.num_steps
    with progress("inverting", total, "steps") as advance:
        res = run_inversion(
            bundle, art, prompt=prompt, schedule=schedule, solver=solver, refine=refine,
            conditional=not unconditional, save_trajectory=bool(save_trajectory), progress=advance, notice=notice,
        )
    write_artifact(output, res.noise, force=force)
    if save_trajectory and res.trajectory is not None:
        write_artifact(save_trajectory, res.trajectory, force=force)
    p = res.noise.meta["params"]
    if as_json:
        emit_json({"output": describe_output(output), "kind": "noise", "noise_level": schedule.s_max,
                   "steps": total, "solver": solver, "model_calls": res.calls, "conditioning": p["conditioning"]})
    else:
        info(f"wrote {describe_output(output)}: noise at s = {schedule.s_max:.4f} after {total} {solver} steps "
             f"({res.calls} model calls, {p['conditioning']} conditioning)")
