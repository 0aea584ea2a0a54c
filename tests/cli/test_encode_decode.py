"""encode / decode / info through the CLI: real subprocess round trips and the error contract."""

from __future__ import annotations

import json
import subprocess
import sys

import imageio_ffmpeg
import pytest
import torch

from conftest import assert_one_line_error, invoke, run_cli
from wanctl.core.io.artifact import Artifact, new_meta, read_artifact, write_artifact


def _probe_video(path):
    gen = imageio_ffmpeg.read_frames(str(path))
    meta = next(gen)
    n = sum(1 for _ in gen)
    return n, meta["size"], meta["fps"]


@pytest.mark.parametrize(
    "model,channels,stride", [("tiny-ti2v-5b", 48, 16), ("tiny-t2v-a14b", 16, 8), ("tiny-i2v-a14b", 16, 8)]
)
def test_round_trip_each_family(tmp_path, assets, model, channels, stride):
    # one family through real subprocesses (what a user types), the others in this process: the
    # per-family differences are in the code, not in the process start-up (several seconds each)
    def cli(*args):
        if model == "tiny-ti2v-5b":
            proc = run_cli(*args, check=True)
            return proc.stdout.decode(), proc.stderr.decode()
        r = invoke(*args)
        assert r.exit_code == 0, r.output
        return r.stdout, r.stderr

    lat = tmp_path / "clip.safetensors"
    cli("encode", str(assets["clip"]), "-o", str(lat), "-m", model, "--frames", "9")
    out = tmp_path / "clip.mp4"
    stdout, stderr = cli("decode", str(lat), "-o", str(out), "--json")
    assert json.loads(stdout)["frames"] == 9
    assert "using the model recorded in the input artifact" in stderr
    n, size, fps = _probe_video(out)
    assert (n, size, fps) == (9, (128, 96), 16.0)

    info = json.loads(run_cli("info", str(lat), "--json", check=True).stdout)
    assert info["kind"] == "latent" and info["family"] == model[5:]
    assert info["noise_level"] == 0.0 and info["latent_space"] == "normalized"
    assert info["tensors"]["latents"]["shape"] == [1, channels, 3, 96 // stride, 128 // stride]
    assert info["video"] == {"width": 128, "height": 96, "frames": 9, "fps": 16.0}
    assert info["model"]["name"] == model and len(info["model"]["fingerprint"]) == 16
    src = info["provenance"]["inputs"][0]
    assert src["role"] == "source" and len(src["sha256"]) == 64
    assert set(info["provenance"]["versions"]) == {"wanctl", "torch", "diffusers"}
    assert info["params"]["frames"] == 9 and info["params"]["vae_dtype"] == "fp32"


def test_pipe_through_stdout(tmp_path, assets):
    """encode -o - | decode - : the shell pipeline form."""
    # --json with -o -: the report goes to stderr, so the reader gets the artifact's bytes alone
    cmd = (
        f"{sys.executable} -m wanctl encode {assets['clip']} --frames 9 -o - --json 2> {tmp_path / 'report'} | "
        f"{sys.executable} -m wanctl decode - -o {tmp_path / 'p.gif'}"
    )
    proc = subprocess.run(cmd, shell=True, capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()
    report = [json.loads(line) for line in (tmp_path / "report").read_text().splitlines() if line.startswith("{")]
    assert report[0]["output"] == "<stdout>" and report[0]["kind"] == "latent"
    from wanctl.core.io.video import probe

    assert probe(str(tmp_path / "p.gif")).frames == 9


def test_encode_options(tmp_path, assets):
    out = tmp_path / "a.zarr"
    r = invoke("encode", str(assets["clip"]), "-o", str(out), "-m", "tiny-t2v-a14b", "--fps", "8", "--size", "64x48", "--json")
    assert r.exit_code == 0, r.stderr
    art = read_artifact(str(out))
    assert art.meta["video"] == {"width": 64, "height": 48, "frames": 17, "fps": 8.0}
    assert art.latents.shape == (1, 16, 5, 6, 8)
    assert art.meta["params"]["resize"] == "cover+center-crop"
    assert "resized and center-cropped to 64x48" in r.stderr

    # default frame count: the largest 4n+1 that fits, with a note on what was dropped
    r = invoke("encode", str(assets["clip"]), "-o", str(tmp_path / "b.safetensors"), "--start", "0.5")
    assert r.exit_code == 0, r.stderr
    assert read_artifact(str(tmp_path / "b.safetensors")).meta["video"]["frames"] == 25
    assert "dropped 0" not in r.stderr


def test_encode_image_and_frames_folder(tmp_path, assets):
    r = invoke("encode", str(assets["green-triangle"]), "-o", str(tmp_path / "img.safetensors"))
    assert r.exit_code == 0, r.stderr
    art = read_artifact(str(tmp_path / "img.safetensors"))
    assert art.latents.shape[2] == 1 and art.meta["video"]["frames"] == 1
    assert "no frame rate" in r.stderr

    r = invoke("decode", str(tmp_path / "img.safetensors"), "-o", str(tmp_path / "frames"))
    assert r.exit_code == 0, r.stderr
    assert len(list((tmp_path / "frames").glob("*.png"))) == 1


def test_determinism(tmp_path, assets):
    """Encoding the same clip twice gives bit-identical artifacts, except the timestamp."""
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    for p in (a, b):
        r = invoke("encode", str(assets["clip"]), "-o", str(p), "-m", "tiny-i2v-a14b")
        assert r.exit_code == 0, r.stderr
    ra, rb = read_artifact(str(a)), read_artifact(str(b))
    assert ra.latents.numpy().tobytes() == rb.latents.numpy().tobytes()
    assert torch.equal(ra.tensors["first_frame"], rb.tensors["first_frame"])
    for m in (ra.meta, rb.meta):
        m["provenance"].pop("created")
    assert ra.meta == rb.meta
    # and the files differ only inside the timestamp
    da, db = a.read_bytes(), b.read_bytes()
    assert len(da) == len(db)
    assert sum(x != y for x, y in zip(da, db)) <= len("2026-01-01T00:00:00")


# --------------------------------------------------------------------------- bad input


@pytest.fixture(scope="module")
def latent(tmp_path_factory, assets):
    p = tmp_path_factory.mktemp("lat") / "clip.safetensors"
    r = invoke("encode", str(assets["clip"]), "-o", str(p), "--frames", "9")
    assert r.exit_code == 0, r.stderr
    return p


def _no_new_files(d, before):
    assert sorted(x.name for x in d.iterdir()) == before


def test_decode_bad_artifacts(tmp_path, latent):
    data = latent.read_bytes()
    cases = {}
    (tmp_path / "trunc.safetensors").write_bytes(data[:-64])
    cases["trunc.safetensors"] = "truncated"
    (tmp_path / "corrupt.safetensors").write_bytes(b"\xff" * 8 + data[8:200])
    cases["corrupt.safetensors"] = "not a safetensors file"
    from safetensors.torch import save_file

    save_file({"latents": torch.zeros(1, 48, 3, 6, 8)}, str(tmp_path / "foreign.safetensors"))
    cases["foreign.safetensors"] = "not a wanctl artifact"
    art = read_artifact(str(latent))
    art.meta["kind"] = "trajectory"
    write_artifact(str(tmp_path / "traj.safetensors"), art)
    cases["traj.safetensors"] = "expected a latent or noise artifact, got a trajectory"
    from safetensors import safe_open

    with safe_open(str(latent), "pt") as f:  # NaN latents under a valid header (the writer refuses them)
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    tensors["latents"][0, 0, 0, 0, 0] = float("nan")
    save_file(tensors, str(tmp_path / "nan.safetensors"), metadata=meta)
    cases["nan.safetensors"] = "NaN"
    before = sorted(x.name for x in tmp_path.iterdir())
    for name, msg in cases.items():
        r = invoke("decode", str(tmp_path / name), "-o", str(tmp_path / "out.mp4"))
        assert_one_line_error(r, 3, msg)
        _no_new_files(tmp_path, before)


def test_family_mismatch(tmp_path, latent):
    r = invoke("decode", str(latent), "-o", str(tmp_path / "out.mp4"), "-m", "tiny-t2v-a14b")
    assert_one_line_error(r, 3, "family ti2v-5b")
    assert list(tmp_path.iterdir()) == []


def test_encode_bad_inputs(tmp_path, assets):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video" * 100)
    ff = imageio_ffmpeg.get_ffmpeg_exe()
    zero = tmp_path / "zero.mp4"
    subprocess.run(
        [ff, "-y", "-loglevel", "error", "-f", "lavfi", "-i", "color=c=black:s=64x64:d=1", "-frames:v", "0", str(zero)],
        check=True,
    )
    cases = [
        ((str(bad),), 3, "cannot read video"),
        ((str(zero),), 3, "no video frames"),
        ((str(assets["clip"]), "--frames", "10"), 3, "not 4n+1"),
        ((str(assets["clip"]), "--frames", "37"), 3, "only 33 frames available"),
        ((str(assets["clip"]), "--start", "100"), 3, "no frames to encode"),
        ((str(tmp_path / "missing.mp4"),), 3, "no such file"),
        ((str(assets["clip"]), "--size", "100x100"), 3, "not a multiple of 32"),
        ((str(assets["clip"]), "-m", str(tmp_path / "no-model")), 4, "does not exist"),
    ]
    before = sorted(x.name for x in tmp_path.iterdir())
    for args, code, msg in cases:
        r = invoke("encode", *args, "-o", str(tmp_path / "out.safetensors"))
        assert_one_line_error(r, code, msg)
        _no_new_files(tmp_path, before)


def test_output_exists_without_force(tmp_path, assets, latent):
    out = tmp_path / "exists.safetensors"
    out.write_bytes(b"precious")
    r = invoke("encode", str(assets["clip"]), "-o", str(out))
    assert_one_line_error(r, 3, "--force")
    assert out.read_bytes() == b"precious"
    vid = tmp_path / "exists.mp4"
    vid.write_bytes(b"precious")
    r = invoke("decode", str(latent), "-o", str(vid))
    assert_one_line_error(r, 3, "--force")
    assert vid.read_bytes() == b"precious"
    r = invoke("decode", str(latent), "-o", str(vid), "--force")
    assert r.exit_code == 0, r.stderr
    assert _probe_video(vid)[0] == 9


def test_missing_model_folder_subprocess(tmp_path, assets):
    r = run_cli("encode", str(assets["clip"]), "-o", str(tmp_path / "x.safetensors"), "-m", str(tmp_path / "nope"))
    assert_one_line_error(r, 4, "does not exist")
    assert list(tmp_path.iterdir()) == []


def test_incomplete_model_folder(tmp_path, assets):
    import shutil

    from wanctl.core.models.bundle import resolve_model

    d = tmp_path / "m"
    shutil.copytree(resolve_model("tiny-ti2v-5b").path, d)
    (d / "vae" / "diffusion_pytorch_model.safetensors").unlink()
    r = invoke("encode", str(assets["clip"]), "-o", str(tmp_path / "x.safetensors"), "-m", str(d))
    assert_one_line_error(r, 4, "no weights for vae")
    assert not (tmp_path / "x.safetensors").exists()
    r = invoke("model", "check", str(d), "--json")
    assert r.exit_code == 4
    rows = {row["component"]: row for row in json.loads(r.stdout)["components"]}
    assert rows["vae"]["status"] == "error" and "no weights for vae" in rows["vae"]["detail"]
    assert rows["transformer"]["status"] == "ok"


def test_another_vae_is_refused_everywhere_a_latent_is_decoded(tmp_path, assets):
    """decode, preview --vae and export check the recorded VAE fingerprint, as invert does."""
    lat = tmp_path / "c.safetensors"
    assert invoke("encode", str(assets["clip"]), "-m", "tiny-ti2v-5b", "--frames", "5", "--size", "64x64",
                  "-o", str(lat)).exit_code == 0
    before = sorted(p.name for p in tmp_path.iterdir())
    for args in (["decode", str(lat), "-o", str(tmp_path / "x.mp4")],
                 ["preview", str(lat), "--vae", "-o", str(tmp_path / "x.png")],
                 ["export", "--comfy", str(lat), "-o", str(tmp_path / "x.latent")]):
        assert_one_line_error(invoke(*args, "-m", "toy-ti2v-5b"), 3, "made with another VAE")
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_video_outputs_are_what_their_names_say(tmp_path, latent):
    """Each container is written as its suffix says (an .mkv was an MP4 under another name), and a
    video cannot go to stdout (-o - made a folder named '-')."""
    magic = {"mp4": b"ftyp", "m4v": b"ftyp", "mov": b"ftypqt", "mkv": b"\x1a\x45\xdf\xa3"}
    for ext, head in magic.items():
        out = tmp_path / f"v.{ext}"
        r = invoke("decode", str(latent), "-o", str(out))
        assert r.exit_code == 0, r.stderr
        data = out.read_bytes()[:12]
        assert head in data, (ext, data)
    assert_one_line_error(invoke("decode", str(latent), "-o", "-"), 3, "cannot be written to stdout")
    assert_one_line_error(invoke("t2v", "-m", "tiny-t2v-a14b", "-p", "x", "--size", "64x64", "--frames", "5", "--steps", "1",
                                 "-o", str(tmp_path / "t.safetensors"), "--decode", "-"), 3, "cannot be written to stdout")
    assert not (tmp_path / "-").exists() and not (tmp_path / "t.safetensors").exists()


def test_force_never_replaces_a_folder_of_other_files(tmp_path, latent, monkeypatch):
    """decode -o FOLDER --force replaced the whole folder: a user's files and the input itself
    were gone. A folder of frames is replaced; anything else is refused and left as it was."""
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "important.txt").write_text("mine")
    src = keep / "a.safetensors"
    src.write_bytes(latent.read_bytes())
    assert_one_line_error(invoke("decode", str(src), "-o", str(keep), "--force"), 3, "holds other files")
    assert sorted(p.name for p in keep.iterdir()) == ["a.safetensors", "important.txt"]
    frames = tmp_path / "frames"
    for _ in range(2):  # the second run replaces the frames of the first
        assert invoke("decode", str(latent), "-o", str(frames), "--force").exit_code == 0
    assert len(list(frames.iterdir())) == 9
    monkeypatch.chdir(keep)
    assert_one_line_error(invoke("decode", str(src), "-o", ".", "--force"), 3, "current folder")
    assert (keep / "important.txt").exists()
