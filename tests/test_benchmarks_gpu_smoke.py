"""benchmarks/gpu.py --smoke: the GPU benchmark's whole code path on the CPU with tiny configs, so
the script cannot rot while no GPU is around. It runs where zarr and imageio cannot be imported
(the device machine has neither): stub modules that raise on import stand in for them."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEADLINES = ("matmul_peak_tflops", "dit_forward_tflops_a14b_480p", "dit_forward_share_of_peak_a14b_720p",
             "dit_forward_tflops_ti2v5b_704p", "fastest_attention_backend", "compile_speedup_480p",
             "loop_overhead_per_step_ratio", "half_frame_speedup", "half_frame_deviation_from_flop_model",
             "first_block_speedup", "magcache_speedup", "cfg_batch_speedup", "offload_model_step_ratio",
             "offload_group_step_ratio", "offload_model_peak_memory_ratio", "gpu_benchmark_seconds")
ROWS = ("matmul peak", "DiT forward A14B", "DiT forward TI2V-5B", "attention 480p", "--compile 480p", "t2v loop",
        "--half-frame", "--step-cache first-block", "--step-cache magcache", "--cfg-batch", "--offload none",
        "--offload model", "--offload group")


def test_gpu_benchmark_smoke(tmp_path):
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    for name in ("zarr", "imageio", "imageio_ffmpeg"):
        (stubs / f"{name}.py").write_text(f"raise ImportError('{name} is not installed on the device machine')\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(stubs), str(ROOT)]), WANCTL_CACHE_DIR=str(tmp_path / "cache"))
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--smoke"], capture_output=True,
                          env=env, cwd=tmp_path, timeout=300)
    took = time.perf_counter() - t0
    out = proc.stdout.decode()
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    values = dict(m.groups() for m in re.finditer(r"^([a-z0-9_]+): (\S.*)$", out, re.M))
    for name in HEADLINES:
        assert name in values, f"headline {name} missing from:\n{out}"
    for name in HEADLINES:
        if name not in ("fastest_attention_backend", "offload_model_peak_memory_ratio"):
            assert float(values[name]) == float(values[name]), name  # a number, not nan
    assert values["fastest_attention_backend"] in ("native", "_native_math")
    assert values["offload_model_peak_memory_ratio"] == "n/a (CPU)"  # no CUDA allocator to read on the CPU
    table_lines = [line.strip() for line in out.splitlines()]
    for label in ROWS:
        assert any(line.startswith(label) for line in table_lines), f"row {label!r} missing from:\n{out}"
    # both attention backends ran (timed), and the FLOP model's half-frame prediction is printed
    assert sum(1 for line in table_lines if line.startswith("attention 480p") and "TFLOP/s" in line) == 2
    assert re.search(r"^\s*--half-frame .* \d+\.\d{3}\s+1\.\d{3}\s*$", out, re.M)
    assert took < 120, f"--smoke took {took:.0f} s"
