"""Text-to-video with a visible step plan, half-frame generation and CFG truncation (SPEC 5.3, 5.4).

Half-frame: the high-noise expert (or, for a dense model, every step above ``half_frame_until``)
denoises ceil(T/2) latent frames from fresh noise of that length; at the switch the latent is
completed back to T frames and the rest of the run works on T frames. A multistep solver's
history does not survive a change of frame count, so the run is two solver calls: the second
restarts its history (UniPC's first step after the switch is first order).

Completion modes, from half frame i to slots 2i and 2i+1 (cut to T):

* ``repeat``: both slots get frame i (duplicates the noise too; the seed notes' method).
* ``interpolate``: slot 2i+1 is the mean of frames i and i+1 (lowers the noise variance there).
* ``renoise``: kept frames keep their state; an inserted frame is rebuilt at the switch level s
  as ``(1-s) * x0 + a * eps``: x0 is the mean of its neighbours' x0 predictions (from the last
  high-noise model call), eps is fresh seeded noise, and the amplitude a (per channel) gives the
  frame the same variance as its neighbours. For a model whose predictions are on-distribution
  a is close to s; calibrating it keeps the latent on the noise level the low-noise expert
  expects for any model (``interpolate`` lowers it by up to sqrt(2)).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from wanctl.core.sampling.conditioning import Condition
from wanctl.core.errors import BadInputError
from wanctl.core.sampling.flops import dit_flops, tokens_for
from wanctl.core.sampling.velocity import Guidance, VelocityModel, seeded_noise
from wanctl.core.sampling.schedule import Schedule, model_timestep, route_expert
from wanctl.core.sampling.solvers import CALLS_PER_STEP, get_solver

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from wanctl.core.models.bundle import ModelBundle

COMPLETIONS = ("repeat", "interpolate", "renoise")
RENOISE_SEED_OFFSET = 1_000_003  # the inserted frames' noise: seed + this


@dataclass
class StepPlan:
    index: int
    s: float
    t: int
    expert: str
    frames: int  # latent frames the model sees
    cfg: bool
    forwards: int  # DiT forward passes in this step
    flops: float


@dataclass
class T2VPlan:
    schedule: Schedule
    steps: list[StepPlan]
    latent_frames: int
    half_frames: int | None
    switch: int | None  # first step after the high-noise phase (half-frame switch or expert switch)
    completion: str | None
    solver: str
    cfg_batch: bool
    flops: float
    flops_plain: float
    notes: list[str] = field(default_factory=list)

    @property
    def half_frame(self) -> bool:
        return self.half_frames is not None

    @property
    def relative_flops(self) -> float:
        return self.flops / self.flops_plain

    def to_meta(self) -> dict:
        return {
            "half_frame": self.half_frame,
            "completion": self.completion,
            "half_frames": self.half_frames,
            "latent_frames": self.latent_frames,
            "switch_step": self.switch,
            "switch_level": self.schedule.sigmas[self.switch] if self.switch is not None else None,
            "cfg_steps": [p.index for p in self.steps if p.cfg],
            "forwards": sum(p.forwards for p in self.steps),
            "relative_flops": round(self.relative_flops, 4),
        }


def _switch_index(schedule: Schedule, boundary: float | None, until: float | None) -> int | None:
    """First step of the low-noise phase: by expert routing, or by an explicit level."""
    for i, s in enumerate(schedule.sigmas[:-1]):
        if until is not None:
            if s < until:
                return i
        elif route_expert(model_timestep(s), boundary) != "transformer":
            return i
    return None


def plan_t2v(
    bundle: "ModelBundle",
    schedule: Schedule,
    *,
    frames: int,
    width: int,
    height: int,
    guidance: Guidance,
    solver: str = "unipc",
    half_frame: bool = False,
    completion: str = "renoise",
    half_frame_until: float | None = None,
    cfg_truncate_steps: int = 0,
    cfg_truncate_high_noise_steps: int = 0,
    cfg_batch: bool = False,
    boundary: float | None = None,
) -> T2VPlan:
    fam = bundle.family
    get_solver(solver)
    if completion not in COMPLETIONS:
        raise BadInputError(f"unknown completion {completion!r}; use one of {', '.join(COMPLETIONS)}")
    if cfg_truncate_steps < 0 or cfg_truncate_high_noise_steps < 0:
        raise BadInputError("CFG truncation step counts must be >= 0")
    n = schedule.num_steps
    T = fam.latent_frames(frames)
    lh, lw = height // fam.stride[1], width // fam.stride[2]
    cfg_dit = bundle.spec.configs["transformer"]
    patch = tuple(cfg_dit.get("patch_size", (1, 2, 2)))
    notes = []
    if half_frame and fam.experts == 1 and half_frame_until is None:
        raise BadInputError(
            f"{fam.name} has one expert, so there is no expert switch: give --half-frame-until S "
            "(the noise level at which to complete the frames, e.g. 0.9)"
        )
    if half_frame_until is not None and not half_frame:
        raise BadInputError("--half-frame-until needs --half-frame")
    if half_frame_until is not None and not 0 < half_frame_until < 1:
        raise BadInputError("--half-frame-until must be in (0, 1)")
    if half_frame and T < 2:
        raise BadInputError("--half-frame needs at least 5 frames (2 latent frames)")
    switch = _switch_index(schedule, boundary, half_frame_until if half_frame else None)
    if half_frame and switch in (None, 0):
        raise BadInputError("--half-frame needs steps on both sides of the switch; this grid has none "
                            f"{'below' if switch is None else 'above'} it")
    high_steps = switch if switch is not None else n
    if cfg_truncate_high_noise_steps > high_steps:
        raise BadInputError(f"--cfg-truncate-high-noise-steps {cfg_truncate_high_noise_steps} exceeds the {high_steps} high-noise steps")
    if cfg_truncate_steps > n:
        raise BadInputError(f"--cfg-truncate-steps {cfg_truncate_steps} exceeds the {n} steps")
    cfg_off = set(range(n - cfg_truncate_steps, n))
    cfg_off |= set(range(high_steps - cfg_truncate_high_noise_steps, high_steps))
    half = (T + 1) // 2 if half_frame else None
    per_step_calls = int(CALLS_PER_STEP[solver])
    steps = []
    for i, s in enumerate(schedule.sigmas[:-1]):
        t = model_timestep(s)
        expert = route_expert(t, boundary)
        if half_frame and fam.experts == 1:
            expert = "transformer"
        g = guidance.for_expert(expert)
        cfg = g != 1.0 and i not in cfg_off
        frames_i = half if (half_frame and i < switch) else T
        calls = per_step_calls + (1 if solver == "fireflow" and (i == 0 or (half_frame and i == switch)) else 0)
        branches = 2 if cfg else 1
        forwards = calls * (1 if cfg_batch and cfg else branches)
        flops = calls * dit_flops(cfg_dit, tokens_for(frames_i, lh, lw, patch), batch=branches)
        steps.append(StepPlan(i, s, t, expert, frames_i, cfg, forwards, flops))
    plain = sum(
        (per_step_calls + (1 if solver == "fireflow" and i == 0 else 0))
        * dit_flops(cfg_dit, tokens_for(T, lh, lw, patch), batch=2 if guidance.for_expert(route_expert(model_timestep(s), boundary)) != 1.0 else 1)
        for i, s in enumerate(schedule.sigmas[:-1])
    )
    if half_frame and solver == "unipc":
        notes.append(f"UniPC history restarts at the switch (step {switch + 1}): that step is first order")
    return T2VPlan(schedule, steps, T, half, switch, completion if half_frame else None, solver, cfg_batch,
                   sum(p.flops for p in steps), plain, notes)


# --------------------------------------------------------------------------- completion


def _slot_sources(T: int, H: int) -> list[tuple[int, int]]:
    """For each of T slots: (left, right) half-frame indices; equal for kept/repeated frames."""
    out = []
    for j in range(T):
        a = j // 2
        b = a + 1 if (j % 2 == 1 and a + 1 < H) else a
        out.append((a, b))
    return out


def complete_frames(
    x: "torch.Tensor",
    T: int,
    mode: str,
    *,
    x0: "torch.Tensor | None" = None,
    s: float | None = None,
    seed: int | None = None,
) -> "torch.Tensor":
    """Complete a (B, C, H, h, w) half-length latent to T frames (see the module docstring)."""
    import torch

    H = x.shape[2]
    pairs = _slot_sources(T, H)
    if mode == "repeat":
        return torch.stack([x[:, :, j // 2] for j in range(T)], dim=2)
    if mode == "interpolate":
        return torch.stack([0.5 * (x[:, :, a] + x[:, :, b]) for a, b in pairs], dim=2)
    if mode == "renoise":
        if x0 is None or s is None or seed is None:
            raise ValueError("renoise needs x0, s and seed")
        b_, c, _, h, w = x.shape
        fresh = seeded_noise((b_, c, T, h, w), seed + RENOISE_SEED_OFFSET).to(x.device)
        var_x = x.var(dim=(3, 4))  # (B, C, H): each kept frame's level, per channel
        slots = []
        for j, (a, b) in enumerate(pairs):
            if j % 2 == 0:
                slots.append(x[:, :, a])  # a kept frame: its own state at level s
                continue
            signal = (1.0 - s) * 0.5 * (x0[:, :, a] + x0[:, :, b])
            # noise energy so the new frame sits at its neighbours' level (s * 1 for a model whose
            # predictions are on-distribution; calibrated here so that it holds for any model)
            target = 0.5 * (var_x[:, :, a] + var_x[:, :, b])
            amp = (target - signal.var(dim=(2, 3))).clamp(min=0).sqrt()[..., None, None]
            slots.append(signal + amp * fresh[:, :, j])
        return torch.stack(slots, dim=2)
    raise BadInputError(f"unknown completion {mode!r}")


# --------------------------------------------------------------------------- the run


@dataclass
class T2VResult:
    latents: "torch.Tensor"
    calls: list  # (expert, batch, frames) per DiT forward
    switch_state: "torch.Tensor | None" = None  # the completed latent at the switch (half-frame)


def run_t2v(
    bundle: "ModelBundle",
    plan: T2VPlan,
    *,
    embeds: "torch.Tensor",
    negative: "torch.Tensor | None",
    guidance: Guidance,
    seed: int,
    width: int,
    height: int,
    boundary: float | None,
    progress: Callable[[int], None] | None = None,
    keep_switch_state: bool = False,
) -> T2VResult:
    """Run a planned text-to-video generation; returns the final latents (1, C, T, h, w)."""
    fam = bundle.family
    device = bundle.device
    sched = plan.schedule
    cfg_off = frozenset(p.index for p in plan.steps if not p.cfg)
    lh, lw = height // fam.stride[1], width // fam.stride[2]
    solver = get_solver(plan.solver)
    calls: list = []

    def model_for(expert: str | None) -> VelocityModel:
        m = VelocityModel(bundle, embeds.to(device), Condition(), guidance,
                          negative.to(device) if negative is not None else None, boundary,
                          schedule=sched, cfg_off=cfg_off, cfg_batch=plan.cfg_batch, expert=expert)
        m.calls = calls
        return m

    k = plan.switch
    captured: dict = {}

    def tick(i, x, v, s, s_next):
        if keep_switch_state and k is not None and not plan.half_frame and i == k - 1:
            captured["x"] = x.clone()  # the plain run's state at the switch level
        if progress:
            progress(1)

    sigmas = list(sched.sigmas)
    if not plan.half_frame:
        x = seeded_noise((1, fam.latent_channels, plan.latent_frames, lh, lw), seed).to(device)
        return T2VResult(solver(model_for(None), x, sigmas, callback=tick), calls, captured.get("x"))
    high = model_for("transformer")
    x = seeded_noise((1, fam.latent_channels, plan.half_frames, lh, lw), seed).to(device)
    x = solver(high, x, sigmas[: k + 1], callback=tick)
    x_in, s_in, v_in = high.last
    x0 = x_in - s_in * v_in  # x0 prediction of the last high-noise model call
    x = complete_frames(x, plan.latent_frames, plan.completion, x0=x0, s=sigmas[k], seed=seed)
    switch_state = x.clone() if keep_switch_state else None
    # dense models keep their single expert; A14B routes every later step to the low-noise one
    x = solver(model_for(None), x, sigmas[k:], callback=tick)
    return T2VResult(x, calls, switch_state)
