"""Faults lose nothing and leave nothing: a run that receives SIGINT, SIGTERM or SIGKILL in the
middle of sampling leaves no output and (for the first two) no temp file, with one error line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from wanctl.core import trace


def _start(tmp_path, steps=400):
    out = tmp_path / "o.safetensors"
    tr = tmp_path / "trace.jsonl"
    env = dict(os.environ, WANCTL_TRACE=str(tr))
    proc = subprocess.Popen([sys.executable, "-m", "wanctl", "t2v", "-m", "tiny-ti2v-5b", "-p", "x", "--size", "64x64",
                             "--frames", "9", "--steps", str(steps), "--solver", "euler", "-o", str(out), "--decode",
                             str(tmp_path / "o.mp4")], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:  # wait until sampling is under way
        if any(e["event"] == "model_call" for e in trace.read(tr)):
            return proc, out
        if proc.poll() is not None:
            raise AssertionError(proc.stderr.read().decode())
        time.sleep(0.2)
    proc.kill()
    raise AssertionError("the run never started sampling")


@pytest.mark.parametrize("sig,code,word", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")])
def test_signal_mid_run_leaves_nothing(tmp_path, sig, code, word):
    proc, out = _start(tmp_path)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    err = err.decode()
    assert proc.returncode == code, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert [line for line in lines if line.startswith("error:")] == [f"error: {word}; no output was written"]
    assert "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trace.jsonl"]  # no output, no .tmp, no video


def test_sigkill_leaves_no_output(tmp_path):
    """SIGKILL cannot be caught: no output appears (a hidden .tmp may stay; the next run ignores it)."""
    proc, out = _start(tmp_path)
    proc.kill()
    proc.wait(timeout=60)
    names = [p.name for p in tmp_path.iterdir()]
    assert "o.safetensors" not in names and "o.mp4" not in names
    assert all(n == "trace.jsonl" or (n.startswith(".") and n.endswith(".tmp")) for n in names)


def test_t2v_decode_writes_both_outputs_or_neither(tmp_path):
    """The video's name taken by someone else mid-run: the run fails (exit 3) and the latent,
    finished before the video, is not left behind alone."""
    proc, out = _start(tmp_path, steps=40)
    (tmp_path / "o.mp4").write_bytes(b"someone else's")
    _, err = proc.communicate(timeout=300)
    err = err.decode()
    assert proc.returncode == 3, err
    assert "o.mp4" in err and ("exists" in err or "appeared while writing" in err) and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.mp4", "trace.jsonl"]
    assert (tmp_path / "o.mp4").read_bytes() == b"someone else's"


def test_a_full_disk_is_exit_5_with_one_line(tmp_path, assets, monkeypatch):
    import errno

    import safetensors.torch

    from conftest import assert_one_line_error, invoke

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", args[1] if len(args) > 1 else None)

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    r = invoke("encode", str(assets["clip"]), "-o", str(tmp_path / "a.safetensors"), "-m", "tiny-ti2v-5b",
               "--frames", "9", "--size", "64x64")
    assert_one_line_error(r, 5, "no space left")
    assert list(tmp_path.iterdir()) == []
