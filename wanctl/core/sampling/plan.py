"""The run plan: every per-run decision of a sampling run, made once, in one place.

``plan_run`` turns a command's options and a model into a :class:`RunPlan`: the list of steps,
each with its noise level s, model timestep t, expert, latent frame count, guidance scale (1.0
where CFG is off or truncated), model evaluations and DiT forwards, and the points where the
frame count changes or the solver's history restarts. ``--dry-run`` prints the plan, artifact
metadata records it, the step caches are configured from it (evaluations per expert) and
``sampling.executor.execute`` runs it. Nothing else decides those things.

No torch here: a plan is data (and ``--dry-run`` loads no weights).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from wanctl.core.errors import BadInputError
from wanctl.core.families import DEFAULT_NEGATIVE_PROMPT, FamilySpec
from wanctl.core.sampling.schedule import Schedule
from wanctl.core.sampling.solvers import INVERTIBLE, SOLVERS

if TYPE_CHECKING:  # pragma: no cover
    from wanctl.core.models.bundle import ModelSpec
    from wanctl.core.models.parallel import ParallelLayout

TASKS = ("t2v", "denoise", "invert", "flf2v")
COMPLETIONS = ("repeat", "interpolate", "renoise")
STATELESS_SOLVERS = ("euler", "midpoint")  # what a fused (bidirectional) field can be integrated with
HIGH, LOW = "transformer", "transformer_2"


@dataclass(frozen=True)
class Guidance:
    """CFG scale per expert: ``high`` for the high-noise expert (the only one of dense models)."""

    high: float
    low: float

    def for_expert(self, expert: str) -> float:
        return self.high if expert == HIGH else self.low

    def to_meta(self) -> dict:
        return {"high_noise": self.high, "low_noise": self.low}


NO_GUIDANCE = Guidance(1.0, 1.0)


def resolve_guidance(family: FamilySpec, preset, guidance: float | None, guidance_low: float | None) -> Guidance:
    """--guidance sets the high-noise expert (and the low one unless --guidance-low is given)."""
    if family.experts == 1 and guidance_low is not None:
        raise BadInputError(f"--guidance-low applies to two-expert models; {family.name} has one")
    for name, v in (("--guidance", guidance), ("--guidance-low", guidance_low)):
        if v is not None and not math.isfinite(v):
            raise BadInputError(f"{name} must be a finite number, got {v}")
    high = preset.guidance_high if guidance is None else guidance
    if guidance_low is not None:
        low = guidance_low
    else:
        low = guidance if guidance is not None else preset.guidance_low
    return Guidance(float(high), float(low))


def route_expert(t: int, boundary: float | None) -> str:
    """A14B expert routing: the high-noise expert while t >= boundary * 1000."""
    if boundary is None or t >= boundary * 1000:
        return HIGH
    return LOW


@dataclass(frozen=True)
class PlanStep:
    index: int
    s: float  # level the step starts from (direction of travel)
    s_next: float  # level it ends at
    t: int  # model timestep at s
    t_next: int  # model timestep at s_next (implicit steps evaluate there)
    expert: str  # "transformer" (high noise, or the only one) | "transformer_2"
    frames: int  # latent frames the model sees
    guidance: float  # CFG scale; 1.0 = the conditional prediction only (one branch)
    evaluations: int  # velocity evaluations in this step
    forwards: int  # DiT forward passes in this step (per batch of targets)
    restart: bool  # the solver starts afresh here (first step, frame-count change)

    @property
    def cfg(self) -> bool:
        return self.guidance != 1.0

    def to_json(self) -> dict:
        return {"index": self.index, "s": self.s, "s_next": self.s_next, "t": self.t, "t_next": self.t_next,
                "expert": self.expert,
                "frames": self.frames, "guidance": self.guidance, "evaluations": self.evaluations,
                "forwards": self.forwards, "restart": self.restart}


@dataclass(frozen=True)
class RunPlan:
    task: str
    family: str
    experts: tuple[str, ...]
    schedule: Schedule
    solver: str
    direction: str  # "denoise" (s falls to 0) | "invert" (s rises from 0)
    steps: tuple[PlanStep, ...]
    channels: int
    latent_frames: int  # frames of the result
    latent_size: tuple[int, int]  # (h, w) of the latent
    width: int
    height: int
    frames: int
    boundary: float | None
    guidance: Guidance
    negative_prompt: str | None  # None when no step uses CFG
    refine: int = 0
    batch: int = 1  # videos per DiT batch (targets of a denoise run)
    branches_batched: bool = False  # CFG branches (and bidirectional passes) as one batched forward
    passes: int = 1  # 2 for the bidirectional flf2v field
    half_frames: int | None = None
    completion: str | None = None
    flops: float = 0.0
    flops_plain: float = 0.0
    notes: tuple[str, ...] = field(default_factory=tuple)
    parallel: "ParallelLayout | None" = None  # --parallel: ranks, degrees, who writes (see with_parallel)

    # ------------------------------------------------------------------ derived views

    @property
    def num_steps(self) -> int:
        return len(self.steps)

    @property
    def uses_cfg(self) -> bool:
        return any(p.cfg for p in self.steps)

    @property
    def forwards(self) -> int:
        return sum(p.forwards for p in self.steps)

    @property
    def half_frame(self) -> bool:
        return self.half_frames is not None

    @property
    def switch(self) -> int | None:
        """First step on the full frame count after a half-frame phase."""
        return next((p.index for p in self.steps if p.restart and p.index > 0), None)

    @property
    def expert_switch(self) -> int | None:
        """First step of the low-noise expert (A14B), if the plan reaches it."""
        return next((p.index for p in self.steps if p.expert != self.steps[0].expert), None)

    @property
    def levels(self) -> list[float]:
        """The grid in the direction of travel (one more point than steps)."""
        return [p.s for p in self.steps] + [self.steps[-1].s_next]

    def segments(self) -> list[tuple[int, int]]:
        """(first step, end step) of each stretch the solver runs without a restart."""
        starts = [p.index for p in self.steps if p.restart]
        return list(zip(starts, starts[1:] + [self.num_steps]))

    def evaluations_per_expert(self, start: int = 0, end: int | None = None) -> dict[str, int]:
        """Velocity evaluations (per CFG branch) of each expert over steps [start, end)."""
        counts: dict[str, int] = {}
        for p in self.steps[start:end]:
            counts[p.expert] = counts.get(p.expert, 0) + p.evaluations
        return counts

    def latent_shape(self, frames: int | None = None) -> tuple[int, int, int, int, int]:
        h, w = self.latent_size
        return (1, self.channels, frames or self.latent_frames, h, w)

    @property
    def relative_flops(self) -> float:
        return self.flops / self.flops_plain if self.flops_plain else 1.0

    def to_meta(self) -> dict:
        """What artifact metadata records of the plan (the whole step list included)."""
        return {
            "task": self.task,
            "direction": self.direction,
            "solver": self.solver,
            "refine": self.refine,
            "boundary": self.boundary,
            "guidance": self.guidance.to_meta() if self.uses_cfg else None,
            "negative_prompt": self.negative_prompt,
            "batch": self.batch,
            "branches_batched": self.branches_batched,
            "passes": self.passes,
            "half_frames": self.half_frames,
            "completion": self.completion,
            "switch_step": self.switch,
            "expert_switch_step": self.expert_switch,
            "forwards": self.forwards,
            "evaluations": self.evaluations_per_expert(),
            "relative_flops": round(self.relative_flops, 4),
            "steps": [p.to_json() for p in self.steps],
            "parallel": self.parallel.to_meta() if self.parallel is not None else None,
        }

    def to_json(self) -> dict:
        """``--dry-run --json``: the plan as one JSON object."""
        return {"family": self.family, "frames": self.frames, "size": [self.width, self.height],
                "latent_frames": self.latent_frames, "grid": self.schedule.to_meta(), **self.to_meta()}


# --------------------------------------------------------------------------- the planner


def evaluations_per_step(solver: str, refine: int, restart: bool) -> int:
    """Velocity evaluations a solver makes in one step (``restart``: the first of a segment)."""
    if solver == "midpoint":
        return 2
    if solver == "fireflow":
        return 2 if restart else 1  # later steps reuse the previous midpoint velocity
    if solver == "euler":
        return 1 + refine
    return 1


def plan_run(
    spec: "ModelSpec",
    task: str,
    *,
    schedule: Schedule,
    solver: str,
    frames: int,
    width: int,
    height: int,
    guidance: Guidance = NO_GUIDANCE,
    negative_prompt: str | None = None,
    boundary: float | None = None,
    refine: int = 0,
    batch: int = 1,
    branches_batched: bool = False,
    half_frame: bool = False,
    half_frame_until: float | None = None,
    completion: str | None = None,
    cfg_truncate_steps: int = 0,
    cfg_truncate_high_noise_steps: int = 0,
    bidirectional: bool = False,
) -> RunPlan:
    """Every decision of one sampling run (see the module docstring). Raises BadInputError for
    options that do not fit together, before any weights load."""
    fam = spec.family
    if task not in TASKS:
        raise ValueError(task)
    invert = task == "invert"
    if solver not in (INVERTIBLE if invert else SOLVERS):
        names = INVERTIBLE if invert else tuple(SOLVERS)
        raise BadInputError(f"unknown {'inversion' if invert else 'sampling'} solver {solver!r}; use one of {', '.join(names)}")
    if refine < 0:
        raise BadInputError("--refine must be >= 0")
    if refine and solver != "euler":
        raise BadInputError("--refine applies to the euler solver only")
    if batch < 1:
        raise BadInputError("--batch-size must be >= 1")
    if completion is not None and not half_frame:
        raise BadInputError("--completion needs --half-frame")
    completion = completion or "renoise"
    if completion not in COMPLETIONS:
        raise BadInputError(f"unknown completion {completion!r}; use one of {', '.join(COMPLETIONS)}")
    if cfg_truncate_steps < 0 or cfg_truncate_high_noise_steps < 0:
        raise BadInputError("CFG truncation step counts must be >= 0")
    if fam.experts == 1:
        if boundary is not None:
            raise BadInputError(f"--boundary applies to two-expert models; {fam.name} has one")
        if cfg_truncate_high_noise_steps:
            raise BadInputError(f"--cfg-truncate-high-noise-steps applies to two-expert models; {fam.name} has one "
                                "(use --cfg-truncate-steps)")
    else:
        boundary = spec.boundary if boundary is None else boundary
        if not 0.0 <= boundary <= 1.0:
            raise BadInputError(f"--boundary must be in [0, 1], got {boundary}")
    if bidirectional:
        if task != "flf2v":
            raise ValueError("bidirectional sampling is an flf2v mode")
        if solver not in STATELESS_SOLVERS:
            raise BadInputError(f"--bidirectional needs a stateless solver ({' or '.join(STATELESS_SOLVERS)}), not "
                                f"{solver}: fused velocities break a multistep solver's history")
    if invert:
        guidance = NO_GUIDANCE  # inversion follows the conditional velocity only

    T = fam.latent_frames(frames)
    lh, lw = height // fam.stride[1], width // fam.stride[2]
    _check_rope_covers(spec.configs["transformer"], T, lh, lw, f"{width}x{height}, {frames} frames")
    n = schedule.num_steps
    ts = schedule.timesteps() + [0]  # one per grid point
    pts = list(schedule.sigmas)
    if invert:
        pts, ts = pts[::-1], ts[::-1]
    # a denoising step from s_i evaluates its expert at t_i; an inversion step walks the same
    # interval upwards and uses that interval's denoising expert (the one of its upper end), so
    # an implicit (refined) inversion step is undone exactly by the denoising step
    experts = [route_expert(ts[i + 1] if invert else ts[i], boundary) for i in range(n)]

    # half-frame: the first `switch` steps run on ceil(T/2) frames
    switch = None
    if half_frame_until is not None and not half_frame:
        raise BadInputError("--half-frame-until needs --half-frame")
    if half_frame:
        if task != "t2v":
            raise ValueError("half-frame is a t2v mode")
        if fam.experts == 1 and half_frame_until is None:
            raise BadInputError(f"{fam.name} has one expert, so there is no expert switch: give --half-frame-until S "
                                "(the noise level at which to complete the frames, e.g. 0.9)")
        if half_frame_until is not None and not 0.0 < half_frame_until < 1.0:
            raise BadInputError("--half-frame-until must be in (0, 1)")
        if T < 2:
            raise BadInputError("--half-frame needs at least 5 frames (2 latent frames)")
        if half_frame_until is not None:
            switch = next((i for i in range(n) if pts[i] < half_frame_until), None)
        else:
            switch = next((i for i in range(n) if experts[i] != HIGH), None)
        if switch in (None, 0):
            raise BadInputError("--half-frame needs steps on both sides of the switch; this grid has none "
                                f"{'below' if switch is None else 'above'} it")
    half = (T + 1) // 2 if half_frame else None

    # CFG: the expert's scale, 1.0 on truncated steps
    high_steps = sum(1 for e in experts if e == HIGH)
    if cfg_truncate_steps > n:
        raise BadInputError(f"--cfg-truncate-steps {cfg_truncate_steps} exceeds the {n} steps")
    if cfg_truncate_high_noise_steps > high_steps:
        raise BadInputError(f"--cfg-truncate-high-noise-steps {cfg_truncate_high_noise_steps} exceeds the "
                            f"{high_steps} high-noise steps")
    cfg_off = set(range(n - cfg_truncate_steps, n))
    high_idx = [i for i in range(n) if experts[i] == HIGH]
    cfg_off |= set(high_idx[high_steps - cfg_truncate_high_noise_steps:]) if cfg_truncate_high_noise_steps else set()

    passes = 2 if bidirectional else 1
    from wanctl.core.sampling.flops import dit_flops, tokens_for

    cfg_dit = spec.configs["transformer"]
    patch = tuple(cfg_dit.get("patch_size", (1, 2, 2)))
    steps, flops, plain = [], 0.0, 0.0
    for i in range(n):
        restart = i == 0 or i == switch
        g = 1.0 if i in cfg_off else guidance.for_expert(experts[i])
        f = half if (half is not None and i < switch) else T
        ev = evaluations_per_step(solver, refine, restart)
        branches = 2 if g != 1.0 else 1
        fwd = ev * (1 if branches_batched else branches * passes)
        steps.append(PlanStep(i, float(pts[i]), float(pts[i + 1]), int(ts[i]), int(ts[i + 1]), experts[i], f, float(g), ev, fwd, restart))
        flops += ev * passes * dit_flops(cfg_dit, tokens_for(f, lh, lw, patch), batch=branches * batch)
        g_plain = guidance.for_expert(experts[i])
        plain += evaluations_per_step(solver, refine, i == 0) * passes * dit_flops(
            cfg_dit, tokens_for(T, lh, lw, patch), batch=(2 if g_plain != 1.0 else 1) * batch)

    notes = []
    if switch is not None and solver == "unipc":
        notes.append(f"UniPC history restarts at the switch (step {switch + 1}): that step is first order")
    uses_cfg = any(p.cfg for p in steps)
    if not invert:
        _refuse_ignored_cfg_options(any(guidance.for_expert(e) != 1.0 for e in experts), uses_cfg, passes,
                                    negative_prompt=negative_prompt is not None, cfg_batch=branches_batched,
                                    truncate=bool(cfg_truncate_steps or cfg_truncate_high_noise_steps))
    negative = (DEFAULT_NEGATIVE_PROMPT if negative_prompt is None else negative_prompt) if uses_cfg else None
    return RunPlan(
        task=task, family=fam.name, experts=tuple([HIGH, LOW] if fam.experts == 2 else [HIGH]), schedule=schedule,
        solver=solver, direction="invert" if invert else "denoise", steps=tuple(steps), channels=fam.latent_channels,
        latent_frames=T, latent_size=(lh, lw), width=width, height=height, frames=frames, boundary=boundary,
        guidance=guidance, negative_prompt=negative, refine=refine, batch=batch, branches_batched=branches_batched,
        passes=passes, half_frames=half, completion=completion if half_frame else None, flops=flops,
        flops_plain=plain, notes=tuple(notes),
    )


def _check_rope_covers(cfg: dict, latent_frames: int, lh: int, lw: int, what: str) -> None:
    """The DiT's rotary embedding has positions for rope_max_seq_len tokens along each axis
    (frames, rows, columns); a latent grid longer than that fails deep inside the model."""
    limit = int(cfg.get("rope_max_seq_len", 1024))
    pt, ph, pw = tuple(cfg.get("patch_size", (1, 2, 2)))
    grid = (latent_frames // pt, lh // ph, lw // pw)
    if max(grid) > limit:
        raise BadInputError(f"{what} is {grid[0]} x {grid[1]} x {grid[2]} tokens (frames x rows x columns); this "
                            f"model's rotary embedding covers at most {limit} along each: use a smaller size or fewer frames")


def _refuse_ignored_cfg_options(guided: bool, uses_cfg: bool, passes: int, *, negative_prompt: bool, cfg_batch: bool,
                                truncate: bool) -> None:
    """The CFG options of a run whose plan has no CFG step (guidance 1, e.g. --preset lightning,
    or every step truncated) would be silently ignored: refuse them. ``guided``: some step had a
    scale other than 1 before truncation."""
    ignored = []
    if truncate and not guided:
        ignored.append("CFG truncation")
    if not uses_cfg:
        if negative_prompt:
            ignored.append("--negative-prompt")
        if cfg_batch and passes == 1:  # with --bidirectional it still batches the two passes
            ignored.append("--cfg-batch")
    if ignored:
        raise BadInputError(f"{' and '.join(ignored)}: this run uses no CFG (guidance 1 on every step), so "
                            f"{'it' if len(ignored) == 1 else 'they'} would do nothing; drop {'it' if len(ignored) == 1 else 'them'} "
                            "or set --guidance above 1")


def with_parallel(plan: RunPlan, spec: "ModelSpec", layout: "ParallelLayout | None", *, speed=None,
                  launched: bool = True) -> RunPlan:
    """The plan run across ranks (``--parallel``): the layout checked against the model's heads and
    every token count the plan runs on (from its latent frames, latent size and patch size),
    before any weights load, and recorded in the plan. ``launched``: False for ``--dry-run``,
    which shows the layout without a launcher. ``speed``: the command's SpeedOptions, if any."""
    if layout is None:
        return plan
    import dataclasses

    from wanctl.core.models.parallel import check_layout
    from wanctl.core.sampling.flops import tokens_for

    cfg = spec.configs["transformer"]
    patch = tuple(cfg.get("patch_size", (1, 2, 2)))
    h, w = plan.latent_size
    tokens = sorted({tokens_for(f, h, w, patch) for f in {p.frames for p in plan.steps} | {plan.latent_frames}})
    if plan.branches_batched and layout.cfg == 2:
        raise BadInputError("--parallel cfg=2 runs the CFG branches on separate ranks; drop --cfg-batch")
    if speed is not None and speed.cache != "none":
        raise BadInputError("--parallel with --step-cache is not implemented yet; use --step-cache none")
    if plan.passes != 1:
        raise BadInputError("--parallel is not implemented yet for --bidirectional (its reversed-RoPE pass)")
    check_layout(layout, heads=int(cfg["num_attention_heads"]), tokens=tokens, uses_cfg=plan.uses_cfg,
                 attention=speed.attention if speed is not None else None, launched=launched)
    return dataclasses.replace(plan, parallel=layout)

