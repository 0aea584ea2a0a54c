"""Assembles the Typer app from the command modules. Nothing here imports torch."""

from __future__ import annotations

import typer

from wanctl import __version__
from wanctl.commands import cache, decode, denoise, encode, export, flf2v, info, invert, model, preview, t2v
from wanctl.commands._help import Command, Group

app = typer.Typer(
    cls=Group,
    name="wanctl",
    help=(
        "Command-line toolkit for Wan2.2 video diffusion workflows.\n\n"
        "Each subcommand is one step that reads and writes artifacts (latents + metadata in "
        ".safetensors or .zarr), so steps chain in shell pipelines and Makefiles.\n\n"
        "Example: wanctl encode clip.mp4 -o clip.safetensors && wanctl decode clip.safetensors -o out.mp4"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"wanctl {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    pass


app.command("encode", cls=Command)(encode.encode)
app.command("invert", cls=Command)(invert.invert)
app.command("denoise", cls=Command)(denoise.denoise)
app.command("t2v", cls=Command)(t2v.t2v)
app.command("flf2v", cls=Command)(flf2v.flf2v)
app.command("decode", cls=Command)(decode.decode)
app.command("info", cls=Command)(info.info)
app.command("preview", cls=Command)(preview.preview)
app.command("export", cls=Command)(export.export)
app.add_typer(model.app, name="model")
app.add_typer(cache.app, name="cache")


def _on_sigterm(signum, frame) -> None:
    from wanctl.core.errors import Terminated

    raise Terminated()


def _quiet_libraries() -> None:
    """wanctl speaks to the user through its own notice/warning lines; Python warnings and
    unhandled log records of torch, transformers, diffusers... would add lines around them
    (around a one-line error, too). WANCTL_DEBUG=1 shows them."""
    import logging
    import os
    import warnings

    if os.environ.get("WANCTL_DEBUG"):
        return
    warnings.simplefilter("ignore")
    logging.getLogger().addHandler(logging.NullHandler())  # no "last resort" printing to stderr


def main() -> None:
    import signal

    # a job scheduler's SIGTERM unwinds like Ctrl-C: temp files removed, one line, exit 143
    signal.signal(signal.SIGTERM, _on_sigterm)
    _quiet_libraries()
    app()
