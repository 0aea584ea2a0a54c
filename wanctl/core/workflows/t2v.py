"""Text-to-video with half-frame generation and CFG truncation, run from the run plan.

Half-frame: the high-noise expert (or, for a dense model, every step above ``half_frame_until``)
denoises ceil(T/2) latent frames from fresh noise of that length; at the switch the latent is
completed back to T frames and the rest of the run works on T frames. The plan decides which
steps run on how many frames and restarts the solver at the switch (a multistep solver's
history does not survive a change of frame count: UniPC's first step after it is first order).

Completion modes, from half frame i to slots 2i and 2i+1 (cut to T):

* ``repeat``: both slots get frame i (duplicates the noise too; the original half-frame design).
* ``interpolate``: slot 2i+1 is the mean of frames i and i+1 (lowers the noise variance there).
* ``renoise``: kept frames keep their state; an inserted frame is rebuilt at the switch level s
  as ``(1-s) * x0 + a * eps``: x0 is the mean of its neighbours' x0 predictions (from the last
  high-noise model call), eps is fresh seeded noise, and the amplitude a (per channel) gives the
  frame the same variance as its neighbours. For a model whose predictions are on-distribution
  a is close to s; calibrating it keeps the latent on the noise level the low-noise expert
  expects for any model (``interpolate`` lowers it by up to sqrt(2)).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from wanctl.core.errors import BadInputError
from wanctl.core.sampling.conditioning import Condition
from wanctl.core.sampling.executor import execute
from wanctl.core.sampling.plan import PlanStep, RunPlan
from wanctl.core.sampling.velocity import RunState, VelocityModel, seeded_noise

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from wanctl.core.models.bundle import ModelBundle

RENOISE_SEED_OFFSET = 1_000_003  # the inserted frames' noise: seed + this


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
    correlation: float = 0.0,
) -> "torch.Tensor":
    """Complete a (B, C, H, h, w) half-length latent to T frames (see the module docstring).

    ``correlation`` (renoise only; 0 = independent noise, what the CLI runs): the inserted frame's
    noise is that share of its neighbours' implied noise (x - (1 - s) x0) / s, averaged and
    rescaled, plus fresh noise for the rest; benchmarks/quality.py measures it."""
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
            noise = fresh[:, :, j]
            if correlation:
                implied = 0.5 * (x[:, :, a] - (1.0 - s) * x0[:, :, a] + x[:, :, b] - (1.0 - s) * x0[:, :, b]) / s
                implied = implied / implied.std(dim=(2, 3), keepdim=True).clamp(min=1e-6)
                noise = correlation * implied + (1.0 - correlation**2) ** 0.5 * noise
            slots.append(signal + amp * noise)
        return torch.stack(slots, dim=2)
    raise BadInputError(f"unknown completion {mode!r}")


# --------------------------------------------------------------------------- the run


@dataclass
class T2VResult:
    latents: "torch.Tensor"
    state: RunState  # the plan step reached, every DiT forward made

    @property
    def calls(self) -> list:
        return self.state.calls


def run_t2v(
    bundle: "ModelBundle",
    plan: RunPlan,
    *,
    embeds: "torch.Tensor",
    negative: "torch.Tensor | None",
    seed: int,
    caches=None,
    callback: Callable[[str, PlanStep, "torch.Tensor"], None] | None = None,
) -> T2VResult:
    """Run a planned text-to-video generation; returns the final latents (1, C, T, h, w).

    ``callback(event, step, x)`` sees ``("step", step, x)`` after every step and
    ``("restart", step, x)`` with the completed latent where the half-frame run switches to
    the full frame count, before that step runs.
    """
    device = bundle.device
    state = RunState(plan)
    model = VelocityModel(bundle, state, embeds.to(device), Condition(),
                          negative.to(device) if negative is not None else None)

    def on_step(step: PlanStep, x):
        if callback:
            callback("step", step, x)

    def complete(step: PlanStep, x):
        x_in, s_in, v_in = state.last
        x0 = x_in - s_in * v_in  # x0 prediction of the last model call before the switch
        x = complete_frames(x, step.frames, plan.completion, x0=x0, s=step.s, seed=seed)
        if callback:
            callback("restart", step, x)
        return x

    x = seeded_noise(plan.latent_shape(plan.steps[0].frames), seed).to(device)
    x = execute(plan, model, x, state, on_step=on_step, at_restart=complete, caches=caches)
    return T2VResult(x, state)


# --------------------------------------------------------------------------- the command's workflow


def plan_t2v(
    bundle: "ModelBundle",
    *,
    size: tuple[int, int] | None = None,
    frames: int | None = None,
    steps: int | None = None,
    shift: float | None = None,
    grid: str | None = None,
    sigmas: tuple[float, ...] | None = None,
    guidance: float | None = None,
    guidance_low: float | None = None,
    boundary: float | None = None,
    negative_prompt: str | None = None,
    solver: str = "unipc",
    half_frame: bool = False,
    completion: str | None = None,
    half_frame_until: float | None = None,
    cfg_truncate_steps: int = 0,
    cfg_truncate_high_noise_steps: int = 0,
    cfg_batch: bool = False,
) -> RunPlan:
    """The plan of a ``t2v`` run from its options, the model's presets filling in the rest."""
    from wanctl.core.families import check_frames, check_size
    from wanctl.core.sampling.plan import plan_run, resolve_guidance
    from wanctl.core.sampling.schedule import schedule_from_options

    fam, pre = bundle.family, bundle.preset
    if fam.name not in ("t2v-a14b", "ti2v-5b"):
        raise BadInputError(f"t2v needs a t2v-a14b or ti2v-5b model; {fam.name} needs a first frame (use `wanctl denoise`)")
    width, height = size or pre.default_size
    check_size(fam, width, height)
    n_frames = pre.frames if frames is None else frames
    check_frames(n_frames)
    sched = schedule_from_options(pre, steps=steps, shift=shift, grid=grid, sigmas=sigmas)
    return plan_run(bundle.spec, "t2v", schedule=sched, solver=solver, frames=n_frames, width=width, height=height,
                    guidance=resolve_guidance(fam, pre, guidance, guidance_low), negative_prompt=negative_prompt,
                    boundary=boundary, branches_batched=cfg_batch, half_frame=half_frame,
                    half_frame_until=half_frame_until, completion=completion, cfg_truncate_steps=cfg_truncate_steps,
                    cfg_truncate_high_noise_steps=cfg_truncate_high_noise_steps)


def generate_t2v(bundle: "ModelBundle", plan: RunPlan, *, prompt: str, seed: int, speed=None,
                 progress: Callable[[int], None] | None = None, notice=None):
    """Run a t2v plan; returns (latent artifact, DiT forwards made)."""
    from wanctl.core.io.artifact import Artifact, new_meta
    from wanctl.core.models.text import encode_prompts
    from wanctl.core.sampling.acceleration import SpeedOptions

    neg = plan.negative_prompt
    emb = encode_prompts(bundle, [prompt] + ([neg] if neg is not None else []))
    with (speed or SpeedOptions()).open(bundle, notice) as caches:
        res = run_t2v(bundle, plan, embeds=emb[prompt], negative=emb[neg] if neg is not None else None, seed=seed,
                      caches=caches, callback=(lambda event, *a: progress(1) if event == "step" else None)
                      if progress else None)
    params = {
        "prompt": prompt,
        "negative_prompt": neg,
        "seed": seed,
        "schedule": plan.schedule.to_meta(),
        "solver": plan.solver,
        "guidance": plan.guidance.to_meta(),
        "boundary": plan.boundary,
        "cfg_batch": plan.branches_batched,
        "acceleration": dict(caches.settings),
        "dit_forwards": len(res.calls),
        "plan": plan.to_meta(),
    }
    meta = new_meta("latent", family=plan.family, command="t2v", noise_level=0.0,
                    video={"width": plan.width, "height": plan.height, "frames": plan.frames, "fps": bundle.preset.fps},
                    model=bundle.record(bundle.experts() + ["text_encoder", "tokenizer", "vae"]), params=params)
    return Artifact({"latents": res.latents.float().cpu()}, meta), len(res.calls)
