"""Hostile and damaged artifacts: each is refused at the boundary by the one metadata schema
(wanctl/core/io/schema.py) or the reader, with exit 3, one error line, no traceback, and the
folder left as it was (no output, no temporary file).

Header-level cases run ``wanctl info`` (no torch import, fast); payload-level ones run
``wanctl decode`` with an output path, which must not appear.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save, save_file

from conftest import assert_one_line_error, run_cli
from wanctl.core.io.artifact import Artifact, new_meta, write_artifact


def base_meta(kind="noise", family="ti2v-5b") -> dict:
    meta = new_meta(kind, family=family, command="test", noise_level=1.0 if kind == "noise" else 0.0,
                    video={"width": 64, "height": 64, "frames": 17, "fps": 16},
                    params={"schedule": {"grid": "official", "steps": 4, "shift": 5.0, "strength": 1.0,
                                         "sigmas": [1.0, 0.75, 0.5, 0.25, 0.0]}, "seed": 0})
    return meta


def latents(channels=48, t=5, h=4, w=4, dtype=torch.float32):
    return torch.randn(1, channels, t, h, w, generator=torch.Generator().manual_seed(0)).to(dtype)


def write_raw(path: Path, meta, tensors: dict | None = None) -> Path:
    """A safetensors file with exactly this metadata (a dict, or a raw JSON string) and tensors,
    bypassing wanctl's writer (which would refuse most of these)."""
    tensors = {"latents": latents()} if tensors is None else tensors
    text = meta if isinstance(meta, str) else json.dumps(meta)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata={"wanctl": text})
    return path


def edited(**changes):
    """A builder: the base noise metadata with dotted-path fields set (None deletes)."""

    def build(path: Path) -> Path:
        meta = base_meta()
        for dotted, value in changes.items():
            *parents, leaf = dotted.split("__")
            node = meta
            for key in parents:
                node = node.setdefault(key, {})
            if value is DELETE:
                node.pop(leaf, None)
            else:
                node[leaf] = value
        return write_raw(path, meta)

    return build


DELETE = object()


def deep_json(depth: int) -> str:
    meta = base_meta()
    text = json.dumps(meta)
    return text[:-1] + ', "x": ' + "[" * depth + "]" * depth + "}"


def with_tensors(**tensors):
    return lambda path: write_raw(path, base_meta(), tensors)


def declared_shape_lies(path: Path) -> Path:
    meta = base_meta()
    meta["tensors"] = {"latents": {"shape": [1, 48, 5, 4, 8], "dtype": "float32"}}
    return write_raw(path, meta)


def huge_header(path: Path) -> Path:
    meta = base_meta()
    meta["params"]["prompt"] = "x" * (17 * 1024 * 1024)
    return write_raw(path, meta)


def not_strings_metadata(path: Path) -> Path:
    body = json.dumps({"__metadata__": {"wanctl": {"format": "wanctl-artifact"}},
                       "latents": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    path.write_bytes(struct.pack("<Q", len(body)) + body + b"\0\0\0\0")
    return path


def zarr_json_replaced(node: str, text: str):
    """A good noise .zarr whose ``node`` (``""``: the root group) zarr.json is replaced by ``text``."""

    def build(path: Path) -> Path:
        store = path.with_suffix(".zarr")
        good_noise(str(store))
        (store / node / "zarr.json").write_text(text)
        return store

    return build


HEADER_CASES = {
    "width-is-text": (edited(video__width="abc"), "video.width"),
    "width-negative": (edited(video__width=-64), "video.width"),
    "frames-not-4n1": (edited(video__frames=10), "video.frames"),
    "frames-zero": (edited(video__frames=0), "video.frames"),
    "fps-negative": (edited(video__fps=-1), "video.fps"),
    "fps-is-true": (edited(video__fps=True), "video.fps"),
    "noise-level-above-1": (edited(noise_level=2.5), "noise_level"),
    "noise-level-nan": (edited(noise_level=float("nan")), "noise_level"),
    "unknown-family": (edited(family="sdxl"), "family"),
    "unknown-kind": (edited(kind="weights"), "kind"),
    "format-version-text": (edited(format_version="1"), "format_version"),
    "format-version-newer": (edited(format_version=99), "upgrade wanctl"),
    "not-wanctl-format": (edited(format="something-else"), "not a wanctl artifact"),
    "steps-zero": (edited(params__schedule__steps=0), "params.schedule.steps"),
    "grid-unknown": (edited(params__schedule__grid="karras"), "params.schedule.grid"),
    "sigmas-rising": (edited(params__schedule__sigmas=[0.2, 0.5, 1.0]), "params.schedule.sigmas"),
    "seed-negative": (edited(params__seed=-1), "params.seed"),
    "params-a-list": (edited(params=[1, 2]), "params"),
    "builtin-is-text": (edited(model__builtin="yes"), "model.builtin"),
    "noise-without-video": (edited(video=DELETE), "video.width"),
    "noise-without-height": (edited(video__height=DELETE), "video.height"),
    "deep-metadata": (lambda p: write_raw(p, deep_json(50_000)), "nested"),
    "metadata-not-json": (lambda p: write_raw(p, "{not json"), "corrupt wanctl metadata"),
    "metadata-a-list": (lambda p: write_raw(p, "[1, 2]"), "not a JSON object"),
    "header-over-limit": (huge_header, "larger than"),
    "metadata-values-not-strings": (not_strings_metadata, "__metadata__"),
    "latents-4d": (with_tensors(latents=torch.zeros(1, 48, 4, 4)), "5-D"),
    "latents-int32": (with_tensors(latents=torch.zeros(1, 48, 5, 4, 4, dtype=torch.int32)), "int32"),
    "latents-fp8": (with_tensors(latents=torch.zeros(1, 48, 5, 4, 4).to(torch.float8_e4m3fn)), "latents must be float32"),
    "no-latents": (with_tensors(other=torch.zeros(2)), "no 'latents'"),
    "width-disagrees-with-latents": (with_tensors(latents=latents(w=6)), "video.width"),
    "frames-disagree-with-latents": (with_tensors(latents=latents(t=3)), "latent frames"),
    "channels-not-the-family": (with_tensors(latents=latents(channels=16)), "channels"),
    "trajectory-shape-differs": (with_tensors(latents=latents(), **{"trajectory/0": latents(t=2)}), "trajectory/0"),
    "first-frame-float": (with_tensors(latents=latents(), first_frame=torch.zeros(1, 3, 64, 64)), "first_frame"),
    "first-frame-wrong-size": (with_tensors(latents=latents(), first_frame=torch.zeros(1, 3, 32, 64, dtype=torch.uint8)), "first_frame"),
    "declared-shape-lies": (declared_shape_lies, "does not match the metadata"),
    "declared-shape-a-number": (edited(tensors={"latents": {"shape": 5, "dtype": "float32"}}), "tensors.latents.shape"),
    "declared-shape-null": (edited(tensors={"latents": {"shape": None}}), "tensors.latents.shape"),
    "declared-tensor-not-an-object": (edited(tensors={"latents": 3}), "tensors.latents"),
    "inputs-not-objects": (edited(provenance__inputs=[1, 2]), "provenance.inputs[0]"),
    "input-sha256-a-number": (edited(provenance__inputs=[{"role": "source", "path": "a.mp4", "sha256": 5}]),
                              "provenance.inputs[0].sha256"),
    "loras-not-objects": (edited(model__loras=[1]), "model.loras[0]"),
    "lora-strength-text": (edited(model__loras=[{"path": "l.safetensors", "sha256": "ab", "strength": "high"}]),
                           "model.loras[0].strength"),
    "zarr-json-a-list": (zarr_json_replaced("", "[1]"), "corrupt zarr.json"),
    "zarr-attributes-text": (zarr_json_replaced("", '{"zarr_format": 3, "node_type": "group", "attributes": "s"}'),
                             "corrupt zarr.json"),
    "zarr-array-json-a-list": (zarr_json_replaced("latents", "[]"), "corrupt zarr.json"),
}


def snapshot(folder: Path) -> dict:
    return {p.relative_to(folder): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


@pytest.mark.parametrize("case", sorted(HEADER_CASES))
def test_hostile_header_refused(tmp_path, case):
    build, contains = HEADER_CASES[case]
    path = build(tmp_path / "a.safetensors")
    before = snapshot(tmp_path)
    r = run_cli("info", str(path))
    assert_one_line_error(r, 3, contains)
    assert snapshot(tmp_path) == before


def good_noise(path: str) -> Artifact:
    art = Artifact({"latents": latents()}, base_meta())
    write_artifact(path, art)
    return art


def drop_a_chunk(tmp_path: Path) -> tuple[list[str], bytes | None]:
    store = tmp_path / "n.zarr"
    good_noise(str(store))
    chunk = next(p for p in sorted((store / "latents" / "c").rglob("*")) if p.is_file())
    chunk.unlink()
    return [str(store)], None


def corrupt_a_chunk(tmp_path: Path) -> tuple[list[str], bytes | None]:
    store = tmp_path / "n.zarr"
    good_noise(str(store))
    chunk = next(p for p in sorted((store / "latents" / "c").rglob("*")) if p.is_file())
    chunk.write_bytes(b"\x00garbage" * 4)
    return [str(store)], None


def stdin_blob(tmp_path: Path) -> bytes:
    good_noise(str(tmp_path / "n.safetensors"))
    data = (tmp_path / "n.safetensors").read_bytes()
    (tmp_path / "n.safetensors").unlink()
    return data


def stdin_truncated(tmp_path):
    return ["-"], stdin_blob(tmp_path)[:-10]


def stdin_trailing(tmp_path):
    return ["-"], stdin_blob(tmp_path) + b"more"


def stdin_huge_length(tmp_path):
    return ["-"], struct.pack("<Q", 1 << 40) + b"{}"


def stdin_short(tmp_path):
    return ["-"], b"\x01\x02\x03"


def stdin_deep(tmp_path):
    return ["-"], save({"latents": latents()}, metadata={"wanctl": deep_json(50_000)})


PAYLOAD_CASES = {
    "zarr-missing-chunk": (drop_a_chunk, "missing 1 of its 5 chunks"),
    "zarr-corrupt-chunk": (corrupt_a_chunk, "cannot read tensors"),
    "stdin-truncated": (stdin_truncated, "truncated"),
    "stdin-trailing-bytes": (stdin_trailing, "more bytes follow"),
    "stdin-huge-header-length": (stdin_huge_length, "header length"),
    "stdin-three-bytes": (stdin_short, "only 3 bytes"),
    "stdin-deep-metadata": (stdin_deep, "nested"),
}


@pytest.mark.parametrize("case", sorted(PAYLOAD_CASES))
def test_damaged_payload_refused_before_any_output(tmp_path, case):
    build, contains = PAYLOAD_CASES[case]
    args, stdin = build(tmp_path)
    before = snapshot(tmp_path)
    r = run_cli("decode", *args, "-o", str(tmp_path / "out.mp4"), "--model", "toy-ti2v-5b", input=stdin or b"")
    assert_one_line_error(r, 3, contains)
    assert snapshot(tmp_path) == before
    assert not list(tmp_path.glob("*.tmp*")) and not (tmp_path / "out.mp4").exists()


def test_a_zarr_artifact_with_zero_chunks_round_trips(tmp_path):
    """Zeros are data: every chunk is written, so the complete-store check never refuses them."""
    from wanctl.core.io.artifact import read_artifact

    art = Artifact({"latents": torch.zeros(1, 48, 5, 4, 4)}, base_meta())
    write_artifact(str(tmp_path / "z.zarr"), art)
    assert torch.equal(read_artifact(str(tmp_path / "z.zarr")).latents, art.latents)


def _recorded_gone(tmp_path: Path, vae_fingerprint: str | None) -> Path:
    """A latent made with the toy model, whose metadata now points at a model folder that is gone."""
    from wanctl.core.models.bundle import component_fingerprint, inspect_folder
    from wanctl.core.models.builtin import ensure

    spec = inspect_folder(ensure("toy-ti2v-5b"), name="toy-ti2v-5b", builtin=True)
    meta = base_meta(kind="latent")
    meta["noise_level"] = 0.0
    meta["model"] = {"name": "my-model", "path": str(tmp_path / "models" / "gone"), "family": "ti2v-5b",
                     "builtin": False, "layout": "diffusers",
                     "components": {"vae": vae_fingerprint or component_fingerprint(spec, "vae")}}
    path = tmp_path / "a.safetensors"
    write_artifact(str(path), Artifact({"latents": latents()}, meta))
    return path


def test_a_gone_model_folder_falls_back_to_a_builtin_with_its_vae(tmp_path):
    path = _recorded_gone(tmp_path, None)
    r = run_cli("decode", str(path), "-o", str(tmp_path / "out.mp4"))
    err = r.stderr.decode()
    assert r.returncode == 0, err
    assert "is gone; built-in 'toy-ti2v-5b' has the same VAE" in err
    assert (tmp_path / "out.mp4").stat().st_size > 0


def test_a_gone_model_folder_with_another_vae_is_exit_4(tmp_path):
    path = _recorded_gone(tmp_path, "0123456789abcdef")
    before = snapshot(tmp_path)
    r = run_cli("decode", str(path), "-o", str(tmp_path / "out.mp4"))
    assert_one_line_error(r, 4, str(tmp_path / "models" / "gone"))
    assert snapshot(tmp_path) == before
