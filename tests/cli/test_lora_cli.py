"""--lora / --lora-high / --lora-low / --lora-unfused through the CLI: the LoRAs land in the
artifact metadata, fused and unfused runs agree, --dry-run reads no weights, and bad LoRA files
are refused in one line (exit 3) before any model loads."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from conftest import assert_one_line_error, invoke, run_cli
from lora_files import make_pairs, write
from wanctl.core import trace
from wanctl.core.files import sha256_file
from wanctl.core.io.artifact import read_artifact

MODS = ["blocks.0.attn1.to_q", "blocks.0.attn2.to_v", "blocks.1.ffn.net.0.proj", "proj_out"]


@pytest.fixture(scope="module")
def loras(tmp_path_factory, bundles):
    d = tmp_path_factory.mktemp("loras")
    dit = bundles("tiny-t2v-a14b").transformer()
    out = {
        "high": write(d / "high.safetensors", "official", make_pairs(dit, MODS, rank=4, alpha=4.0, seed=1)),
        "low": write(d / "low.safetensors", "kohya", make_pairs(
            dit, [f"blocks.{i}.{m}" for i in range(2) for m in ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0",
                                                                 "attn2.to_q", "attn2.to_k", "attn2.to_v", "attn2.to_out.0",
                                                                 "ffn.net.0.proj", "ffn.net.2")], rank=2, seed=2)),
        "both": write(d / "both.safetensors", "diffusers", make_pairs(dit, MODS[:2], rank=2, alpha=None, seed=3)),
        # another family: a ti2v-5b LoRA (48 latent channels in its output head) for an A14B model
        "ti2v": write(d / "ti2v.safetensors", "official", make_pairs(bundles("tiny-ti2v-5b").transformer(), MODS, seed=4)),
    }
    save_file({}, str(d / "empty.safetensors"))
    out["empty"] = d / "empty.safetensors"
    sd = load_file(str(out["high"]))
    sd["diffusion_model.blocks.0.self_attn.q.dora_scale"] = torch.ones(1, 24)
    save_file(sd, str(d / "dora.safetensors"))
    out["dora"] = d / "dora.safetensors"
    return out


RUN = ("t2v", "-m", "tiny-t2v-a14b", "-p", "a red circle", "--size", "32x32", "--frames", "5", "--steps", "4",
       "--dtype", "fp32")


def test_loras_recorded_and_fused_equals_unfused(tmp_path, loras, monkeypatch):
    spec = ("--lora-high", f"{loras['high']}:3.0", "--lora-low", f"{loras['low']}:1.5", "--lora", str(loras["both"]))
    fused, unfused = tmp_path / "f.safetensors", tmp_path / "u.safetensors"
    p = run_cli(*RUN, *spec, "-o", str(fused))
    assert p.returncode == 0, p.stderr.decode()
    assert "LoRA high.safetensors (official keys) at strength 3 on transformer" in p.stderr.decode()
    r = invoke(*RUN, *spec, "--lora-unfused", "-o", str(unfused))  # in-process: the same code, faster
    assert r.exit_code == 0, r.stderr
    art = read_artifact(str(fused))
    rec = art.meta["model"]["loras"]
    assert [(r["path"], r["sha256"], r["strength"], r["target"], r["experts"]) for r in rec] == [
        (str(loras["both"]), sha256_file(loras["both"]), 1.0, "both", ["transformer", "transformer_2"]),
        (str(loras["high"]), sha256_file(loras["high"]), 3.0, "high", ["transformer"]),
        (str(loras["low"]), sha256_file(loras["low"]), 1.5, "low", ["transformer_2"]),
    ]
    assert rec[0]["fused"] is True and read_artifact(str(unfused)).meta["model"]["loras"][0]["fused"] is False
    monkeypatch.setenv("COLUMNS", "300")  # one table row per line
    shown = invoke("info", str(fused))
    assert shown.exit_code == 0 and f"at strength 3.0 on transformer (sha256 {sha256_file(loras['high'])[:16]})" in shown.stdout
    a, b = art.latents.float(), read_artifact(str(unfused)).latents.float()
    assert ((a - b).abs().max() / a.abs().max()).item() < 1e-5


def test_dry_run_with_lora_loads_no_weights(tmp_path, loras, monkeypatch):
    tr = tmp_path / "trace.jsonl"
    monkeypatch.setenv("WANCTL_TRACE", str(tr))
    r = invoke(*RUN, "--lora", f"{loras['high']}:0.5", "--dry-run")
    assert r.exit_code == 0, r.stderr
    assert "run plan" in r.stdout and "at strength 0.5" in r.stderr
    assert [e for e in trace.read(tr) if e["event"] in ("load", "lora")] == []


@pytest.mark.parametrize("case, contains", [
    ("missing", "no such file"),
    ("empty", "empty LoRA"),
    ("dora", "DoRA"),
    ("ti2v", "does not fit transformer"),
])
def test_bad_lora_refused_before_any_model_loads(tmp_path, loras, case, contains):
    tr = tmp_path / "trace.jsonl"
    f = tmp_path / "missing.safetensors" if case == "missing" else loras[case]
    p = run_cli(*RUN, "--lora", str(f), "-o", str(tmp_path / "o.safetensors"), env={"WANCTL_TRACE": str(tr)})
    assert_one_line_error(p, 3, contains)
    assert [e for e in trace.read(tr) if e["event"] == "load"] == []
    assert not (tmp_path / "o.safetensors").exists()


def test_lora_options_on_every_dit_command(tmp_path, assets, loras):
    img = tmp_path / "f.png"
    Image.fromarray(np.full((32, 32, 3), 90, np.uint8)).save(img)
    lat = tmp_path / "c.safetensors"
    assert invoke("encode", str(assets["clip"]), "-m", "tiny-i2v-a14b", "--frames", "5", "--size", "32x32",
                  "-o", str(lat)).exit_code == 0
    lo = ("--lora-low", f"{loras['high']}:2", "--dry-run")
    for args in (("invert", str(lat), "-p", "x", "--steps", "3"),
                 ("denoise", "-m", "tiny-i2v-a14b", "-i", str(img), "-p", "x", "--frames", "5", "--steps", "3"),
                 ("flf2v", "-m", "tiny-i2v-a14b", "-i", str(img), "-l", str(img), "-p", "x", "--frames", "5", "--steps", "3")):
        r = invoke(*args, *lo)
        assert r.exit_code == 0, r.stderr
        assert "at strength 2 on transformer_2" in r.stderr
    # a one-expert model has no low-noise expert
    assert_one_line_error(invoke("t2v", "-m", "tiny-ti2v-5b", "-p", "x", *lo), 3, "single expert")
    assert_one_line_error(invoke(*RUN, "--lora", f"{loras['high']}:nan", "--dry-run"), 3, "no such file")
