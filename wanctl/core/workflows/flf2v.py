"""First-last-frame to video on i2v-a14b, forward-only or with a real bidirectional sampler (SPEC 5.5).

Forward-only FLF2V is the i2v 36-channel condition built from the pixel video
[first, zeros..., last] (what diffusers' WanImageToVideoPipeline does with ``last_image``).

``--bidirectional`` adds a backward pass that sees different information: the DiT runs on the
time-flipped latent with a condition *re-encoded* from [last, zeros..., first], so the last frame
sits in the causal VAE's single-frame slot with a full mask (optionally with reversed temporal
RoPE positions). The two velocities are fused per step, ``uniform`` (0.5 / 0.5) or ``linear`` in
frame position (forward trusted near the first frame, backward near the last), and a stateless
solver (euler or midpoint) integrates the fused field.

``mode="mirror"`` reproduces the published construction: the *forward* condition flipped in
time, reversed RoPE, 0.5 / 0.5. The Wan DiT is equivariant to a joint permutation of tokens and
positions, so that backward pass equals the flipped forward pass and the result equals
forward-only sampling (tested): it is kept so the claim can be checked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from wanctl.core.sampling.conditioning import Condition, build_condition
from wanctl.core.errors import BadInputError
from wanctl.core.sampling.velocity import Guidance, VelocityModel, denoise

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch

    from wanctl.core.models.bundle import ModelBundle
    from wanctl.core.sampling.schedule import Schedule

FUSIONS = ("uniform", "linear")
MODES = ("reencode", "mirror")
BIDIRECTIONAL_SOLVERS = ("euler", "midpoint")


def fusion_weights(frames: int, fusion: str) -> "torch.Tensor":
    """Forward-pass weight per latent frame, shaped (1, 1, T, 1, 1); the backward gets 1 - w."""
    import torch

    if fusion == "uniform":
        w = torch.full((frames,), 0.5)
    elif fusion == "linear":
        w = torch.linspace(1.0, 0.0, frames) if frames > 1 else torch.full((1,), 0.5)
    else:
        raise BadInputError(f"unknown fusion {fusion!r}; use one of {', '.join(FUSIONS)}")
    return w.view(1, 1, frames, 1, 1)


def conditions(bundle: "ModelBundle", first, last, frames: int, width: int, height: int, mode: str) -> tuple[Condition, Condition]:
    """(forward condition, backward condition) for the bidirectional sampler."""
    fwd = build_condition(bundle, frames=frames, width=width, height=height, first=first, last=last)
    if mode == "mirror":
        return fwd, fwd.flip_time()
    if mode != "reencode":
        raise BadInputError(f"unknown bidirectional mode {mode!r}; use one of {', '.join(MODES)}")
    # the backward pass's own condition: the last frame is now frame 0 of a [last, 0..., first] video
    bwd = build_condition(bundle, frames=frames, width=width, height=height, first=last, last=first)
    return fwd, bwd


@dataclass
class BidirectionalVelocity:
    """v(x, s) = w * v_forward(x) + (1 - w) * flip(v_backward(flip(x))), per latent frame."""

    forward: VelocityModel | None  # used when the passes run separately
    backward: VelocityModel | None
    joint: VelocityModel | None  # one model over the batch [x, flip(x)] when batched
    weights: "torch.Tensor"

    def __call__(self, x: "torch.Tensor", s: float) -> "torch.Tensor":
        import torch

        xb = torch.flip(x, dims=[2])
        if self.joint is not None:
            vf, vb = self.joint(torch.cat([x, xb]), s).chunk(2)
        else:
            vf, vb = self.forward(x, s), self.backward(xb, s)
        w = self.weights.to(x.device)
        return w * vf + (1.0 - w) * torch.flip(vb, dims=[2])

    @property
    def calls(self) -> list:
        if self.joint is not None:
            return self.joint.calls
        return self.forward.calls + self.backward.calls


def run_flf2v(
    bundle: "ModelBundle",
    *,
    first: "np.ndarray",
    last: "np.ndarray",
    frames: int,
    width: int,
    height: int,
    embeds: "torch.Tensor",
    negative: "torch.Tensor | None",
    guidance: Guidance,
    schedule: "Schedule",
    noise: "torch.Tensor",
    solver: str = "unipc",
    bidirectional: bool = False,
    mode: str = "reencode",
    reverse_rope: bool = False,
    fusion: str = "uniform",
    batch_passes: bool = True,
    progress: Callable[[int], None] | None = None,
) -> tuple["torch.Tensor", list]:
    """Denoise ``noise`` (1, 16, T, h, w) into an FLF2V latent; returns (latents, DiT calls)."""
    import torch

    if bundle.family.conditioning != "mask-concat":
        raise BadInputError(f"flf2v needs an i2v-a14b model; {bundle.family.name} has no last-frame conditioning")
    device = bundle.device
    emb = embeds.to(device)
    neg = negative.to(device) if negative is not None else None
    tick = (lambda *a: progress(1)) if progress else None
    common = dict(guidance=guidance, boundary=bundle.spec.boundary, schedule=schedule)
    if not bidirectional:
        cond = build_condition(bundle, frames=frames, width=width, height=height, first=first, last=last).to(device)
        model = VelocityModel(bundle, emb, cond, negative=neg, **common)
        return denoise(model, noise.to(device), schedule, solver, cond, callback=tick), model.calls
    if solver not in BIDIRECTIONAL_SOLVERS:
        raise BadInputError(f"--bidirectional needs a stateless solver ({' or '.join(BIDIRECTIONAL_SOLVERS)}), not {solver}: "
                            "fused velocities break a multistep solver's history")
    if mode == "mirror":
        reverse_rope, fusion = True, "uniform"
    fwd, bwd = conditions(bundle, first, last, frames, width, height, mode)
    fwd, bwd = fwd.to(device), bwd.to(device)
    weights = fusion_weights(noise.shape[2], fusion)
    if batch_passes:
        joint = VelocityModel(bundle, emb.repeat(2, 1, 1), Condition.cat([fwd, bwd]),
                              negative=neg.repeat(2, 1, 1) if neg is not None else None, cfg_batch=True,
                              rope_reverse=(False, reverse_rope), **common)
        field = BidirectionalVelocity(None, None, joint, weights)
    else:
        f = VelocityModel(bundle, emb, fwd, negative=neg, **common)
        b = VelocityModel(bundle, emb, bwd, negative=neg, rope_reverse=(reverse_rope,), **common)
        field = BidirectionalVelocity(f, b, None, weights)
    out = denoise(field, noise.to(device), schedule, solver, None, callback=tick)
    return out, field.calls


def forwards_per_step(solver: str, bidirectional: bool, cfg: bool, batch_passes: bool) -> int:
    """DiT forward passes per step (the plan the tests check)."""
    from wanctl.core.sampling.solvers import CALLS_PER_STEP

    evals = int(CALLS_PER_STEP[solver])
    if not bidirectional:
        return evals * (2 if cfg else 1)
    if batch_passes:
        return evals  # forward + backward (x cond/uncond) in one batch
    return evals * 2 * (2 if cfg else 1)
