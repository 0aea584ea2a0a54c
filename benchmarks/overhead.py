"""Overhead: wanctl's own t2v loop against diffusers' WanPipeline doing the same work.

Same random-weight DiT (dim 256, 4 layers, both A14B experts), same grid (UniPC on diffusers' grid,
``grid="diffusers"`` / ``--grid diffusers``, shift 12, boundary 0.875), same CFG scales, same seed,
13 latent frames x 20 x 32 (2,080 tokens).

* in-process: run_t2v against WanPipeline(prompt_embeds=...) per step, median of 5 pairs;
  target: wanctl / diffusers <= 1.02.
* whole commands: `wanctl t2v -m FOLDER` against a script that loads WanPipeline from the same
  folder and runs it (prompt encoding included, no decode), median of 5 pairs.

    python benchmarks/overhead.py
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

from _runner import headline, measure_pair, run_command, setup_env, table

setup_env()

import torch  # noqa: E402

from _models import compute_bundle  # noqa: E402

FRAMES, WIDTH, HEIGHT, STEPS = 49, 256, 160, 5
PIPE_SCRIPT = """
import sys, torch
from diffusers import UniPCMultistepScheduler, WanPipeline
pipe = WanPipeline.from_pretrained(sys.argv[1], torch_dtype=torch.float32)
pipe.set_progress_bar_config(disable=True)
pipe.scheduler = UniPCMultistepScheduler.from_config(pipe.scheduler.config, flow_shift=12.0)
pipe(prompt="a red circle moving right", negative_prompt="static", height={h}, width={w}, num_frames={f},
     num_inference_steps={n}, guidance_scale=4.0, guidance_scale_2=3.0, generator=torch.Generator().manual_seed(0),
     output_type="latent")
"""


def main(pairs: int = 5) -> None:
    from diffusers import UniPCMultistepScheduler, WanPipeline

    from wanctl.core.models.builtin import scheduler_config
    from wanctl.core.sampling.plan import Guidance, plan_run
    from wanctl.core.sampling.schedule import make_schedule
    from wanctl.core.workflows.t2v import run_t2v

    bundle = compute_bundle(text_dim=32)
    dit = bundle.transformer()
    g = torch.Generator().manual_seed(0)
    emb, neg = torch.randn(1, 512, 32, generator=g), torch.randn(1, 512, 32, generator=g)
    guidance = Guidance(4.0, 3.0)
    sched = make_schedule(STEPS, 12.0, grid="diffusers")  # the grid of diffusers' UniPCMultistepScheduler
    plan = plan_run(bundle.spec, "t2v", schedule=sched, solver="unipc", frames=FRAMES, width=WIDTH, height=HEIGHT,
                    guidance=guidance, boundary=0.875)
    pipe = WanPipeline(tokenizer=None, text_encoder=None, vae=None,
                       scheduler=UniPCMultistepScheduler.from_config(scheduler_config(12.0)),
                       transformer=dit, transformer_2=dit, boundary_ratio=0.875)
    pipe.set_progress_bar_config(disable=True)

    def ours():
        return run_t2v(bundle, plan, embeds=emb, negative=neg, seed=0).latents

    def stock():
        return pipe(prompt_embeds=emb, negative_prompt_embeds=neg, height=HEIGHT, width=WIDTH, num_frames=FRAMES,
                    num_inference_steps=STEPS, guidance_scale=4.0, guidance_scale_2=3.0,
                    generator=torch.Generator().manual_seed(0), output_type="latent").frames

    diff = (ours() - stock()).abs().max().item()
    inproc = measure_pair(ours, stock, pairs=pairs)

    # whole commands on a model folder holding this DiT
    tmp = tempfile.mkdtemp(prefix="wanctl-bench-")
    from wanctl.core.models.bundle import resolve_model

    folder = os.path.join(tmp, "model")
    shutil.copytree(resolve_model("tiny-t2v-a14b").path, folder)
    for e in ("transformer", "transformer_2"):
        shutil.rmtree(os.path.join(folder, e))
        dit.save_pretrained(os.path.join(folder, e), safe_serialization=True)
    env = dict(os.environ, WANCTL_NO_CACHE="1")
    py = sys.executable
    cmd_ours = [py, "-m", "wanctl", "t2v", "-m", folder, "-p", "a red circle moving right", "-n", "static",
                "--size", f"{WIDTH}x{HEIGHT}", "--frames", str(FRAMES), "--steps", str(STEPS), "--grid", "diffusers",
                "--guidance", "4", "--guidance-low", "3", "--dtype", "fp32", "-o", os.path.join(tmp, "o.safetensors"),
                "--force"]
    script = os.path.join(tmp, "pipe.py")
    with open(script, "w") as f:
        f.write(PIPE_SCRIPT.format(h=HEIGHT, w=WIDTH, f=FRAMES, n=STEPS))
    cmd_stock = [py, script, folder]
    whole = measure_pair(lambda: run_command(cmd_ours, env), lambda: run_command(cmd_stock, env), pairs=pairs, warmup=0)

    rows = [["in-process, per step", inproc.a / STEPS, inproc.b / STEPS, inproc.ratio],
            ["whole command", whole.a, whole.b, whole.ratio]]
    print(f"DiT dim 256 x 4 layers (both experts), {FRAMES} frames {WIDTH}x{HEIGHT} (2,080 tokens), {STEPS} UniPC steps, "
          f"CFG 4/3; median of {pairs} alternating pairs; max |wanctl - diffusers| = {diff:.1e}")
    print(table(["measure", "wanctl s", "diffusers s", "wanctl/diffusers"], rows))
    headline("overhead_per_step_ratio", inproc.ratio)
    headline("overhead_whole_command_ratio", whole.ratio)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
