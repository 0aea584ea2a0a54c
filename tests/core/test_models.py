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


def test_same_device_compares_devices_not_strings():
    from wanctl.core.models.runtime import same_device

    def current(device_type):  # the index a device without one means
        return {"cuda": 0, "xpu": 1}.get(device_type, 0)

    assert same_device("cuda:0", "cuda", current)
    assert same_device("cuda", "cuda:0", current)
    assert same_device(torch.device("cuda", 0), "cuda:0", current)
    assert not same_device("cuda:1", "cuda", current)
    assert same_device("cuda:1", "cuda", lambda device_type: 1)
    assert same_device("xpu", "xpu:1", current)
    assert same_device("cpu", torch.device("cpu"), current) and same_device("cpu:0", "cpu", current)
    assert not same_device("cpu", "cuda", current)
    assert not same_device("cuda:0", "mps", current)
    assert same_device("cpu", "cpu")  # the default: the current index from torch


class _FakeModule:
    """Reports its weights on a device and records moves (no GPU needed)."""

    def __init__(self, device: str):
        self.param = type("P", (), {"device": torch.device(device)})()
        self.moves: list[str] = []

    def parameters(self):
        return iter([self.param])

    def to(self, device):
        self.moves.append(str(device))
        self.param.device = torch.device(device)
        return self


def test_offload_model_leaves_an_expert_in_place(monkeypatch):
    """--offload model on CUDA: weights report "cuda:0" while the option says "cuda"; the active
    expert must not move again on every forward, and the other goes home to the CPU once."""
    import wanctl.core.models.runtime as runtime

    monkeypatch.setattr(runtime, "current_index", lambda device_type: 0)
    spec = resolve_model("tiny-t2v-a14b")
    b = ModelBundle(spec, LoadOptions(device="cuda", offload="model"))
    hi, lo = _FakeModule("cuda:0"), _FakeModule("cpu")
    b._loaded.update(transformer=hi, transformer_2=lo)
    for _ in range(3):
        b._activate("transformer")
    assert hi.moves == [] and lo.moves == []
    b._activate("transformer_2")
    assert hi.moves == ["cpu"] and lo.moves == ["cuda"]
    b._activate("transformer_2")
    assert hi.moves == ["cpu"] and lo.moves == ["cuda"]


# --------------------------------------------------------------------------- presets


def test_real_and_tiny_models_use_the_official_presets():
    from wanctl.core.families import FAMILIES

    for name in ("tiny-ti2v-5b", "tiny-t2v-a14b", "tiny-i2v-a14b"):
        spec = resolve_model(name)
        assert spec.preset == FAMILIES[spec.family.name].preset
        assert ModelBundle(spec).preset is spec.preset


@pytest.mark.parametrize("name", ["toy-ti2v-5b", "toy-t2v-a14b", "toy-i2v-a14b"])
def test_toy_models_carry_their_training_size(name):
    from dataclasses import replace

    spec = resolve_model(name)
    assert (spec.path / "wanctl_presets.json").is_file()
    assert spec.preset == replace(spec.family.preset, steps=30, frames=17, fps=16, sizes=((64, 64),))
    assert spec.preset.boundary == spec.boundary
    assert ModelBundle(spec).preset.default_size == (64, 64)


def test_shipped_files_carry_no_machine_paths():
    import fnmatch
    import tomllib
    from pathlib import Path

    root = Path(builtin.PACKAGED)
    configs = sorted(root.glob("*/*/config.json"))
    assert configs
    for cfg in configs:
        assert "_name_or_path" not in json.loads(cfg.read_text()), cfg
    patterns = tomllib.loads((root.parents[2] / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["wanctl"]
    for name in ("toy-ti2v-5b", "toy-t2v-a14b", "toy-i2v-a14b"):
        rel = f"toy/models/{name}/wanctl_presets.json"
        assert (root.parent.parent / rel).is_file()
        assert any(fnmatch.fnmatch(rel, p) for p in patterns), rel  # shipped in the package


def test_a_folder_preset_merges_over_the_family(tmp_path):
    d = _copy_builtin("tiny-t2v-a14b", tmp_path / "m")
    (d / "wanctl_presets.json").write_text(json.dumps({"shift": 8, "guidance_low": 2.5, "_comment": "mine"}))
    spec = inspect_folder(d)
    fam = spec.family.preset
    assert (spec.preset.shift, spec.preset.guidance_low) == (8.0, 2.5)
    assert (spec.preset.steps, spec.preset.guidance_high, spec.preset.sizes) == (fam.steps, fam.guidance_high, fam.sizes)


@pytest.mark.parametrize(
    "content,match",
    [
        ("{not json", "corrupt wanctl_presets.json"),
        ("[1, 2]", "not a JSON object"),
        ('{"step": 30}', "unknown preset field"),
        ('{"boundary": 0.5}', "unknown preset field"),
        ('{"steps": 0}', "steps must be a whole number"),
        ('{"steps": true}', "steps must be a whole number"),
        ('{"steps": 12.5}', "steps must be a whole number"),
        ('{"shift": 0}', "shift must be a number above 0"),
        ('{"shift": "5"}', "shift must be a number"),
        ('{"guidance_high": -1}', "guidance_high must be a number from 0"),
        ('{"frames": 18}', "frames must be a whole number 4n\\+1"),
        ('{"fps": 23.976}', "fps must be a whole number"),
        ('{"sizes": []}', "sizes must be a non-empty list"),
        ('{"sizes": [[48, 64]]}', "multiple of 32"),
        ('{"sizes": [64, 64]}', "sizes must be"),
        ('{"sizes": [[64, 64, 3]]}', "sizes must be"),
    ],
)
def test_bad_presets_file_is_one_line_model_error(tmp_path, content, match):
    d = tmp_path / "m"
    if not d.exists():
        _copy_builtin("tiny-ti2v-5b", d)
    (d / "wanctl_presets.json").write_text(content)
    with pytest.raises(ModelError, match=match) as e:
        inspect_folder(d)
    assert "\n" not in e.value.message and "wanctl_presets.json" in e.value.message
