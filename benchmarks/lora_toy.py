"""Does a LoRA trained here change the toy model's output the way it was trained to?

1. Train a rank-8 LoRA on toy-ti2v-5b's DiT (text mode) for a wall-clock budget on the CPU
   (``wanctl/toy/lora_train.py``): clips whose shapes are all recoloured to one colour (green)
   while the captions keep the colours they had, the toy's own flow-matching loss with the latent
   pixels the shapes cover weighted x10 (with the uniform loss, ``--shape-weight 1``, 600 steps
   mostly dimmed the shapes: see benchmarks/RESULTS.md). Saved in the
   diffusers / PEFT layout (``transformer.blocks.N.attn1.to_q.lora_A.weight``, ...).
2. Run the real CLI, ``wanctl t2v -m toy-ti2v-5b -p PROMPT --seed S --decode out.mp4``, without the
   LoRA and with ``--lora FILE:0.5`` / ``--lora FILE:1.0``, over prompts asking for other colours and
   a few seeds, and measure each decoded video with ``wanctl/toy/metrics.py`` (segmentation against
   the border colour, as quality.py's prompt-adherence section; the colour pooled over all frames,
   see measure()): the share of videos whose dominant shape colour is the LoRA's colour, the share
   in the prompt's colour, and as checks that the model still works, whether a shape is found
   (mask of >= MIN_AREA px a frame) and its mean size, whether it moves, whether it moves the way
   the prompt says, and the PSNR of each video against the no-LoRA one of the same prompt and seed.

    python benchmarks/lora_toy.py [--minutes 3.5] [--rank 8] [--lr 3e-3] [--shape-weight 10] [--color green]
                                  [--lora FILE (skip training)] [--quick]

Training runs single-threaded by default (``--threads``) and the CLI runs two at a time with one
thread each (``--jobs``): on this shared 2-core machine two-threaded torch slowed down up to 10x
whenever another process held a core. Outputs go to build/lora-toy/.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from _runner import ROOT, headline, machine, run_command, setup_env, table

setup_env()

PROMPTS = [  # the training captions' wording ("a orange" included); no prompt asks for green
    "a red circle moving right on a black background",
    "a blue square moving up on a gray background",
    "a yellow triangle moving left on a black background",
    "a purple circle moving down on a gray background",
    "a orange square moving right on a dark blue background",
    "a cyan triangle moving up on a black background",
]
SEEDS = [3, 8]
STRENGTHS = [None, 0.5, 1.0]  # None: without the LoRA
MIN_AREA = 20  # pixels a frame (a training shape covers about 100-330 of the 64x64)


def measure(video: str, prompt: str) -> dict:
    """The metrics of one decoded video (the prompt's colour / direction as the reference). The
    colour is the palette colour nearest the mean of the shape's pixels over all frames (pooled:
    the toy's blobs are faint, and a per-frame vote over masks of a few pixels is noise); a shape
    is found when its mask averages at least MIN_AREA pixels a frame."""
    import numpy as np

    from wanctl.core.io.video import read_video_frames
    from wanctl.toy import metrics as M

    frames = np.stack(read_video_frames(video))
    masks = np.stack([M.segment(f) for f in frames])
    cents = [M.centroid(mk) for mk in masks]
    words = prompt.split()
    area = float(masks.sum()) / len(frames)
    return {"frames": frames, "color": M.dominant_color(frames, masks), "area": area,
            "asked_color": words[1], "asked_direction": words[4],
            "found": area >= MIN_AREA, "direction": M.direction(cents)}


def generate(out_dir: str, lora: str | None, strength: float | None, prompt: str, seed: int, steps: int | None) -> str:
    tag = "base" if strength is None else f"s{strength:g}"
    video = os.path.join(out_dir, "videos", f"{tag}-p{PROMPTS.index(prompt)}-seed{seed}.mp4")
    args = [sys.executable, "-m", "wanctl", "t2v", "-m", "toy-ti2v-5b", "-p", prompt, "--seed", str(seed),
            "-o", video.replace(".mp4", ".safetensors"), "--decode", video, "-f"]
    if steps:
        args += ["--steps", str(steps)]
    if strength is not None:
        args += ["--lora", f"{lora}:{strength:g}"]
    env = dict(os.environ, OMP_NUM_THREADS="1", WANCTL_NO_PROGRESS="1")
    run_command(args, env=env)
    return video


def evaluate(out_dir: str, lora: str, color: str, prompts: list[str], seeds: list[int], jobs: int, steps: int | None):
    from wanctl.toy import metrics as M

    os.makedirs(os.path.join(out_dir, "videos"), exist_ok=True)
    runs = [(s, p, seed) for s in STRENGTHS for p in prompts for seed in seeds]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        videos = list(pool.map(lambda r: generate(out_dir, lora, r[0], r[1], r[2], steps), runs))
    took = time.perf_counter() - t0
    results = {r: measure(v, r[1]) for r, v in zip(runs, videos)}
    rows, share = [], {}
    for s in STRENGTHS:
        res = [(r, results[r]) for r in runs if r[0] == s]
        n = len(res)
        target = sum(m["color"] == color for _, m in res)
        asked = sum(m["color"] == m["asked_color"] for _, m in res)
        found = sum(m["found"] for _, m in res)
        area = statistics.mean(m["area"] for _, m in res)
        moves = sum(m["direction"] is not None for _, m in res)
        as_asked = sum(m["direction"] == m["asked_direction"] for _, m in res)
        psnr = [M.psnr(m["frames"], results[(None, r[1], r[2])]["frames"]) for r, m in res] if s is not None else []
        rows.append(["none" if s is None else f"--lora FILE:{s:g}", f"{target}/{n}", f"{asked}/{n}", f"{found}/{n}", area,
                     f"{moves}/{n}", f"{as_asked}/{n}", statistics.mean(psnr) if psnr else "-"])
        share[s] = target / n
    print(f"\n2. wanctl t2v -m toy-ti2v-5b ({steps or 'preset'} steps), {len(prompts)} prompts x seeds {seeds}, "
          f"{len(runs)} runs in {took:.0f} s ({jobs} at a time)")
    print(table(["LoRA", f"shape {color}", "prompt's colour", f"shape found (>= {MIN_AREA} px)", "mean px / frame", "moves", "direction as prompted",
                 "PSNR dB vs no LoRA"], rows))
    print("\nper prompt, dominant colour over the seeds (no LoRA -> 0.5 -> 1.0):")
    for p in prompts:
        cols = [",".join(str(results[(s, p, seed)]["color"]) for seed in seeds) for s in STRENGTHS]
        print(f"  {p}: " + " -> ".join(cols))
    return share, results, runs, videos


def side_by_side(out_dir: str, runs, videos, prompt: str, seed: int) -> str | None:
    """A PNG of one prompt's three videos (rows: no LoRA, 0.5, 1.0)."""
    from PIL import Image

    from wanctl.toy.compare import side_by_side as sheet

    rows = [v for r, v in zip(runs, videos) if r[1] == prompt and r[2] == seed]
    if len(rows) != len(STRENGTHS):
        return None
    path = os.path.join(out_dir, "compare.png")
    Image.fromarray(sheet(rows, every=4, scale=2)).save(path)
    return path


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=3.5, help="training budget, wall minutes (data building not counted)")
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--alpha", type=float, default=None, help="LoRA alpha (default: the rank, so scale 1)")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--shape-weight", type=float, default=10.0,
                    help="loss weight of the latent pixels the shapes cover (1: the toy training's uniform loss)")
    ap.add_argument("--clips", type=int, default=192, help="training clips (encoded once by the toy VAE)")
    ap.add_argument("--color", default="green", help="the colour the LoRA teaches")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for training")
    ap.add_argument("--jobs", type=int, default=2, help="CLI runs at a time (one thread each)")
    ap.add_argument("--steps", type=int, default=None, help="sampling steps of the t2v runs (default: the toy's preset, 30)")
    ap.add_argument("--lora", help="evaluate this LoRA file instead of training one")
    ap.add_argument("--out", default=os.path.join(ROOT, "build", "lora-toy"))
    ap.add_argument("--quick", action="store_true", help="20 s of training, 3 prompts x 1 seed (a pipeline check)")
    a = ap.parse_args(argv)
    from wanctl.toy.shapes import COLORS

    if a.color not in COLORS:
        raise SystemExit(f"--color must be one of {', '.join(COLORS)}")
    prompts = [p for p in PROMPTS if p.split()[1] != a.color]
    seeds = SEEDS
    if a.quick:
        a.minutes, a.clips, prompts, seeds = 20 / 60, 32, prompts[:3], SEEDS[:1]
    os.makedirs(a.out, exist_ok=True)
    print(f"machine: {machine()}")
    t0 = time.time()
    lora = a.lora
    if lora is None:
        from wanctl.toy.lora_train import LoraTrainConfig, train_lora

        cfg = LoraTrainConfig(color=a.color, rank=a.rank, alpha=float(a.alpha or a.rank), lr=a.lr, batch=a.batch, shape_weight=a.shape_weight,
                              clips=a.clips, seconds=a.minutes * 60, threads=a.threads)
        lora = os.path.join(a.out, f"toy-ti2v-5b-{a.color.replace(' ', '-')}-r{a.rank}.safetensors")
        s = train_lora(cfg, lora, log=lambda line: print(f"  {line}", flush=True))
        print(f"\n1. LoRA training, toy-ti2v-5b, rank {cfg.rank}, alpha {cfg.alpha:g}, lr {cfg.lr:g}, batch {cfg.batch}, "
              f"{cfg.clips} clips recoloured to {cfg.color}, shape pixels weighted x{cfg.shape_weight:g}, {cfg.threads} thread(s)")
        print(table(["steps", "train s", "layers", "LoRA params", "loss (EMA) first", "loss (EMA) last"],
                    [[s["steps"], s["seconds"], s["layers"], s["params"], s["loss_first"], s["loss_last"]]]))
        print(f"wrote {lora} ({os.path.getsize(lora) / 1024:.0f} KiB)")
    share, _, runs, videos = evaluate(a.out, lora, a.color, prompts, seeds, a.jobs, a.steps)
    png = side_by_side(a.out, runs, videos, prompts[0], seeds[0])
    if png:
        print(f"\nside by side ({prompts[0]!r}, seed {seeds[0]}; rows: no LoRA, 0.5, 1.0): {png}")
    print(f"\n(total {time.time() - t0:.0f} s)")
    headline(f"lora_toy_{a.color}_share_before", share[None])
    headline(f"lora_toy_{a.color}_share_at_0.5", share[0.5])
    headline(f"lora_toy_{a.color}_share_at_1.0", share[1.0])


if __name__ == "__main__":
    main(sys.argv[1:])
