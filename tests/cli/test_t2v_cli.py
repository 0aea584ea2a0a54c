"""`wanctl t2v` through the CLI: generation with --decode, the dry-run plan, bad input."""

from __future__ import annotations

import json

import imageio_ffmpeg

from conftest import assert_one_line_error, invoke, run_cli
from wanctl.core import trace
from wanctl.core.io.artifact import read_artifact


def test_t2v_half_frame_decode_subprocess(tmp_path):
    out, mp4, tr = tmp_path / "t.safetensors", tmp_path / "t.mp4", tmp_path / "trace.jsonl"
    proc = run_cli("t2v", "-m", "tiny-t2v-a14b", "-p", "a red circle moving right", "--size", "128x96", "--frames", "17",
                   "--steps", "10", "--half-frame", "--cfg-truncate-steps", "2", "-o", str(out), "--decode", str(mp4),
                   "--json", env={"WANCTL_TRACE": str(tr)})
    assert proc.returncode == 0, proc.stderr.decode()
    rep = json.loads(proc.stdout)
    calls = [e for e in trace.read(tr) if e["event"] == "model_call"]
    assert rep["forwards"] == len(calls)
    assert {c["frames"] for c in calls if c["expert"] == "transformer"} == {3}
    assert {c["frames"] for c in calls if c["expert"] == "transformer_2"} == {5}
    art = read_artifact(str(out))
    p = art.meta["params"]
    assert p["plan"]["completion"] == "renoise" and p["plan"]["half_frames"] == 3
    # each traced call carries its plan step and timestep; per step, as many calls as planned
    planned = {st["index"]: (st["t"], st["forwards"]) for st in p["plan"]["steps"]}
    seen: dict = {}
    for c in calls:
        assert c["t"] == planned[c["step"]][0]
        seen[c["step"]] = seen.get(c["step"], 0) + 1
    assert seen == {i: f for i, (_, f) in planned.items()}
    assert p["guidance"] == {"high_noise": 4.0, "low_noise": 3.0} and p["boundary"] == 0.875
    assert p["schedule"]["shift"] == 12.0 and p["seed"] == 0
    gen = imageio_ffmpeg.read_frames(str(mp4))
    assert next(gen)["size"] == (128, 96) and sum(1 for _ in gen) == 17


def test_dry_run_plan():
    # a size the tiny model can run (its rotary embedding covers 32 tokens per axis; 832x480 is 52 columns)
    r = invoke("t2v", "-m", "tiny-t2v-a14b", "-p", "x", "--size", "256x160", "--half-frame", "--dry-run", "--json")
    assert r.exit_code == 0, r.stderr
    plan = json.loads(r.stdout)
    steps = plan["steps"]
    assert len(steps) == 40 and plan["switch_step"] == 26  # official 40 steps, shift 12, boundary 0.875
    assert plan["grid"]["grid"] == "official"  # the default for built-in and real folders alike
    assert {"s", "t", "expert", "frames", "guidance", "forwards"} <= set(steps[0])
    assert steps[0]["guidance"] == 4.0 and steps[-1]["guidance"] == 3.0
    assert {s["frames"] for s in steps[:26]} == {11} and {s["frames"] for s in steps[26:]} == {21}
    assert [s["expert"] for s in steps].count("transformer") == 26
    assert plan["relative_flops"] < 0.75
    r = invoke("t2v", "-m", "tiny-t2v-a14b", "-p", "x", "--size", "256x160", "--dry-run")
    assert r.exit_code == 0 and "run plan" in r.stdout and "relative to a plain run" in r.stdout


def test_t2v_bad_input(tmp_path):
    o = str(tmp_path / "o.safetensors")
    assert_one_line_error(invoke("t2v", "-m", "tiny-i2v-a14b", "-p", "x", "-o", o), 3, "use `wanctl denoise`")
    assert_one_line_error(invoke("t2v", "-m", "tiny-ti2v-5b", "-p", "x", "--half-frame", "--size", "64x64", "-o", o), 3,
                          "--half-frame-until")
    assert_one_line_error(invoke("t2v", "-m", "tiny-t2v-a14b", "-p", "x", "--half-frame", "--completion", "smear", "--size", "64x64", "-o", o),
                          3, "unknown completion")
    assert_one_line_error(invoke("t2v", "-m", "tiny-t2v-a14b", "-p", "x", "--frames", "12", "-o", o), 3, "not 4n+1")
    assert_one_line_error(invoke("t2v", "-m", "tiny-t2v-a14b", "-p", "x", "--size", "64x64"), 3, "missing -o")
    assert list(tmp_path.iterdir()) == []
