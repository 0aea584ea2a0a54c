"""`wanctl info`: inspect artifacts without loading tensors (no torch import)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from wanctl.commands._options import JsonOpt
from wanctl.commands._report import emit_json, handle_errors, out_console
from wanctl.core.errors import BadInputError


def _fmt_bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _summary(hdr) -> dict:
    meta = hdr.meta
    return {
        "path": hdr.path,
        "format": hdr.format,
        "size_bytes": hdr.size_bytes,
        "kind": meta.get("kind"),
        "family": meta.get("family"),
        "latent_space": meta.get("latent_space"),
        "noise_level": meta.get("noise_level"),
        "tensors": {k: {"shape": list(v.shape), "dtype": v.dtype} for k, v in hdr.tensors.items()},
        "video": meta.get("video"),
        "model": meta.get("model"),
        "params": meta.get("params"),
        "provenance": meta.get("provenance"),
        "format_version": meta.get("format_version"),
    }


def _table(s: dict):
    from rich.table import Table
    from rich.text import Text

    # cells as plain Text: prompts and paths come from users and may hold [brackets], which as
    # markup would vanish (the consoles print :emoji: codes as typed already)
    t = Table(show_header=False, box=None, pad_edge=False, title=Text(s["path"]), title_justify="left")
    t.add_column(style="bold cyan", no_wrap=True)
    t.add_column(overflow="fold")

    def row(key: str, value: str) -> None:
        t.add_row(Text(key), Text(value))

    version = f"format v{s['format_version']}, " if s.get("format_version") is not None else ""
    row("kind", f"{s['kind']}  ({version}{s['format']}, {_fmt_bytes(s['size_bytes'])})")
    row("family", str(s["family"]))
    row("noise level", f"s = {s['noise_level']:g}  ({s['latent_space']} latents)")
    for name, ti in s["tensors"].items():
        row(f"tensor {name}", f"{tuple(ti['shape'])} {ti['dtype']}")
    v = s.get("video") or {}
    if v:
        fps = v.get("fps")
        rate = f"{fps:g} fps" if isinstance(fps, (int, float)) else "fps not recorded"
        row("video", f"{v.get('width')}x{v.get('height')}, {v.get('frames')} frames @ {rate}")
    m = s.get("model") or {}
    if m:
        comps = ", ".join(f"{k}={v}" for k, v in (m.get("components") or {}).items())
        row("model", f"{m.get('name')} ({m.get('family')}), fingerprint {m.get('fingerprint')}")
        if comps:
            row("", comps)
        for lr in m.get("loras") or []:
            row("lora", f"{lr.get('path')} at strength {lr.get('strength')} on {', '.join(lr.get('experts') or [])}"
                              f" (sha256 {str(lr.get('sha256'))[:16]})")
    for k, v in (s.get("params") or {}).items():
        if k == "plan" and isinstance(v, dict) and isinstance(v.get("steps"), list):
            steps = v["steps"]
            experts = sorted({st.get("expert") for st in steps if isinstance(st, dict)})
            v = (f"{v.get('task')}: {len(steps)} {v.get('solver')} steps, {v.get('forwards')} DiT forwards, "
                 f"experts {', '.join(map(str, experts))} (wanctl info --json for every step)")
        elif isinstance(v, (list, dict)):
            v = json.dumps(v)
            if len(v) > 120:
                v = v[:117] + "..."
        row(f"param {k}", str(v))
    p = s.get("provenance") or {}
    if p:
        row("created", f"{p.get('created')} by `wanctl {p.get('command')}`")
        for inp in p.get("inputs") or []:
            sha = (inp.get("sha256") or "")[:16]
            row(f"input {inp.get('role')}", f"{inp.get('path')}  sha256 {sha}…")
        vers = ", ".join(f"{k} {v}" for k, v in (p.get("versions") or {}).items())
        row("versions", vers)
    return t


@handle_errors
def info(
    files: Annotated[list[str], typer.Argument(help="Artifact files (.safetensors, .zarr, or - for stdin).", show_default=False)],
    as_json: JsonOpt = False,
) -> None:
    """Show what an artifact holds: kind, family, shapes, noise level, video, parameters, provenance.

    Reads only the header (fast, no tensors loaded).

    Examples:

      wanctl info clip.latent.safetensors

      wanctl info noise.safetensors --json | jq .params
    """
    from wanctl.core.io.artifact import STDIO, read_header, read_stdin
    from wanctl.core.io.comfy import read_comfy_header

    for f in files:
        data = read_stdin() if f == STDIO else None
        try:
            hdr = read_header(f, stdin_bytes=data)
        except BadInputError:
            hdr = read_comfy_header(f, data)  # a ComfyUI-written .latent has no wanctl metadata
            if hdr is None:
                raise
        s = _summary(hdr)
        if as_json:
            emit_json(s)
        else:
            out_console().print(_table(s))
