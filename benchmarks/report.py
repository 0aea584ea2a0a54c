"""Run benchmark scripts and write their output as a markdown report (one section per script,
with the command, the machine, the date and the time it took).

    python benchmarks/report.py startup overhead ... -o build/bench/RESULTS.md

`make bench` runs this over every benchmark; benchmarks/RESULTS.md is such a report with notes.
"""

from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys
import time

from _runner import ROOT, machine


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("benches", nargs="+", help="script names under benchmarks/ (without .py)")
    ap.add_argument("-o", "--output", required=True, help="markdown file to write")
    a = ap.parse_args()
    started = datetime.datetime.now(datetime.timezone.utc)
    sections, failed = [], []
    for name in a.benches:
        cmd = [sys.executable, os.path.join("benchmarks", f"{name}.py")]
        print(f"== benchmarks/{name}.py", flush=True)
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        took = time.perf_counter() - t0
        print(proc.stdout, flush=True)
        if proc.returncode:
            failed.append(name)
        status = "" if proc.returncode == 0 else f" **(failed, exit {proc.returncode})**"
        sections.append(f"## {name}{status}\n\n`python benchmarks/{name}.py` ({took:.0f} s)\n\n```\n{proc.stdout.rstrip()}\n```\n")
    head = (f"# Benchmark report\n\nMachine: {machine()}  \nDate: {started:%Y-%m-%d %H:%M} UTC  \n"
            f"Command: `python benchmarks/report.py {' '.join(a.benches)} -o {a.output}` (what `make bench` runs)\n")
    os.makedirs(os.path.dirname(os.path.abspath(a.output)), exist_ok=True)
    with open(a.output, "w") as f:
        f.write(head + "\n" + "\n".join(sections))
    print(f"report: {a.output}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
