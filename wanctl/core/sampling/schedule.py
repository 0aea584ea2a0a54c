"""Noise-level grids (SPEC section 3). No torch: schedules are lists of floats stored in artifacts.

A schedule is the *denoising* grid s_0 > s_1 > ... > s_N = 0 (s = 1 is pure noise). Inversion
walks the same points in reverse, so an artifact's grid is all that is needed to undo it.

Two grids exist, both shifted by ``s = shift*u / (1 + (shift-1)*u)``:

* ``unipc`` (default): exactly the grid of diffusers' ``UniPCMultistepScheduler`` with
  ``use_flow_sigmas`` (diffusers 0.42: ``u = linspace(1, 1/1000, n+1)[:-1]``, and s_0 = 1 is
  nudged to 1 - 1e-6 to keep log-SNR finite). The official Wan UniPC grid uses
  ``u = linspace(0.999, 0, n+1)[:-1]`` instead; the two differ by < 0.3% per point. wanctl
  follows the diffusers grid so its unipc sampler reproduces the stock pipelines.
* ``dpm`` (the official dpm++ path): ``u = linspace(1, 0, n+1)[:n]``, so s_0 = 1 exactly.

Both end with an appended s = 0.
The model sees ``t = int(1000 * s)`` (truncated, as the official code and diffusers do).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from wanctl.core.errors import BadInputError

GRIDS = ("unipc", "dpm")
NUM_TRAIN_TIMESTEPS = 1000


def shift_sigma(u: float, shift: float) -> float:
    return shift * u / (1.0 + (shift - 1.0) * u)


def model_timestep(s: float) -> int:
    """The integer timestep the DiT is called with (truncation, not rounding)."""
    return int(s * NUM_TRAIN_TIMESTEPS)


@dataclass(frozen=True)
class Schedule:
    grid: str
    steps: int  # steps of the full grid this one was cut from
    shift: float
    sigmas: tuple[float, ...]  # descending, ends with 0.0
    strength: float = 1.0
    meta: dict = field(default_factory=dict, compare=False)

    @property
    def num_steps(self) -> int:
        """Steps actually run on this (possibly truncated) grid."""
        return len(self.sigmas) - 1

    @property
    def s_max(self) -> float:
        return self.sigmas[0]

    def timesteps(self) -> list[int]:
        return [model_timestep(s) for s in self.sigmas[:-1]]

    def reversed(self) -> list[float]:
        """The inversion direction: 0 -> s_max on the same points."""
        return list(reversed(self.sigmas))

    def step_of(self, s: float) -> int:
        """Index of the denoising step whose interval (s_{i+1}, s_i] contains s."""
        for i in range(self.num_steps):
            if s > self.sigmas[i + 1] or i == self.num_steps - 1:
                return i
        return self.num_steps - 1

    def to_meta(self) -> dict:
        return {
            "grid": self.grid,
            "steps": self.steps,
            "shift": self.shift,
            "strength": self.strength,
            "sigmas": list(self.sigmas),
            "timesteps": self.timesteps(),
        }

    @classmethod
    def from_meta(cls, meta: dict) -> "Schedule":
        try:
            sig = tuple(float(s) for s in meta["sigmas"])
            sched = cls(meta["grid"], int(meta["steps"]), float(meta["shift"]), sig, float(meta.get("strength", 1.0)))
        except (KeyError, TypeError, ValueError):
            raise BadInputError("artifact has no usable noise grid (params.schedule)") from None
        _check_sigmas(sched.sigmas)
        return sched


def _check_sigmas(sigmas) -> None:
    if len(sigmas) < 2 or sigmas[-1] != 0.0 or any(a <= b for a, b in zip(sigmas, sigmas[1:])):
        raise BadInputError("noise grid must be strictly decreasing and end at 0")


def make_schedule(steps: int, shift: float, grid: str = "unipc", strength: float = 1.0) -> Schedule:
    """The denoising grid for ``steps`` steps; ``strength`` < 1 keeps only the tail s <= strength."""
    import numpy as np

    if steps < 1:
        raise BadInputError(f"--steps must be >= 1, got {steps}")
    if shift <= 0:
        raise BadInputError(f"--shift must be > 0, got {shift}")
    if not 0.0 < strength <= 1.0:
        raise BadInputError(f"--strength must be in (0, 1], got {strength}")
    if grid == "unipc":
        # exactly diffusers' UniPC flow sigmas: float64 grid, nudged off 1 to keep log finite
        u = np.linspace(1.0, 1.0 / NUM_TRAIN_TIMESTEPS, steps + 1)[:-1]
        s = shift * u / (1.0 + (shift - 1.0) * u)
        if abs(s[0] - 1.0) < 1e-6:
            s[0] -= 1e-6
    elif grid == "dpm":
        u = np.linspace(1.0, 0.0, steps + 1)[:steps]
        s = shift * u / (1.0 + (shift - 1.0) * u)
    else:
        raise BadInputError(f"unknown grid {grid!r}; use one of {', '.join(GRIDS)}")
    sigmas = [float(x) for x in s] + [0.0]
    if strength < 1.0:
        keep = [i for i, x in enumerate(sigmas[:-1]) if x <= strength + 1e-12]
        if not keep:
            raise BadInputError(f"--strength {strength} is below the lowest noise level of a {steps}-step grid")
        sigmas = sigmas[keep[0] :]
    return Schedule(grid, steps, float(shift), tuple(sigmas), strength)


def route_expert(t: int, boundary: float | None) -> str:
    """A14B expert routing: the high-noise expert while t >= boundary * 1000 (SPEC section 3)."""
    if boundary is None or t >= boundary * NUM_TRAIN_TIMESTEPS:
        return "transformer"
    return "transformer_2"
