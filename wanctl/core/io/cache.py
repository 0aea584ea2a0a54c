"""Content-addressed caches under the cache dir: text embeddings and inversions.

* ``embeddings/``: one ``embedding`` artifact per (text encoder + tokenizer fingerprint, prompt,
  max length, dtype). A run whose prompts are all cached never loads the text encoder.
* ``inversions/``: one ``noise`` artifact per (source latent content, model fingerprint, prompt,
  grid, solver, refine, strength, conditional, dtype). A repeated ``invert`` returns at once.

Entries are written atomically through the artifact writer and validated when read; a corrupt
entry is deleted and recomputed, never used. ``WANCTL_NO_CACHE=1`` or ``--no-cache`` bypasses
both (nothing read, nothing written).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from wanctl.core import trace

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from wanctl.core.io.artifact import Artifact

KINDS = ("embeddings", "inversions")


def enabled(no_cache: bool = False) -> bool:
    return not no_cache and not os.environ.get("WANCTL_NO_CACHE")


def root() -> Path:
    from wanctl.core.env import cache_dir

    return cache_dir()


def key_of(parts: dict) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


def entry_path(kind: str, key: str) -> Path:
    return root() / kind / f"{key}.safetensors"


def get(kind: str, key: str, notice: Callable[[str], None] | None = None) -> "Artifact | None":
    """A validated entry, or None. A corrupt entry is removed (and reported) so it gets rebuilt."""
    from wanctl.core.io.artifact import read_artifact
    from wanctl.core.errors import BadInputError

    p = entry_path(kind, key)
    if not p.exists():
        return None
    try:
        art = read_artifact(str(p))
        stored = art.meta.pop(PAYLOAD_KEY, None)
        if stored != payload_digest(art):
            raise BadInputError("its tensors do not match their checksum" if stored else "it has no checksum")
    except BadInputError as e:
        if notice:
            notice(f"dropping a corrupt cache entry ({e.message}); recomputing")
        try:
            p.unlink()
        except OSError:
            pass
        trace.event("cache_corrupt", kind=kind, key=key)
        return None
    try:
        os.utime(p)  # last use, for prune --older-than
    except OSError:
        pass
    trace.event("cache_hit", kind=kind, key=key)
    return art


PAYLOAD_KEY = "cache_payload_sha256"  # every entry's checksum of its tensors, verified on read


def payload_digest(art: "Artifact") -> str:
    return tensor_digest(*(art.tensors[k] for k in sorted(art.tensors)))


def put(kind: str, key: str, art: "Artifact") -> None:
    from wanctl.core.io.artifact import Artifact, write_artifact

    p = entry_path(kind, key)
    entry = Artifact(art.tensors, {**art.meta, PAYLOAD_KEY: payload_digest(art)})
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        write_artifact(str(p), entry, force=True)
        trace.event("cache_put", kind=kind, key=key)
    except OSError:  # a full or read-only cache only costs time
        pass


def tensor_digest(*tensors: "torch.Tensor") -> str:
    """sha256 of tensor contents (shape, dtype and bytes): a key independent of file metadata."""
    import torch

    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().contiguous().cpu()
        h.update(f"{tuple(t.shape)}|{t.dtype}|".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


# --------------------------------------------------------------------------- management


@dataclass
class Entry:
    kind: str
    path: Path
    size: int
    mtime: float
    summary: str


def entries(kinds: tuple[str, ...] = KINDS) -> list[Entry]:
    from wanctl.core.io.artifact import read_header
    from wanctl.core.errors import BadInputError

    out = []
    for kind in kinds:
        d = root() / kind
        if not d.is_dir():
            continue
        for p in sorted(d.glob("*.safetensors")):
            st = p.stat()
            try:
                meta = read_header(str(p)).meta
                params = meta.get("params") or {}
                summary = f"{meta.get('family') or ''} {params.get('prompt', '')!r}".strip()
                if kind == "inversions":
                    summary += f" {params.get('solver')} {params.get('schedule', {}).get('steps')} steps"
            except BadInputError:
                summary = "(corrupt)"
            out.append(Entry(kind, p, st.st_size, st.st_mtime, summary))
    return out


def sizes() -> dict[str, int]:
    """Bytes per top-level folder of the cache dir (embeddings, inversions, models, ...)."""
    out: dict[str, int] = {}
    r = root()
    if not r.is_dir():
        return out
    for child in sorted(r.iterdir()):
        if child.is_dir():
            out[child.name] = sum(f.stat().st_size for f in child.rglob("*") if f.is_file())
        else:
            out[child.name] = child.stat().st_size
    return out


def parse_age(text: str) -> float:
    """'7d', '12h', '30m', '90s' -> seconds."""
    from wanctl.core.errors import BadInputError

    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    try:
        value = float(text[:-1]) * units[text[-1]]
    except (KeyError, ValueError, IndexError):
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise BadInputError(f"age {text!r} must be a number of at least 0 with a unit, like 30m, 12h, 7d or 2w")
    return value


def prune(kinds: tuple[str, ...] = KINDS, older_than: float | None = None) -> tuple[int, int]:
    """Delete entries (not used within ``older_than`` seconds, when given). Returns (count, bytes)."""
    now = time.time()
    n = freed = 0
    for e in entries(kinds):
        if older_than is not None and now - e.mtime < older_than:
            continue
        try:
            e.path.unlink()
            n += 1
            freed += e.size
        except OSError:
            pass
    return n, freed
