"""The sampling engine every generating command uses.

``VelocityModel`` turns a model bundle, text embeddings and a family condition into the
``v(x, s)`` callable the solvers integrate: it applies the conditioning (SPEC section 4), routes
A14B experts by ``t >= boundary * 1000``, and does classifier-free guidance per expert.
``denoise`` and ``invert`` run a solver over a schedule.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from wanctl.core import trace
from wanctl.core.sampling.conditioning import Condition
from wanctl.core.sampling.schedule import Schedule, model_timestep, route_expert
from wanctl.core.sampling.solvers import euler_refined, get_solver

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from wanctl.core.models.bundle import ModelBundle


@dataclass(frozen=True)
class Guidance:
    """CFG scale per expert: ``high`` for the high-noise expert (the only one of dense models)."""

    high: float
    low: float

    def for_expert(self, expert: str) -> float:
        return self.high if expert == "transformer" else self.low

    def to_meta(self) -> dict:
        return {"high_noise": self.high, "low_noise": self.low}


NO_GUIDANCE = Guidance(1.0, 1.0)


@dataclass
class VelocityModel:
    """v(x, s) for a batch: conditioning + expert routing + CFG.

    ``embeds`` and ``negative`` are (B, L, D) text embeddings; ``negative`` may be None when no
    step uses guidance. ``cfg_off`` names denoising steps (indices into ``schedule``) that use
    the conditional prediction only (CFG truncation). ``expert`` pins one expert instead of
    routing by t. ``last`` holds (x, s, v) of the latest call, for x0 / eps predictions.
    """

    bundle: "ModelBundle"
    embeds: "torch.Tensor"
    condition: Condition
    guidance: Guidance = NO_GUIDANCE
    negative: "torch.Tensor | None" = None
    boundary: float | None = None
    schedule: Schedule | None = None
    cfg_off: frozenset = frozenset()
    cfg_batch: bool = False
    expert: str | None = None
    rope_reverse: tuple | None = None  # per batch row: reversed temporal RoPE positions
    calls: list = field(default_factory=list)  # (expert, batch, frames) per DiT forward
    last: tuple | None = None

    def guidance_at(self, s: float, expert: str) -> float:
        if self.cfg_off and self.schedule is not None and self.schedule.step_of(s) in self.cfg_off:
            return 1.0
        return self.guidance.for_expert(expert)

    def _forward(self, expert: str, inp, ts, emb, branch: str = "cond"):
        from wanctl.core.sampling.rope import reversed_time_rope

        dit = self.bundle.transformer(expert)
        self.calls.append((expert, inp.shape[0], inp.shape[2]))
        trace.event("model_call", expert=expert, batch=int(inp.shape[0]), frames=int(inp.shape[2]), branch=branch)
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

        t = model_timestep(s)
        expert = self.expert or route_expert(t, self.boundary)
        g = self.guidance_at(s, expert)
        inp = self.condition.model_input(x)
        ts = self.condition.timestep(t, x)
        with torch.inference_mode():
            if g == 1.0:
                v = self._forward(expert, inp, ts, self.embeds)
            elif self.cfg_batch:
                both = self._forward(
                    expert, torch.cat([inp, inp]), torch.cat([ts, ts]), torch.cat([self.embeds, self.negative]), "cfg"
                )
                v_cond, v_uncond = both.chunk(2)
                v = v_uncond + g * (v_cond - v_uncond)
            else:
                v_cond = self._forward(expert, inp, ts, self.embeds, "cond")
                v_uncond = self._forward(expert, inp, ts, self.negative, "uncond")
                v = v_uncond + g * (v_cond - v_uncond)
        v = self.condition.mask_velocity(v)
        self.last = (x, s, v)
        return v


def denoise(
    model: Callable,
    x: "torch.Tensor",
    schedule: Schedule,
    solver: str = "unipc",
    condition: Condition | None = None,
    callback=None,
) -> "torch.Tensor":
    """Integrate from the schedule's top level down to s = 0."""
    cond = condition or Condition()
    x = cond.pin(x)
    x = get_solver(solver)(model, x, list(schedule.sigmas), callback=callback)
    return cond.pin(x)


def invert(
    model: Callable,
    x0: "torch.Tensor",
    schedule: Schedule,
    solver: str = "euler",
    refine: int = 0,
    condition: Condition | None = None,
    callback=None,
) -> "torch.Tensor":
    """Integrate the flow ODE from the clean latent (s = 0) up to the schedule's top level,
    visiting the denoising grid's points in reverse."""
    cond = condition or Condition()
    x = cond.pin(x0)
    sigmas = schedule.reversed()
    if refine:
        if solver != "euler":
            from wanctl.core.errors import BadInputError

            raise BadInputError("--refine applies to the euler solver only")
        x = euler_refined(model, x, sigmas, refine, callback=callback)
    else:
        x = get_solver(solver, inversion=True)(model, x, sigmas, callback=callback)
    return cond.pin(x)


def seeded_noise(shape: tuple[int, ...], seed: int) -> "torch.Tensor":
    """Gaussian noise drawn on the CPU from a seeded generator (same on every device)."""
    import torch

    g = torch.Generator(device="cpu").manual_seed(int(seed))
    return torch.randn(shape, generator=g, dtype=torch.float32)
