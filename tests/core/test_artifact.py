"""Artifact reader/writer: round trips, atomic writes, validation with one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from wanctl.core.io.artifact import (
    Artifact,
    atomic_path,
    new_meta,
    read_artifact,
    read_header,
    write_artifact,
)
from wanctl.core.errors import BadInputError


def make_artifact(kind="latent", family="t2v-a14b", channels=16, frames=9, value=None) -> Artifact:
    g = torch.Generator().manual_seed(0)
    t = (frames - 1) // 4 + 1
    lat = torch.randn(1, channels, t, 4, 6, generator=g)
    if value is not None:
        lat.view(-1)[0] = value
    meta = new_meta(
        kind,
        family=family,
        command="test",
        noise_level=0.0 if kind == "latent" else 1.0,
        video={"width": 48, "height": 32, "frames": frames, "fps": 16},
        params={"steps": 4},
    )
    return Artifact({"latents": lat}, meta)


@pytest.mark.parametrize("suffix", [".safetensors", ".zarr"])
def test_round_trip(tmp_path, suffix):
    art = make_artifact()
    art.tensors["first_frame"] = torch.randint(0, 255, (1, 3, 32, 48), dtype=torch.uint8)
    p = str(tmp_path / f"a{suffix}")
    write_artifact(p, art)
    back = read_artifact(p)
    assert torch.equal(back.latents, art.latents)
    assert torch.equal(back.tensors["first_frame"], art.tensors["first_frame"])
    assert back.meta["params"] == {"steps": 4}
    assert back.meta["tensors"]["latents"]["shape"] == [1, 16, 3, 4, 6]
    hdr = read_header(p)
    assert hdr.tensors["latents"].shape == (1, 16, 3, 4, 6)
    assert hdr.meta["kind"] == "latent"
    # nothing left behind but the artifact itself
    assert [f.name for f in tmp_path.iterdir()] == [f"a{suffix}"]


def test_zarr_chunks_one_latent_frame(tmp_path):
    p = tmp_path / "a.zarr"
    write_artifact(str(p), make_artifact(frames=17))
    zmeta = json.loads((p / "latents" / "zarr.json").read_text())
    assert zmeta["chunk_grid"]["configuration"]["chunk_shape"] == [1, 16, 1, 4, 6]
    assert any(c["name"] in ("zstd", "blosc", "gzip") for c in zmeta["codecs"])


def test_zarr_widens_bfloat16(tmp_path):
    art = make_artifact()
    art.tensors["latents"] = art.latents.bfloat16()
    p = str(tmp_path / "a.zarr")
    write_artifact(p, art)
    back = read_artifact(p)
    assert back.latents.dtype == torch.float32
    assert torch.equal(back.latents, art.latents.float())


def test_half_precision_latents_widened_with_a_notice(tmp_path):
    art = make_artifact()
    art.tensors["latents"] = art.latents.bfloat16()
    p = str(tmp_path / "a.safetensors")
    write_artifact(p, art)
    notes = []
    back = read_artifact(p, notice=notes.append)
    assert back.latents.dtype == torch.float32
    assert torch.equal(back.latents, art.latents.float())
    assert len(notes) == 1 and "bfloat16" in notes[0]


def test_refuses_overwrite_without_force(tmp_path):
    p = tmp_path / "a.safetensors"
    write_artifact(str(p), make_artifact())
    before = p.read_bytes()
    with pytest.raises(BadInputError, match="--force"):
        write_artifact(str(p), make_artifact(frames=5))
    assert p.read_bytes() == before
    write_artifact(str(p), make_artifact(frames=5), force=True)
    assert read_artifact(str(p)).latents.shape[2] == 2


def test_force_replaces_zarr_directory(tmp_path):
    p = tmp_path / "a.zarr"
    write_artifact(str(p), make_artifact(frames=9))
    write_artifact(str(p), make_artifact(frames=5), force=True)
    assert read_artifact(str(p)).latents.shape[2] == 2
    assert sorted(f.name for f in tmp_path.iterdir()) == ["a.zarr"]


def test_atomic_path_cleans_up_on_failure(tmp_path):
    dest = tmp_path / "out.bin"
    with pytest.raises(RuntimeError):
        with atomic_path(dest) as tmp:
            tmp.write_bytes(b"partial")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(tmp_path / "d.zarr", directory=True) as tmp:
            tmp.mkdir()
            (tmp / "x").write_text("partial")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def _bad(path, match, kinds=None):
    with pytest.raises(BadInputError, match=match) as ei:
        read_artifact(str(path), kinds=kinds)
    assert "\n" not in ei.value.message
    return ei.value


def test_validation_errors(tmp_path):
    good = tmp_path / "good.safetensors"
    write_artifact(str(good), make_artifact())
    data = good.read_bytes()

    trunc = tmp_path / "trunc.safetensors"
    trunc.write_bytes(data[: len(data) - 100])
    _bad(trunc, "truncated")

    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all" + b"\x00" * 64)
    _bad(corrupt, "corrupt header|not a safetensors")

    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(os.urandom(256))
    _bad(garbage, "not a safetensors|truncated")

    tiny = tmp_path / "tiny.safetensors"
    tiny.write_bytes(b"abc")
    _bad(tiny, "too short")

    from safetensors.torch import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"latents": torch.zeros(1, 16, 1, 2, 2)}, str(foreign), metadata={"format": "pt"})
    _bad(foreign, "not a wanctl artifact")

    _bad(good, "expected a noise artifact, got a latent", kinds=("noise",))

    nan = tmp_path / "nan.safetensors"
    with pytest.raises(BadInputError, match="NaN or infinite"):
        write_artifact(str(nan), make_artifact(value=float("nan")))  # the writer refuses them
    assert not nan.exists()
    for suffix in (".safetensors", ".zarr"):  # and metadata that is not JSON (NaN), in either format
        art = make_artifact()
        art.meta["video"]["fps"] = float("nan")
        with pytest.raises(BadInputError, match="metadata holds NaN"):
            write_artifact(str(nan.with_suffix(suffix)), art)
        assert not nan.with_suffix(suffix).exists()
    from safetensors import safe_open
    from safetensors.torch import save_file

    write_artifact(str(nan), make_artifact())
    with safe_open(str(nan), "pt") as f:  # a file written by someone else: NaN latents, valid header
        meta, lat = f.metadata(), f.get_tensor("latents")
    save_file({"latents": torch.full_like(lat, float("nan"))}, str(nan), metadata=meta)
    _bad(nan, "NaN or infinite")
    inf = tmp_path / "inf.safetensors"
    save_file({"latents": lat.clone().fill_(float("inf"))}, str(inf), metadata=meta)
    _bad(inf, "NaN or infinite")

    wrongch = tmp_path / "wrongch.safetensors"
    write_artifact(str(wrongch), make_artifact(family="ti2v-5b", channels=16))
    _bad(wrongch, "48")

    future = tmp_path / "future.safetensors"
    art = make_artifact()
    art.meta["format_version"] = 99
    write_artifact(str(future), art)
    _bad(future, "newer than this wanctl")

    _bad(tmp_path / "missing.safetensors", "no such file")


def test_shape_mismatch_with_metadata(tmp_path):
    from safetensors.torch import save_file

    art = make_artifact()
    meta = dict(art.meta)
    meta["tensors"] = {"latents": {"shape": [1, 16, 5, 4, 6], "dtype": "float32"}}
    p = tmp_path / "m.safetensors"
    save_file({"latents": art.latents}, str(p), metadata={"wanctl": json.dumps(meta)})
    _bad(p, "does not match the metadata")


def test_header_read_does_not_import_torch(tmp_path):
    p = tmp_path / "a.safetensors"
    write_artifact(str(p), make_artifact())
    code = (
        "import sys\n"
        "from wanctl.core.io.artifact import read_header\n"
        f"h = read_header({str(p)!r})\n"
        "assert h.meta['kind'] == 'latent'\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_stdout_and_stdin(tmp_path):
    """`-` writes the same bytes a file would hold (minus the timestamp) and reads back."""
    p = tmp_path / "a.safetensors"
    art = make_artifact()
    write_artifact(str(p), art)
    code = (
        "import sys\n"
        "from wanctl.core.io.artifact import read_artifact, write_artifact\n"
        "a = read_artifact('-')\n"
        "write_artifact('-', a)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], input=p.read_bytes(), capture_output=True, check=True)
    q = tmp_path / "b.safetensors"
    q.write_bytes(out.stdout)
    back = read_artifact(str(q))
    assert torch.equal(back.latents, art.latents)
    assert back.meta["params"] == art.meta["params"]


@pytest.mark.parametrize("suffix", [".safetensors", ".zarr"])
def test_outputs_get_the_umask_permissions(tmp_path, suffix):
    old = os.umask(0o022)
    try:
        out = tmp_path / f"o{suffix}"
        write_artifact(str(out), make_artifact())
    finally:
        os.umask(old)
    files = [out] if out.is_file() else [p for p in out.rglob("*")] + [out]
    for f in files:
        mode = f.stat().st_mode & 0o777
        assert mode == (0o755 if f.is_dir() else 0o644), (f, oct(mode))
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
