"""Instant previews of latents without the VAE: a per-family linear map from a normalized latent
pixel to RGB (the factors ComfyUI uses, in ``wanctl/data/latent_rgb_factors.json``; a model
folder may ship its own in ``vae/latent_rgb_factors.json``, as the toy models do).
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch


class ModelFolder(Protocol):
    """Where a model is (a ``ModelSpec`` is one)."""

    @property
    def path(self) -> Path: ...


def rgb_factors(family_vae: str, spec: ModelFolder | None = None) -> tuple[list, list]:
    """(C x 3 factors, 3 biases) for a VAE kind ('wan2.1' | 'wan2.2'); the model's own if it has them."""
    if spec is not None:
        own = spec.path / "vae" / "latent_rgb_factors.json"
        if own.is_file():
            d = json.loads(own.read_text())
            return d["rgb_factors"], d["rgb_bias"]
    d = json.loads(resources.files("wanctl").joinpath("data/latent_rgb_factors.json").read_text())[family_vae]
    return d["rgb_factors"], d["rgb_bias"]


def latent_rgb(latents: "torch.Tensor", factors: list, bias: list) -> "np.ndarray":
    """(C, T, h, w) normalized latents -> uint8 (T, h, w, 3)."""
    import torch

    f = torch.tensor(factors, dtype=torch.float32)
    b = torch.tensor(bias, dtype=torch.float32)
    rgb = torch.einsum("cthw,ck->thwk", latents.float(), f) + b
    return ((rgb.clamp(-1, 1) + 1) * 127.5).round().byte().numpy()


def upscale(frame: "np.ndarray", scale: int) -> "np.ndarray":
    from PIL import Image
    import numpy as np

    if scale == 1:
        return frame
    h, w = frame.shape[:2]
    return np.asarray(Image.fromarray(frame).resize((w * scale, h * scale), Image.Resampling.NEAREST))


def contact_sheet(rows: list[list["np.ndarray"]], gap: int = 2) -> "np.ndarray":
    """Frames laid out in rows (each row a list of equally sized frames) with a gap between."""
    import numpy as np

    h, w = rows[0][0].shape[:2]
    cols = max(len(r) for r in rows)
    sheet = np.full((len(rows) * (h + gap) - gap, cols * (w + gap) - gap, 3), 24, dtype=np.uint8)
    for i, row in enumerate(rows):
        for j, f in enumerate(row):
            sheet[i * (h + gap) : i * (h + gap) + h, j * (w + gap) : j * (w + gap) + w] = f
    return sheet


def trajectory_states(tensors: dict) -> list[tuple[str, "torch.Tensor"]]:
    """('trajectory/k', tensor) in step order."""
    items = [(k, v) for k, v in tensors.items() if k.startswith("trajectory/")]
    return sorted(items, key=lambda kv: int(kv[0].split("/")[1]))
