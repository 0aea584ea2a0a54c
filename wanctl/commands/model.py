"""`wanctl model list|init|check`: built-in models and model folders."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from wanctl.commands._help import Command, Group

from wanctl.commands._options import ForceOpt, JsonOpt
from wanctl.commands._report import emit_json, handle_errors, info, out_console

app = typer.Typer(
    cls=Group,
    name="model",
    help="List built-in models, write one to a folder, or check a model folder.",
    no_args_is_help=True,
    add_completion=False,
)


@app.command("list", cls=Command)
@handle_errors
def list_models(as_json: JsonOpt = False) -> None:
    """List built-in models and the default model ($WANCTL_MODEL).

    Example:

      wanctl model list
    """
    from wanctl.core.models import builtin
    
    rows = []
    for b in builtin.BUILTINS.values():
        d = builtin.builtin_dir(b.name)
        rows.append({"name": b.name, "family": b.family, "summary": b.summary,
                     "generated": (d / "model_index.json").exists(), "path": str(d), "trained": b.packaged})
    default = os.environ.get("WANCTL_MODEL")
    if as_json:
        for r in rows:
            emit_json(r)
        return
    from rich.table import Table

    t = Table(title="built-in models", title_justify="left")
    for col in ("name", "family", "description", "cached"):
        t.add_column(col)
    for r in rows:
        state = ("shipped" if r["generated"] else "missing") if r["trained"] else ("yes" if r["generated"] else "on first use")
        t.add_row(r["name"], r["family"], r["summary"], state)
    out_console().print(t)
    out_console().print(f"default model: {default or builtin.default_for(None) + ' (WANCTL_MODEL unset)'}")


@app.command("init", cls=Command)
@handle_errors
def init(
    name: Annotated[str, typer.Argument(help="Built-in model name (see `wanctl model list`).", show_default=False)],
    dest: Annotated[str, typer.Argument(help="Folder to create (diffusers layout).", show_default=False)],
    force: ForceOpt = False,
) -> None:
    """Write a built-in model to a folder in the diffusers layout.

    Example:

      wanctl model init tiny-i2v-a14b ./models/tiny-i2v
    """
    from wanctl.core.models import builtin
    
    out = builtin.init(name, dest, force=force)
    info(f"wrote {name} to {out}")


@app.command("check", cls=Command)
@handle_errors
def check(
    folder: Annotated[str, typer.Argument(help="Model folder (diffusers layout) or built-in name.", show_default=False)],
    as_json: JsonOpt = False,
) -> None:
    """Check a model folder: family, configs, weight files, and weight names/shapes against the configs.

    Reads only safetensors headers (no weights loaded). Exit code 4 when anything is wrong.

    Example:

      wanctl model check /models/Wan2.2-TI2V-5B-Diffusers
    """
    from wanctl.core.errors import EXIT_MODEL
    from wanctl.core.models.bundle import resolve_model, verify

    spec = resolve_model(folder)
    rows = verify(spec)
    ok = all(r["status"] == "ok" for r in rows)
    if as_json:
        emit_json({"path": str(spec.path), "family": spec.family.name, "boundary": spec.boundary, "ok": ok,
                   "components": rows})
    else:
        from rich.table import Table

        t = Table(title=f"{spec.path}  ({spec.family.name})", title_justify="left")
        for col in ("component", "status", "fingerprint", "detail"):
            t.add_column(col, overflow="fold")
        for r in rows:
            style = "green" if r["status"] == "ok" else "red"
            t.add_row(r["component"], f"[{style}]{r['status']}[/{style}]", r.get("fingerprint", ""), r["detail"])
        out_console().print(t)
    if not ok:
        raise typer.Exit(EXIT_MODEL)
