"""`wanctl flf2v` through the CLI: a bidirectional run, --noise, and bad input."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from conftest import assert_one_line_error, invoke, run_cli
from wanctl.core.io.artifact import read_artifact
from wanctl.toy.shapes import example_clip, render


def _frames(tmp_path):
    clip = render(example_clip())
    a, b = tmp_path / "first.png", tmp_path / "last.png"
    Image.fromarray(clip[0]).save(a)
    Image.fromarray(np.ascontiguousarray(clip[-1][:, 16:112])).save(b)  # another aspect ratio
    return a, b


def test_flf2v_bidirectional_subprocess(tmp_path):
    a, b = _frames(tmp_path)
    out = tmp_path / "f.safetensors"
    proc = run_cli("flf2v", "-m", "tiny-i2v-a14b", "-i", str(a), "-l", str(b), "-p", "the circle moves right",
                   "--frames", "9", "--steps", "4", "--bidirectional", "--fusion", "linear", "--cfg-batch", "-o", str(out),
                   "--decode", str(tmp_path / "f.gif"), "--json")
    assert proc.returncode == 0, proc.stderr.decode()
    assert b"last frame 96x96 resized and center-cropped" in proc.stderr
    rep = json.loads(proc.stdout)
    assert rep["forwards"] == 4 and rep["bidirectional"]
    p = read_artifact(str(out)).meta["params"]
    assert p["solver"] == "euler" and p["fusion"] == "linear" and p["schedule"]["shift"] == 16.0
    assert p["guidance"] == {"high_noise": 5.0, "low_noise": 5.0}
    assert (tmp_path / "f.gif").exists()


def test_flf2v_from_inverted_noise(tmp_path, assets):
    a, b = _frames(tmp_path)
    lat, noise = tmp_path / "c.safetensors", tmp_path / "n.safetensors"
    assert invoke("encode", str(assets["clip"]), "-m", "tiny-i2v-a14b", "--frames", "9", "-o", str(lat)).exit_code == 0
    assert invoke("invert", str(lat), "-p", "shapes", "--steps", "3", "-o", str(noise), "--dtype", "fp32").exit_code == 0
    r = invoke("flf2v", "-i", str(a), "-l", str(b), "-p", "x", "--noise", str(noise), "-o", str(tmp_path / "o.safetensors"))
    assert r.exit_code == 0, r.stderr
    p = read_artifact(str(tmp_path / "o.safetensors")).meta["params"]
    assert p["schedule"]["steps"] == 3 and "noise" in p


def test_flf2v_bad_input(tmp_path, assets):
    a, b = _frames(tmp_path)
    o = str(tmp_path / "o.safetensors")
    r = invoke("flf2v", "-m", "tiny-i2v-a14b", "-i", str(a), "-p", "x", "-o", o)
    assert r.exit_code == 2  # --last-frame is required: a usage error
    assert_one_line_error(invoke("flf2v", "-m", "tiny-i2v-a14b", "-i", str(a), "-l", str(tmp_path / "nope.png"), "-p", "x", "-o", o),
                          3, "no such image")
    assert_one_line_error(invoke("flf2v", "-m", "tiny-ti2v-5b", "-i", str(a), "-l", str(b), "-p", "x", "-o", o), 3,
                          "needs an i2v-a14b model")
    assert_one_line_error(invoke("flf2v", "-m", "tiny-t2v-a14b", "-i", str(a), "-l", str(b), "-p", "x", "-o", o), 3,
                          "needs an i2v-a14b model")
    assert_one_line_error(invoke("flf2v", "-m", "tiny-i2v-a14b", "-i", str(a), "-l", str(b), "-p", "x", "--bidirectional",
                                 "--solver", "unipc", "-o", o), 3, "euler or midpoint")
    assert not (tmp_path / "o.safetensors").exists()
    # the same file as first and last frame is allowed (a loop), and said
    r = invoke("flf2v", "-m", "tiny-i2v-a14b", "-i", str(a), "-l", str(a), "-p", "x", "--frames", "5", "--steps", "2", "-o", o)
    assert r.exit_code == 0, r.stderr
    assert "generating a loop" in r.stderr
