"""The edit-by-first-frame workflow through the CLI: encode -> invert once -> denoise many."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import assert_one_line_error, invoke, run_cli
from wanctl.core import trace
from wanctl.core.io.artifact import read_artifact


@pytest.fixture(scope="module")
def edit(tmp_path_factory, assets):
    """A clip encoded and inverted once with tiny-ti2v-5b (4 steps) via the CLI."""
    d = tmp_path_factory.mktemp("edit")
    r = invoke("encode", str(assets["clip"]), "-m", "tiny-ti2v-5b", "-o", str(d / "clip.safetensors"), "--frames", "9",
               "--size", "64x64")
    assert r.exit_code == 0, r.stderr
    r = invoke("invert", str(d / "clip.safetensors"), "-m", "tiny-ti2v-5b", "-p", "a red circle moving right",
               "-o", str(d / "noise.safetensors"), "--steps", "4", "--dtype", "fp32")
    assert r.exit_code == 0, r.stderr
    return d


def test_manifest_three_targets_loads_once(tmp_path, edit, assets):
    imgs = []
    for i, color in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255)]):
        p = tmp_path / f"t{i}.png"
        a = np.zeros((64, 64, 3), np.uint8)
        a[16:48, 16:48] = color
        Image.fromarray(a).save(p)
        imgs.append(p)
    manifest = tmp_path / "targets.csv"
    manifest.write_text(
        "first_frame,prompt,output\n"
        "t0.png,a red square,out/red.safetensors\n"
        "t1.png,a green square,out/green.safetensors\n"
        "t2.png,a red square,out/blue.safetensors\n"
    )
    tr = tmp_path / "trace.jsonl"
    proc = run_cli("denoise", str(edit / "noise.safetensors"), "--manifest", str(manifest), "-o", str(tmp_path / "out"),
                   "--dtype", "fp32", "--batch-size", "2", "--json", env={"WANCTL_TRACE": str(tr)})
    assert proc.returncode == 0, proc.stderr.decode()
    rows = [json.loads(line) for line in proc.stdout.decode().splitlines()]
    assert [r["row"] for r in rows] == [1, 2, 3]
    events = trace.read(tr)
    loads = [e["component"] for e in events if e["event"] == "load"]
    assert sorted(loads) == sorted(["tokenizer", "text_encoder", "transformer", "vae"])  # each once
    assert len([e for e in events if e["event"] == "read_artifact"]) == 1  # the noise, once
    texts = [e for e in events if e["event"] == "text_encode"]
    assert len(texts) == 1 and texts[0]["prompts"] == 3  # 2 distinct prompts + the negative prompt
    outs = [read_artifact(str(tmp_path / "out" / f"{c}.safetensors")) for c in ("red", "green", "blue")]
    lat = [o.latents for o in outs]
    assert not torch.allclose(lat[0], lat[1]) and not torch.allclose(lat[0], lat[2])
    m = outs[2].meta
    assert m["kind"] == "latent" and m["params"]["prompt"] == "a red square"
    assert m["params"]["solver"] == "euler"  # the noise's inversion solver
    assert m["params"]["guidance"] == {"high_noise": 5.0, "low_noise": 5.0}
    assert m["params"]["schedule"]["steps"] == 4
    assert {i["role"] for i in m["provenance"]["inputs"]} == {"noise", "first_frame"}
    # batched (2 + 1) equals one by one
    single = tmp_path / "single.safetensors"
    r = invoke("denoise", str(edit / "noise.safetensors"), "-i", str(imgs[2]), "-p", "a red square", "-o", str(single), "--dtype", "fp32")
    assert r.exit_code == 0, r.stderr
    assert torch.allclose(read_artifact(str(single)).latents, lat[2], atol=1e-5)


def test_denoise_then_decode_and_regenerate(tmp_path, edit, assets):
    out = tmp_path / "edit.safetensors"
    r = invoke("denoise", str(edit / "noise.safetensors"), "-i", str(assets["green-triangle"]),
               "-p", "a green triangle moving right", "-o", str(out))
    assert r.exit_code == 0, r.stderr
    assert "128x96 resized and center-cropped to 64x64" in r.stderr  # other aspect ratio: notice
    r = invoke("decode", str(out), "-o", str(tmp_path / "edit.mp4"))
    assert r.exit_code == 0, r.stderr
    # without --first-frame: the source's own first frame, a new prompt
    regen = tmp_path / "regen.safetensors"
    r = invoke("denoise", str(edit / "noise.safetensors"), "-p", "a blue circle", "-o", str(regen))
    assert r.exit_code == 0, r.stderr
    src = read_artifact(str(edit / "clip.safetensors")).latents
    got = read_artifact(str(regen))
    assert torch.equal(got.latents[:, :, 0], src[:, :, 0])  # pinned source frame 0
    assert got.meta["params"]["first_frame"] == "noise source"


def test_fresh_noise_denoise(tmp_path, assets):
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    for p in (a, b):
        r = invoke("denoise", "-m", "tiny-i2v-a14b", "-i", str(assets["yellow-square"]), "-p", "a yellow square",
                   "--frames", "5", "--steps", "3", "--seed", "3", "-o", str(p))
        assert r.exit_code == 0, r.stderr
    ra, rb = read_artifact(str(a)), read_artifact(str(b))
    assert torch.equal(ra.latents, rb.latents)  # deterministic
    assert ra.meta["video"] == {"width": 128, "height": 96, "frames": 5, "fps": 16}
    assert ra.meta["params"]["seed"] == 3 and ra.meta["params"]["solver"] == "unipc"
    assert ra.meta["params"]["guidance"] == {"high_noise": 3.5, "low_noise": 3.5}


def test_bad_inputs(tmp_path, edit, assets):
    # a noise from another family
    lat = tmp_path / "i2v.safetensors"
    assert invoke("encode", str(assets["clip"]), "-m", "tiny-i2v-a14b", "--frames", "5", "-o", str(lat)).exit_code == 0
    r = invoke("denoise", str(edit / "noise.safetensors"), "-m", "tiny-i2v-a14b", "-i", str(assets["green-triangle"]),
               "-p", "x", "-o", str(tmp_path / "o.safetensors"))
    assert_one_line_error(r, 3, "family ti2v-5b")
    # a latent where a noise is expected
    r = invoke("denoise", str(lat), "-p", "x", "-o", str(tmp_path / "o.safetensors"))
    assert_one_line_error(r, 3, "expected a noise artifact")
    # a first frame that cannot be read
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    r = invoke("denoise", str(edit / "noise.safetensors"), "-i", str(bad), "-p", "x", "-o", str(tmp_path / "o.safetensors"))
    assert_one_line_error(r, 3, "cannot read image")
    assert not (tmp_path / "o.safetensors").exists()
    # text-only family with a first frame
    r = invoke("denoise", "-m", "tiny-t2v-a14b", "-i", str(assets["green-triangle"]), "-p", "x", "-o", str(tmp_path / "o.safetensors"))
    assert_one_line_error(r, 3, "text-only")
    # invert: refine with another solver, unknown solver
    r = invoke("invert", str(edit / "clip.safetensors"), "-p", "x", "--solver", "midpoint", "--refine", "2", "-o", str(tmp_path / "n.safetensors"))
    assert_one_line_error(r, 3, "euler solver only")
    r = invoke("invert", str(edit / "clip.safetensors"), "-p", "x", "--solver", "unipc", "-o", str(tmp_path / "n.safetensors"))
    assert_one_line_error(r, 3, "unknown inversion solver")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.png", "i2v.safetensors"]


def test_manifest_row_with_missing_file(tmp_path, edit, assets):
    manifest = tmp_path / "m.jsonl"
    rows = [
        {"first_frame": str(assets["green-triangle"]), "prompt": "a green triangle", "output": "o/1.safetensors"},
        {"first_frame": "missing.png", "prompt": "nothing", "output": "o/2.safetensors"},
        {"first_frame": str(assets["yellow-square"]), "prompt": "a yellow square", "output": "o/3.safetensors"},
    ]
    manifest.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    r = invoke("denoise", str(edit / "noise.safetensors"), "--manifest", str(manifest), "-o", str(tmp_path / "o"))
    line = assert_one_line_error(r, 3, "1 of 3 targets failed")
    assert "manifest row 2" in line and "missing.png: no such image" in line and "2 written" in line
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["1.safetensors", "3.safetensors"]


def test_trajectory_and_strength(tmp_path, edit):
    traj = tmp_path / "traj.zarr"
    r = invoke("invert", str(edit / "clip.safetensors"), "-p", "a red circle", "--steps", "6", "--strength", "0.8",
               "--save-trajectory", str(traj), "-o", str(tmp_path / "n.safetensors"), "--json")
    assert r.exit_code == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["noise_level"] <= 0.8 and out["steps"] < 6
    t = read_artifact(str(traj), kinds=("trajectory",))
    states = [k for k in t.tensors if k.startswith("trajectory/")]
    assert len(states) == out["steps"] + 1
    assert (traj / "trajectory" / "0" / "zarr.json").exists()


def _modified_copy(src_name: str, dest, component: str):
    from safetensors.torch import load_file, save_file

    from wanctl.core.models import builtin
    
    builtin.init(src_name, dest)
    f = dest / component / "diffusion_pytorch_model.safetensors"
    sd = load_file(str(f))
    sd = {k: v * 1.01 if v.is_floating_point() else v for k, v in sd.items()}
    save_file(sd, str(f))
    return dest


def test_fingerprint_warning_and_vae_refusal(tmp_path, edit, assets):
    other_dit = _modified_copy("tiny-ti2v-5b", tmp_path / "dit", "transformer")
    r = invoke("denoise", str(edit / "noise.safetensors"), "-m", str(other_dit), "-i", str(assets["green-triangle"]),
               "-p", "x", "-o", str(tmp_path / "a.safetensors"))
    assert r.exit_code == 0, r.stderr
    assert "warning:" in r.stderr and "transformer fingerprint differs" in r.stderr
    other_vae = _modified_copy("tiny-ti2v-5b", tmp_path / "vae", "vae")
    r = invoke("denoise", str(edit / "noise.safetensors"), "-m", str(other_vae), "-i", str(assets["green-triangle"]),
               "-p", "x", "-o", str(tmp_path / "b.safetensors"))
    assert_one_line_error(r, 3, "another VAE")
    assert not (tmp_path / "b.safetensors").exists()


def test_out_of_memory_exit_code(tmp_path, edit, assets, monkeypatch):
    import wanctl.core.workflows.denoise as gen

    def boom(*a, **k):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(gen, "run_denoise", boom)
    r = invoke("denoise", str(edit / "noise.safetensors"), "-p", "x", "-o", str(tmp_path / "o.safetensors"))
    assert_one_line_error(r, 5, "out of memory")
    assert "--offload" in r.stderr and not (tmp_path / "o.safetensors").exists()
