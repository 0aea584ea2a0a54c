"""Shared benchmark runner: two variants measured alternately in one process, ratios only.

Machines here are noisy, so a benchmark never reports a bare time: it runs variant A and
variant B alternately (A B A B ...), takes the median of each, and reports their ratio. Every
script prints a table and ends with one line ``name: value`` for its headline ratio.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Callable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


@dataclass
class Pair:
    a: float  # median seconds of variant A
    b: float
    ratio: float  # median of per-pair a / b
    pairs: int


def measure_pair(a: Callable[[], object], b: Callable[[], object], pairs: int = 5, warmup: int = 1) -> Pair:
    for _ in range(warmup):
        a()
        b()
    ta, tb, ratios = [], [], []
    for _ in range(pairs):
        t0 = time.perf_counter()
        a()
        t1 = time.perf_counter()
        b()
        t2 = time.perf_counter()
        ta.append(t1 - t0)
        tb.append(t2 - t1)
        ratios.append((t1 - t0) / (t2 - t1))
    return Pair(statistics.median(ta), statistics.median(tb), statistics.median(ratios), pairs)


def table(headers: list[str], rows: list[list]) -> str:
    cells = [[str(h) for h in headers]] + [[f"{c:.3f}" if isinstance(c, float) else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def setup_env() -> None:
    """Benchmarks use their own cache dir (built-in models generated once) and the CPU unless told."""
    os.environ.setdefault("WANCTL_CACHE_DIR", os.path.join(ROOT, "build", "bench-cache"))
    os.environ.setdefault("WANCTL_DEVICE", "cpu")


def headline(name: str, value: float, fmt: str = "{:.3f}") -> None:
    print(f"{name}: {fmt.format(value)}")


def run_command(args: list[str], env: dict | None = None) -> float:
    """Wall seconds of one subprocess run (must succeed)."""
    import subprocess

    t0 = time.perf_counter()
    proc = subprocess.run(args, capture_output=True, env=env)
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {proc.stderr.decode()[-500:]}")
    return dt


def peak_rss_mb(args: list[str], env: dict | None = None) -> float:
    """Peak resident memory (MB) of one subprocess run, from the kernel's rusage of that child."""
    import subprocess

    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    err = proc.stderr.read().decode() if proc.stderr else ""
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {err[-500:]}")
    return usage.ru_maxrss / 1024.0  # Linux reports KB


def machine() -> str:
    import platform

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"
