"""Reuse: one inversion + N denoises in one run, against N separate invert + denoise runs.

Each "separate" run loads the models, encodes its prompts, inverts and denoises, as N
independent command invocations would (without the Python start-up); the "reuse" run loads
once, inverts once and denoises the N targets. Measured alternately, median of 5 pairs, on the
built-in tiny-ti2v-5b. The FLOP-model prediction counts DiT calls: separate = N (I + D),
reuse = I + N D, with I inversion calls and D denoise calls per target (CFG doubles D).

    python benchmarks/reuse.py
"""

from __future__ import annotations

import sys

from _runner import headline, measure_pair, setup_env, table

setup_env()

from wanctl.core.workflows.encode import encode, plan_encode  # noqa: E402
from wanctl.core.workflows.denoise import (  # noqa: E402
    Target, noise_from_artifact, plan_denoise, prepare_images, run_denoise)
from wanctl.core.workflows.invert import plan_invert, run_inversion  # noqa: E402
from wanctl.core.models.bundle import LoadOptions, open_bundle  # noqa: E402

MODEL, STEPS, SIZE, FRAMES = "tiny-ti2v-5b", 10, (64, 64), 9
GUIDANCE = 5.0  # --guidance 5 (ti2v-5b has one expert)


def main(pairs: int = 5) -> None:
    import tempfile

    from wanctl.toy.assets import write_assets

    tmp = tempfile.mkdtemp(prefix="wanctl-bench-")
    assets = write_assets(tmp)
    opts = LoadOptions(device="cpu", dtype="fp32")
    base = open_bundle(MODEL, options=opts)
    latent, _ = encode(base, plan_encode(str(assets["clip"]), base.family, frames=FRAMES, size=SIZE))
    latent.path = "clip.safetensors"
    shift = base.preset.shift
    frames = [str(assets["green-triangle"]), str(assets["yellow-square"])]

    def targets(n):
        ts = [Target(row=i + 1, prompt=f"a shape, take {i % 3}", output="-", first_frame=frames[i % 2]) for i in range(n)]
        prepare_images(ts, SIZE[0], SIZE[1])
        return ts

    def one_run(ts):
        bundle = open_bundle(MODEL, options=opts)  # a fresh process loads everything again
        inv = plan_invert(bundle, latent, steps=STEPS, shift=shift, solver="euler")
        noise = run_inversion(bundle, latent, inv, prompt="a red circle").noise
        noise.path = "noise.safetensors"
        src = noise_from_artifact(noise, bundle, None)
        plan = plan_denoise(bundle, src, solver="euler", guidance=GUIDANCE, negative_prompt=None)
        run_denoise(bundle, plan, src, ts, on_result=lambda t, a: None)

    rows = []
    ratio = {}
    for n in (1, 4, 8):
        ts = targets(n)
        pair = measure_pair(lambda: [one_run([t]) for t in ts], lambda: one_run(ts), pairs=pairs)
        inv, den = STEPS, 2 * STEPS
        predicted = n * (inv + den) / (inv + n * den)
        rows.append([n, pair.a, pair.b, pair.ratio, predicted])
        ratio[n] = pair.ratio
    print(f"model {MODEL}, {FRAMES} frames {SIZE[0]}x{SIZE[1]}, {STEPS} steps, euler, CFG on; median of {pairs} alternating pairs")
    print(table(["N", "separate s", "reuse s", "separate/reuse", "DiT-call model"], rows))
    headline("reuse_speedup_n8", ratio[8])


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
