"""The --help of every command: whole option names at 80 columns, no type on flags, docstring
paragraphs as single lines (the terminal wraps them)."""

from __future__ import annotations

import typer


def _whole_option_names() -> None:
    """rich shrinks every wrappable column of Typer's option tables alike when the terminal is
    narrow, cutting long option names (``--cfg-truncate-high-noise-st…`` at 80 columns). Make
    the name columns no-wrap, so only the help text gives way."""
    import typer.rich_utils as ru

    if getattr(ru.Table, "_wanctl_whole_names", False):
        return

    class OptionTable(ru.Table):
        _wanctl_whole_names = True

        def add_row(self, *renderables, **kwargs):
            super().add_row(*renderables, **kwargs)
            if len(self.columns) >= 5:  # (required,) long names, short names, ..., type, help
                for col in self.columns[:-2]:
                    col.no_wrap = True

    ru.Table = OptionTable


def _unwrap(doc: str) -> str:
    """A docstring's paragraphs as single lines (the terminal wraps them), examples kept as written.
    Typer's rich help keeps every line break of a docstring, which cuts sentences at odd places."""
    import inspect

    out = []
    for para in inspect.cleandoc(doc).split("\n\n"):
        lines = para.split("\n")
        if all(line.startswith("  ") for line in lines if line.strip()):
            out.append(para)  # an indented example block
        else:
            out.append(" ".join(line.strip() for line in lines))
    return "\n\n".join(out)


def _tidy_params(params) -> None:
    for p in params:
        if getattr(p, "param_type_name", "") != "option" or p.metavar is not None:
            continue
        if p.is_flag:
            p.metavar = ""
        else:
            desc = getattr(p, "type_descriptor", None)
            p.metavar = _METAVARS.get(getattr(desc, "annotation", None))


_METAVARS = {int: "N", float: "NUM", str: "TEXT"}


class _TidyHelp:
    """Mixed into every command and group class: flags show no type in --help (not ``<bool>``),
    and value types are short words, so option names stay whole at 80 columns."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        _whole_option_names()
        _tidy_params(self.params)
        if self.help:
            self.help = _unwrap(self.help)

    def get_help_option(self, ctx):
        opt = super().get_help_option(ctx)
        if opt is not None:
            opt.metavar = ""
        return opt


class Command(_TidyHelp, typer.core.TyperCommand):
    pass


class Group(_TidyHelp, typer.core.TyperGroup):
    pass
