"""Runs a run plan: the one sampling loop every generating command goes through.

The plan is cut into segments at its restart points (the first step, a change of frame count);
each segment is one solver call over the segment's levels, so a multistep solver's history
starts afresh where the plan says. Before a segment starts, ``at_restart`` may transform the
state (half-frame completion) and the step caches are configured for that segment from the
plan's evaluation counts. The run state tracks the step the solver is at, so the velocity
field reads its expert, guidance and timestep from the plan.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from wanctl.core.errors import BadInputError
from wanctl.core.sampling.plan import PlanStep, RunPlan
from wanctl.core.sampling.solvers import SOLVERS, euler_refined
from wanctl.core.sampling.velocity import RunState

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from wanctl.core.models.bundle import ModelBundle
    from wanctl.core.sampling.conditioning import Condition

Field = Callable[["torch.Tensor", float], "torch.Tensor"]
FINITE_CHECK_EVERY = 4  # steps between host reads of the non-finite flag (one reduction per step)


def execute(
    plan: RunPlan,
    field: Field,
    x: "torch.Tensor",
    state: RunState,
    *,
    on_step: Callable[[PlanStep, "torch.Tensor"], None] | None = None,
    at_restart: Callable[[PlanStep, "torch.Tensor"], "torch.Tensor"] | None = None,
    caches=None,
) -> "torch.Tensor":
    """Integrate ``field`` over the plan from ``x``; returns the final state.

    ``on_step(step, x)`` runs after each step with the new state. ``caches`` (from
    ``sampling.acceleration.accelerated``) is told where each segment starts.
    """
    if not plan.steps:  # video-to-video at strength 0: the source as it is
        return x
    levels = plan.levels
    finite = _FiniteWatch(plan)
    for start, end in plan.segments():
        if start > 0 and at_restart is not None:
            x = at_restart(plan.steps[start], x)
        if caches is not None:
            caches.begin_segment(plan, start, end)
        state.index = start

        def advance(i, x_new, v, s, s_next, start=start):
            k = start + i
            finite.step(k, x_new)
            if on_step is not None:
                on_step(plan.steps[k], x_new)
            state.index = min(k + 1, plan.num_steps - 1)

        seg = levels[start : end + 1]
        if plan.refine:
            x = euler_refined(field, x, seg, plan.refine, callback=advance)
        else:
            x = SOLVERS[plan.solver](field, x, seg, callback=advance)
    finite.check(plan.num_steps - 1)
    return x


class _FiniteWatch:
    """Stops a run whose latent went NaN / inf: one reduction per step kept on the device, read
    on the host every few steps and at the end (so a GPU run adds no per-step sync)."""

    def __init__(self, plan: RunPlan):
        self.plan, self.bad, self.first_unchecked = plan, None, 0

    def step(self, k: int, x) -> None:
        import torch

        flag = ~torch.isfinite(x).all()
        self.bad = flag if self.bad is None else self.bad | flag
        if (k + 1) % FINITE_CHECK_EVERY == 0:
            self.check(k)

    def check(self, k: int) -> None:
        if self.bad is not None and bool(self.bad):
            lo = self.first_unchecked + 1
            where = f"step {k + 1}" if lo == k + 1 else f"steps {lo}-{k + 1}"
            raise BadInputError(
                f"the latent became NaN or infinite in {where} of {self.plan.num_steps}; nothing was written "
                "(try --dtype bf16 or fp32, a lower --guidance, more --steps or another --solver)")
        self.first_unchecked = k + 1


def sample(bundle: "ModelBundle", plan: RunPlan, x: "torch.Tensor", condition: "Condition", embeds: "torch.Tensor",
           negative: "torch.Tensor | None" = None, *, caches=None, on_step=None) -> tuple["torch.Tensor", RunState]:
    """Run ``plan`` from ``x`` under one condition (pinned frames held in place before and
    after); returns the final state and the run state (its call log)."""
    from wanctl.core.sampling.velocity import VelocityModel

    state = RunState(plan)
    device = bundle.device
    model = VelocityModel(bundle, state, embeds.to(device), condition,
                          negative.to(device) if negative is not None else None)
    out = execute(plan, model, condition.pin(x.to(device)), state, on_step=on_step, caches=caches)
    return condition.pin(out), state
