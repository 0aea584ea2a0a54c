"""ComfyUI .latent round trips, previews, and memory (offload) options."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import assert_one_line_error, invoke, run_cli
from wanctl.core.io.artifact import read_artifact
from wanctl.core.io.inputs import read_input
from wanctl.core.io.comfy import to_normalized
from wanctl.core.models.bundle import resolve_model


@pytest.fixture(scope="module")
def latents(tmp_path_factory, assets):
    d = tmp_path_factory.mktemp("interop")
    out = {}
    for m in ("tiny-ti2v-5b", "tiny-i2v-a14b"):
        p = d / f"{m}.safetensors"
        assert invoke("encode", str(assets["clip"]), "-m", m, "--frames", "9", "-o", str(p)).exit_code == 0
        out[m] = p
    return out


@pytest.mark.parametrize("model", ["tiny-ti2v-5b", "tiny-i2v-a14b"])
def test_comfy_round_trip(tmp_path, latents, model):
    from safetensors.torch import load_file

    src = read_artifact(str(latents[model]))
    lat = tmp_path / "x.latent"
    r = invoke("export", "--comfy", str(latents[model]), "-o", str(lat))
    assert r.exit_code == 0, r.stderr
    raw = load_file(str(lat))
    assert set(raw) == {"latent_tensor", "latent_format_version_0"} and raw["latent_format_version_0"].numel() == 0
    vae = resolve_model(model).vae_config
    mean = torch.tensor(vae["latents_mean"]).view(1, -1, 1, 1, 1)
    std = torch.tensor(vae["latents_std"]).view(1, -1, 1, 1, 1)
    torch.testing.assert_close(raw["latent_tensor"], src.latents * std + mean)  # raw VAE space
    back = to_normalized(read_input(str(lat)), resolve_model(model))
    torch.testing.assert_close(back.latents, src.latents, rtol=0, atol=2e-6)
    assert back.meta["family"] == src.meta["family"] and back.meta["video"] == src.meta["video"]
    # .latent files are accepted wherever a latent is
    r = invoke("decode", str(lat), "-o", str(tmp_path / "x.gif"))
    assert r.exit_code == 0, r.stderr


def test_foreign_comfy_latent(tmp_path, latents):
    """A ComfyUI file without wanctl metadata: 48 channels infer ti2v-5b; 16 need --model."""
    from safetensors.torch import save_file

    f48 = tmp_path / "a.latent"
    save_file({"latent_tensor": torch.randn(1, 48, 3, 4, 4), "latent_format_version_0": torch.tensor([])}, str(f48))
    art = read_input(str(f48))
    assert art.meta["family"] == "ti2v-5b" and art.meta["video"]["frames"] == 9
    f16 = tmp_path / "b.latent"
    save_file({"latent_tensor": torch.randn(1, 16, 2, 8, 8) * 0.18215}, str(f16))  # legacy: no marker
    r = invoke("decode", str(f16), "-o", str(tmp_path / "b.gif"))
    assert_one_line_error(r, 3, "pass --model")
    r = invoke("decode", str(f16), "-m", "tiny-t2v-a14b", "-o", str(tmp_path / "b.gif"))
    assert r.exit_code == 0, r.stderr
    r = invoke("decode", str(f16), "-m", "tiny-ti2v-5b", "-o", str(tmp_path / "c.gif"))
    assert_one_line_error(r, 3, "does not fit ti2v-5b")


def test_preview_sizes(tmp_path, latents):
    art = read_artifact(str(latents["tiny-i2v-a14b"]))
    _, _, t, h, w = art.latents.shape
    r = invoke("preview", str(latents["tiny-i2v-a14b"]), "-o", str(tmp_path / "s.png"), "--json")
    assert r.exit_code == 0, r.stderr
    img = Image.open(tmp_path / "s.png")
    assert img.size == (t * w * 8 + (t - 1) * 2, h * 8)  # the pixel grid: stride 8 per latent pixel
    r = invoke("preview", str(latents["tiny-ti2v-5b"]), "-o", str(tmp_path / "s.gif"), "--frames", "0,2", "--scale", "4")
    assert r.exit_code == 0, r.stderr
    g = Image.open(tmp_path / "s.gif")
    assert g.n_frames == 2 and g.size == (8 * 4, 6 * 4)
    r = invoke("preview", str(latents["tiny-ti2v-5b"]), "-o", str(tmp_path / "v.png"), "--vae", "--frames", "0,8")
    assert r.exit_code == 0, r.stderr
    assert Image.open(tmp_path / "v.png").size == (2 * 128 + 2, 96)
    # a trajectory: one row per saved state
    traj = tmp_path / "t.zarr"
    assert invoke("invert", str(latents["tiny-ti2v-5b"]), "-p", "x", "--steps", "3", "-o", str(tmp_path / "n.safetensors"),
                  "--save-trajectory", str(traj)).exit_code == 0
    r = invoke("preview", str(traj), "-o", str(tmp_path / "t.png"), "--frames", "1")
    assert r.exit_code == 0, r.stderr
    assert Image.open(tmp_path / "t.png").size == (8 * 16, 4 * 6 * 16 + 3 * 2)
    assert_one_line_error(invoke("preview", str(traj), "-o", str(tmp_path / "t.jpg")), 3, ".png")
    assert_one_line_error(invoke("preview", str(traj), "-o", str(tmp_path / "u.png"), "--frames", "99"), 3, "out of range")


@pytest.mark.parametrize("mode", ["model", "group"])
def test_offload_modes_same_latents(tmp_path, mode):
    base = ["t2v", "-m", "tiny-t2v-a14b", "-p", "a cat", "--size", "64x64", "--frames", "5", "--steps", "4", "--no-cache"]
    assert invoke(*base, "-o", str(tmp_path / "a.safetensors")).exit_code == 0
    r = invoke(*base, "--offload", mode, "--text-encoder-device", "cpu", "-o", str(tmp_path / "b.safetensors"))
    assert r.exit_code == 0, r.stderr
    a, b = (read_artifact(str(tmp_path / n)).latents for n in ("a.safetensors", "b.safetensors"))
    assert (a - b).abs().max() <= 1e-5
    assert_one_line_error(invoke(*base, "--offload", "disk", "-o", str(tmp_path / "c.safetensors")), 3, "--offload")


def test_model_offload_keeps_one_expert_on_the_device():
    """--offload model moves the active component to the device and the others home (fake device)."""
    from wanctl.core.models.bundle import LoadOptions, ModelBundle

    class Fake:
        def __init__(self, device):
            self.device = device
            self.moves = []

        def parameters(self):
            return iter([self])

        def to(self, device):
            self.device = torch.device(device)
            self.moves.append(str(device))
            return self

    b = ModelBundle(resolve_model("tiny-t2v-a14b"), LoadOptions(device="cpu", offload="model"))
    b.options.device = "meta"  # a stand-in for a GPU
    mods = {k: Fake(torch.device("cpu")) for k in ("transformer", "transformer_2", "text_encoder", "vae")}
    b._loaded.update(mods)
    assert b.transformer() is mods["transformer"]
    assert str(mods["transformer"].device) == "meta"
    b.transformer("transformer_2")
    assert str(mods["transformer"].device) == "cpu" and str(mods["transformer_2"].device) == "meta"
    b.vae()
    assert [str(m.device) for m in mods.values()] == ["cpu", "cpu", "cpu", "meta"]


def test_comfyui_written_latent_everywhere(tmp_path, assets):
    """A .latent that ComfyUI wrote (no wanctl metadata) is shown by info, and `export --comfy -o -`
    reads back from stdin by content, not by suffix."""
    from safetensors.torch import load_file, save_file

    lat = tmp_path / "c.safetensors"
    assert invoke("encode", str(assets["clip"]), "-m", "tiny-ti2v-5b", "--frames", "5", "--size", "64x64",
                  "-o", str(lat)).exit_code == 0
    assert invoke("export", "--comfy", str(lat), "-o", str(tmp_path / "ours.latent")).exit_code == 0
    t = load_file(str(tmp_path / "ours.latent"))
    comfy = tmp_path / "comfy.latent"
    save_file({"latent_tensor": t["latent_tensor"], "latent_format_version_0": t["latent_format_version_0"]}, str(comfy))
    r = invoke("info", str(comfy), "--json")
    assert r.exit_code == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["format"] == "comfyui .latent" and rep["family"] == "ti2v-5b" and rep["video"]["frames"] == 5
    r = run_cli("info", "-", input=comfy.read_bytes())
    assert r.returncode == 0 and b"comfyui .latent" in r.stdout
    piped = run_cli("export", "--comfy", str(lat), "-o", "-", check=True).stdout
    out = tmp_path / "d.mp4"
    r = run_cli("decode", "-", "-o", str(out), input=piped)
    assert r.returncode == 0, r.stderr.decode()
    assert out.exists()
