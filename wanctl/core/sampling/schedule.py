"""Noise-level grids. No torch: schedules are lists of floats stored in artifacts.

A schedule is the *denoising* grid s_0 > s_1 > ... > s_N = 0 (s = 1 is pure noise) with the
model timestep of each point. Inversion walks the same points in reverse, so an artifact's grid
is all that is needed to undo it. Grids, each shifted by ``s = shift*u / (1 + (shift-1)*u)``
and ending with an appended s = 0:

* ``official`` (the default with the official presets): the official Wan2.2 UniPC path. Its
  scheduler is built with shift 1, so the base grid is ``u = linspace(0.999, 0, n+1)[:n]``
  (0.999 as float32, the grid in float64), shifted, and stored as float32; the timestep is
  ``int(1000 s)`` of the float64 level (int64 truncation), as the official code computes it.
* ``diffusers``: diffusers' ``UniPCMultistepScheduler`` with ``use_flow_sigmas``:
  ``u = linspace(1, 1/1000, n+1)[:n]``, and s_0 = 1 is nudged to 1 - 1e-6 to keep log-SNR
  finite. The stock pipelines use it (the equivalence tests do). It differs from ``official``
  by up to 4.6 % at the last point (ti2v-5b, 50 steps), most at the low-noise end.
* ``dpm`` (the official dpm++ path): ``u = linspace(1, 0, n+1)[:n]``, so s_0 = 1 exactly.
* ``custom``: an exact list given with ``--sigmas`` (few-step distilled models), no shift.
"""

from __future__ import annotations

from dataclasses import dataclass

from wanctl.core.errors import BadInputError

GRIDS = ("official", "diffusers", "dpm")
NUM_TRAIN_TIMESTEPS = 1000
MAX_STEPS = 1000  # more steps than training timesteps would repeat model timesteps


def model_timestep(s: float) -> int:
    """The integer timestep the DiT is called with (truncation, not rounding)."""
    return int(s * NUM_TRAIN_TIMESTEPS)


@dataclass(frozen=True)
class Schedule:
    grid: str
    steps: int  # steps of the full grid this one was cut from
    shift: float | None  # None for a custom list
    sigmas: tuple[float, ...]  # descending, ends with 0.0
    strength: float = 1.0
    model_timesteps: tuple[int, ...] | None = None  # per step; None: int(1000 s)

    @property
    def num_steps(self) -> int:
        """Steps actually run on this (possibly truncated) grid."""
        return len(self.sigmas) - 1

    @property
    def s_max(self) -> float:
        return self.sigmas[0]

    def timesteps(self) -> list[int]:
        if self.model_timesteps is not None:
            return list(self.model_timesteps)
        return [model_timestep(s) for s in self.sigmas[:-1]]

    def reversed(self) -> list[float]:
        """The inversion direction: 0 -> s_max on the same points."""
        return list(reversed(self.sigmas))

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
            shift = None if meta.get("shift") is None else float(meta["shift"])
            ts = meta.get("timesteps")
            ts = tuple(int(t) for t in ts) if ts is not None else None
            sched = cls(str(meta["grid"]), int(meta["steps"]), shift, sig, float(meta.get("strength", 1.0)), ts)
        except (KeyError, TypeError, ValueError):
            raise BadInputError("artifact has no usable noise grid (params.schedule)") from None
        _check_sigmas(sched.sigmas)
        if ts is not None and len(ts) != len(sig) - 1:
            raise BadInputError("artifact's noise grid has a timestep count that does not match its levels")
        return sched


def _check_sigmas(sigmas) -> None:
    import math

    if (len(sigmas) < 2 or sigmas[-1] != 0.0 or not all(math.isfinite(x) for x in sigmas) or sigmas[0] > 1.0
            or any(a <= b for a, b in zip(sigmas, sigmas[1:]))):
        raise BadInputError("noise grid must be strictly decreasing from at most 1 and end at 0")


def parse_sigmas(text: str) -> tuple[float, ...]:
    """'1.0,0.9375,0.8333,0.625' -> the exact levels, with the final 0 appended if missing."""
    fields = text.replace(" ", "").split(",")
    if "" in fields:  # "1,,0.5" or a stray comma: a level was left out, not meant to be skipped
        raise BadInputError(f"--sigmas {text!r}: an empty value between commas; give comma-separated numbers, "
                            "e.g. 1.0,0.9375,0.8333,0.625")
    try:
        vals = [float(x) for x in fields]
    except ValueError:
        raise BadInputError(f"--sigmas {text!r}: give comma-separated numbers, e.g. 1.0,0.9375,0.8333,0.625") from None
    if vals and vals[-1] != 0.0:
        vals.append(0.0)
    if len(vals) - 1 > MAX_STEPS:
        raise BadInputError(f"--sigmas: at most {MAX_STEPS} levels")
    try:
        _check_sigmas(vals)
    except BadInputError:
        raise BadInputError(f"--sigmas {text!r}: levels must be finite, strictly decreasing, in (0, 1]") from None
    return tuple(vals)


def custom_schedule(sigmas: tuple[float, ...], strength: float = 1.0) -> Schedule:
    """An exact list of levels (``--sigmas``): no shift, timesteps int(1000 s)."""
    return _truncate(Schedule("custom", len(sigmas) - 1, None, tuple(sigmas)), strength)


def _truncate(sched: Schedule, strength: float) -> Schedule:
    if not 0.0 < strength <= 1.0:
        raise BadInputError(f"--strength must be in (0, 1], got {strength}")
    if strength >= 1.0:
        return sched
    sig = list(sched.sigmas)
    keep = [i for i, x in enumerate(sig[:-1]) if x <= strength + 1e-12]
    if not keep:
        raise BadInputError(f"--strength {strength} is below the lowest noise level of a {sched.steps}-step grid")
    k = keep[0]
    ts = sched.model_timesteps[k:] if sched.model_timesteps is not None else None
    return Schedule(sched.grid, sched.steps, sched.shift, tuple(sig[k:]), strength, ts)


def make_schedule(steps: int, shift: float, grid: str = "official", strength: float = 1.0) -> Schedule:
    """The denoising grid for ``steps`` steps; ``strength`` < 1 keeps only the tail s <= strength."""
    import math

    import numpy as np

    if not 1 <= steps <= MAX_STEPS:
        raise BadInputError(f"--steps must be in 1..{MAX_STEPS}, got {steps}")
    if not (math.isfinite(shift) and shift > 0):
        raise BadInputError(f"--shift must be a finite number > 0, got {shift}")
    ts = None
    if grid == "official":
        u = np.linspace(float(np.float32(0.999)), 0.0, steps + 1)[:-1]
        s64 = shift * u / (1.0 + (shift - 1.0) * u)
        ts = tuple(int(t) for t in (s64 * NUM_TRAIN_TIMESTEPS).astype(np.int64))
        s = s64.astype(np.float32)
    elif grid == "diffusers":
        # exactly diffusers' UniPC flow sigmas: float64 grid, nudged off 1 to keep log finite
        u = np.linspace(1.0, 1.0 / NUM_TRAIN_TIMESTEPS, steps + 1)[:-1]
        s = shift * u / (1.0 + (shift - 1.0) * u)
        if abs(s[0] - 1.0) < 1e-6:
            s[0] -= 1e-6
    elif grid == "dpm":
        u = np.linspace(1.0, 0.0, steps + 1)[:steps]
        s = shift * u / (1.0 + (shift - 1.0) * u)
    else:
        raise BadInputError(f"unknown grid {grid!r}; use one of {', '.join(GRIDS)} (or --sigmas for an exact list)")
    sigmas = tuple(float(x) for x in s) + (0.0,)
    return _truncate(Schedule(grid, steps, float(shift), sigmas, 1.0, ts), strength)


def schedule_from_options(preset, *, steps: int | None = None, shift: float | None = None, grid: str | None = None,
                          sigmas: tuple[float, ...] | None = None, strength: float = 1.0) -> Schedule:
    """The grid a command runs on: an exact ``--sigmas`` list, else ``--steps``/``--shift`` on
    ``--grid`` with the model's presets for what is not given (official grid by default)."""
    if sigmas is not None:
        if steps is not None or shift is not None or grid is not None:
            raise BadInputError("--sigmas is an exact grid: it takes no --steps, --shift or --grid")
        return custom_schedule(sigmas, strength)
    return make_schedule(preset.steps if steps is None else steps, preset.shift if shift is None else shift,
                         grid or "official", strength)
