"""Many outputs across processes: each rank (torchrun's RANK/WORLD_SIZE, Slurm tasks or job
arrays, or --shard I/N) makes rows i with i % N == I of one manifest, skips rows already
written (resume), reports its own summary and fails (exit 3) only for its own bad rows. The
outputs equal a single-process run bit for bit."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import assert_one_line_error, invoke

SHARD_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_ARRAY_TASK_ID",
              "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_STEP")
RUN = ("-m", "tiny-ti2v-5b", "--frames", "5", "--size", "64x64", "--steps", "2", "--guidance", "1", "--seed", "3")


@pytest.fixture(autouse=True)
def _no_launcher(monkeypatch):
    for v in SHARD_VARS:
        monkeypatch.delenv(v, raising=False)


def _latents(path):
    from wanctl.core.io.artifact import read_artifact

    return read_artifact(str(path)).latents


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """Six first frames, a manifest of them (outputs named after them in -o), and the outputs of
    one single-process run of that manifest."""
    d = tmp_path_factory.mktemp("shard")
    for i in range(6):
        Image.fromarray(np.full((64, 64, 3), 30 + 35 * i, np.uint8)).save(d / f"f{i}.png")
    m = d / "m.csv"
    m.write_text("first_frame,prompt\n" + "".join(f"f{i}.png,{'a red circle' if i % 2 else 'a blue square'}\n"
                                                 for i in range(6)))
    r = invoke("denoise", "--manifest", str(m), "-o", str(d / "ref"), *RUN)
    assert r.exit_code == 0, r.stderr
    return d, m, {f"f{i}.safetensors": _latents(d / "ref" / f"f{i}.safetensors") for i in range(6)}


def _assert_same_as_reference(out, ref):
    assert sorted(p.name for p in out.iterdir()) == sorted(ref)  # no temporaries, nothing extra
    import torch

    for name, lat in ref.items():
        assert torch.equal(_latents(out / name), lat), name


def _launch(ranks: list[dict], *args):
    """Start one `wanctl` process per env (all at once, as a launcher does); wait for all."""
    base = {k: v for k, v in os.environ.items() if k not in SHARD_VARS}
    procs = [subprocess.Popen([sys.executable, "-m", "wanctl", *args], env=dict(base, **e), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE) for e in ranks]
    return [(p.wait(timeout=600), p.stdout.read().decode(), p.stderr.read().decode()) for p in procs]


def _summary(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.startswith("rank ")]
    assert len(lines) == 1, stderr
    return lines[0]


def test_torchrun_ranks_write_each_row_once_and_a_rerun_makes_only_what_is_missing(work, tmp_path):
    d, m, ref = work
    out = tmp_path / "out"
    ranks = [{"RANK": str(i), "WORLD_SIZE": "2", "LOCAL_RANK": str(i)} for i in range(2)]
    res = _launch(ranks, "denoise", "--manifest", str(m), "-o", str(out), *RUN)
    for rc, _, err in res:
        assert rc == 0, err
    assert [_summary(err) for _, _, err in res] == ["rank 0/2: 3 rows done, 0 skipped, 0 failed",
                                                    "rank 1/2: 3 rows done, 0 skipped, 0 failed"]
    wrote = [ln.split()[-1] for _, _, err in res for ln in err.splitlines() if ln.startswith("wrote ")]
    assert sorted(os.path.basename(w) for w in wrote) == sorted(ref)  # every row exactly once
    rank0 = {os.path.basename(ln.split()[-1]) for ln in res[0][2].splitlines() if ln.startswith("wrote ")}
    assert rank0 == {"f0.safetensors", "f2.safetensors", "f4.safetensors"}  # row index mod N
    _assert_same_as_reference(out, ref)

    kept = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    for name in ("f1.safetensors", "f4.safetensors"):  # one of each rank's rows
        (out / name).unlink()
        del kept[name]
    res = _launch(ranks, "denoise", "--manifest", str(m), "-o", str(out), *RUN)
    for rc, _, err in res:
        assert rc == 0, err
    assert [_summary(err) for _, _, err in res] == ["rank 0/2: 1 rows done, 2 skipped, 0 failed",
                                                    "rank 1/2: 1 rows done, 2 skipped, 0 failed"]
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name in kept} == kept  # not rewritten
    _assert_same_as_reference(out, ref)


def test_a_bad_row_fails_its_rank_only(work, tmp_path, monkeypatch):
    d, _, ref = work
    (d / "broken.png").write_bytes(b"not an image")
    m = tmp_path / "m.csv"  # row 4 (index 3: rank 1 of 2) cannot be read
    m.write_text("first_frame,prompt\n" + "".join(
        f"{d / ('broken.png' if i == 3 else f'f{i}.png')},{'a red circle' if i % 2 else 'a blue square'}\n"
        for i in range(6)))
    out = tmp_path / "out"
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    line = assert_one_line_error(invoke("denoise", "--manifest", str(m), "-o", str(out), *RUN), 3,
                                 "rank 1/2: 2 rows done, 0 skipped, 1 failed (manifest row 4: ")
    assert "broken.png" in line
    monkeypatch.setenv("RANK", "0")
    r = invoke("denoise", "--manifest", str(m), "-o", str(out), *RUN)
    assert r.exit_code == 0, r.stderr
    assert "rank 0/2: 3 rows done, 0 skipped, 0 failed" in r.stderr
    import torch

    names = sorted(p.name for p in out.iterdir())
    assert names == ["f0.safetensors", "f1.safetensors", "f2.safetensors", "f4.safetensors", "f5.safetensors"]
    for n in names:
        assert torch.equal(_latents(out / n), ref[n])


@pytest.mark.parametrize("launcher", ["tasks", "array"])
def test_slurm_tasks_and_job_arrays(work, tmp_path, monkeypatch, launcher):
    _, m, ref = work
    out = tmp_path / "out"
    n = 2 if launcher == "tasks" else 3
    for i in range(n):
        if launcher == "tasks":
            monkeypatch.setenv("SLURM_PROCID", str(i))
            monkeypatch.setenv("SLURM_NTASKS", str(n))
        else:  # sbatch --array=5-7: one task per array job, ids from 5
            monkeypatch.setenv("SLURM_PROCID", "0")
            monkeypatch.setenv("SLURM_NTASKS", "1")
            monkeypatch.setenv("SLURM_ARRAY_TASK_ID", str(5 + i))
            monkeypatch.setenv("SLURM_ARRAY_TASK_MIN", "5")
            monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", str(n))
        r = invoke("denoise", "--manifest", str(m), "-o", str(out), *RUN)
        assert r.exit_code == 0, r.stderr
        assert f"rank {i}/{n}: {6 // n} rows done, 0 skipped, 0 failed" in r.stderr
    _assert_same_as_reference(out, ref)


def test_explicit_shard_beats_the_environment_and_is_validated(work, tmp_path, monkeypatch):
    _, m, ref = work
    out = tmp_path / "out"
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    for i in range(3):
        r = invoke("denoise", "--manifest", str(m), "-o", str(out), "--shard", f"{i}/3", *RUN)
        assert r.exit_code == 0, r.stderr
        assert f"rank {i}/3: 2 rows done, 0 skipped, 0 failed" in r.stderr
    _assert_same_as_reference(out, ref)
    r = invoke("denoise", "--manifest", str(m), "-o", str(out), "--shard", "2/3", "--force", *RUN)
    assert r.exit_code == 0 and "rank 2/3: 2 rows done, 0 skipped" in r.stderr  # --force recomputes
    for bad in ("3/3", "-1/2", "1", "a/b", "0/0"):
        assert_one_line_error(invoke("denoise", "--manifest", str(m), "-o", str(out), "--shard", bad, *RUN), 3,
                              f"--shard {bad}: expected I/N with 0 <= I < N")
    monkeypatch.setenv("RANK", "2")  # a launcher's bad variables: one line, before any work
    assert_one_line_error(invoke("denoise", "--manifest", str(m), "-o", str(tmp_path / "o2"), *RUN), 3,
                          "RANK=2 is not in 0..WORLD_SIZE-1")
    assert not (tmp_path / "o2").exists()


def test_t2v_manifest_with_per_row_seeds(tmp_path):
    m = tmp_path / "p.jsonl"
    m.write_text(json.dumps({"prompt": "a red circle", "seed": 1}) + "\n"
                 + json.dumps({"prompt": "a red circle", "seed": 2, "output": "two.safetensors"}) + "\n")
    args = ("-m", "tiny-t2v-a14b", "--frames", "5", "--size", "64x64", "--steps", "2")
    r = invoke("t2v", "--manifest", str(m), "-o", str(tmp_path / "vids"), *args)
    assert r.exit_code == 0, r.stderr
    assert "manifest: 2 rows done, 0 skipped, 0 failed" in r.stderr
    r = invoke("t2v", "-p", "a red circle", "--seed", "1", "-o", str(tmp_path / "single.safetensors"), *args)
    assert r.exit_code == 0, r.stderr
    import torch

    one, two = _latents(tmp_path / "vids" / "row-1.safetensors"), _latents(tmp_path / "two.safetensors")
    assert torch.equal(one, _latents(tmp_path / "single.safetensors"))  # a row is the plain run of its seed
    assert not torch.equal(one, two)
    m.write_text('{"prompt": "x", "seed": "one"}\n')
    assert_one_line_error(invoke("t2v", "--manifest", str(m), "-o", str(tmp_path / "v2"), *args), 3,
                          "manifest row 1: seed must be an integer")


def test_flf2v_manifest_shards_frame_pairs(work, tmp_path):
    d, _, _ = work
    m = tmp_path / "pairs.csv"
    m.write_text(f"first_frame,last_frame,prompt,seed\n{d / 'f0.png'},{d / 'f5.png'},a ball,1\n"
                 f"{d / 'f1.png'},{d / 'f4.png'},a ball,2\n")
    args = ("-m", "tiny-i2v-a14b", "--frames", "5", "--steps", "2")
    for i in range(2):
        r = invoke("flf2v", "--manifest", str(m), "-o", str(tmp_path / "v"), "--shard", f"{i}/2", *args)
        assert r.exit_code == 0, r.stderr
        assert f"rank {i}/2: 1 rows done, 0 skipped, 0 failed" in r.stderr
    r = invoke("flf2v", "-i", str(d / "f1.png"), "-l", str(d / "f4.png"), "-p", "a ball", "--seed", "2",
               "-o", str(tmp_path / "single.safetensors"), *args)
    assert r.exit_code == 0, r.stderr
    import torch

    assert sorted(p.name for p in (tmp_path / "v").iterdir()) == ["row-1.safetensors", "row-2.safetensors"]
    assert torch.equal(_latents(tmp_path / "v" / "row-2.safetensors"), _latents(tmp_path / "single.safetensors"))
