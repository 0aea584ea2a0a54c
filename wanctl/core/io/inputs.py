"""Any latent input a command accepts: a wanctl artifact (:mod:`artifact`) or a ComfyUI
``.latent`` file (:mod:`comfy`). The two formats know nothing of each other; this module
alone chooses between them.
"""

from __future__ import annotations

from typing import Callable, Iterable

from wanctl.core.errors import BadInputError
from wanctl.core.io import comfy
from pathlib import Path

from wanctl.core.io.artifact import STDIO, Artifact, read_artifact, read_stdin

HEADER_PEEK_LIMIT = 100_000_000  # a safetensors JSON header larger than this is not peeked at


def read_input(path: str, *, kinds: Iterable[str] | None = None, notice: Callable[[str], None] | None = None) -> Artifact:
    """Read a wanctl artifact, or a ComfyUI ``.latent`` file (raw space until
    :func:`wanctl.core.io.comfy.to_normalized` is applied with the model in use). The format is
    told by content: stdin (``-``) and a ``.safetensors`` holding ComfyUI's ``latent_tensor``
    are read as ComfyUI latents too."""
    data = None
    if path == STDIO:
        data = read_stdin()
        comfy_file = comfy.holds_comfy(data, "<stdin>")
    elif comfy.is_comfy(path):
        comfy_file = True
    else:
        comfy_file = _file_holds_comfy(path)
    if comfy_file:
        art = comfy.read_comfy(path, data=data)
        if kinds is not None and art.meta["kind"] not in tuple(kinds):
            raise BadInputError(f"{path}: expected a {' or '.join(kinds)} artifact, got a {art.meta['kind']} artifact")
        return art
    return read_artifact(path, kinds=kinds, stdin_bytes=data, notice=notice)


def _file_holds_comfy(path: str) -> bool:
    p = Path(path)
    if not p.is_file() or p.suffix.lower() != ".safetensors":
        return False
    try:
        with open(p, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                return False
            n = int.from_bytes(head, "little")
            if n > HEADER_PEEK_LIMIT:
                return False
            data = head + f.read(n)
    except OSError:
        return False
    return comfy.holds_comfy(data, path, p.stat().st_size)
