"""--parallel (issue 15 item 2): one video across ranks with diffusers' context parallelism
(Ulysses) and CFG parallelism, launched with torchrun (gloo on the CPU) and compared with the
single-process run of the same command."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import assert_one_line_error, invoke
from wanctl.core import trace

pytestmark = pytest.mark.slow

COMMON = ("--steps", "2", "--frames", "5", "--dtype", "fp32", "--seed", "3", "-p", "a red ball")
BOTH = ("--boundary", "0.95")  # 2 steps: one per A14B expert
T2V = ("t2v", "-m", "tiny-t2v-a14b", "--size", "32x32", *BOTH, *COMMON)


def torchrun(nproc: int, *args: str, env: dict | None = None, cwd=None):
    e = dict(os.environ)
    e.update(env or {})
    e["OMP_NUM_THREADS"] = "1"
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
                           "--standalone", "-m", "wanctl", *args],
                          capture_output=True, env=e, cwd=cwd, timeout=120)


def latents(path):
    from safetensors.torch import load_file

    return load_file(str(path))["latents"]


def reference(path, args: tuple[str, ...]):
    """The single-process run (in this process: it saves a Python start-up per test)."""
    r = invoke(*args, "-o", str(path))
    assert r.exit_code == 0, r.output
    return path


@pytest.fixture(scope="module")
def t2v_single(tmp_path_factory):
    return reference(tmp_path_factory.mktemp("t2v") / "single.safetensors", T2V)


def check_parallel(tmp_path, args: tuple[str, ...], nproc: int, layout: str, ulysses: int, single=None):
    single = single or reference(tmp_path / "single.safetensors", args)
    out = tmp_path / "par"
    out.mkdir()
    tr = tmp_path / "trace.jsonl"
    proc = torchrun(nproc, *args, "-o", "par.safetensors", "--parallel", layout, env={"WANCTL_TRACE": str(tr)}, cwd=out)
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    diff = (latents(single) - latents(out / "par.safetensors")).abs().max().item()
    assert diff <= 1e-5, diff
    assert sorted(p.name for p in out.iterdir()) == ["par.safetensors"]  # rank 0 wrote the one file
    wrote = [line for line in proc.stderr.decode().splitlines() if line.startswith("wrote ")]
    assert len(wrote) == 1, proc.stderr.decode()  # and only rank 0 printed
    events = trace.read(tr)
    cp = [e for e in events if e["event"] == "context_parallel"]
    experts = {e["component"] for e in events if e["event"] == "load" and e["component"].startswith("transformer")}
    # each rank enabled context parallelism on each expert it ran, with its own ulysses rank
    assert len(cp) == nproc * len(experts) and {e["ulysses"] for e in cp} == {ulysses}
    assert {e["ulysses_rank"] for e in cp} == set(range(ulysses))
    return events


def test_ti2v_image_mode_ulysses_2(tmp_path, assets):
    # a first frame on ti2v-5b: per-token timesteps, split with the tokens
    img = next(v for k, v in assets.items() if k != "clip")
    check_parallel(tmp_path, ("denoise", "-m", "tiny-ti2v-5b", "-i", str(img), "--size", "64x64", *COMMON),
                   2, "ulysses=2", 2)


def test_i2v_a14b_ulysses_2(tmp_path, assets):
    img = next(v for k, v in assets.items() if k != "clip")
    # two levels, one per expert (the i2v boundary is 0.9); --sigmas stands for --steps
    args = ("denoise", "-m", "tiny-i2v-a14b", "-i", str(img), "--size", "32x32", "--sigmas", "1.0,0.5", *COMMON[2:])
    events = check_parallel(tmp_path, args,
                   2, "ulysses=2", 2)
    assert {e["expert"] for e in events if e["event"] == "model_call"} == {"transformer", "transformer_2"}


def test_cfg_2_x_ulysses_2_on_four_ranks(tmp_path, t2v_single):
    # (also the t2v Ulysses case: each cfg group is a 2-rank Ulysses group over both experts;
    # ulysses=2 alone on two ranks is the i2v and ti2v tests above)
    events = check_parallel(tmp_path, T2V, 4, "cfg=2,ulysses=2", 2, t2v_single)
    calls = [e for e in events if e["event"] == "model_call"]
    # cfg group 0 ran the conditional branch, group 1 the unconditional one
    assert {e["branch"] for e in calls} == {"cond", "uncond"}
    assert {e["expert"] for e in calls} == {"transformer", "transformer_2"}


def test_bad_degree_refused_before_weights_load(tmp_path, monkeypatch):
    tr = tmp_path / "trace.jsonl"
    monkeypatch.setenv("WANCTL_TRACE", str(tr))
    # the tiny DiTs have 2 attention heads: 3 divides neither them nor the 8 tokens
    r = invoke("t2v", "-m", "tiny-t2v-a14b", "--size", "32x32", *COMMON, "-o", str(tmp_path / "o.safetensors"),
               "--parallel", "ulysses=3")
    assert_one_line_error(r, 3, "ulysses=2")
    assert "does not divide the heads and tokens (2 attention heads and 8 tokens); use ulysses=2" in r.stderr
    assert not [e for e in trace.read(tr) if e["event"] == "load"]
    assert not (tmp_path / "o.safetensors").exists()


def test_missing_launcher_refused(tmp_path, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    r = invoke("t2v", "-m", "tiny-t2v-a14b", "--size", "32x32", *COMMON, "-o", str(tmp_path / "o.safetensors"),
               "--parallel", "ulysses=2")
    assert_one_line_error(r, 3, "torchrun --nproc-per-node 2")


def test_dry_run_shows_the_layout():
    import json

    r = invoke("t2v", "-m", "tiny-t2v-a14b", "--size", "32x32", *COMMON, "--dry-run", "--json",
               "--parallel", "cfg=2,ulysses=2")
    assert r.exit_code == 0, r.output
    plan = json.loads(r.stdout)
    assert plan["parallel"] == {"ulysses": 2, "cfg": 2, "world_size": 4, "writer_rank": 0,
                                "text_encoder_and_vae": "every rank"}


def test_backend_without_context_parallelism_refused(tmp_path):
    r = invoke("t2v", "-m", "tiny-t2v-a14b", "--size", "32x32", *COMMON, "-o", str(tmp_path / "o.safetensors"),
               "--attention", "_native_efficient", "--parallel", "ulysses=2")
    assert_one_line_error(r, 3, "--attention _native_efficient does not support context parallelism; use one of")
    assert not (tmp_path / "o.safetensors").exists()


def test_cfg_2_needs_cfg(tmp_path):
    r = invoke("t2v", "-m", "tiny-t2v-a14b", "--size", "32x32", *COMMON, "-g", "1", "-o", str(tmp_path / "o.safetensors"),
               "--parallel", "cfg=2")
    assert_one_line_error(r, 3, "this run uses no CFG")


def test_step_cache_refused(tmp_path):
    r = invoke("t2v", "-m", "tiny-t2v-a14b", "--size", "32x32", *COMMON, "-o", str(tmp_path / "o.safetensors"),
               "--step-cache", "first-block", "--parallel", "ulysses=2")
    assert_one_line_error(r, 3, "--parallel with --step-cache is not implemented yet")
