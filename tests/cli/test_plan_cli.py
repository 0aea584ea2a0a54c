"""The run plan through the CLI: --dry-run everywhere, grids, --sigmas, noise grids kept,
model presets, readable --help, progress lines when stderr is not a terminal."""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest
from PIL import Image

from conftest import assert_one_line_error, invoke, run_cli
from wanctl.core.io.artifact import read_artifact


def test_official_grid_is_the_formula_and_the_default():
    from wanctl.core.sampling.schedule import make_schedule

    for n, shift in ((50, 5.0), (40, 12.0), (4, 5.0)):
        sched = make_schedule(n, shift)
        assert sched.grid == "official"
        u = np.linspace(np.float32(0.999).item(), 0.0, n + 1)[:-1]  # the official scheduler: float64 grid
        s64 = shift * u / (1 + (shift - 1) * u)
        assert np.array_equal(np.array(sched.sigmas, dtype=np.float32), np.append(s64.astype(np.float32), 0.0))
        assert sched.timesteps() == [int(t) for t in (s64 * 1000).astype(np.int64)]
    # diffusers' grid differs by up to 4.6 % at the last point (ti2v-5b, 50 steps)
    off, dif = make_schedule(50, 5.0), make_schedule(50, 5.0, "diffusers")
    rel = max(abs(a - b) / b for a, b in zip(off.sigmas[:-1], dif.sigmas[:-1]))
    assert 0.04 < rel < 0.05


def test_dry_run_json_on_every_sampling_command(tmp_path, assets):
    r = invoke("t2v", "-m", "toy-t2v-a14b", "-p", "x", "--dry-run", "--json")
    assert r.exit_code == 0, r.stderr
    plan = json.loads(r.stdout)
    # a built-in toy carries its own presets: 64x64, 17 frames, 30 steps, on the official grid
    assert plan["size"] == [64, 64] and plan["frames"] == 17 and len(plan["steps"]) == 30
    assert plan["grid"]["grid"] == "official"
    lat = tmp_path / "c.safetensors"
    assert invoke("encode", str(assets["clip"]), "-m", "tiny-i2v-a14b", "--frames", "9", "--size", "64x64",
                  "-o", str(lat)).exit_code == 0
    r = invoke("invert", str(lat), "-p", "x", "--steps", "5", "--solver", "midpoint", "--dry-run", "--json")
    assert r.exit_code == 0, r.stderr
    inv = json.loads(r.stdout)
    assert inv["direction"] == "invert" and [s["forwards"] for s in inv["steps"]] == [2] * 5
    assert all(s["guidance"] == 1.0 for s in inv["steps"]) and inv["steps"][0]["s"] == 0.0
    img = tmp_path / "f.png"
    Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(img)
    r = invoke("denoise", "-m", "tiny-i2v-a14b", "-i", str(img), "-p", "x", "--frames", "9", "--steps", "4",
               "--batch-size", "2", "--dry-run", "--json")
    assert r.exit_code == 0, r.stderr
    den = json.loads(r.stdout)
    assert den["batch"] == 1 and [s["guidance"] for s in den["steps"]][-1] == 3.5
    r = invoke("flf2v", "-m", "tiny-i2v-a14b", "-i", str(img), "-l", str(img), "-p", "x", "--frames", "9", "--steps", "3",
               "--bidirectional", "--dry-run", "--json")
    assert r.exit_code == 0, r.stderr
    fl = json.loads(r.stdout)
    assert fl["passes"] == 2 and [s["forwards"] for s in fl["steps"]] == [4, 4, 4]  # 2 passes x 2 CFG branches
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.safetensors", "f.png"]  # dry runs wrote nothing


def test_sigmas_give_an_exact_grid():
    r = invoke("t2v", "-m", "tiny-t2v-a14b", "-p", "x", "--size", "64x64", "--frames", "9",
               "--sigmas", "1.0,0.9375,0.8333,0.625", "--guidance", "1", "--solver", "euler", "--dry-run", "--json")
    assert r.exit_code == 0, r.stderr
    plan = json.loads(r.stdout)
    assert [s["s"] for s in plan["steps"]] == [1.0, 0.9375, 0.8333, 0.625] and plan["steps"][-1]["s_next"] == 0.0
    assert [s["expert"] for s in plan["steps"]] == ["transformer"] * 2 + ["transformer_2"] * 2  # 2 high + 2 low
    assert plan["negative_prompt"] is None and all(s["forwards"] == 1 for s in plan["steps"])
    assert_one_line_error(invoke("t2v", "-m", "tiny-t2v-a14b", "-p", "x", "--sigmas", "1.0,1.2", "--dry-run"), 3, "--sigmas")
    assert_one_line_error(invoke("t2v", "-m", "tiny-t2v-a14b", "-p", "x", "--sigmas", "1,0.5", "--steps", "3",
                                 "--dry-run"), 3, "exact grid")


def test_options_checked_before_any_work(tmp_path):
    r = invoke("t2v", "-m", "tiny-t2v-a14b", "-p", "x", "--steps", "100000", "--dry-run")
    assert r.exit_code == 2  # Typer's range check, at once
    assert invoke("t2v", "-m", "tiny-t2v-a14b", "-p", "x", "--boundary", "1.5", "--dry-run").exit_code == 2
    assert_one_line_error(invoke("t2v", "-m", "tiny-t2v-a14b", "-p", "x", "--step-cache", "teacache", "--dry-run"), 3,
                          "unknown step cache")
    assert_one_line_error(invoke("t2v", "-m", "tiny-ti2v-5b", "-p", "x", "--cfg-truncate-high-noise-steps", "2",
                                 "--dry-run"), 3, "two-expert")
    assert_one_line_error(invoke("t2v", "-m", "tiny-ti2v-5b", "-p", "x", "--guidance", "nan", "--dry-run"), 3, "finite")
    missing = str(tmp_path / "none.safetensors")
    for args in (["encode", "x.mp4", "-o", missing, "--fps", "0"], ["decode", missing, "-o", "y.mp4", "--fps", "-1"],
                 ["preview", missing, "-o", "y.png", "--scale", "0"], ["preview", missing, "-o", "y.png", "--fps", "nan"],
                 ["t2v", "-p", "x", "--seed", "-1", "--dry-run"], ["t2v", "-p", "x", "--frames", "0", "--dry-run"],
                 ["denoise", "-p", "x", "--batch-size", "0", "--dry-run"], ["t2v", "-p", "x", "--steps", "0", "--dry-run"]):
        assert invoke(*args).exit_code == 2, args  # usage errors, before anything is read or loaded
    assert_one_line_error(invoke("invert", missing, "-p", "x", "-o", missing, "--save-trajectory", missing), 3,
                          "--save-trajectory")
    assert list(tmp_path.iterdir()) == []


def test_number_lists_and_sizes_are_read_exactly(tmp_path, assets):
    """A level left out of --sigmas is refused, not skipped; a size hint names the nearest size
    (rounded, not floored); a start time that is not a finite number is refused before a frame is read."""
    for bad in ("1,,0.5", "1,0.5,", ",1,0.5"):
        assert_one_line_error(invoke("t2v", "-m", "tiny-t2v-a14b", "-p", "x", "--sigmas", bad, "--dry-run"), 3,
                              "an empty value between commas")
    assert_one_line_error(invoke("t2v", "-m", "tiny-t2v-a14b", "-p", "x", "--size", "63x72", "--dry-run"), 3,
                          "(nearest: 64x80)")
    for start in ("nan", "inf", "-1"):
        out = tmp_path / "c.safetensors"
        assert_one_line_error(invoke("encode", str(assets["clip"]), "-m", "tiny-t2v-a14b", "--start", start,
                                     "-o", str(out)), 3, "--start must be a finite number >= 0")
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def dpm_noise(tmp_path_factory, assets):
    d = tmp_path_factory.mktemp("noise")
    assert invoke("encode", str(assets["clip"]), "-m", "tiny-i2v-a14b", "--frames", "9", "--size", "64x64",
                  "-o", str(d / "c.safetensors")).exit_code == 0
    r = invoke("invert", str(d / "c.safetensors"), "-p", "x", "--steps", "6", "--grid", "dpm", "--shift", "3",
               "-o", str(d / "n.safetensors"), "--dtype", "fp32")
    assert r.exit_code == 0, r.stderr
    return d / "n.safetensors"


def test_noise_grid_is_kept_when_steps_change(tmp_path, dpm_noise):
    """denoise NOISE --steps N rebuilds the grid on the noise's own grid and shift."""
    r = invoke("denoise", str(dpm_noise), "-p", "y", "--steps", "3", "--dry-run", "--json")
    assert r.exit_code == 0, r.stderr
    grid = json.loads(r.stdout)["grid"]
    assert grid["grid"] == "dpm" and grid["shift"] == 3.0 and grid["steps"] == 3


def test_flf2v_noise_uses_or_refuses_the_options(tmp_path, dpm_noise):
    img = tmp_path / "f.png"
    Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(img)
    base = ("flf2v", "-i", str(img), "-l", str(img), "-p", "x", "--noise", str(dpm_noise))
    assert_one_line_error(invoke(*base, "--frames", "13", "--dry-run"), 3, "--frames/--size")
    assert_one_line_error(invoke(*base, "--size", "128x128", "--dry-run"), 3, "--frames/--size")
    r = invoke(*base, "--steps", "2", "--dry-run", "--json")
    assert r.exit_code == 0, r.stderr
    plan = json.loads(r.stdout)
    assert plan["grid"]["grid"] == "dpm" and len(plan["steps"]) == 2 and plan["frames"] == 9
    r = invoke(*base, "--dry-run", "--json")
    assert json.loads(r.stdout)["grid"]["steps"] == 6  # no option: the noise's own grid


def test_help_is_readable_at_80_columns():
    commands = ["", "model", "cache", "encode", "invert", "denoise", "t2v", "flf2v", "decode", "info", "preview", "export",
                "model list", "model init", "model check", "cache list", "cache size", "cache prune"]
    env = dict(os.environ, COLUMNS="80", TERM="dumb")
    for c in commands:
        proc = run_cli(*c.split(), "--help", env=env)
        out = proc.stdout.decode()
        assert proc.returncode == 0, c
        assert "<bool>" not in out, c
        names = re.findall(r"│\s*\*?\s*(--[\w-]+\S*)", out)
        assert names, c
        assert not [n for n in names if n.endswith("…")], (c, names)
    t2v = run_cli("t2v", "--help", env=env).stdout.decode()
    for panel in ("Sampling", "Guidance", "Half-frame", "Memory and speed", "Output"):
        assert panel in t2v
    for opt in ("--cfg-truncate-high-noise-steps", "--step-cache", "--half-frame-until", "--text-encoder-device"):
        assert opt in t2v


def test_progress_lines_when_stderr_is_not_a_terminal(tmp_path):
    env = {"WANCTL_NO_PROGRESS": ""}
    proc = run_cli("t2v", "-m", "tiny-ti2v-5b", "-p", "x", "--size", "64x64", "--frames", "5", "--steps", "2",
                   "-o", str(tmp_path / "o.safetensors"), env=env)
    assert proc.returncode == 0, proc.stderr.decode()
    assert re.search(r"generating: 2/2 steps \(\d+\.\d s\)", proc.stderr.decode())
    assert read_artifact(str(tmp_path / "o.safetensors")).meta["params"]["plan"]["task"] == "t2v"


def test_options_that_would_be_ignored_are_refused(tmp_path, dpm_noise):
    img = tmp_path / "f.png"
    Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(img)
    fl = ("flf2v", "-m", "tiny-i2v-a14b", "-i", str(img), "-l", str(img), "-p", "x", "--frames", "5", "--dry-run")
    assert_one_line_error(invoke(*fl, "--fusion", "linear"), 3, "apply to --bidirectional sampling only")
    assert_one_line_error(invoke(*fl, "--reverse-rope"), 3, "apply to --bidirectional sampling only")
    assert_one_line_error(invoke(*fl, "--bidirectional", "--bidirectional-mode", "mirror", "--fusion", "linear"), 3,
                          "mirror fixes uniform fusion")
    assert_one_line_error(invoke("denoise", str(dpm_noise), "-p", "y", "--seed", "5", "--dry-run"), 3, "--seed applies")
    assert_one_line_error(invoke("denoise", str(dpm_noise), "-p", "y", "--sigmas", "0.5,0.2", "--dry-run"), 3,
                          "the noise is at s = 1")
    t2v = ("t2v", "-m", "tiny-t2v-a14b", "-p", "x", "--size", "64x64", "--frames", "9", "--dry-run")
    assert_one_line_error(invoke(*t2v, "--completion", "repeat"), 3, "--completion needs --half-frame")
    assert_one_line_error(invoke(*t2v, "--step-cache", "taylorseer", "--cache-threshold", "0.1"), 3, "--cache-threshold")
    assert_one_line_error(invoke(*t2v, "--cache-interval", "2"), 3, "--cache-interval applies")
    assert_one_line_error(invoke(*t2v, "--attention", "xformers"), 3, "not available here")  # before any load


def test_cfg_options_of_a_run_without_cfg_are_refused():
    """--preset lightning / --guidance 1 leave no CFG step: a negative prompt, --cfg-batch or CFG
    truncation would do nothing, so they are refused (the plan decides; --dry-run says so too)."""
    t2v = ("t2v", "-m", "tiny-t2v-a14b", "-p", "x", "--size", "64x64", "--frames", "5", "--dry-run")
    assert_one_line_error(invoke(*t2v, "--preset", "lightning", "--negative-prompt", "foo"), 3, "uses no CFG")
    assert_one_line_error(invoke(*t2v, "--preset", "lightning", "--cfg-batch"), 3, "--cfg-batch")
    assert_one_line_error(invoke(*t2v, "--steps", "2", "--guidance", "1", "--cfg-truncate-steps", "1"), 3, "CFG truncation")
    # CFG truncated on every step: the truncation is what turns CFG off, so only the negative prompt is refused
    assert invoke(*t2v, "--steps", "2", "--cfg-truncate-steps", "2").exit_code == 0
    assert_one_line_error(invoke(*t2v, "--steps", "2", "--cfg-truncate-steps", "2", "--negative-prompt", "n"), 3,
                          "--negative-prompt")
    assert invoke(*t2v, "--steps", "2", "--cfg-batch", "--negative-prompt", "n").exit_code == 0  # CFG on: both used


def test_sizes_beyond_the_rotary_embedding_are_refused_by_the_plan(tmp_path):
    """The DiT's RoPE covers rope_max_seq_len tokens per axis (32 on the tiny models): a longer
    latent grid crashed deep in the model (exit 1) after the weights loaded, and --dry-run
    accepted it."""
    base = ("t2v", "-m", "tiny-t2v-a14b", "-p", "x", "--frames", "5", "--steps", "1")
    for args in (("--dry-run",), ("-o", str(tmp_path / "o.safetensors"))):
        assert_one_line_error(invoke(*base, "--size", "1024x16", *args), 3, "rotary embedding covers at most 32")
    assert not list(tmp_path.iterdir())
    assert invoke(*base, "--size", "512x16", "--dry-run").exit_code == 0  # 32 columns: the limit itself


def test_invert_dry_run_checks_the_latent_like_the_run(tmp_path, assets):
    lat = tmp_path / "c.safetensors"
    assert invoke("encode", str(assets["clip"]), "-m", "tiny-t2v-a14b", "--frames", "5", "--size", "64x64",
                  "-o", str(lat)).exit_code == 0
    for args in (("--dry-run",), ("-o", str(tmp_path / "n.safetensors"))):
        assert_one_line_error(invoke("invert", str(lat), "-m", "tiny-i2v-a14b", "-p", "x", "--steps", "2", *args), 3,
                              "artifact is for family t2v-a14b")


def test_a_first_frame_too_small_to_set_the_size_is_named(tmp_path):
    Image.new("RGB", (1, 1)).save(tmp_path / "one.png")
    one = str(tmp_path / "one.png")
    assert_one_line_error(invoke("denoise", "-m", "tiny-i2v-a14b", "-i", one, "-p", "x", "--dry-run"), 3,
                          "one.png (the first --first-frame) is 1x1")
    assert_one_line_error(invoke("flf2v", "-m", "tiny-i2v-a14b", "-i", one, "-l", one, "-p", "x", "--frames", "5",
                                 "--dry-run"), 3, "give --size")
    assert invoke("flf2v", "-m", "tiny-i2v-a14b", "-i", one, "-l", one, "-p", "x", "--frames", "5", "--size", "64x64",
                  "--dry-run").exit_code == 0
