"""Official Wan2.2 layouts through wanctl's model resolution, bundles and CLI: the same outputs
as the diffusers-layout tiny models."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import invoke
from test_official import _comfy_dit_file, _tiny_path, write_official_folder
from wanctl.core.io.artifact import read_artifact
from wanctl.core.models.bundle import LoadOptions, open_bundle, resolve_model


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    out = {}
    for fam in ("ti2v-5b", "t2v-a14b", "i2v-a14b"):
        out[fam] = write_official_folder(tmp_path_factory.mktemp(fam) / f"Wan2.2-{fam}", fam)
    return out


@pytest.mark.parametrize("family", ["t2v-a14b", "ti2v-5b"])
def test_official_folder_generates_the_same_video(tmp_path, official, family):
    ref_model = f"tiny-{family}"
    spec = resolve_model(str(official[family]))
    assert spec.layout.kind == "official-folder" and spec.family.name == family
    args = ["t2v", "-p", "a red circle", "--size", "64x64", "--frames", "5", "--steps", "3", "--dtype", "fp32", "--no-cache"]
    r1 = invoke(*args, "-m", ref_model, "-o", str(tmp_path / "a.safetensors"))
    r2 = invoke(*args, "-m", str(official[family]), "-o", str(tmp_path / "b.safetensors"))
    assert r1.exit_code == 0 and r2.exit_code == 0, r2.stderr
    a, b = (read_artifact(str(tmp_path / n)) for n in ("a.safetensors", "b.safetensors"))
    assert (a.latents - b.latents).abs().max() <= 1e-5
    assert b.meta["model"]["layout"] == "official-folder"
    # the official VAE decodes like the diffusers one
    assert invoke("decode", str(tmp_path / "b.safetensors"), "-o", str(tmp_path / "b.gif")).exit_code == 0


def test_official_i2v_encode_and_check(tmp_path, official, assets):
    folder = official["i2v-a14b"]
    r = invoke("model", "check", str(folder), "--json")
    assert r.exit_code == 0, r.stdout
    rep = json.loads(r.stdout)
    assert rep["family"] == "i2v-a14b" and rep["ok"]
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    assert invoke("encode", str(assets["clip"]), "--frames", "5", "-m", "tiny-i2v-a14b", "-o", str(a)).exit_code == 0
    assert invoke("encode", str(assets["clip"]), "--frames", "5", "-m", str(folder), "-o", str(b)).exit_code == 0
    assert torch.equal(read_artifact(str(a)).latents, read_artifact(str(b)).latents)


def test_comfy_files_through_a_model_description(tmp_path, official):
    """ComfyUI single files (prefixed keys) named in a JSON model description load as the model."""
    fam = "t2v-a14b"
    hi = _comfy_dit_file(tmp_path / "wan2.2_t2v_high_noise.safetensors", fam, "transformer", "model.diffusion_model.")
    lo = _comfy_dit_file(tmp_path / "wan2.2_t2v_low_noise.safetensors", fam, "transformer_2", "model.diffusion_model.")
    desc = tmp_path / "model.json"
    desc.write_text(json.dumps({
        "transformer": hi.name, "transformer_2": lo.name,
        "vae": str(official[fam] / "Wan2.1_VAE.pth"), "text_encoder": str(official[fam] / "models_t5_umt5-xxl-enc-bf16.pth"),
        "tokenizer": str(_tiny_path(fam) / "tokenizer"),
        "overrides": {"transformer": {"num_attention_heads": 2}},  # a 24-wide toy DiT: not 128-dim heads
    }))
    ours = open_bundle(str(desc), options=LoadOptions(device="cpu", dtype="fp32"))
    ref = open_bundle("tiny-t2v-a14b", options=LoadOptions(device="cpu", dtype="fp32"))
    for comp in ("transformer", "transformer_2"):
        for (k, v), (k2, v2) in zip(sorted(ours.transformer(comp).state_dict().items()), sorted(ref.transformer(comp).state_dict().items())):
            assert k == k2 and torch.equal(v, v2)
    assert ours.record(["transformer", "vae"])["layout"] == "official-files"
