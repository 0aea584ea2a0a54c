"""Shared pieces of the command modules: options, messages, progress, error handling.

Commands stay thin: parse options, call ``wanctl.core``, report. Data goes to stdout; messages
and progress go to stderr (progress only when stderr is a terminal).
"""

from __future__ import annotations

import functools
import json
import os
import sys
import traceback
from contextlib import contextmanager
from typing import Annotated, Callable, Iterator, Optional

import typer

from wanctl.core.errors import (
    EXIT_BAD_INPUT,
    EXIT_INTERRUPTED,
    EXIT_OOM,
    EXIT_UNEXPECTED,
    OOM_HINT,
    WanctlError,
)

_console = None


def console():
    """A rich console on stderr (respects NO_COLOR)."""
    global _console
    if _console is None:
        from rich.console import Console

        _console = Console(stderr=True, highlight=False, no_color=bool(os.environ.get("NO_COLOR")) or None)
    return _console


def out_console():
    """A rich console on stdout, for commands whose data is a human-readable report."""
    from rich.console import Console

    return Console(highlight=False, no_color=bool(os.environ.get("NO_COLOR")) or None)


def notice(msg: str) -> None:
    console().print(f"[dim]note:[/dim] {_esc(msg)}", soft_wrap=True)


def warn(msg: str) -> None:
    console().print(f"[yellow]warning:[/yellow] {_esc(msg)}", soft_wrap=True)


def info(msg: str) -> None:
    console().print(_esc(msg), soft_wrap=True)


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
    sys.stdout.write(json.dumps(obj, ensure_ascii=False, default=str) + "\n")
    sys.stdout.flush()


def _is_oom(e: BaseException) -> bool:
    name = type(e).__name__
    if name == "OutOfMemoryError":
        return True
    return isinstance(e, RuntimeError) and "out of memory" in str(e).lower()


def handle_errors(fn: Callable) -> Callable:
    """Map exceptions to SPEC exit codes: WanctlError -> its code, OOM -> 5, Ctrl-C -> 130."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except WanctlError as e:
            error_line(e.message, e.hint)
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            error_line("interrupted; no output was written")
            raise typer.Exit(EXIT_INTERRUPTED) from None
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
        except Exception as e:  # noqa: BLE001 - last line of defence, exit code 1
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

    return wrapper


# --------------------------------------------------------------------------- progress


PROGRESS_LINE_SECONDS = 5.0  # when stderr is not a terminal: one line at most this often


@contextmanager
def progress(description: str, total: int | None, unit: str = "") -> Iterator[Callable[[int], None]]:
    """Yield an ``advance(n)`` callback: a rich bar when stderr is a terminal, else a plain
    progress line every few seconds (and at the end), so logs of long runs show where they are."""
    if os.environ.get("WANCTL_NO_PROGRESS"):
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


# --------------------------------------------------------------------------- options

ModelOpt = Annotated[
    Optional[str],
    typer.Option(
        "--model",
        "-m",
        help="Model folder (diffusers layout) or built-in name (see `wanctl model list`). Default: $WANCTL_MODEL.",
        show_default=False,
    ),
]
DeviceOpt = Annotated[
    Optional[str],
    typer.Option("--device", help="Torch device (cuda, cuda:1, cpu, mps). Default: $WANCTL_DEVICE, else cuda if available."),
]
DtypeOpt = Annotated[str, typer.Option("--dtype", help="DiT and text-encoder precision: bf16, fp16 or fp32.")]
VaeDtypeOpt = Annotated[str, typer.Option("--vae-dtype", help="VAE precision: fp32 (default), bf16 or fp16.")]
VaeTilingOpt = Annotated[
    bool, typer.Option("--vae-tiling", help="Encode/decode in overlapping spatial tiles to save memory at large sizes.")
]
ForceOpt = Annotated[bool, typer.Option("--force", "-f", help="Overwrite existing outputs.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object per output artifact on stdout.")]


def load_options(device: str | None, dtype: str = "bf16", vae_dtype: str = "fp32", vae_tiling: bool = False,
                 no_cache: bool = False, offload: str = "none", text_encoder_device: str | None = None):
    from wanctl.core.env import default_device
    from wanctl.core.errors import BadInputError
    from wanctl.core.models.bundle import OFFLOAD_MODES, LoadOptions, parse_dtype

    parse_dtype(dtype)
    parse_dtype(vae_dtype)
    if offload not in OFFLOAD_MODES:
        raise BadInputError(f"unknown --offload {offload!r}; use one of {', '.join(OFFLOAD_MODES)}")
    dev = device or default_device()
    _check_device(dev)
    if text_encoder_device:
        _check_device(text_encoder_device)
    return LoadOptions(device=dev, dtype=dtype, vae_dtype=vae_dtype, vae_tiling=vae_tiling, cache=not no_cache,
                       offload=offload, text_encoder_device=text_encoder_device)


def _check_device(dev: str) -> None:
    import torch

    from wanctl.core.errors import BadInputError

    try:
        d = torch.device(dev)
    except (RuntimeError, ValueError):
        raise BadInputError(f"unknown device {dev!r}") from None
    if d.type == "cuda" and not torch.cuda.is_available():
        raise BadInputError(f"device {dev} requested but CUDA is not available (use --device cpu)")


def parse_size(value: str | None) -> tuple[int, int] | None:
    """'832x480' -> (832, 480)."""
    if value is None:
        return None
    from wanctl.core.errors import BadInputError

    try:
        w, h = value.lower().replace("*", "x").split("x")
        size = int(w), int(h)
    except ValueError:
        raise BadInputError(f"size {value!r} must look like WIDTHxHEIGHT, e.g. 832x480") from None
    if min(size) <= 0:
        raise BadInputError(f"size {value!r} must be positive")
    return size


def describe_output(path: str) -> str:
    return "<stdout>" if path == "-" else path


# option panels of the generating commands' --help
SAMPLING, GUIDANCE, HALF_FRAME, SPEED, OUTPUT, MODEL = "Sampling", "Guidance", "Half-frame", "Memory and speed", "Output", "Model"

# options shared by the generating commands
StepsOpt = Annotated[Optional[int], typer.Option("--steps", min=1, max=1000, rich_help_panel=SAMPLING, show_default=False, help="Number of steps. Default: the model's presets (official: ti2v-5b 50, A14B 40), or the noise's grid.")]
ShiftOpt = Annotated[Optional[float], typer.Option("--shift", rich_help_panel=SAMPLING, show_default=False, help="Flow shift of the grid. Default: the model's presets (official: ti2v-5b 5, t2v-a14b 12, i2v-a14b 5).")]
GridOpt = Annotated[Optional[str], typer.Option("--grid", rich_help_panel=SAMPLING, show_default=False, help="Noise grid: official (the official UniPC grid, default), diffusers (the stock pipelines' grid) or dpm (official dpm++ grid, starts at s = 1).")]
SigmasOpt = Annotated[Optional[str], typer.Option("--sigmas", rich_help_panel=SAMPLING, show_default=False, help="An exact list of noise levels, e.g. 1.0,0.9375,0.8333,0.625 (a final 0 is appended); replaces --steps/--shift/--grid.")]
SeedOpt = Annotated[int, typer.Option("--seed", min=0, max=2**64 - 1, rich_help_panel=SAMPLING, help="Seed of the starting noise (drawn on the CPU, so the same on every device).")]
BatchOpt = Annotated[int, typer.Option("--batch-size", min=1, rich_help_panel=SPEED, help="Targets per DiT batch.")]
GuidanceOpt = Annotated[Optional[float], typer.Option("--guidance", "-g", rich_help_panel=GUIDANCE, show_default=False, help="CFG scale of the high-noise expert (and of the low-noise one unless --guidance-low). Default: the model's presets.")]
GuidanceLowOpt = Annotated[Optional[float], typer.Option("--guidance-low", rich_help_panel=GUIDANCE, show_default=False, help="CFG scale of the low-noise expert (A14B).")]
NegativeOpt = Annotated[Optional[str], typer.Option("--negative-prompt", "-n", rich_help_panel=GUIDANCE, show_default=False, help="Negative prompt for CFG. Default: the official Wan negative prompt.")]
OffloadOpt = Annotated[str, typer.Option("--offload", rich_help_panel=SPEED, help="none; model (one big component on the device at a time: A14B holds one expert); group (DiT blocks moved to the device on demand: least memory, slowest).")]
TextEncoderDeviceOpt = Annotated[Optional[str], typer.Option("--text-encoder-device", rich_help_panel=SPEED, show_default=False, help="Run the umT5 text encoder here (e.g. cpu) instead of --device.")]
StepCacheOpt = Annotated[str, typer.Option("--step-cache", rich_help_panel=SPEED, help="Reuse DiT work between steps (diffusers hooks, configured per expert from the plan): none, first-block, taylorseer or magcache (calibrates itself on first use).")]
CacheThresholdOpt = Annotated[Optional[float], typer.Option("--cache-threshold", rich_help_panel=SPEED, show_default=False, help="first-block / magcache threshold (defaults 0.05 / 0.06): higher skips more.")]
CacheIntervalOpt = Annotated[Optional[int], typer.Option("--cache-interval", rich_help_panel=SPEED, show_default=False, help="taylorseer: full computations every N evaluations (default 3).")]
AttentionOpt = Annotated[Optional[str], typer.Option("--attention", rich_help_panel=SPEED, show_default=False, help="diffusers attention backend (native, flash, _flash_3, sage, xformers, flex...); default: torch SDPA.")]
CompileOpt = Annotated[bool, typer.Option("--compile", rich_help_panel=SPEED, help="torch.compile the DiT blocks (slow first run, faster steps on GPUs).")]
NoCacheOpt = Annotated[bool, typer.Option("--no-cache", rich_help_panel=SPEED, help="Neither read nor write the embedding / inversion caches ($WANCTL_NO_CACHE=1 does the same).")]
CfgBatchOpt = Annotated[bool, typer.Option("--cfg-batch", rich_help_panel=SPEED, help="Run all branches of one model evaluation (CFG conditional and unconditional; flf2v's forward and backward passes) as one batched DiT forward (same result, more memory). Off by default: on CPU it measured 0.96x, slower (benchmarks/cfg_batch.py); on a GPU run that script to decide.")]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", rich_help_panel=OUTPUT, help="Print the run plan (each step's level, timestep, expert, frames, guidance, DiT forwards), then stop; loads no weights. With --json: one JSON object.")]
DecodeOpt = Annotated[Optional[str], typer.Option("--decode", rich_help_panel=OUTPUT, show_default=False, help="Also decode the result to this video file (.mp4/.webm/.gif).")]


def speed_options(cache: str, threshold: float | None, interval: int | None, attention: str | None, compile: bool):
    from wanctl.core.sampling.acceleration import SpeedOptions

    opts = SpeedOptions(cache, threshold, interval, attention, compile)
    opts.check()
    return opts


def parse_sigmas(value: str | None):
    if value is None:
        return None
    from wanctl.core.sampling.schedule import parse_sigmas as parse

    return parse(value)


def print_plan(plan, as_json: bool) -> None:
    """--dry-run: the run plan as a table (stdout) or one JSON object."""
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
    con.print(f"{plan.forwards} DiT forwards per run; FLOPs relative to a plain run (same steps, CFG on every step, "
              f"full frames): {plan.relative_flops:.3f} (speedup x{1 / plan.relative_flops:.2f})")
