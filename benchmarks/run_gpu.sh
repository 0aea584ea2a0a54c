#!/usr/bin/env bash
# benchmarks/gpu.py on a device machine: Python 3.12 with a CUDA torch, but no diffusers, zarr or
# imageio-ffmpeg, and no network. The script imports only torch, diffusers, accelerate and wanctl's
# core (no zarr / imageio / transformers / typer: tests/test_benchmarks_gpu_smoke.py runs it with
# zarr and imageio unimportable), so the rest comes along as wheels:
#
#   1. here, with the package registry reachable (a few tens of MB, torch excluded):
#          benchmarks/run_gpu.sh prepare
#      writes build/gpu-wheels/: Python 3.12 manylinux / pure wheels of diffusers, accelerate and
#      their requirements, pinned to the versions in this .venv (the ones the smoke test passes with).
#   2. on the device machine, carrying build/gpu-wheels (the device tool's `carry`, 64 MiB at most):
#          bash benchmarks/run_gpu.sh run          # timeout 600 s: the benchmark takes under 8 minutes
#      installs the wheels into build/gpu-site (not the machine's site-packages: its torch stays
#      as it is), then runs `python benchmarks/gpu.py` and keeps its output in $OUT/gpu.txt when
#      $OUT is set.
#   3. paste the table and the headline lines into benchmarks/RESULTS.md ("GPU" section) with the
#      date, GPU and versions the script prints.
#
#   benchmarks/run_gpu.sh list     # only print the pinned requirement list of step 1
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=build/gpu-wheels
SITE=build/gpu-site

pinned_list() {
    # diffusers + accelerate and everything they require at Python 3.12 on Linux, at this venv's
    # versions, less torch and torch's own requirements (the device machine has those)
    .venv/bin/python - <<'EOF'
import importlib.metadata as md
from packaging.requirements import Requirement
env = {"python_version": "3.12", "python_full_version": "3.12.0", "sys_platform": "linux",
       "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
       "implementation_name": "cpython", "platform_python_implementation": "CPython", "extra": ""}
def reqs(name):
    out = []
    for r in md.requires(name) or []:
        req = Requirement(r)
        if req.marker is None or req.marker.evaluate(env):
            out.append(req.name)
    return out
norm = lambda n: n.lower().replace("_", "-")
skip = {norm(n) for n in reqs("torch")} | {"torch", "setuptools"}
seen, todo = {}, ["diffusers", "accelerate"]
while todo:
    n = todo.pop()
    if norm(n) in seen or norm(n) in skip or norm(n).startswith("nvidia-"):
        continue
    seen[norm(n)] = md.version(n)
    todo += reqs(n)
print(" ".join(f"{k}=={v}" for k, v in sorted(seen.items())))
EOF
}

case "${1:-run}" in
list)
    pinned_list
    ;;
prepare)
    mkdir -p "$WHEELS"
    # --no-deps over the explicit closure: pip would otherwise fetch torch (gigabytes) for accelerate
    .venv/bin/python -m pip download --no-deps --only-binary=:all: -d "$WHEELS" \
        --python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        --platform any $(pinned_list)
    du -sh "$WHEELS"
    ;;
run)
    "${PYTHON:-python3}" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print('torch', torch.__version__, torch.cuda.get_device_name())"
    ls "$WHEELS"/*.whl >/dev/null  # carried from step 1
    "${PYTHON:-python3}" -m pip install -q --no-index --no-deps --target "$SITE" "$WHEELS"/*.whl
    export PYTHONPATH="$PWD/$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
    export HF_HUB_OFFLINE=1
    if [ -n "${OUT:-}" ]; then
        "${PYTHON:-python3}" benchmarks/gpu.py 2>&1 | tee "$OUT/gpu.txt"
    else
        "${PYTHON:-python3}" benchmarks/gpu.py
    fi
    ;;
*)
    echo "usage: benchmarks/run_gpu.sh [list|prepare|run]" >&2
    exit 2
    ;;
esac
