"""Quantized DiT files through the CLI: a GGUF DiT and an fp8_scaled DiT named in a model
description run `wanctl t2v` end to end (--weights-dtype fp8 too), a .gguf given as --model, and
bad files / options as one-line errors. The files are written as in tests/core/test_quantized.py."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "core"))  # the writers of tests/core/test_quantized.py

from conftest import assert_one_line_error, invoke, run_cli  # noqa: E402
from test_quantized import _official_dit_sd, describe, official_sd, wide_dit, write_fp8_scaled, write_gguf  # noqa: E402
from wanctl.core.io.artifact import read_artifact  # noqa: E402

T2V = ("t2v", "-p", "a red circle moving right", "--size", "32x32", "--frames", "5", "--steps", "2", "--no-cache")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("quantized")
    dit = wide_dit()
    gguf_file = write_gguf(d / "wan2.2_ti2v_5B-Q8_0.gguf", official_sd(dit))
    plain = d / "wan2.2_ti2v_5B_fp32.safetensors"  # the same DiT unquantized, for reference
    save_file(official_sd(dit), str(plain))
    fp8, _ = write_fp8_scaled(d / "wan2.2_ti2v_5B_fp8_scaled.safetensors", _official_dit_sd("ti2v-5b", "transformer")[0])
    heads = {"transformer": {"num_attention_heads": 2}}  # the tiny DiT is 24 wide: not 128-dim heads
    return {"dir": d, "gguf": gguf_file, "gguf_desc": describe(d, gguf_file), "plain_desc": describe(d, plain),
            "fp8_desc": describe(d, fp8, overrides=heads)}


def test_t2v_on_a_gguf_dit_end_to_end(files, tmp_path):
    out, ref = tmp_path / "q8.safetensors", tmp_path / "fp32.safetensors"
    proc = run_cli(*T2V, "-m", str(files["gguf_desc"]), "--dtype", "fp32", "-o", str(out))
    assert proc.returncode == 0, proc.stderr.decode()
    r = invoke(*T2V, "-m", str(files["plain_desc"]), "--dtype", "fp32", "-o", str(ref))
    assert r.exit_code == 0, r.stderr
    a, b = read_artifact(str(out)), read_artifact(str(ref))
    assert a.meta["model"]["weights"] == {"transformer": "gguf Q8_0, F16", "text_encoder": "fp32"}
    assert b.meta["model"]["weights"]["transformer"] == "fp32"
    assert a.meta["model"]["components"]["vae"] == b.meta["model"]["components"]["vae"]
    assert a.meta["model"]["components"]["transformer"] != b.meta["model"]["components"]["transformer"]
    rel = float((a.latents - b.latents).norm() / b.latents.norm())
    print(f"Q8_0 GGUF vs fp32 DiT after 2 steps: relative latent difference {rel:.2e}")
    assert torch.isfinite(a.latents).all() and 0 < rel < 2e-2
    # the description checks out, with the format in the transformer row
    r = invoke("model", "check", str(files["gguf_desc"]), "--json")
    assert r.exit_code == 0, r.stdout
    rows = {row["component"]: row for row in json.loads(r.stdout)["components"]}
    assert rows["transformer"]["status"] == "ok" and "gguf Q8_0" in rows["transformer"]["detail"]


def test_a_gguf_file_as_model(files):
    # like a single safetensors DiT: recognised alone, the other parts reported missing
    r = invoke("model", "check", str(files["gguf"]), "--json")
    rep = json.loads(r.stdout)
    rows = {row["component"]: row for row in rep["components"]}
    assert rep["family"] == "ti2v-5b" and rows["transformer"]["status"] == "ok"
    assert rows["vae"]["status"] == "missing" and r.exit_code == 4


def test_fp8_scaled_with_weights_dtype_fp8(files, tmp_path):
    out = tmp_path / "fp8.safetensors"
    r = invoke(*T2V, "-m", str(files["fp8_desc"]), "--weights-dtype", "fp8", "-o", str(out))
    assert r.exit_code == 0, r.stderr
    model = read_artifact(str(out)).meta["model"]
    assert model["weights"]["transformer"] == "fp8_scaled (float8_e4m3fn)" and model["weights_dtype"] == "fp8"
    assert torch.isfinite(read_artifact(str(out)).latents).all()


def test_full_checkpoint_notice(files, tmp_path):
    sd = _official_dit_sd("ti2v-5b", "transformer")[0]
    full = {f"model.diffusion_model.{k}": v for k, v in sd.items()}
    full["vae.decoder.conv1.weight"] = torch.zeros(2, 2)
    f = files["dir"] / "wan2.2_ti2v_aio.safetensors"
    save_file(full, str(f))
    desc = describe(files["dir"], f, overrides={"transformer": {"num_attention_heads": 2}})
    r = invoke(*T2V, "-m", str(desc), "--dry-run")
    assert r.exit_code == 0, r.stderr
    assert "full checkpoint: using its DiT (model.diffusion_model.*) only" in r.stderr


def test_bad_quantized_inputs_are_one_line_errors(files, tmp_path):
    data = files["gguf"].read_bytes()
    trunc = tmp_path / "truncated.gguf"
    trunc.write_bytes(data[: len(data) // 3])
    assert_one_line_error(invoke(*T2V, "-m", str(trunc), "-o", str(tmp_path / "x.safetensors")), 4, "not a readable GGUF file")
    garbage = tmp_path / "garbage.gguf"
    garbage.write_bytes(b"\x00\x01garbage" * 50)
    assert_one_line_error(invoke("model", "check", str(garbage)), 4, "not a readable GGUF file")
    assert_one_line_error(invoke(*T2V, "-m", str(files["gguf_desc"]), "--weights-dtype", "fp8", "--dry-run"), 3, "GGUF")
    assert_one_line_error(invoke(*T2V, "-m", str(files["gguf_desc"]), "--weights-dtype", "fp4", "--dry-run"), 3, "--weights-dtype")
    assert not (tmp_path / "x.safetensors").exists()
