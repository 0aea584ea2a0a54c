"""denoise --init LATENT --strength S: video-to-video (SDEdit) on seeded noise."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import assert_one_line_error, run_cli
from wanctl.core.io.artifact import read_artifact

TINY = ["-m", "tiny-t2v-a14b"]


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    d = tmp_path_factory.mktemp("v2v")
    lat = d / "src.safetensors"
    run_cli("t2v", *TINY, "-p", "a red circle", "--size", "64x64", "--frames", "5", "--steps", "2", "--seed", "7",
            "-o", str(lat), check=True)
    return lat


@pytest.fixture(scope="module")
def noise(source):
    n = source.parent / "n.safetensors"
    run_cli("invert", str(source), *TINY, "-p", "a red circle", "--steps", "2", "-o", str(n), check=True)
    return n


def _denoise(out, *args):
    run_cli("denoise", *TINY, "-p", "a green square", "--steps", "3", "-o", str(out), *args, check=True)
    return read_artifact(str(out))


def test_strength_0_returns_the_source(tmp_path, source):
    out = _denoise(tmp_path / "a.safetensors", "--init", str(source), "--strength", "0")
    assert torch.equal(out.latents, read_artifact(str(source)).latents)
    assert out.meta["params"]["init_strength"] == 0.0


def test_strength_1_equals_seeded_generation(tmp_path, source):
    v2v = _denoise(tmp_path / "a.safetensors", "--init", str(source), "--strength", "1", "--seed", "3")
    gen = _denoise(tmp_path / "b.safetensors", "--seed", "3", "--size", "64x64", "--frames", "5")
    assert torch.equal(v2v.latents, gen.latents)
    assert v2v.meta["provenance"]["inputs"][0]["role"] == "init"


def test_partial_strength_keeps_part_of_the_source(tmp_path, source):
    src = read_artifact(str(source)).latents
    low = _denoise(tmp_path / "a.safetensors", "--init", str(source), "--strength", "0.9")
    high = _denoise(tmp_path / "b.safetensors", "--init", str(source), "--strength", "0.97")
    d_low, d_high = float((low.latents - src).norm()), float((high.latents - src).norm())
    assert 0 < d_low < d_high


def test_plan_runs_both_experts_above_the_boundary(source):
    def evaluations(strength):
        r = run_cli("denoise", *TINY, "-p", "x", "--steps", "10", "--init", str(source), "--strength", strength,
                    "--dry-run", "--json", check=True)
        plan = json.loads(r.stdout)
        assert all(st["s"] <= float(strength) + 1e-9 for st in plan["steps"])
        return plan["evaluations"]

    both = evaluations("0.95")
    assert both.get("transformer", 0) > 0 and both.get("transformer_2", 0) > 0
    assert evaluations("0.8").get("transformer", 0) == 0  # below the 0.875 boundary: the low-noise expert only


@pytest.mark.parametrize("args,contains", [
    (["--strength", "0.5"], "--strength applies to video-to-video"),
    (["--init", "{src}", "--frames", "9"], "--init latent fixes them"),
    (["--init", "{noise}"], "expected a latent artifact"),
    (["{noise}", "--init", "{src}"], "two starting points"),
])
def test_refused_before_any_work(tmp_path, source, noise, args, contains):
    args = [a.format(src=source, noise=noise) for a in args]
    before = sorted(p.name for p in tmp_path.iterdir())
    r = run_cli("denoise", *TINY, "-p", "x", *args, "-o", str(tmp_path / "out.safetensors"))
    assert_one_line_error(r, 3, contains)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
