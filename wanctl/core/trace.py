"""Structured trace events (model loads, model calls) for tests and debugging.

When ``WANCTL_TRACE`` names a file, each event is appended to it as one JSON line. Tests run
real subprocesses and count events ("the DiT was loaded once", "N model calls"). Without the
variable this costs one dictionary lookup.
"""

from __future__ import annotations

import json
import os


def event(name: str, **fields) -> None:
    path = os.environ.get("WANCTL_TRACE")
    if not path:
        return
    rec = {"event": name, "pid": os.getpid(), **fields}
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(rec, default=str) + "\n")


def read(path: str | os.PathLike) -> list[dict]:
    try:
        with open(path, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError:
        return []
