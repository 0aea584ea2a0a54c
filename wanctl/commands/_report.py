"""What commands say: messages and progress on stderr, data (JSON, reports, the run plan) on
stdout, and the mapping of failures to exit codes (one line each)."""

from __future__ import annotations

import functools
import json
import os
import sys
import traceback
from contextlib import contextmanager
from typing import Callable, Iterator

import typer

from wanctl.core.errors import (
    EXIT_BAD_INPUT,
    EXIT_INTERRUPTED,
    EXIT_OOM,
    EXIT_TERMINATED,
    EXIT_UNEXPECTED,
    OOM_HINT,
    Terminated,
    WanctlError,
)


_console = None


def console():
    """A rich console on stderr (respects NO_COLOR)."""
    global _console
    if _console is None:
        from rich.console import Console

        _console = Console(stderr=True, highlight=False, emoji=False, no_color=bool(os.environ.get("NO_COLOR")) or None)
    return _console


def out_console():
    """A rich console on stdout, for commands whose data is a human-readable report."""
    from rich.console import Console

    return Console(highlight=False, emoji=False, no_color=bool(os.environ.get("NO_COLOR")) or None)


_quiet = False  # a --parallel rank other than 0: errors only


def quiet() -> None:
    """Silence notices, warnings, info lines and progress of this process (errors still print)."""
    global _quiet
    _quiet = True
    import warnings

    warnings.simplefilter("ignore")


def notice(msg: str) -> None:
    if _quiet:
        return
    console().print(f"[dim]note:[/dim] {_esc(msg)}", soft_wrap=True)


def warn(msg: str) -> None:
    if _quiet:
        return
    console().print(f"[yellow]warning:[/yellow] {_esc(msg)}", soft_wrap=True)


def info(msg: str) -> None:
    if _quiet:
        return
    console().print(_esc(msg), soft_wrap=True)


def row_summary(share, rows, written: int, as_json: bool) -> None:
    """A manifest run's summary line for this process (``rank I/N: D rows done, S skipped, F
    failed``, see wanctl/core/workflows/manifest.py); exit 3, with the summary as the error
    line, when one of its rows failed."""
    from wanctl.core.errors import BadInputError
    from wanctl.core.workflows.manifest import share_summary

    line, failed = share_summary(share, rows, written)
    if as_json:
        emit_json({"rank": share.index, "ranks": share.count, "done": written,
                   "skipped": sum(1 for t in rows if t.mine and t.skipped), "failed": len(failed)})
    if failed:
        raise BadInputError(f"{line} ({'; '.join(f'{t.label}: {t.error}' for t in failed)})")
    info(line)


def _esc(msg: str) -> str:
    from rich.markup import escape

    return escape(msg)


def error_line(msg: str, hint: str | None = None) -> None:
    """The one line a failing command prints (plus an optional hint line)."""
    text = msg.strip().splitlines()[0] if msg.strip() else "failed"
    console().print(f"[bold red]error:[/bold red] {_esc(text)}", soft_wrap=True)
    if hint:
        console().print(f"[dim]hint:[/dim] {_esc(hint)}", soft_wrap=True)


def emit_json(obj: dict) -> None:
    """One JSON line on stdout; on stderr once an artifact went to stdout (-o -), so that a pipe's
    reader gets the artifact's bytes alone."""
    if _quiet:
        return
    from wanctl.core.files import stdout_taken  # standard library only: cheap

    stream = sys.stderr if stdout_taken() else sys.stdout
    stream.write(json.dumps(obj, ensure_ascii=False, default=str) + "\n")
    stream.flush()


def _is_oom(e: BaseException) -> bool:
    name = type(e).__name__
    if name == "OutOfMemoryError":
        return True
    return isinstance(e, RuntimeError) and "out of memory" in str(e).lower()


def handle_errors(fn: Callable) -> Callable:
    """Map exceptions to the exit codes of the README: WanctlError -> its code, OOM -> 5, Ctrl-C -> 130."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except WanctlError as e:
            error_line(e.message, e.hint)
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt as e:
            terminated = isinstance(e, Terminated)
            error_line(f"{'terminated' if terminated else 'interrupted'}; no output was written")
            raise typer.Exit(EXIT_TERMINATED if terminated else EXIT_INTERRUPTED) from None
        except BrokenPipeError:
            # the reader of our stdout went away (e.g. `| head`): nothing more to say
            try:
                sys.stdout = open(os.devnull, "w")
            except OSError:
                pass
            raise typer.Exit(EXIT_BAD_INPUT) from None
        except MemoryError:
            error_line("out of memory", OOM_HINT)
            raise typer.Exit(EXIT_OOM) from None
        except OSError as e:
            from wanctl.core.files import write_error

            mapped = write_error(e)  # a full disk (5), a folder that refuses writes (3)
            if not isinstance(mapped, WanctlError):
                _unexpected(e)
            error_line(mapped.message, mapped.hint)
            raise typer.Exit(mapped.exit_code) from None
        except Exception as e:  # noqa: BLE001 - last line of defence, exit code 1
            _unexpected(e)

    return wrapper


def _unexpected(e: Exception) -> None:
    if _is_oom(e):
        error_line("out of memory on the device", OOM_HINT)
        raise typer.Exit(EXIT_OOM) from None
    if os.environ.get("WANCTL_DEBUG"):
        traceback.print_exc()
    error_line(
        f"unexpected error: {type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}",
        None if os.environ.get("WANCTL_DEBUG") else "set WANCTL_DEBUG=1 to see the traceback",
    )
    raise typer.Exit(EXIT_UNEXPECTED) from None


PROGRESS_LINE_SECONDS = 5.0  # when stderr is not a terminal: one line at most this often


@contextmanager
def progress(description: str, total: int | None, unit: str = "") -> Iterator[Callable[[int], None]]:
    """Yield an ``advance(n)`` callback: a rich bar when stderr is a terminal, else a plain
    progress line every few seconds (and at the end), so logs of long runs show where they are."""
    if os.environ.get("WANCTL_NO_PROGRESS") or _quiet:
        yield lambda n=1: None
        return
    if not sys.stderr.isatty():
        import time

        t0 = time.monotonic()
        state = {"done": 0, "last": t0}

        def line(n=1):
            state["done"] += n
            now = time.monotonic()
            final = total is not None and state["done"] >= total
            if final or now - state["last"] >= PROGRESS_LINE_SECONDS:
                state["last"] = now
                of = f"/{total}" if total is not None else ""
                sys.stderr.write(f"{description}: {state['done']}{of} {unit} ({now - t0:.1f} s)\n")
                sys.stderr.flush()

        yield line
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    cols = [
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(unit),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    with Progress(*cols, console=console(), transient=True) as p:
        task = p.add_task(description, total=total)
        yield lambda n=1: p.advance(task, n)


def describe_output(path: str) -> str:
    return "<stdout>" if path == "-" else path


def print_plan(plan, as_json: bool) -> None:
    """--dry-run: the run plan as a table (stdout) or one JSON object."""
    if _quiet:
        return
    if as_json:
        emit_json(plan.to_json())
        return
    from rich.table import Table

    two = len(plan.experts) == 2
    sched = plan.schedule
    grid = sched.grid + (f", shift {sched.shift:g}" if sched.shift is not None else "")
    t = Table(title=f"run plan: {plan.task}, {plan.family}, {plan.num_steps} steps, solver {plan.solver}, grid {grid}",
              title_justify="left")
    for col in ("step", "s", "t", "expert", "latent frames", "guidance", "DiT forwards"):
        t.add_column(col, justify="right")
    for p in plan.steps:
        expert = ("high" if p.expert == "transformer" else "low") if two else "dit"
        mark = " *" if p.restart and p.index > 0 else ""
        t.add_row(str(p.index + 1) + mark, f"{p.s:.4f}", str(p.t), expert, str(p.frames),
                  f"{p.guidance:g}" if p.cfg else "off", str(p.forwards))
    con = out_console()
    con.print(t)
    if plan.switch is not None:
        con.print(f"* solver restarts (frames {plan.steps[plan.switch - 1].frames} -> {plan.steps[plan.switch].frames})")
    if plan.parallel is not None:
        con.print(f"parallel: {plan.parallel.describe()}")
    con.print(f"{plan.forwards} DiT forwards per run; FLOPs relative to a plain run (same steps and guidance, no CFG truncation, "
              f"full frames): {plan.relative_flops:.3f} (speedup x{1 / plan.relative_flops:.2f})")
