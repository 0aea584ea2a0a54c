"""Shard resolution from --shard and the launchers' variables (wanctl/core/shard.py)."""

from __future__ import annotations

import pytest

from wanctl.core.errors import BadInputError
from wanctl.core.shard import resolve_shard


@pytest.mark.parametrize("env, expected", [
    ({}, (0, 1, None)),
    ({"RANK": "3", "WORLD_SIZE": "4", "SLURM_PROCID": "0", "SLURM_NTASKS": "2"}, (3, 4, "torchrun")),
    ({"SLURM_PROCID": "1", "SLURM_NTASKS": "2"}, (1, 2, "slurm")),
    ({"SLURM_PROCID": "0", "SLURM_NTASKS": "1"}, (0, 1, None)),  # a plain one-task job
    ({"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_COUNT": "3"}, (2, 3, "slurm array")),
    ({"SLURM_ARRAY_TASK_ID": "12", "SLURM_ARRAY_TASK_MIN": "10", "SLURM_ARRAY_TASK_COUNT": "3",
      "SLURM_ARRAY_TASK_STEP": "2"}, (1, 3, "slurm array")),
    # an array of 3 jobs of 2 tasks each: 6 shares
    ({"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_COUNT": "3", "SLURM_PROCID": "1", "SLURM_NTASKS": "2"},
     (5, 6, "slurm array")),
])
def test_environment(env, expected):
    s = resolve_shard(None, env)
    assert (s.index, s.count, s.source) == expected
    assert s.active == (expected[2] is not None)


def test_explicit_beats_environment_and_rows_go_round_robin():
    s = resolve_shard("1/3", {"RANK": "0", "WORLD_SIZE": "2"})
    assert (s.index, s.count, s.source) == (1, 3, "--shard")
    assert [i for i in range(8) if s.owns(i)] == [1, 4, 7]


@pytest.mark.parametrize("text", ["3/3", "-1/2", "2", "x/y", "1/0", ""])
def test_bad_explicit(text):
    with pytest.raises(BadInputError, match="expected I/N"):
        resolve_shard(text, {})


@pytest.mark.parametrize("env, match", [
    ({"RANK": "2", "WORLD_SIZE": "2"}, "RANK=2 is not in"),
    ({"RANK": "0"}, "RANK is set but WORLD_SIZE is not"),
    ({"SLURM_NTASKS": "x", "SLURM_PROCID": "0"}, "SLURM_NTASKS='x' is not an integer"),
    ({"SLURM_ARRAY_TASK_ID": "9", "SLURM_ARRAY_TASK_COUNT": "3"}, "does not fit the array"),
])
def test_bad_environment(env, match):
    with pytest.raises(BadInputError, match=match):
        resolve_shard(None, env)
