"""ComfyUI ``.latent`` interop.

A ComfyUI latent file is safetensors with the tensor ``latent_tensor`` in *raw* VAE space
(``raw = normalized * std + mean``) and an empty tensor ``latent_format_version_0``; without
that marker ComfyUI divides by 0.18215 on load, and so does wanctl when reading one. wanctl
writes its own metadata into the file too (ComfyUI ignores it), so a round trip keeps family,
video size, fps and provenance.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol

from wanctl.core.errors import BadInputError
from wanctl.core.families import FAMILIES, FamilySpec
from wanctl.core.files import atomic_path, parse_safetensors_header
from wanctl.core.io.artifact import META_KEY, STDIO, Artifact, new_meta, read_stdin

SUFFIX = ".latent"
LEGACY_SCALE = 0.18215


class LatentSpace(Protocol):
    """What converting a latent needs to know of the model in use (a ``ModelSpec`` is one)."""

    @property
    def family(self) -> FamilySpec: ...

    @property
    def vae_config(self) -> dict: ...  # latents_mean / latents_std


def is_comfy(path: str) -> bool:
    return str(path).lower().endswith(SUFFIX)


def holds_comfy(data: bytes, where: str, size: int | None = None) -> bool:
    """Whether safetensors bytes (the header is enough; ``size`` is the whole file's) are a
    ComfyUI latent, whatever the file is called."""
    try:
        _, infos, _ = parse_safetensors_header(data, len(data) if size is None else size, where)
    except BadInputError:
        return False
    return "latent_tensor" in infos and "latents" not in infos


def _stats(vae_config: dict, channels: int):
    import torch

    mean = torch.tensor(vae_config["latents_mean"], dtype=torch.float32)
    std = torch.tensor(vae_config["latents_std"], dtype=torch.float32)
    if mean.numel() != channels:
        raise BadInputError(f"latent has {channels} channels but the model's VAE has {mean.numel()}")
    return mean.view(1, -1, 1, 1, 1), std.view(1, -1, 1, 1, 1)


def write_comfy(path: str, art: Artifact, vae_config: dict, force: bool = False) -> None:
    """Export a normalized latent artifact as a ComfyUI .latent file (raw VAE space)."""
    import torch
    from safetensors.torch import save, save_file

    lat = art.latents.float()
    mean, std = _stats(vae_config, lat.shape[1])
    tensors = {"latent_tensor": (lat * std + mean).contiguous(), "latent_format_version_0": torch.tensor([])}
    meta = dict(art.meta, latent_space="raw")
    meta["tensors"] = {"latent_tensor": {"shape": list(lat.shape), "dtype": "float32"}}
    md = {META_KEY: json.dumps(meta, ensure_ascii=False, allow_nan=False)}
    if path == STDIO:
        from wanctl.core.files import write_stdout

        write_stdout(save(tensors, metadata=md))
        return
    with atomic_path(path, force=force) as tmp:
        save_file(tensors, str(tmp), metadata=md)


def _family_and_video(shape: tuple[int, ...], family: str | None, where: str) -> tuple[str | None, dict]:
    """What a raw (B, C, T, h, w) latent says of itself: its family (48 channels can only be the
    Wan2.2 VAE of ti2v-5b) and the video size it decodes to."""
    c, t, h, w = shape[1:]
    if family is None and c == 48:
        family = "ti2v-5b"
    if family is not None and FAMILIES[family].latent_channels != c:
        raise BadInputError(f"{where}: {c}-channel latent cannot be {family}")
    stride = FAMILIES[family].stride[1] if family else (16 if c == 48 else 8)
    return family, {"width": w * stride, "height": h * stride, "frames": (t - 1) * 4 + 1, "fps": None}


def read_comfy(path: str, data: bytes | None = None) -> Artifact:
    """A ComfyUI .latent as an artifact in raw space (``meta['latent_space'] == 'raw'``).

    Call :func:`to_normalized` with the model in use before sampling or decoding.
    """
    import torch
    from safetensors.torch import load

    where = "<stdin>" if path == STDIO else path
    if data is not None:
        pass
    elif path == STDIO:
        data = read_stdin()
    else:
        p = Path(path)
        if not p.is_file():
            raise BadInputError(f"{path}: no such file")
        data = p.read_bytes()
    strmeta, infos, _ = parse_safetensors_header(data, len(data), where)
    if "latent_tensor" not in infos:
        raise BadInputError(f"{where}: not a ComfyUI latent (no 'latent_tensor')")
    try:
        tensors = load(data)
    except Exception as e:  # noqa: BLE001 - safetensors' own error types
        raise BadInputError(f"{where}: cannot read tensors ({str(e).splitlines()[0]})") from None
    raw = tensors["latent_tensor"].float()
    if "latent_format_version_0" not in tensors:
        raw = raw / LEGACY_SCALE  # ComfyUI's rule for files without the version marker
    if raw.ndim == 4:  # a single image latent (B, C, H, W)
        raw = raw.unsqueeze(2)
    if raw.ndim != 5:
        raise BadInputError(f"{where}: latent_tensor must be (B, C, T, H, W), got {tuple(raw.shape)}")
    if not bool(torch.isfinite(raw).all()):
        raise BadInputError(f"{where}: latent_tensor contains NaN or infinite values")
    ours = None
    if META_KEY in strmeta:
        try:
            ours = json.loads(strmeta[META_KEY])
        except ValueError:
            ours = None
    family, video = _family_and_video(tuple(raw.shape), (ours or {}).get("family"), where)
    meta = ours if ours is not None else new_meta("latent", family=family, command="comfyui", noise_level=0.0,
                                                  video=video)
    meta = dict(meta, kind=meta.get("kind", "latent"), family=family, latent_space="raw")
    return Artifact({"latents": raw}, meta, path=path)


def to_normalized(art: Artifact, spec: LatentSpace) -> Artifact:
    """Bring a raw-space latent (from a .latent file) into wanctl's normalized space for ``spec``."""
    if art.meta.get("latent_space") != "raw":
        return art
    fam = art.meta.get("family")
    c = art.latents.shape[1]
    if fam is None:
        if spec.family.latent_channels != c:
            raise BadInputError(f"{art.path}: {c}-channel latent does not fit {spec.family.name} ({spec.family.latent_channels} channels)")
        fam = spec.family.name
    mean, std = _stats(spec.vae_config, c)
    art.tensors["latents"] = (art.latents.float() - mean) / std
    art.meta = dict(art.meta, family=fam, latent_space="normalized")
    return art


def needs_family(art: Artifact) -> bool:
    return art.meta.get("latent_space") == "raw" and art.meta.get("family") is None


def check_model_given(art: Artifact, model_value: str | None) -> None:
    """A 16-channel .latent could be t2v-a14b or i2v-a14b: then the model must be named."""
    import os

    if needs_family(art) and model_value is None and not os.environ.get("WANCTL_MODEL"):
        raise BadInputError(
            f"{art.path}: a {art.latents.shape[1]}-channel ComfyUI latent fits t2v-a14b and i2v-a14b; pass --model"
        )


def read_comfy_header(path: str, data: bytes | None = None):
    """A ComfyUI latent's header as an artifact ``Header`` (no tensors read, no torch): what
    ``wanctl info`` shows for a file ComfyUI wrote. ``None`` if the bytes are not one."""
    from wanctl.core.files import safetensors_head
    from wanctl.core.io.artifact import Header

    where = "<stdin>" if path == STDIO else path
    if data is None:
        p = Path(path)
        if not p.is_file():
            return None
        data, size = safetensors_head(p), p.stat().st_size
    else:
        size = len(data)
    try:
        strmeta, infos, _ = parse_safetensors_header(data, size, where)
    except BadInputError:
        return None
    if "latent_tensor" not in infos or "latents" in infos:
        return None
    shape = tuple(infos["latent_tensor"].shape)
    if len(shape) == 4:
        shape = (shape[0], shape[1], 1, shape[2], shape[3])
    family, video = _family_and_video(shape, None, where) if len(shape) == 5 else (None, None)
    meta = {"kind": "latent", "family": family, "latent_space": "raw", "noise_level": 0.0, "video": video,
            "format_version": None, "params": {"comfyui_version_marker": "latent_format_version_0" in infos}}
    return Header(meta, infos, path, "comfyui .latent", size)
