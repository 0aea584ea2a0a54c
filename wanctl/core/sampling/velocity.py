"""The velocity field v(x, s) the solvers integrate, read from the run plan.

``VelocityModel`` turns a model bundle, text embeddings and a family condition into a callable:
it applies the conditioning, and takes the expert, the guidance scale and the model timestep of
every call from the plan step the run is at (``RunState.step``). It decides nothing itself: a
call at a level outside the current step is a bug, and raises.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from wanctl.core import trace
from wanctl.core.sampling.conditioning import Condition
from wanctl.core.sampling.plan import PlanStep, RunPlan
from wanctl.core.sampling.schedule import model_timestep

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from wanctl.core.models.bundle import ModelBundle


@dataclass
class ModelCall:
    step: int
    t: int
    expert: str
    batch: int
    frames: int
    branch: str  # "cond" | "uncond" | "batched" (all branches of an evaluation in one forward)


@dataclass
class RunState:
    """The mutable state of one execution of a plan: the step it is at, every DiT forward made
    (the one call log), and the latest prediction (x, s, v) for x0 / eps estimates."""

    plan: RunPlan
    index: int = 0
    calls: list[ModelCall] = field(default_factory=list)
    last: tuple | None = None

    @property
    def step(self) -> PlanStep:
        return self.plan.steps[self.index]


@dataclass
class VelocityModel:
    """v(x, s) for a batch of videos under one condition.

    ``embeds`` and ``negative`` are (B, L, D) text embeddings; ``negative`` is needed when a
    plan step uses CFG. ``rope_reverse`` flags batch rows whose temporal RoPE positions run
    backwards (the bidirectional flf2v pass).
    """

    bundle: "ModelBundle"
    state: RunState
    embeds: "torch.Tensor"
    condition: Condition
    negative: "torch.Tensor | None" = None
    rope_reverse: tuple | None = None

    def _forward(self, step: PlanStep, t: int, inp, ts, emb, branch: str):
        from wanctl.core.sampling.rope import reversed_time_rope

        dit = self.bundle.transformer(step.expert)
        call = ModelCall(step.index, t, step.expert, int(inp.shape[0]), int(inp.shape[2]), branch)
        self.state.calls.append(call)
        trace.event("model_call", **call.__dict__)
        flags = None
        if self.rope_reverse:
            flags = list(self.rope_reverse) * (inp.shape[0] // len(self.rope_reverse))
        # the branch name keys the step caches' state (diffusers' cache_context) and calibration
        dit._wanctl_branch = branch
        with reversed_time_rope(dit, flags), dit.cache_context(branch):
            return dit(
                hidden_states=inp.to(dit.dtype),
                timestep=ts,
                encoder_hidden_states=emb.to(inp.device, dit.dtype),
                return_dict=False,
            )[0].float()

    def __call__(self, x: "torch.Tensor", s: float) -> "torch.Tensor":
        import torch

        step = self.state.step
        lo, hi = sorted((step.s, step.s_next))
        if not lo - 1e-9 <= s <= hi + 1e-9:
            raise RuntimeError(f"model evaluated at s = {s} outside plan step {step.index} [{lo}, {hi}]")
        t = step.t if s == step.s else step.t_next if s == step.s_next else model_timestep(s)
        g = step.guidance
        inp = self.condition.model_input(x)
        ts = self.condition.timestep(t, x)
        with torch.inference_mode():
            if g == 1.0:
                v = self._forward(step, t, inp, ts, self.embeds, "cond")
            elif self.state.plan.branches_batched:
                both = self._forward(step, t, torch.cat([inp, inp]), torch.cat([ts, ts]),
                                     torch.cat([self.embeds, self.negative]), "batched")
                v_cond, v_uncond = both.chunk(2)
                v = v_uncond + g * (v_cond - v_uncond)
            elif self.state.plan.parallel is not None and self.state.plan.parallel.cfg == 2:
                from wanctl.core.models.parallel import gather_branches

                # CFG parallelism: this rank's cfg group computes one branch; both are gathered
                par = self.state.plan.parallel
                mine = (self._forward(step, t, inp, ts, self.embeds, "cond") if par.cfg_rank == 0
                        else self._forward(step, t, inp, ts, self.negative, "uncond"))
                v_cond, v_uncond = gather_branches(par, mine)
                v = v_uncond + g * (v_cond - v_uncond)
            else:
                v_cond = self._forward(step, t, inp, ts, self.embeds, "cond")
                v_uncond = self._forward(step, t, inp, ts, self.negative, "uncond")
                v = v_uncond + g * (v_cond - v_uncond)
        v = self.condition.mask_velocity(v)
        self.state.last = (x, s, v)
        return v


def seeded_noise(shape: tuple[int, ...], seed: int) -> "torch.Tensor":
    """Gaussian noise drawn on the CPU from a seeded generator (same on every device)."""
    import torch

    g = torch.Generator(device="cpu").manual_seed(int(seed))
    return torch.randn(shape, generator=g, dtype=torch.float32)
