"""Half-frame T2V: measured speedup of --half-frame over a plain run, next to the FLOP model.

A random-weight Wan DiT (dim 256, 4 layers, ffn 1024) stands in for both A14B experts; the
latent is 13 frames x 20 x 32 (2,080 tokens at full length, 1,120 at half length). Both variants
run the same schedule, solver and seed without CFG (CFG doubles both sides alike), measured
alternately, median of 5 pairs. Cases: 20 steps, as the original half-frame design used (13 high-noise steps: shift 12,
boundary 0.875) and the official 40-step t2v schedule (26 high-noise steps).

    python benchmarks/half_frame.py [pairs]
"""

from __future__ import annotations

import sys

from _runner import headline, measure_pair, setup_env, table

setup_env()

import torch  # noqa: E402

from _models import compute_bundle  # noqa: E402
from wanctl.core.sampling.plan import Guidance, plan_run  # noqa: E402
from wanctl.core.sampling.schedule import make_schedule  # noqa: E402
from wanctl.core.workflows.t2v import run_t2v  # noqa: E402

FRAMES, WIDTH, HEIGHT = 49, 256, 160  # 13 latent frames of 20 x 32 (A14B stride 8)


def main(pairs: int = 5) -> None:
    torch.set_num_threads(max(1, torch.get_num_threads()))
    bundle = compute_bundle()
    emb = torch.randn(1, 512, 64, generator=torch.Generator().manual_seed(0))
    g = Guidance(1.0, 1.0)
    rows, results = [], {}
    for steps in (20, 40):
        sched = make_schedule(steps, 12.0)
        plans = {hf: plan_run(bundle.spec, "t2v", schedule=sched, solver="unipc", frames=FRAMES, width=WIDTH,
                              height=HEIGHT, guidance=g, half_frame=hf, boundary=0.875) for hf in (False, True)}

        def run(hf):
            return lambda: run_t2v(bundle, plans[hf], embeds=emb, negative=None, seed=0)

        pair = measure_pair(run(False), run(True), pairs=pairs, warmup=1 if steps == 20 else 0)
        predicted = 1.0 / plans[True].relative_flops
        rows.append([steps, plans[True].switch, pair.a, pair.b, pair.ratio, predicted, pair.ratio / predicted - 1.0])
        results[steps] = (pair.ratio, predicted)
    print(f"DiT dim 256 x 4 layers, {FRAMES} frames {WIDTH}x{HEIGHT} -> 13 latent frames, 2080 / 1120 tokens; "
          f"unipc, no CFG; median of {pairs} alternating pairs")
    print(table(["steps", "high steps", "plain s", "half-frame s", "measured speedup", "FLOP-model speedup", "deviation"],
                rows))
    headline("half_frame_speedup_40_steps", results[40][0])
    headline("half_frame_deviation_from_flop_model_40_steps", results[40][0] / results[40][1] - 1.0, "{:+.3f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
