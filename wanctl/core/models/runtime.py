"""The torch-side plumbing every model layout shares: dtype names, devices, and quiet, offline
libraries. torch, diffusers and transformers are imported inside the functions only.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Callable

from wanctl.core.errors import BadInputError

if TYPE_CHECKING:  # pragma: no cover
    import torch

DTYPES = {
    "fp32": "float32",
    "float32": "float32",
    "fp16": "float16",
    "float16": "float16",
    "half": "float16",
    "bf16": "bfloat16",
    "bfloat16": "bfloat16",
}


def parse_dtype(name: str) -> "torch.dtype":
    import torch

    try:
        return getattr(torch, DTYPES[name.lower()])
    except KeyError:
        raise BadInputError(f"unknown dtype {name!r}; use bf16, fp16 or fp32") from None


# --------------------------------------------------------------------------- devices


def current_index(device_type: str) -> int:
    """The index a device of this type without an index means ("cuda" is the current CUDA device)."""
    import torch

    if device_type == "cpu":
        return 0
    backend = getattr(torch, device_type, None)  # torch.cuda, torch.xpu...
    available = getattr(backend, "is_available", None)
    current = getattr(backend, "current_device", None)
    if callable(available) and callable(current) and available():
        return int(current())
    return 0


def same_device(a, b, current: Callable[[str], int] | None = None) -> bool:
    """Whether two devices (strings or torch.device) are the same device: "cuda" and "cuda:0" are
    when device 0 is the current one. ``current`` gives the index a device without one means
    (default: :func:`current_index`)."""
    import torch

    current = current or current_index
    da, db = torch.device(a), torch.device(b)
    if da.type != db.type:
        return False
    if da.index == db.index:
        return True
    ia = da.index if da.index is not None else current(da.type)
    ib = db.index if db.index is not None else current(db.type)
    return ia == ib


def device_of(module) -> "torch.device":
    """Where a module's weights are (its first parameter's device; the CPU when it has none)."""
    import torch

    p = next(iter(module.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


# --------------------------------------------------------------------------- libraries


def hub_offline() -> None:
    """wanctl never downloads: make any accidental hub access fail fast instead of hanging."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    quiet_libraries()


def quiet_libraries() -> None:
    """The libraries' own progress bars and info logs would interleave with wanctl's output."""
    import diffusers
    import transformers

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    diffusers.utils.logging.set_verbosity_error()
