"""Model bundles: family detection, errors for bad folders, fingerprints, built-ins."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from wanctl.core.models import builtin
from wanctl.core.errors import ModelError
from wanctl.core.models.bundle import (
    LoadOptions,
    ModelBundle,
    component_fingerprint,
    inspect_folder,
    resolve_model,
    verify,
)


@pytest.mark.parametrize(
    "name,family,boundary",
    [("tiny-ti2v-5b", "ti2v-5b", None), ("tiny-t2v-a14b", "t2v-a14b", 0.875), ("tiny-i2v-a14b", "i2v-a14b", 0.9)],
)
def test_builtins_detect_family(name, family, boundary):
    spec = resolve_model(name)
    assert spec.family.name == family
    assert spec.boundary == boundary
    assert spec.builtin
    layout = {p.name for p in spec.path.iterdir()}
    expected = {"model_index.json", "scheduler", "text_encoder", "tokenizer", "transformer", "vae"}
    if spec.family.experts == 2:
        expected.add("transformer_2")
    assert layout == expected
    assert (spec.path / "transformer" / "diffusion_pytorch_model.safetensors").exists()
    assert (spec.path / "text_encoder" / "model.safetensors").exists()
    assert all(r["status"] == "ok" for r in verify(spec)), verify(spec)


def test_diffusers_pipelines_load_builtin_folders():
    """The built-in folders are real diffusers layouts: the stock pipelines load them."""
    from diffusers import WanImageToVideoPipeline, WanPipeline

    p = WanPipeline.from_pretrained(str(resolve_model("tiny-t2v-a14b").path))
    assert p.transformer_2 is not None and p.config.boundary_ratio == 0.875
    p = WanPipeline.from_pretrained(str(resolve_model("tiny-ti2v-5b").path))
    assert p.config.expand_timesteps
    p = WanImageToVideoPipeline.from_pretrained(str(resolve_model("tiny-i2v-a14b").path))
    assert p.transformer.config.in_channels == 36


def test_missing_and_unknown_models(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        resolve_model(str(tmp_path / "nope"))
    with pytest.raises(ModelError, match="unknown model 'nonesuch'"):
        resolve_model("nonesuch")
    with pytest.raises(ModelError, match="model_index.json is missing"):
        inspect_folder(tmp_path)


def _copy_builtin(name, dest):
    shutil.copytree(resolve_model(name).path, dest)
    return dest


def test_incomplete_folder(tmp_path):
    d = _copy_builtin("tiny-t2v-a14b", tmp_path / "m")
    shutil.rmtree(d / "transformer_2")
    with pytest.raises(ModelError, match="transformer_2/config.json is missing"):
        inspect_folder(d)

    d2 = _copy_builtin("tiny-ti2v-5b", tmp_path / "m2")
    (d2 / "vae" / "diffusion_pytorch_model.safetensors").unlink()
    bundle = ModelBundle(inspect_folder(d2), LoadOptions())
    with pytest.raises(ModelError, match="no weights for vae"):
        bundle.vae()


def test_unknown_family(tmp_path):
    d = _copy_builtin("tiny-t2v-a14b", tmp_path / "wan21")
    idx = json.loads((d / "model_index.json").read_text())
    idx["transformer_2"] = [None, None]
    (d / "model_index.json").write_text(json.dumps(idx))
    with pytest.raises(ModelError, match="Wan2.1"):
        inspect_folder(d)


def test_verify_detects_wrong_shapes(tmp_path):
    d = _copy_builtin("tiny-ti2v-5b", tmp_path / "m")
    cfg = json.loads((d / "transformer" / "config.json").read_text())
    cfg["ffn_dim"] = 64
    (d / "transformer" / "config.json").write_text(json.dumps(cfg))
    rows = {r["component"]: r for r in verify(inspect_folder(d))}
    assert rows["transformer"]["status"] == "error"
    assert "shape mismatch" in rows["transformer"]["detail"]
    assert rows["vae"]["status"] == "ok"


def test_fingerprint_stable_and_sensitive(tmp_path):
    spec = resolve_model("tiny-ti2v-5b")
    a = component_fingerprint(spec, "vae")
    assert a == component_fingerprint(spec, "vae")
    d = _copy_builtin("tiny-ti2v-5b", tmp_path / "m")
    copy = inspect_folder(d)
    assert component_fingerprint(copy, "vae") == a  # content, not location
    from safetensors.torch import load_file, save_file

    f = d / "vae" / "diffusion_pytorch_model.safetensors"
    sd = load_file(str(f))
    k = next(iter(sd))
    sd[k] = sd[k] + 1.0
    save_file(sd, str(f))
    assert component_fingerprint(inspect_folder(d), "vae") != a


def test_builtin_and_init_folder_same_path_same_latents(tmp_path, assets):
    """`model init` writes the same folder the built-in uses, and both load through one path."""
    from wanctl.core.workflows.encode import encode, plan_encode
    from wanctl.core.models.bundle import open_bundle

    dest = tmp_path / "tiny"
    builtin.init("tiny-ti2v-5b", dest)
    a = open_bundle("tiny-ti2v-5b", options=LoadOptions(device="cpu"))
    b = open_bundle(str(dest), options=LoadOptions(device="cpu"))
    assert a.spec.builtin and not b.spec.builtin
    assert a.record(["vae"])["fingerprint"] == b.record(["vae"])["fingerprint"]
    plan = plan_encode(str(assets["clip"]), a.family, frames=5)
    la, _ = encode(a, plan)
    lb, _ = encode(b, plan)
    assert torch.equal(la.latents, lb.latents)
    assert type(a.vae()) is type(b.vae())


def test_components_load_once(bundles):
    b = bundles("tiny-t2v-a14b")
    assert b.transformer() is b.transformer()
    assert b.transformer("transformer_2") is not b.transformer()
    assert b.vae() is b.vae()
