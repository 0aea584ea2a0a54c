"""Environment-derived settings: cache dir, default device. No heavy imports."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """WANCTL_CACHE_DIR, else $XDG_CACHE_HOME/wanctl, else ~/.cache/wanctl."""
    explicit = os.environ.get("WANCTL_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "wanctl"


def default_device() -> str:
    """WANCTL_DEVICE, else cuda when available (under torchrun on a node with several GPUs:
    cuda:LOCAL_RANK, so that the ranks of a sharded run do not all share GPU 0), else mps, else
    cpu (imports torch)."""
    explicit = os.environ.get("WANCTL_DEVICE")
    if explicit:
        return explicit
    import torch

    if torch.cuda.is_available():
        local = os.environ.get("LOCAL_RANK", "")
        count = torch.cuda.device_count()
        if local.isdigit() and count > 1:
            return f"cuda:{int(local) % count}"
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def versions() -> dict:
    """Versions recorded in artifact provenance."""
    from wanctl import __version__

    out = {"wanctl": __version__}
    try:
        import torch

        out["torch"] = torch.__version__
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    try:
        import diffusers

        out["diffusers"] = diffusers.__version__
    except ImportError:  # pragma: no cover
        pass
    return out
