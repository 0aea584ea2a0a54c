"""GPU benchmark at the released model sizes: random-weight Wan2.2 DiTs in bf16 on one CUDA device.

What it measures, each as a rate or a ratio from the same run:

* the bf16 peak of this GPU (a large bf16 matmul), then the DiT forward at A14B 832x480x81
  (32,760 tokens), A14B 1280x720x81 (75,600) and TI2V-5B 1280x704x121 (27,280): seconds,
  achieved TFLOP/s by wanctl's FLOP model (wanctl/core/sampling/flops.py) and share of the peak;
* the 480p forward per installed attention backend (wanctl's ``--attention`` choices) and with
  ``--compile`` (regional compilation, wanctl/core/sampling/acceleration.py);
* the t2v loop per step (wanctl's own ``run_t2v``: executor, solver, velocity field, both A14B
  experts, no CFG) against the bare forward: the loop overhead;
* ``--half-frame`` against plain at 480p with both experts, next to the FLOP model's speedup;
* ``--cfg-batch`` on against off (one batch-2 forward against two);
* ``--offload model`` / ``group`` against none: seconds per step and peak device memory
  (``torch.cuda.max_memory_allocated``);
* ``--step-cache first-block`` / ``magcache`` speedups (MagCache calibrated first, as wanctl does).

The DiTs are built from the released configs on the meta device and materialised in place on
the device (``to_empty``) with a cheap random init, so a 14B expert takes seconds, not a
checkpoint load; the float32 parts follow diffusers' ``_keep_in_fp32_modules`` as a real load
would (wanctl/core/models/weights.py). Nothing is read from disk and nothing is downloaded.

    python benchmarks/gpu.py            # CUDA, bf16, released sizes (under 8 minutes on one H200)
    python benchmarks/gpu.py --smoke    # the same code path on the CPU, fp32, tiny configs (< 1 minute)

benchmarks/run_gpu.sh is the device-machine command (wheels brought along, see benchmarks/RESULTS.md).
"""

from __future__ import annotations

import argparse
import atexit
import functools
import gc
import os
import shutil
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from _runner import headline, machine, table

# --------------------------------------------------------------------------- sizes


def _released(family: str) -> dict:
    """diffusers configs of the released DiTs (the same values as tests/core/test_official.py's
    RELEASED_DIT_CONFIGS, which checks them against the official checkpoints' shapes)."""
    from wanctl.core.families import dit_config

    sizes = dict(attention_head_dim=128, text_dim=4096, freq_dim=256, rope_max_seq_len=1024)
    if family == "ti2v-5b":
        return dit_config(**sizes, num_attention_heads=24, in_channels=48, out_channels=48, ffn_dim=14336, num_layers=30)
    return dit_config(**sizes, num_attention_heads=40, in_channels=16, out_channels=16, ffn_dim=13824, num_layers=40)


def _tiny(family: str) -> dict:
    from wanctl.core.families import FAMILIES, dit_config

    fam = FAMILIES[family]
    return dit_config(num_attention_heads=2, attention_head_dim=16, in_channels=fam.dit_in_channels,
                      out_channels=fam.dit_out_channels, text_dim=32, freq_dim=32, ffn_dim=64, num_layers=2,
                      rope_max_seq_len=1024)


@dataclass
class Sizes:
    """Everything that differs between the real run and --smoke; the code path is the same.

    Repetitions on the GPU are sized to the 8-minute budget from the FLOP model at ~60 % of an
    H200's ~990 TFLOP/s bf16: a 480p A14B forward is ~1.7 PFLOP (~3 s), 720p ~6.5 PFLOP (~11 s),
    the 5B forward ~0.5 PFLOP (~1 s). Forwards: 1 warm-up + 3 timed (720p: 1 + 2), ~60 s; every other
    installed attention backend 1 + 2 at 480p, ~10 s each (a machine with torch alone has the three
    torch SDPA variants, ~30 s); --compile ~60 s of compilation + 1 + 2
    forwards; one 8-step no-CFG run of both experts at 480p (the baseline of the loop, half-frame and
    step-cache rows), ~25 s, and one half-frame run, ~15 s; MagCache calibration + first-block +
    magcache, ~50 s; --cfg-batch 1 + 2 one-step CFG runs each way, ~35 s; --offload none / model /
    group, one 4-step run each plus moving 57 GB of experts to the host, ~70 s. About 6.5 minutes
    in all; GPU timings vary little, so medians of 2-3 and single long runs are enough.
    """

    smoke: bool
    device: str
    dtype: str  # wanctl --dtype name
    configs: dict  # family -> DiT config
    forwards: list  # (label, headline key, family, width, height, frames, timed reps); the first is the 480p one
    loop_size: tuple  # (width, height, frames) of the A14B two-expert rows (480p)
    matmul_n: int
    matmul_reps: int
    backends: tuple  # --attention values tried (those installed)
    backend_reps: int
    loop_steps: int  # no-CFG run: loop overhead, half-frame and step-cache rows
    cfg_steps: int
    cfg_reps: int
    offload_steps: int
    warmup: int = 1


def sizes(smoke: bool) -> Sizes:
    if smoke:
        return Sizes(smoke=True, device="cpu", dtype="fp32", configs={f: _tiny(f) for f in ("t2v-a14b", "ti2v-5b")},
                     forwards=[("A14B 128x96x17", "a14b_480p", "t2v-a14b", 128, 96, 17, 1),
                               ("A14B 192x128x17", "a14b_720p", "t2v-a14b", 192, 128, 17, 1),
                               ("TI2V-5B 128x64x17", "ti2v5b_704p", "ti2v-5b", 128, 64, 17, 1)],
                     loop_size=(128, 96, 17), matmul_n=256, matmul_reps=1,
                     # _native_math runs on the CPU: a second backend, so the per-backend rows run here too
                     backends=("native", "_native_math"), backend_reps=1, loop_steps=4, cfg_steps=1, cfg_reps=1,
                     offload_steps=4)
    return Sizes(smoke=False, device="cuda", dtype="bf16", configs={f: _released(f) for f in ("t2v-a14b", "ti2v-5b")},
                 forwards=[("A14B 832x480x81", "a14b_480p", "t2v-a14b", 832, 480, 81, 3),
                           ("A14B 1280x720x81", "a14b_720p", "t2v-a14b", 1280, 720, 81, 2),
                           ("TI2V-5B 1280x704x121", "ti2v5b_704p", "ti2v-5b", 1280, 704, 121, 3)],
                 loop_size=(832, 480, 81), matmul_n=16384, matmul_reps=20,
                 # _native_math materialises the 32,760^2 attention matrix (86 GB per layer): left out;
                 # the varlen variants run the same kernels without a mask; flex needs its own compile
                 backends=("native", "_native_cudnn", "_native_flash", "_native_efficient", "flash", "_flash_3", "sage",
                           "xformers"),
                 backend_reps=2, loop_steps=8, cfg_steps=1, cfg_reps=2, offload_steps=4)


# --------------------------------------------------------------------------- models


def build_dit(cfg: dict, device: str, dtype, seed: int):
    """A random-weight WanTransformer3DModel: built on the meta device, materialised in place on
    ``device`` in ``dtype`` (float32 where diffusers' from_pretrained keeps it), then a cheap init."""
    import torch

    from wanctl.core.models.weights import _keep_fp32_parts, build_empty

    dit = build_empty("transformer", cfg)  # parameters on meta; the RoPE tables are real buffers
    keep = _keep_fp32_parts(type(dit), dtype)
    for name, p in list(dit.named_parameters()):
        want = torch.float32 if keep & set(name.split(".")) else dtype
        owner, _, attr = name.rpartition(".")
        setattr(dit.get_submodule(owner) if owner else dit, attr,
                torch.nn.Parameter(torch.empty(p.shape, dtype=want, device="meta"), requires_grad=False))
    buffers = {n: b.clone() for n, b in dit.named_buffers()}
    dit = dit.to_empty(device=device)  # to_empty leaves buffers uninitialised: put the RoPE tables back
    for n, b in buffers.items():
        owner, _, attr = n.rpartition(".")
        getattr(dit.get_submodule(owner), attr).copy_(b)
    g = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for name, p in dit.named_parameters():
            if p.dim() >= 2:  # linear / conv weights, modulation tables: variance-preserving
                fan_in = max(1, p[0].numel())
                p.normal_(0.0, fan_in ** -0.5, generator=g)
            elif name.endswith("weight"):  # norms
                p.fill_(1.0)
            else:
                p.zero_()
    return dit.eval().requires_grad_(False)


def make_bundle(family: str, cfg: dict, dits: list, device: str, dtype: str, offload: str = "none"):
    """A ModelBundle over in-memory experts, placed per ``offload`` by the bundle's own rules."""
    from wanctl.core.families import FAMILIES
    from wanctl.core.models.bundle import LoadOptions, ModelBundle, ModelSpec
    from wanctl.core.models.diffusers_layout import DiffusersLayout

    fam = FAMILIES[family]
    index = {"boundary_ratio": fam.preset.boundary,
             "transformer_2": ["diffusers", "WanTransformer3DModel"] if fam.experts == 2 else [None, None]}
    layout = DiffusersLayout(Path("<memory>"), fam, model_index=index,
                             configs={"transformer": dict(cfg, _class_name="WanTransformer3DModel")})
    bundle = ModelBundle(ModelSpec(name=f"gpu-bench-{family}", layout=layout),
                         LoadOptions(device=device, dtype=dtype, offload=offload))
    for expert, dit in zip(bundle.experts(), dits):
        bundle._loaded[expert] = bundle._place(expert, dit)
    bundle.fingerprint = lambda c: f"gpu-bench-{family}-{c}"  # in-memory experts: stable calibration keys
    return bundle


# --------------------------------------------------------------------------- timing


class Clock:
    def __init__(self, device: str):
        import torch

        self.torch, self.cuda = torch, device.startswith("cuda")

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()

    def timed(self, fn, reps: int, warmup: int = 0) -> float:
        """Median seconds of ``reps`` calls after ``warmup`` untimed ones (device synchronised)."""
        for _ in range(warmup):
            fn()
        self.sync()
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            self.sync()
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    def reset_peak(self) -> None:
        if self.cuda:
            self.torch.cuda.reset_peak_memory_stats()

    def peak_gb(self) -> float | None:
        return self.torch.cuda.max_memory_allocated() / 2**30 if self.cuda else None


def matmul_peak(clock: Clock, n: int, reps: int, device: str, dtype) -> float:
    """TFLOP/s of an n x n x n matmul in the benchmark dtype: the reachable peak of this device."""
    import torch

    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    c = torch.empty(n, n, device=device, dtype=dtype)
    sec = clock.timed(lambda: torch.matmul(a, b, out=c), reps, warmup=2)  # out=: no allocation in the timing
    return 2.0 * n**3 / sec / 1e12


def forward_fn(dit, family: str, width: int, height: int, frames: int, text_dim: int, device: str, batch: int = 1):
    """One bare DiT forward as wanctl's velocity field makes it (wanctl/core/sampling/velocity.py)."""
    import torch

    from wanctl.core.families import FAMILIES
    from wanctl.core.sampling.conditioning import Condition

    fam = FAMILIES[family]
    lw, lh = fam.latent_size(width, height)
    x = torch.randn(batch, fam.dit_in_channels, fam.latent_frames(frames), lh, lw, device=device, dtype=dit.dtype)
    emb = torch.randn(batch, 512, text_dim, device=device, dtype=dit.dtype)
    ts = Condition().timestep(500, x)

    def go():
        with torch.inference_mode():
            return dit(hidden_states=x, timestep=ts, encoder_hidden_states=emb, return_dict=False)[0]
    return go


def tokens_of(family: str, width: int, height: int, frames: int) -> int:
    from wanctl.core.families import FAMILIES
    from wanctl.core.sampling.flops import tokens_for

    fam = FAMILIES[family]
    lw, lh = fam.latent_size(width, height)
    return tokens_for(fam.latent_frames(frames), lh, lw)


def _rate(tflops: float) -> str:
    return f"{tflops:.4g} TFLOP/s"


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:80]


def _uncompile(bundle) -> None:
    """Undo compile_blocks: nn.Module.compile stores the compiled call in ``_compiled_call_impl``;
    clearing it restores the eager forward for the rows that follow."""
    for expert in bundle.experts():
        for block in bundle.transformer(expert, activate=False).blocks:
            block._compiled_call_impl = None


@contextmanager
def _smoke_compile(smoke: bool):
    """--smoke: compile_blocks as wanctl runs it, but with dynamo's "eager" backend. The graphs are
    still captured (the code path is the same); inductor's C++ code generation for the CPU alone
    takes ~45 s on 2 cores, which a test suite cannot afford. The real run uses inductor."""
    if not smoke:
        yield
        return
    import torch

    real = torch.compile
    torch.compile = functools.partial(real, backend="eager")
    try:
        yield
    finally:
        torch.compile = real


# --------------------------------------------------------------------------- the benchmark


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="CPU, fp32, tiny configs, 1 repetition (the test suite runs this)")
    args = ap.parse_args(argv)
    t_start = time.perf_counter()
    S = sizes(args.smoke)
    # magcache calibrations go to a throwaway cache dir (wanctl/core/sampling/acceleration.py stores them)
    cache_dir = tempfile.mkdtemp(prefix="wanctl-gpu-bench-")
    atexit.register(shutil.rmtree, cache_dir, ignore_errors=True)
    os.environ["WANCTL_CACHE_DIR"] = cache_dir
    os.environ.setdefault("WANCTL_DEVICE", S.device)

    import torch

    if not S.smoke and not torch.cuda.is_available():
        print("benchmarks/gpu.py needs a CUDA device (use --smoke on a CPU)", file=sys.stderr)
        return 2
    if S.smoke:
        torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    import diffusers

    from wanctl.core.errors import BadInputError
    from wanctl.core.models.runtime import parse_dtype
    from wanctl.core.sampling import acceleration as acc
    from wanctl.core.sampling.flops import dit_flops
    from wanctl.core.sampling.plan import Guidance, plan_run
    from wanctl.core.sampling.schedule import make_schedule
    from wanctl.core.workflows.t2v import run_t2v

    dev, dtype = S.device, parse_dtype(S.dtype)
    clock = Clock(dev)
    gpu = torch.cuda.get_device_name() if clock.cuda else "none (CPU smoke run)"
    print(f"# wanctl GPU benchmark{' (--smoke: tiny configs on the CPU, timings meaningless)' if S.smoke else ''}")
    print(f"device: {gpu}; host: {machine()}; torch {torch.__version__} (CUDA {torch.version.cuda}), "
          f"diffusers {diffusers.__version__}; dtype {S.dtype}; date {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    rows: list[list] = []
    heads: list[tuple[str, object, str]] = []

    def row(measure, variant, seconds, rate="", share="", ratio="", predicted="", memory=""):
        rows.append([measure, variant, seconds, rate, share, ratio, predicted, memory])
        # progress on stderr as rows finish: a run cut short by a time limit still shows what it measured
        cells = " | ".join(f"{c:.3f}" if isinstance(c, float) else str(c) for c in rows[-1][2:] if c != "")
        print(f"[{time.perf_counter() - t_start:5.0f} s] {measure} / {variant}: {cells}", file=sys.stderr, flush=True)

    # ---- peak and bare forwards ------------------------------------------------------------
    peak = matmul_peak(clock, S.matmul_n, S.matmul_reps, dev, dtype)
    row("matmul peak", f"{S.matmul_n}^3 {S.dtype}", "", _rate(peak))
    heads.append(("matmul_peak_tflops", peak, "{:.4g}"))

    t_build = time.perf_counter()
    a14b_cfg = S.configs["t2v-a14b"]
    high = build_dit(a14b_cfg, dev, dtype, seed=0)
    low = build_dit(a14b_cfg, dev, dtype, seed=1)
    clock.sync()
    build_sec = time.perf_counter() - t_build
    bundle = make_bundle("t2v-a14b", a14b_cfg, [high, low], dev, S.dtype)
    text_dim = a14b_cfg["text_dim"]
    fwd_sec: dict[str, float] = {}
    share_720 = build_5b_sec = None
    for label, key, family, w, h, f, reps in S.forwards:
        cfg = S.configs[family]
        if family == "t2v-a14b":
            dit = high
        else:
            t0 = time.perf_counter()
            dit = build_dit(cfg, dev, dtype, seed=2)
            clock.sync()
            build_5b_sec = time.perf_counter() - t0
        fn = forward_fn(dit, family, w, h, f, cfg["text_dim"], dev)
        sec = clock.timed(fn, reps, warmup=S.warmup)
        tok = tokens_of(family, w, h, f)
        tflops = dit_flops(cfg, tok) / sec / 1e12
        fwd_sec[label] = sec
        row(f"DiT forward {label}", f"native, {tok:,} tokens", sec, _rate(tflops), f"{tflops / peak:.3f}")
        heads.append((f"dit_forward_tflops_{key}", tflops, "{:.4g}"))
        heads.append((f"dit_forward_share_of_peak_{key}", tflops / peak, "{:.3f}"))
        if key == "a14b_720p":
            share_720 = tflops / peak
        if family != "t2v-a14b":
            del dit, fn
            gc.collect()
            if clock.cuda:
                torch.cuda.empty_cache()
    lab480, _, fam480, w480, h480, f480, _ = S.forwards[0]
    tok480 = tokens_of(fam480, w480, h480, f480)
    flops480 = dit_flops(a14b_cfg, tok480)
    base480 = fwd_sec[lab480]

    # ---- attention backends and --compile (480p) -------------------------------------------
    fn480 = forward_fn(high, fam480, w480, h480, f480, text_dim, dev)
    best = ("native", base480)
    for backend in S.backends:
        if backend == "native":
            row("attention 480p", "native", base480, _rate(flops480 / base480 / 1e12),
                f"{flops480 / base480 / 1e12 / peak:.3f}", 1.0)
            continue
        try:
            acc.check_attention(backend)
        except BadInputError:  # its package is not installed here
            row("attention 480p", backend, "", "not installed")
            continue
        try:
            acc.set_attention(bundle, backend)
            sec = clock.timed(fn480, S.backend_reps, warmup=S.warmup)
        except Exception as e:  # installed but refuses this GPU / dtype / head size
            row("attention 480p", backend, "", f"failed: {_first_line(e)[:40]}")
            continue
        finally:
            acc.set_attention(bundle, "native")
        row("attention 480p", backend, sec, _rate(flops480 / sec / 1e12), f"{flops480 / sec / 1e12 / peak:.3f}",
            base480 / sec)
        if sec < best[1]:
            best = (backend, sec)
    heads.append(("fastest_attention_backend", best[0], "{}"))
    heads.append(("fastest_attention_speedup_over_native", base480 / best[1], "{:.3f}"))

    t0 = time.perf_counter()
    with _smoke_compile(S.smoke):
        acc.compile_blocks(bundle)
    fn480()  # first call compiles
    clock.sync()
    compile_sec = time.perf_counter() - t0
    sec = clock.timed(fn480, S.backend_reps, warmup=S.warmup)
    _uncompile(bundle)
    row("--compile 480p", f"native, compiled in {compile_sec:.0f} s", sec, _rate(flops480 / sec / 1e12),
        f"{flops480 / sec / 1e12 / peak:.3f}", base480 / sec)
    heads.append(("compile_speedup_480p", base480 / sec, "{:.3f}"))

    # ---- t2v loop, half-frame, step caches: both experts at 480p, no CFG ---------------------
    w, h, f = S.loop_size
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(1, 512, text_dim, generator=g).to(dtype)
    neg = torch.randn(1, 512, text_dim, generator=g).to(dtype)
    sched = make_schedule(S.loop_steps, 12.0)

    def plan(**kw):
        return plan_run(bundle.spec, "t2v", schedule=kw.pop("schedule", sched), solver="unipc", frames=f, width=w,
                        height=h, guidance=kw.pop("guidance", Guidance(1.0, 1.0)), boundary=0.875, **kw)

    def runner(b, p, cache="none"):
        def go():
            with acc.accelerated(b, cache=cache) as caches:
                return run_t2v(b, p, embeds=emb, negative=neg, seed=0, caches=caches).latents
        return go

    plain = plan()
    if plain.expert_switch is None:
        raise RuntimeError("the loop plan must reach the low-noise expert")
    plain_sec = clock.timed(runner(bundle, plain), 1)
    per_step = plain_sec / plain.num_steps
    row(f"t2v loop {plain.num_steps} steps, 2 experts", "run_t2v per step / bare forward", per_step, "", "",
        per_step / base480, 1.0)
    heads.append(("loop_overhead_per_step_ratio", per_step / base480, "{:.3f}"))

    half = plan(half_frame=True)
    half_sec = clock.timed(runner(bundle, half), 1)
    predicted = 1.0 / half.relative_flops
    row(f"--half-frame {plain.num_steps} steps", f"{half.switch} of {half.num_steps} steps on {half.half_frames} frames",
        half_sec, "", "", plain_sec / half_sec, predicted)
    heads.append(("half_frame_speedup", plain_sec / half_sec, "{:.3f}"))
    heads.append(("half_frame_deviation_from_flop_model", plain_sec / half_sec / predicted - 1.0, "{:+.3f}"))

    runner(bundle, plain, "magcache")()  # no stored ratios: this run is uncached and calibrates
    for mode in ("first-block", "magcache"):
        sec = clock.timed(runner(bundle, plain, mode), 1)
        row(f"--step-cache {mode}", f"{plain.num_steps} steps, 2 experts", sec, "", "", plain_sec / sec)
        heads.append((f"{mode.replace('-', '_')}_speedup", plain_sec / sec, "{:.3f}"))

    # ---- --cfg-batch ------------------------------------------------------------------------
    cfg_sched = make_schedule(S.cfg_steps, 12.0)
    cfg_plans = {b: plan(schedule=cfg_sched, guidance=Guidance(4.0, 3.0), branches_batched=b) for b in (False, True)}
    off = clock.timed(runner(bundle, cfg_plans[False]), S.cfg_reps, warmup=S.warmup)
    on = clock.timed(runner(bundle, cfg_plans[True]), S.cfg_reps, warmup=S.warmup)
    row("--cfg-batch", f"off (2 forwards): {off:.3f} s", on, "", "", off / on,
        cfg_plans[False].flops / cfg_plans[True].flops)
    heads.append(("cfg_batch_speedup", off / on, "{:.3f}"))

    # ---- --offload none / model / group: time per step and peak memory ----------------------
    off_plan = plan(schedule=make_schedule(S.offload_steps, 12.0))
    if off_plan.expert_switch is None:
        raise RuntimeError("the offload plan must reach the low-noise expert")
    results = {}
    for mode in ("none", "model", "group"):  # group last: its hooks stay on the experts
        b = bundle if mode == "none" else make_bundle("t2v-a14b", a14b_cfg, [high, low], dev, S.dtype, offload=mode)
        clock.reset_peak()
        sec = clock.timed(runner(b, off_plan), 1) / off_plan.num_steps
        results[mode] = (sec, clock.peak_gb())
    for mode, (sec, mem) in results.items():
        ratio = sec / results["none"][0]
        mem_txt = f"{mem:.1f} GiB" if mem is not None else "n/a (CPU)"
        row(f"--offload {mode}", f"{off_plan.num_steps} steps, per step (moves included)", sec, "", "", ratio, "", mem_txt)
        if mode != "none":
            heads.append((f"offload_{mode}_step_ratio", ratio, "{:.3f}"))
            heads.append((f"offload_{mode}_peak_memory_ratio",
                          mem / results["none"][1] if mem is not None else "n/a (CPU)", "{:.3f}"))

    # ---- report -----------------------------------------------------------------------------
    print(f"random-weight DiTs built on the device in {build_sec:.1f} s (both A14B experts), {build_5b_sec:.1f} s (TI2V-5B)")
    print()
    print(table(["measure", "variant", "seconds", "rate", "share of peak", "speedup / ratio", "FLOP model", "peak memory"],
                rows))
    print()
    print("speedup / ratio: baseline seconds / variant seconds (loop and offload rows: variant / baseline, "
          "per step); share of peak: achieved TFLOP/s (wanctl's FLOP model) / the matmul peak above")
    if share_720 is not None and not S.smoke:
        print(f"goal: the 720p A14B forward at >= 60 % of the bf16 peak: {'met' if share_720 >= 0.6 else 'NOT met'}")
    heads.append(("gpu_benchmark_seconds", time.perf_counter() - t_start, "{:.0f}"))
    for name, value, fmt in heads:
        if isinstance(value, float):
            headline(name, value, fmt)
        else:
            print(f"{name}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
