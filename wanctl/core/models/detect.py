"""Which layout a model path is. The formats themselves know nothing of each other; this module
alone decides between them:

1. a folder with ``model_index.json``: the diffusers layout;
2. a ``.json`` file: a model description naming official / ComfyUI files;
3. an official Wan2.2 folder or a ComfyUI single DiT file;
4. anything else: a one-line ModelError.
"""

from __future__ import annotations

import os
from pathlib import Path

from wanctl.core.errors import ModelError
from wanctl.core.models.diffusers_layout import DiffusersLayout
from wanctl.core.models.layout import ModelLayout
from wanctl.core.models.official_detect import detect_description, detect_official


def detect_layout(path: str | os.PathLike) -> ModelLayout:
    """The layout of a model folder or file (reads configs and headers only)."""
    p = Path(path).expanduser()
    if not p.exists():
        raise ModelError(f"model folder {p} does not exist")
    if p.is_dir() and (p / "model_index.json").exists():
        return DiffusersLayout.read(p)
    if p.is_file() and p.suffix.lower() == ".json":
        return detect_description(p)
    layout = detect_official(p)
    if layout is not None:
        return layout
    if not p.is_dir():
        raise ModelError(f"{p} is not a model folder or a Wan2.2 checkpoint file")
    return DiffusersLayout.read(p)  # names what is missing (model_index.json)
