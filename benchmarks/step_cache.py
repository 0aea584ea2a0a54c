"""Step caches (first-block, TaylorSeer, MagCache) on t2v-a14b-like runs: measured speedup over
the uncached run and the latent drift they cost, with per-expert step accounting.

A random-weight DiT (dim 256, 4 layers; separate weights per expert, as in A14B) at 2,080
tokens, 12 UniPC steps without CFG (one branch: keeps the benchmark short; CFG doubles both
sides alike). MagCache is calibrated first (wanctl measures the ratios itself).
Random weights have no learned smoothness across steps, so the drift here is an upper bound of
sorts; the accounting (which expert computes how often) is the point.

    python benchmarks/step_cache.py
"""

from __future__ import annotations

import sys

from _runner import headline, measure_pair, setup_env, table

setup_env()

import torch  # noqa: E402

from _models import compute_bundle  # noqa: E402

FRAMES, WIDTH, HEIGHT, STEPS = 49, 256, 160, 12


def main(pairs: int = 5) -> None:
    import tempfile

    from wanctl.core.sampling.acceleration import accelerated
    from wanctl.core.sampling.plan import Guidance, plan_run
    from wanctl.core.sampling.schedule import make_schedule
    from wanctl.core.workflows.t2v import run_t2v

    import os

    os.environ["WANCTL_CACHE_DIR"] = tempfile.mkdtemp(prefix="wanctl-bench-cache-")
    bundle = compute_bundle(text_dim=32)
    second = compute_bundle(text_dim=32, seed=1)
    bundle._loaded["transformer_2"] = second.transformer()
    bundle.fingerprint = lambda c: f"bench-{c}"  # in-memory experts: stable fingerprints for the calibration key
    g = torch.Generator().manual_seed(0)
    emb, neg = torch.randn(1, 512, 32, generator=g), torch.randn(1, 512, 32, generator=g)
    guidance = Guidance(1.0, 1.0)
    sched = make_schedule(STEPS, 12.0)
    plan = plan_run(bundle.spec, "t2v", schedule=sched, solver="unipc", frames=FRAMES, width=WIDTH, height=HEIGHT,
                    guidance=guidance, boundary=0.875)
    computed: dict = {}
    for e in bundle.experts():
        bundle.transformer(e).blocks[-1].ffn.net[0].register_forward_hook(
            lambda m, a, o, e=e: computed.__setitem__(e, computed.get(e, 0) + 1))

    def run(mode, threshold=None):
        def go():
            computed.clear()
            with accelerated(bundle, cache=mode, threshold=threshold) as caches:
                return run_t2v(bundle, plan, embeds=emb, negative=neg, seed=0, caches=caches).latents
        return go

    ref = run("none")()
    full = dict(computed)
    run("magcache")()  # calibration run
    rows = []
    best = 1.0
    for mode, th in (("first-block", 0.1), ("taylorseer", None), ("magcache", 0.12)):
        out = run(mode, th)()
        drift = ((out - ref).norm() / ref.norm()).item()
        counts = dict(computed)
        pair = measure_pair(run("none"), run(mode, th), pairs=pairs, warmup=0)
        label = f"{mode}" + (f" {th}" if th is not None else "")
        rows.append([label, f"{counts.get('transformer', 0)}/{full['transformer']}",
                     f"{counts.get('transformer_2', 0)}/{full['transformer_2']}", pair.ratio, drift])
        if mode == "magcache":
            best = pair.ratio
    print(f"DiT dim 256 x 4 layers per expert, 2,080 tokens, {STEPS} UniPC steps, no CFG; median of {pairs} pairs")
    print(table(["cache", "high-noise full computes", "low-noise full computes", "speedup", "relative drift"], rows))
    headline("magcache_speedup", best)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
