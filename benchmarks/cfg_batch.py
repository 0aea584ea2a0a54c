"""Batched CFG: conditional and unconditional branches as one forward of batch 2, against two
forwards of batch 1 (same FLOPs: the FLOP model predicts 1.00; any gain is kernel efficiency).

    python benchmarks/cfg_batch.py
"""

from __future__ import annotations

import sys

from _runner import headline, measure_pair, setup_env, table

setup_env()

import torch  # noqa: E402

from _models import compute_bundle  # noqa: E402

FRAMES, WIDTH, HEIGHT, STEPS = 49, 256, 160, 6


def main(pairs: int = 5) -> None:
    from wanctl.core.sampling.plan import Guidance, plan_run
    from wanctl.core.sampling.schedule import make_schedule
    from wanctl.core.workflows.t2v import run_t2v

    bundle = compute_bundle(text_dim=32)
    g = torch.Generator().manual_seed(0)
    emb, neg = torch.randn(1, 512, 32, generator=g), torch.randn(1, 512, 32, generator=g)
    guidance = Guidance(4.0, 3.0)
    sched = make_schedule(STEPS, 12.0)
    plans = {b: plan_run(bundle.spec, "t2v", schedule=sched, solver="unipc", frames=FRAMES, width=WIDTH, height=HEIGHT,
                         guidance=guidance, boundary=0.875, branches_batched=b) for b in (False, True)}

    def run(b):
        return lambda: run_t2v(bundle, plans[b], embeds=emb, negative=neg, seed=0).latents

    diff = (run(True)() - run(False)()).abs().max().item()
    pair = measure_pair(run(False), run(True), pairs=pairs)
    predicted = plans[False].flops / plans[True].flops
    print(f"DiT dim 256 x 4 layers, 2,080 tokens, {STEPS} steps with CFG, device cpu; median of {pairs} pairs; "
          f"max |batched - separate| = {diff:.1e}")
    print(table(["variant", "seconds"], [["two forwards (batch 1)", pair.a], ["one forward (batch 2)", pair.b]]))
    print(table(["measured speedup of --cfg-batch", "FLOP-model speedup"], [[pair.ratio, predicted]]))
    headline("cfg_batch_speedup", pair.ratio)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
