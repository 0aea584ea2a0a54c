"""examples/: the Makefile (pattern rules, a second run does nothing) and edit.sh (one pipe)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from conftest import ROOT
from wanctl.core.io.artifact import read_artifact


def _env():
    e = dict(os.environ)
    e["PATH"] = str(Path(sys.executable).parent) + os.pathsep + e.get("PATH", "")
    e["PYTHON"] = sys.executable
    return e


def test_makefile_and_pipe(tmp_path):
    out = tmp_path / "out"
    args = ["make", "-C", str(ROOT / "examples"), f"OUT={out}", "FRAMES=9", "STEPS=4", f"PYTHON={sys.executable}"]
    # what the default two targets would run: one encode and one (cached) invert for both
    plan = subprocess.run(args + ["-n"], capture_output=True, text=True, env=_env(), timeout=60)
    assert plan.returncode == 0, plan.stderr
    assert plan.stdout.count("wanctl encode") == 1 and plan.stdout.count("wanctl invert") == 1
    assert plan.stdout.count("wanctl denoise") == 2 and plan.stdout.count("wanctl decode") == 2
    # one target for real (the second one's commands are the same rules)
    one = args + ["TARGETS=green-triangle"]
    first = subprocess.run(one, capture_output=True, text=True, env=_env(), timeout=600)
    assert first.returncode == 0, first.stdout + first.stderr
    assert (out / "edits" / "green-triangle.mp4").stat().st_size > 0
    assert first.stdout.count("wanctl denoise") == 1
    second = subprocess.run(one, capture_output=True, text=True, env=_env(), timeout=120)
    assert second.returncode == 0
    assert "wanctl" not in second.stdout and "Nothing to be done" in second.stdout
    assert subprocess.run(one + ["-q"], env=_env()).returncode == 0  # up to date
    # a changed input reruns only what depends on it (make -n: what would run; the rules ran above)
    os.utime(out / "assets" / "targets" / "green-triangle.png")
    third = subprocess.run(one + ["-n"], capture_output=True, text=True, env=_env(), timeout=60)
    assert third.returncode == 0, third.stderr
    assert third.stdout.count("wanctl denoise") == 1 and third.stdout.count("wanctl decode") == 1
    assert "wanctl invert" not in third.stdout and "wanctl encode" not in third.stdout

    # the same workflow as one pipe (no cache, so the pipe really computes) equals it bit for bit
    env = dict(_env(), FRAMES="9", STEPS="4", WANCTL_NO_CACHE="1")
    pipe_mp4, pipe_latent = tmp_path / "pipe.mp4", tmp_path / "pipe.latent.safetensors"
    proc = subprocess.run(
        [str(ROOT / "examples" / "edit.sh"), str(out / "assets" / "clip.mp4"), str(out / "assets" / "targets" / "green-triangle.png"),
         str(pipe_mp4), str(pipe_latent)], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    chain = read_artifact(str(out / "edits" / "green-triangle.latent.safetensors"))
    piped = read_artifact(str(pipe_latent))
    assert torch.equal(piped.latents, chain.latents)
    assert pipe_mp4.read_bytes() == (out / "edits" / "green-triangle.mp4").read_bytes()
