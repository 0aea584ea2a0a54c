"""Which share of a many-output run this process makes: ``--shard I/N``, else the launcher's
variables (torchrun, Slurm tasks, Slurm job arrays), else all of it.

A leaf: the standard library and :mod:`wanctl.core.errors` only. No process group is made:
each process reads the variables, takes the rows ``index % count == I`` and works alone, so
the same works from any scheduler that sets them (Ray, a shell loop with ``--shard``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from wanctl.core.errors import BadInputError


@dataclass(frozen=True)
class Shard:
    index: int = 0
    count: int = 1
    source: str | None = None  # "--shard", "torchrun", "slurm", "slurm array"; None: not sharded

    @property
    def active(self) -> bool:
        """Run as one of several (or with an explicit --shard): resume is the default then."""
        return self.source is not None

    def owns(self, position: int) -> bool:
        """Whether the row at 0-based ``position`` of the full plan is this shard's."""
        return position % self.count == self.index

    @property
    def label(self) -> str:
        return f"rank {self.index}/{self.count}"


def parse_shard(text: str) -> Shard:
    """``I/N`` with 0 <= I < N."""
    i, sep, n = text.strip().partition("/")
    try:
        index, count = int(i), int(n)
    except ValueError:
        index = count = -1
    if not sep or count < 1 or not 0 <= index < count:
        raise BadInputError(f"--shard {text}: expected I/N with 0 <= I < N (e.g. 0/4)")
    return Shard(index, count, "--shard")


def _int(env: Mapping[str, str], name: str) -> int | None:
    v = env.get(name)
    if v is None or not v.strip():
        return None
    try:
        return int(v)
    except ValueError:
        raise BadInputError(f"{name}={v!r} is not an integer; unset it or pass --shard I/N") from None


def _pair(env, index_var: str, count_var: str, source: str) -> Shard | None:
    index, count = _int(env, index_var), _int(env, count_var)
    if index is None and count is None:
        return None
    if index is None or count is None:
        missing = index_var if index is None else count_var
        raise BadInputError(f"{count_var if index is None else index_var} is set but {missing} is not; "
                            "set both or pass --shard I/N")
    if count < 1 or not 0 <= index < count:
        raise BadInputError(f"{index_var}={index} is not in 0..{count_var}-1 ({count}); pass --shard I/N")
    return Shard(index, count, source)


def _array(env) -> Shard | None:
    task, count = _int(env, "SLURM_ARRAY_TASK_ID"), _int(env, "SLURM_ARRAY_TASK_COUNT")
    if task is None or count is None:
        return None  # a plain job (SLURM_ARRAY_TASK_ID alone is not enough to know the share)
    low = _int(env, "SLURM_ARRAY_TASK_MIN") or 0
    step = _int(env, "SLURM_ARRAY_TASK_STEP") or 1
    index = (task - low) // max(step, 1)
    if count < 1 or (task - low) % max(step, 1) or not 0 <= index < count:
        raise BadInputError(f"SLURM_ARRAY_TASK_ID={task} does not fit the array (min {low}, step {step}, "
                            f"{count} tasks); pass --shard I/N")
    return Shard(index, count, "slurm array")


def resolve_shard(explicit: str | None = None, env: Mapping[str, str] | None = None) -> Shard:
    """The share of this process, decided once per run: --shard beats the environment; torchrun's
    RANK/WORLD_SIZE, then Slurm (a job array's task, times the tasks of each array job step:
    SLURM_PROCID/SLURM_NTASKS). Nothing set: the whole run (not sharded)."""
    if explicit is not None:
        return parse_shard(explicit)
    env = os.environ if env is None else env
    torchrun = _pair(env, "RANK", "WORLD_SIZE", "torchrun")
    if torchrun is not None:
        return torchrun
    array = _array(env)
    tasks = _pair(env, "SLURM_PROCID", "SLURM_NTASKS", "slurm")
    if array is not None and tasks is not None and tasks.count > 1:
        return Shard(array.index * tasks.count + tasks.index, array.count * tasks.count, "slurm array")
    if array is not None:
        return array
    if tasks is not None and tasks.count > 1:
        return tasks
    return Shard()
