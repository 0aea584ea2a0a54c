"""Any latent input a command accepts: a wanctl artifact (:mod:`artifact`) or a ComfyUI
``.latent`` file (:mod:`comfy`). The two formats know nothing of each other; this module
alone chooses between them.
"""

from __future__ import annotations

from typing import Iterable

from wanctl.core.errors import BadInputError
from wanctl.core.io import comfy
from wanctl.core.io.artifact import Artifact, read_artifact


def read_input(path: str, *, kinds: Iterable[str] | None = None) -> Artifact:
    """Read a wanctl artifact, or a ComfyUI ``.latent`` file (raw space until
    :func:`wanctl.core.io.comfy.to_normalized` is applied with the model in use)."""
    if comfy.is_comfy(path):
        art = comfy.read_comfy(path)
        if kinds is not None and art.meta["kind"] not in tuple(kinds):
            raise BadInputError(f"{path}: expected a {' or '.join(kinds)} artifact, got a {art.meta['kind']} artifact")
        return art
    return read_artifact(path, kinds=kinds)
