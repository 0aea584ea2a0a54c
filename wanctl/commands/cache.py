"""`wanctl cache list|size|prune`: the embedding and inversion caches."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from wanctl.commands._help import Command, Group

from wanctl.commands._options import JsonOpt
from wanctl.commands._report import emit_json, handle_errors, info, out_console

app = typer.Typer(
    cls=Group,
    name="cache",
    help="Inspect and prune the caches (text embeddings, inversions) under $WANCTL_CACHE_DIR.",
    no_args_is_help=True,
    add_completion=False,
)

KindOpt = Annotated[Optional[str], typer.Option("--kind", help="embeddings or inversions (default: both).")]


def _kinds(kind: str | None) -> tuple[str, ...]:
    from wanctl.core.io import cache
    from wanctl.core.errors import BadInputError

    if kind is None:
        return cache.KINDS
    if kind not in cache.KINDS:
        raise BadInputError(f"unknown cache kind {kind!r}; use one of {', '.join(cache.KINDS)}")
    return (kind,)


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


@app.command("list", cls=Command)
@handle_errors
def list_entries(kind: KindOpt = None, as_json: JsonOpt = False) -> None:
    """List cache entries: kind, size, last use, what they hold.

    Example:

      wanctl cache list --kind inversions
    """
    import datetime as dt

    from wanctl.core.io import cache
    
    rows = cache.entries(_kinds(kind))
    if as_json:
        for e in rows:
            emit_json({"kind": e.kind, "path": str(e.path), "bytes": e.size, "last_used": e.mtime, "summary": e.summary})
        return
    from rich.table import Table

    t = Table(title=f"cache {cache.root()}", title_justify="left")
    for col in ("kind", "entry", "size", "last used", "holds"):
        t.add_column(col, overflow="fold")
    for e in rows:
        t.add_row(e.kind, e.path.stem[:12], _human(e.size), dt.datetime.fromtimestamp(e.mtime).strftime("%Y-%m-%d %H:%M"), e.summary)
    out_console().print(t)


@app.command("size", cls=Command)
@handle_errors
def size(as_json: JsonOpt = False) -> None:
    """Bytes used per cache folder (embeddings, inversions, built-in models, fingerprints).

    Example:

      wanctl cache size
    """
    from wanctl.core.io import cache
    
    sizes = cache.sizes()
    if as_json:
        emit_json({"root": str(cache.root()), "bytes": sizes, "total": sum(sizes.values())})
        return
    for name, n in sizes.items():
        out_console().print(f"{name:<20} {_human(n):>10}")
    out_console().print(f"{'total':<20} {_human(sum(sizes.values())):>10}   ({cache.root()})")


@app.command("prune", cls=Command)
@handle_errors
def prune(
    kind: KindOpt = None,
    older_than: Annotated[Optional[str], typer.Option("--older-than", help="Only entries not used for this long: 30m, 12h, 7d, 2w.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Delete cache entries (all, or those not used for a while). Built-in models are kept.

    Examples:

      wanctl cache prune --older-than 7d

      wanctl cache prune --kind embeddings
    """
    from wanctl.core.io import cache
    
    age = cache.parse_age(older_than) if older_than else None
    n, freed = cache.prune(_kinds(kind), age)
    if as_json:
        emit_json({"deleted": n, "bytes": freed})
    else:
        info(f"deleted {n} entr{'y' if n == 1 else 'ies'} ({_human(freed)})")
