"""Quality of the algorithms on the toy models, measured on decoded pixels by segmenting shapes.

Toy models (trained by `python -m wanctl.toy.train`, 64x64, 17 frames) and synthetic clips of
one shape on a plain background (seeds below), so every metric has a ground truth:

1. edit workflow (toy-ti2v-5b): invert a source clip, denoise with a first frame showing another
   shape in another colour at the same place; the edited object's centroid path against the
   source's (mean pixel error) and whether its colour / shape match the target first frame, for
   conditional vs unconditional inversion and each solver;
2. inversion round trip (toy-ti2v-5b, no CFG): PSNR of the decoded reconstruction against the
   decoded source latent, per solver and step count;
3. flf2v (toy-i2v-a14b): PSNR of the last decoded frame against the given last frame, and path
   smoothness / error, forward-only vs --bidirectional (uniform, linear) vs mirror;
4. half-frame t2v (toy-t2v-a14b): PSNR of the half-frame output against the full run with the
   same seed, per completion mode, with the FLOP-model speedup;
5. t2v prompt adherence (toy-t2v-a14b, toy-ti2v-5b): share of clips whose colour, shape and
   direction match the caption.

    python benchmarks/quality.py [--quick]
"""

from __future__ import annotations

import math
import random
import statistics
import sys
import time

from _runner import headline, setup_env, table

setup_env()

import numpy as np  # noqa: E402
import torch  # noqa: E402

from wanctl.toy import metrics as M  # noqa: E402
from wanctl.toy.shapes import COLORS, SHAPES, Clip, Shape, render  # noqa: E402

SIZE, FRAMES = 64, 17
SEEDS = [11, 23, 37, 41, 53, 67]


def eval_clip(seed: int) -> Clip:
    """One shape, plain background, moving far enough to measure."""
    rng = random.Random(seed)
    kind, color = rng.choice(SHAPES), rng.choice([c for c in COLORS if c != "white"])
    direction = rng.choice(["left", "right", "up", "down"])
    size = rng.uniform(7.0, 9.0)
    speed = rng.uniform(1.2, 1.8)
    dist = speed * (FRAMES - 1)
    dx, dy = {"right": (1, 0), "left": (-1, 0), "up": (0, -1), "down": (0, 1)}[direction]
    x = (SIZE - dist) / 2 if dx > 0 else (SIZE + dist) / 2 if dx < 0 else rng.uniform(size + 4, SIZE - size - 4)
    y = (SIZE - dist) / 2 if dy > 0 else (SIZE + dist) / 2 if dy < 0 else rng.uniform(size + 4, SIZE - size - 4)
    bg = rng.choice(["black", "gray", "dark blue"])
    return Clip(SIZE, SIZE, FRAMES, [Shape(kind, color, direction, speed, size, x, y)], background=bg)


def retarget(clip: Clip, seed: int) -> Clip:
    """The same motion with another shape and colour (the target first frame comes from it)."""
    rng = random.Random(seed * 7 + 1)
    s = clip.shapes[0]
    kind = rng.choice([k for k in SHAPES if k != s.shape])
    color = rng.choice([c for c in COLORS if c not in (s.color, "white")])
    return Clip(clip.width, clip.height, clip.frames, [Shape(kind, color, s.direction, s.speed, s.size, s.x, s.y)],
                background=clip.background)


def majority(values):
    vals = [v for v in values if v is not None]
    return max(set(vals), key=vals.count) if vals else None


class Toy:
    """A loaded toy model plus helpers that run wanctl's core functions in-process."""

    def __init__(self, name: str):
        from wanctl.core.models.bundle import LoadOptions, open_bundle

        self.bundle = open_bundle(name, options=LoadOptions(device="cpu", dtype="fp32", cache=False))
        self.fam = self.bundle.family

    def encode(self, frames) -> torch.Tensor:
        from wanctl.core.models.codec import encode_frames

        return encode_frames(self.bundle.vae(), list(frames))

    def decode(self, lat) -> np.ndarray:
        from wanctl.core.models.codec import decode_latents

        return np.stack(list(decode_latents(self.bundle.vae(), lat)))

    def embed(self, *prompts):
        from wanctl.core.models.text import encode_prompts

        return encode_prompts(self.bundle, list(prompts))

    def denoise_plan(self, schedule, solver: str, guidance=None):
        """The plan of denoising one SIZE x SIZE, FRAMES-frame latent on ``schedule`` (no CFG unless
        ``guidance`` is given; the official default negative prompt with it)."""
        from wanctl.core.sampling.plan import NO_GUIDANCE, plan_run

        return plan_run(self.bundle.spec, "denoise", schedule=schedule, solver=solver, frames=FRAMES, width=SIZE,
                        height=SIZE, guidance=guidance or NO_GUIDANCE)


# --------------------------------------------------------------------------- 1 + 2: edits, round trips


def latent_artifact(toy: Toy, clip: Clip):
    from wanctl.core.io.artifact import Artifact, new_meta

    frames = render(clip)
    lat = toy.encode(frames)
    ff = torch.from_numpy(np.array(frames[0])).permute(2, 0, 1).unsqueeze(0)
    meta = new_meta("latent", family=toy.fam.name, command="bench", noise_level=0.0,
                    video={"width": SIZE, "height": SIZE, "frames": FRAMES, "fps": 16},
                    model=toy.bundle.record(["vae"]))
    return Artifact({"latents": lat, "first_frame": ff}, meta, path="bench"), frames


def edit_and_roundtrip(quick: bool) -> dict:
    from wanctl.core.sampling.conditioning import build_condition
    from wanctl.core.sampling.executor import sample
    from wanctl.core.sampling.plan import Guidance
    from wanctl.core.workflows.invert import plan_invert, run_inversion, source_condition

    toy = Toy("toy-ti2v-5b")
    seeds = SEEDS[:3] if quick else SEEDS
    steps = 20
    rows, summary = [], {}
    configs = [("conditional", "euler"), ("conditional", "midpoint"), ("conditional", "fireflow"),
               ("unconditional", "euler"), ("unconditional", "fireflow")]
    from wanctl.core.families import DEFAULT_NEGATIVE_PROMPT

    for cond_mode, solver in configs:
        errs, colors, shapes = [], [], []
        for seed in seeds:
            src = eval_clip(seed)
            tgt = retarget(src, seed)
            art, frames = latent_artifact(toy, src)
            inv = plan_invert(toy.bundle, art, steps=steps, shift=toy.bundle.preset.shift, solver=solver)
            noise = run_inversion(toy.bundle, art, inv, prompt=src.caption(),
                                  conditional=cond_mode == "conditional").noise
            target_frame = render(tgt)[0]
            emb = toy.embed(tgt.caption(), DEFAULT_NEGATIVE_PROMPT)
            cond = build_condition(toy.bundle, first=target_frame)
            plan = toy.denoise_plan(inv.schedule, solver, guidance=Guidance(5.0, 5.0))
            lat, _ = sample(toy.bundle, plan, noise.latents, cond, emb[tgt.caption()], emb[DEFAULT_NEGATIVE_PROMPT])
            out = toy.decode(lat)
            src_path = M.path(frames, color=COLORS[src.shapes[0].color])
            tgt_color = COLORS[tgt.shapes[0].color]
            edit_path = M.path(out, color=tgt_color, threshold=90)
            errs.append(M.path_error(edit_path, src_path))
            masks = [M.segment(f, color=tgt_color, threshold=90) for f in out]
            colors.append(majority([M.dominant_color(f, M.segment(f)) for f in out[1:]]) == tgt.shapes[0].color)
            shapes.append(majority([M.shape_kind(mk) for mk in masks[1:]]) == tgt.shapes[0].shape)
        fin = [e for e in errs if math.isfinite(e)]
        rows.append([cond_mode, solver, statistics.mean(fin) if fin else math.inf, f"{len(fin)}/{len(errs)}",
                     f"{sum(colors)}/{len(colors)}", f"{sum(shapes)}/{len(shapes)}"])
        summary[(cond_mode, solver)] = statistics.mean(fin) if fin else math.inf
    print(f"1. edit by first frame, toy-ti2v-5b, {steps} steps, guidance 5, clips {seeds}")
    print(table(["inversion", "solver", "path error px", "object found", "colour matches", "shape matches"], rows))

    rt_rows = []
    for solver, n, refine in [("euler", 10, 0), ("euler", 20, 0), ("euler", 40, 0), ("midpoint", 10, 0), ("midpoint", 20, 0),
                              ("fireflow", 10, 0), ("fireflow", 20, 0), ("euler", 20, 3)]:
        ps = []
        for seed in seeds[:3]:
            art, frames = latent_artifact(toy, eval_clip(seed))
            inv = plan_invert(toy.bundle, art, steps=n, shift=toy.bundle.preset.shift, solver=solver, refine=refine)
            noise = run_inversion(toy.bundle, art, inv, prompt=eval_clip(seed).caption()).noise
            cond = source_condition(toy.bundle, art, True)
            emb = toy.embed(eval_clip(seed).caption())
            plan = toy.denoise_plan(inv.schedule, "euler" if refine else solver)
            rec, _ = sample(toy.bundle, plan, noise.latents, cond, emb[eval_clip(seed).caption()])
            ps.append(M.psnr(toy.decode(rec), toy.decode(art.latents)))
        rt_rows.append([solver + (f" --refine {refine}" if refine else ""), n, statistics.mean(ps)])
    print(f"\n2. inversion round trip (invert -> denoise, same prompt and first frame, no CFG), toy-ti2v-5b, clips {seeds[:3]}")
    print(table(["solver", "steps", "PSNR dB vs decoded source"], rt_rows))
    return summary


# --------------------------------------------------------------------------- 3: flf2v


def flf2v(quick: bool) -> dict:
    from wanctl.core.families import DEFAULT_NEGATIVE_PROMPT
    from wanctl.core.sampling.plan import Guidance, plan_run
    from wanctl.core.sampling.schedule import make_schedule
    from wanctl.core.sampling.velocity import seeded_noise
    from wanctl.core.workflows.flf2v import run_flf2v

    toy = Toy("toy-i2v-a14b")
    seeds = SEEDS[:3] if quick else SEEDS
    steps = 20
    variants = [("forward-only", dict()), ("bidirectional uniform", dict(bidirectional=True)),
                ("bidirectional linear", dict(bidirectional=True, fusion="linear")),
                ("bidirectional linear + reverse-rope", dict(bidirectional=True, fusion="linear", reverse_rope=True)),
                ("mirror (published)", dict(bidirectional=True, mode="mirror"))]
    rows, out = [], {}
    for name, kw in variants:
        lp, sm, pe = [], [], []
        for seed in seeds:
            clip = eval_clip(seed)
            frames = render(clip)
            emb = toy.embed(clip.caption(), DEFAULT_NEGATIVE_PROMPT)
            noise = seeded_noise((1, 16, 5, SIZE // 8, SIZE // 8), seed)
            bidirectional = kw.get("bidirectional", False)
            # the bidirectional passes (and their CFG branches) as one batched forward, the forward-only
            # run's CFG branches as two
            plan = plan_run(toy.bundle.spec, "flf2v", schedule=make_schedule(steps, 16.0), solver="euler", frames=FRAMES,
                            width=SIZE, height=SIZE, guidance=Guidance(5.0, 5.0), negative_prompt=DEFAULT_NEGATIVE_PROMPT,
                            bidirectional=bidirectional, branches_batched=bidirectional)
            run_kw = {k: v for k, v in kw.items() if k != "bidirectional"}
            lat = run_flf2v(toy.bundle, plan, first=frames[0], last=frames[-1], embeds=emb[clip.caption()],
                            negative=emb[DEFAULT_NEGATIVE_PROMPT], noise=noise, **run_kw).latents
            video = toy.decode(lat)
            lp.append(M.psnr(video[-1], frames[-1]))
            p = M.path(video, color=COLORS[clip.shapes[0].color], threshold=90)
            sm.append(M.smoothness(p))
            pe.append(M.path_error(p, [clip.shapes[0].center(t) for t in range(FRAMES)]))
        fin = lambda v: statistics.mean([x for x in v if math.isfinite(x)]) if any(math.isfinite(x) for x in v) else math.inf  # noqa: E731
        rows.append([name, statistics.mean(lp), fin(sm), fin(pe)])
        out[name] = statistics.mean(lp)
    print(f"\n3. flf2v, toy-i2v-a14b, {steps} euler steps, shift 16, guidance 5, clips {seeds}")
    print(table(["sampler", "last-frame PSNR dB", "path roughness px/f^2", "path error px"], rows))
    return out


# --------------------------------------------------------------------------- 4 + 5: t2v


def t2v_runs(toy: Toy, caption: str, seed: int, steps: int, **plan_kw):
    from wanctl.core.sampling.plan import plan_run, resolve_guidance
    from wanctl.core.sampling.schedule import make_schedule
    from wanctl.core.workflows.t2v import run_t2v

    pre = toy.bundle.preset
    g = resolve_guidance(toy.fam, pre, None, None)
    sched = make_schedule(steps, pre.shift)
    plan = plan_run(toy.bundle.spec, "t2v", schedule=sched, solver="unipc", frames=FRAMES, width=SIZE, height=SIZE,
                    guidance=g, boundary=toy.bundle.spec.boundary, **plan_kw)
    neg = plan.negative_prompt  # the official default negative prompt where CFG is on
    emb = toy.embed(caption, *([neg] if neg is not None else []))
    t0 = time.perf_counter()
    res = run_t2v(toy.bundle, plan, embeds=emb[caption], negative=emb[neg] if neg is not None else None, seed=seed)
    return toy.decode(res.latents), plan, time.perf_counter() - t0


def half_frame(quick: bool) -> None:
    toy = Toy("toy-t2v-a14b")
    seeds = SEEDS[:3] if quick else SEEDS
    steps = 40
    rows = []
    for mode in ("repeat", "interpolate", "renoise"):
        ps, tr = [], []
        for seed in seeds:
            cap = eval_clip(seed).caption()
            full, _, tf = t2v_runs(toy, cap, seed, steps)
            half, plan, th = t2v_runs(toy, cap, seed, steps, half_frame=True, completion=mode)
            ps.append(M.psnr(half, full))
            tr.append(tf / th)
        rows.append([mode, statistics.mean(ps), 1 / plan.relative_flops, statistics.median(tr)])
    print(f"\n4. half-frame t2v, toy-t2v-a14b, official 40-step schedule (26 high-noise steps), clips {seeds}")
    print(table(["completion", "PSNR dB vs full run", "FLOP-model speedup", "measured speedup (toy: overhead-bound)"], rows))


def adherence(quick: bool) -> dict:
    out = {}
    rows = []
    n = 6 if quick else 12
    for name in ("toy-t2v-a14b", "toy-ti2v-5b"):
        toy = Toy(name)
        c = s = d = allm = 0
        for i in range(n):
            clip = eval_clip(1000 + i)
            shape = clip.shapes[0]
            video, _, _ = t2v_runs(toy, clip.caption(), 1000 + i, 30)
            masks = [M.segment(f) for f in video]
            col = majority([M.dominant_color(f, mk) for f, mk in zip(video, masks)]) == shape.color
            shp = majority([M.shape_kind(mk) for mk in masks]) == shape.shape
            drn = M.direction([M.centroid(mk) for mk in masks]) == shape.direction
            c, s, d, allm = c + col, s + shp, d + drn, allm + (col and shp and drn)
        rows.append([name, f"{c}/{n}", f"{s}/{n}", f"{d}/{n}", f"{allm}/{n}"])
        out[name] = allm / n
    print(f"\n5. t2v prompt adherence, 30 steps, preset guidance, captions of {n} random one-shape clips")
    print(table(["model", "colour", "shape", "direction", "all three"], rows))
    return out


def main(argv: list[str]) -> None:
    quick = "--quick" in argv
    torch.set_num_threads(max(1, torch.get_num_threads()))
    t0 = time.time()
    edits = edit_and_roundtrip(quick)
    flf2v(quick)
    half_frame(quick)
    adh = adherence(quick)
    print(f"\n(total {time.time() - t0:.0f} s)")
    headline("quality_edit_path_error_px", edits[("conditional", "euler")])
    headline("quality_t2v_adherence_t2v_a14b", adh["toy-t2v-a14b"])


if __name__ == "__main__":
    main(sys.argv[1:])
