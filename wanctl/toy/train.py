"""Train the toy models on synthetic shape clips, on a 2-core CPU, in about 2 hours.

Shipped from this recipe: toy-ti2v-5b. toy-t2v-a14b / toy-i2v-a14b still ship from the stop-19
recipe (this file at commit 6d20fd2): this file's Wan2.1 lane (VAE_RECIPES["wan2.1"], the i2v DiT
with the current loss weighting, EMA and held-out captions) has been trained but not yet measured
against them and shipped (benchmarks/RESULTS.md says where that stands).

    python -m wanctl.toy.train OUT_DIR              # everything (the committed weights)
    python -m wanctl.toy.train OUT_DIR --quick      # a few steps of every stage (pipeline check)
    python -m wanctl.toy.train OUT_DIR --stages vae22 --stop-after 50 --compare-log REF/train_log.jsonl

Stages, each resumable from the files it writes in OUT_DIR/work; by default they run as two
single-threaded lanes side by side (vae22 -> vae22full -> data22 -> ti2v and vae21 -> vae21full
-> data21 -> i2v), then ``assemble``:

1. ``vae21`` / ``vae22``: a small AutoencoderKLWan of each VAE type (Wan2.1: z 16, stride 8;
   Wan2.2: z 48, 2x2 patchify, stride 16), trained on short pieces of the clips (VAE_RECIPES:
   Wan2.2 on random 5-frame 32x32 crops, 2 latent frames, a fraction of a whole clip's cost;
   Wan2.1 on whole-frame 9-frame windows, which it needs) to reconstruct from the posterior
   mean, L1 + L2 with shape pixels weighted 10x; then
   ``vae21full`` / ``vae22full`` fine-tune it on whole 17-frame clips (the causal VAE's chunk
   caches make it recurrent in time; see train_vae). Afterwards the per-channel latent mean / std
   are measured and written into the VAE config (``latents_mean`` / ``latents_std``), so
   wanctl's normalization makes toy latents unit-variance like the real ones.
2. ``data22`` / ``data21``: a fixed set of 17-frame 64x64 clips with captions (the same clips for
   both), none showing a combination of shapes.HELD_OUT, encoded by each VAE (posterior mean,
   normalized), with the latent pixels the shapes cover; for i2v also the encoded condition
   videos [first, 0...] and [first, 0..., last]; captions through the (random, fixed) tiny umT5.
3. ``ti2v``: a Wan DiT (48 channels) trained by flow matching, half the time in image mode
   (latent frame 0 clean with timestep 0 on its tokens, no loss there) and half in text mode.
4. ``i2v``: a Wan DiT (36 -> 16 channels) trained with the i2v condition: first frame (35%),
   first + last frame (25%), or the condition dropped to zeros (40%). Because dropped condition
   channels are exactly zero, a t2v DiT is this network with the patch embedding's first 16
   input channels: ``i2v(cat[x, 0]) == t2v(x)`` (exact math; tested to float rounding), so ``toy-t2v-a14b`` is derived,
   not trained. Both A14B experts share the network (the toys are not MoE-trained).
   Both DiTs weight the loss of latent pixels covering a shape 10x (shapes are a few percent of
   the pixels; unweighted, a DiT learns the backgrounds and leaves the shapes for last) and ship
   the exponential moving average of their weights.
5. ``assemble``: the three diffusers-layout folders in fp16 with a model card and loss log.

The random tiny umT5 stays frozen: its word-level tokenizer gives every caption word its own
token, and a colour / shape / direction word changes its token's embedding by more than the
embedding's norm, so the DiT's cross-attention can tell captions apart without training it.
Captions are dropped 10% of the time (half to "", half to the official negative prompt, so the
default negative prompt acts as the unconditional branch). Timesteps: u ~ U(0, 1) shifted by 3,
t = int(1000 s) as at inference. Fixed seeds throughout; results vary only by CPU float order.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wanctl.core.families import dit_config, vae_config

FRAMES, SIZE, FPS = 17, 64, 16  # the training clips (wanctl.toy.shapes.random_clip)
# Each toy's own sampling defaults (wanctl_presets.json, over the family's official presets): the
# clips it was trained on, and the 30 steps of the demo (the official 40-50 gain nothing here).
TOY_PRESETS = {"steps": 30, "frames": FRAMES, "fps": FPS, "sizes": [[SIZE, SIZE]]}
# sizes only: the architecture's fixed fields come from families.dit_config / vae_config
DIT_SIZES = dict(num_attention_heads=4, attention_head_dim=32, text_dim=32, freq_dim=64, ffn_dim=512, num_layers=4,
                 rope_max_seq_len=64)
# Phase 1 of each VAE type (see train_vae): its sizes and what it trains on (random `window`-frame
# `crop` x `crop` pieces of the clips, `batch` per step). The Wan2.1 VAE trains on whole-frame
# 9-frame windows at the smaller sizes: on 5-frame 32x32 crops it learned slower and drifted over
# whole clips (one run: 17.5 dB against 21.7; benchmarks/RESULTS.md), and with decoder base 16 its
# shape-pixel L1 stalled at 0.46 by step 1100 (0.30 at these sizes by then), while the Wan2.2 VAE gained
# from both the crops and the larger sizes.
VAE_RECIPES = {
    "wan2.1": dict(base_dim=8, decoder_base_dim=12, window=9, crop=64, batch=4),
    "wan2.2": dict(base_dim=12, decoder_base_dim=16, window=5, crop=32, batch=8),
}
VAE_ARCH = dict(dim_mult=[1, 2, 2, 2], num_res_blocks=1, attn_scales=[])
VAE_KINDS = ("wan2.1", "wan2.2")
SHAPE_WEIGHT = 10.0  # loss weight of shape pixels against background pixels (VAEs and DiTs)
EMA_DECAY = 0.999
COND_FIRST, COND_BOTH = 0.35, 0.25  # i2v condition mix: first frame, first + last, the rest none


@dataclass
class Budget:
    """Steps per stage; --scale multiplies them (the full run is scale 1)."""

    vae21: int = 1500
    vae22: int = 4500
    vae21_full: int = 350
    vae22_full: int = 280
    clips: int = 1500
    ti2v: int = 5000
    i2v: int = 1800
    batch_vae_full: int = 2
    batch_dit: int = 32

    def scaled(self, k: float) -> "Budget":
        from dataclasses import replace

        steps = {f: max(40, int(round(v * k))) for f, v in vars(self).items() if not f.startswith("batch_")}
        return replace(self, **steps)


class Log:
    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def __call__(self, stage: str, step: int, **vals) -> None:
        rec = {"stage": stage, "step": step, "time": round(time.time(), 1), **{k: round(float(v), 6) for k, v in vals.items()}}
        with open(self.path, "a") as f:
            f.write(json.dumps(rec) + "\n")
        print(json.dumps(rec), flush=True)


def _clip_batch(rng: random.Random, n: int, frames: int = FRAMES, size: int = SIZE, masks: bool = False,
                held_out: bool = False, window: tuple[int, int] | None = None):
    """n random clips (B, T, H, W, 3) uint8 and their captions; with masks=True also where the
    shapes are (B, T, H, W) bool, from the difference to the clip's background alone. With
    held_out=True a clip showing one of shapes.HELD_OUT's combinations is redrawn (the DiT data).
    window=(t0, t1) renders only frames t0 .. t1 - 1 of each clip (rendering is most of a small
    VAE step's time otherwise)."""
    from wanctl.toy.shapes import HELD_OUT, background, random_clip, render_frame

    clips = []
    while len(clips) < n:
        clip = random_clip(rng.randrange(1 << 30), size, size, frames, n_shapes=rng.choice([1, 1, 2]))
        if held_out and any(s.combination() in HELD_OUT for s in clip.shapes):
            continue
        clips.append(clip)
    t0, t1 = window or (0, frames)
    videos = np.stack([np.stack([render_frame(c, t) for t in range(t0, t1)]) for c in clips])
    if not masks:
        return videos, [c.caption() for c in clips]
    bg = np.stack([np.clip(background(c) + 0.5, 0, 255).astype(np.uint8) for c in clips])[:, None]
    fg = np.abs(videos.astype(np.int16) - bg.astype(np.int16)).max(axis=-1) > 12
    return videos, [c.caption() for c in clips], fg


def _to_pixels(arr: np.ndarray):
    import torch

    return torch.from_numpy(arr).permute(0, 4, 1, 2, 3).float() / 255.0 * 2.0 - 1.0  # (B, 3, T, H, W)


# --------------------------------------------------------------------------- VAEs


def vae_dir(work: Path, kind: str) -> Path:
    """The finished VAE of a kind (after both phases)."""
    return work / f"vae-{kind}-full"


def train_vae(kind: str, steps: int, work: Path, log: Log, seed: int, stop_after: int = 0,
              full: bool = False, batch_full: int = 2) -> Path | None:
    """Phase 1 (full=False): from scratch on the short windows (and crops) of VAE_RECIPES[kind],
    cheap. Phase 2 (full=True): fine-tune phase 1 on whole 17-frame clips, batch_full per step.
    The causal VAE carries feature caches from chunk to chunk, so it is recurrent in time: trained
    on 2-3 latent frames only, it drifts on the later ones; a phase on whole clips fixes that."""
    import torch
    from diffusers import AutoencoderKLWan

    out = vae_dir(work, kind) if full else work / f"vae-{kind}"
    if (out / "config.json").exists():
        return out
    torch.manual_seed(seed)
    rng = random.Random(seed)
    recipe = VAE_RECIPES[kind]
    if full:
        vae = AutoencoderKLWan.from_pretrained(str(work / f"vae-{kind}"))
        window, crop, batch, lr, stage = FRAMES, SIZE, batch_full, 5e-4, f"vae-{kind}-full"
    else:
        vae = AutoencoderKLWan(**vae_config(kind, base_dim=recipe["base_dim"], decoder_base_dim=recipe["decoder_base_dim"],
                                            **VAE_ARCH))
        window, crop, batch, lr, stage = recipe["window"], recipe["crop"], recipe["batch"], 2e-3, f"vae-{kind}"
    vae.train()
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    avg = favg = None
    for step in range(1, steps + 1):
        t0 = rng.randrange(0, FRAMES - window + 1)  # a random window of a full clip
        clips, _, shapes = _clip_batch(rng, batch, masks=True, window=(t0, t0 + window))
        y0, x0 = rng.randrange(0, SIZE - crop + 1), rng.randrange(0, SIZE - crop + 1)  # and a random crop of it
        win = (slice(None), slice(None), slice(None), slice(y0, y0 + crop), slice(x0, x0 + crop))
        x = _to_pixels(clips)[win]
        fg = torch.from_numpy(shapes[:, None]).float()[win]  # (B, 1, window, crop, crop)
        post = vae.encode(x).latent_dist
        # decode the posterior mean: a near-deterministic autoencoder learns the shapes far faster
        # on a CPU budget than one decoding noisy samples (the KL term only keeps latents bounded)
        y = vae.decode(post.mode()).sample
        # shapes cover a few percent of the pixels: weight them so the background does not win
        # (without this the VAE learns backgrounds and grey blobs: the shapes' colour comes last)
        w = 1.0 + (SHAPE_WEIGHT - 1.0) * fg
        rec = (y - x).abs()
        loss = (rec * w).mean() + ((y - x) ** 2 * w).mean() + 1e-6 * post.kl().mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        sched.step()
        l1 = rec.mean().item()
        avg = l1 if avg is None else 0.95 * avg + 0.05 * l1
        fg_l1 = (rec * fg).sum().item() / max(fg.sum().item() * 3, 1.0)
        favg = fg_l1 if step == 1 else 0.95 * favg + 0.05 * fg_l1
        if step % 50 == 0 or step == steps:
            log(stage, step, l1=avg, shape_l1=favg)
        if step == stop_after:
            return None  # a check of the loss curve's start (--stop-after): nothing is saved
    vae.eval()
    _set_latent_stats(vae, rng)
    vae.save_pretrained(str(out), safe_serialization=True)
    return out


def _set_latent_stats(vae, rng: random.Random) -> None:
    import torch

    with torch.inference_mode():
        clips, _ = _clip_batch(rng, 32)
        mu = vae.encode(_to_pixels(clips)).latent_dist.mode()
    mean = mu.mean(dim=(0, 2, 3, 4))
    std = mu.std(dim=(0, 2, 3, 4)).clamp(min=1e-3)
    vae.register_to_config(latents_mean=[round(v, 5) for v in mean.tolist()], latents_std=[round(v, 5) for v in std.tolist()])


# --------------------------------------------------------------------------- data


def build_data(work: Path, kind: str, n: int, seed: int, log: Log) -> Path:
    """Clips -> normalized latents of one VAE (for wan2.1 also the i2v condition latents) and the
    caption embeddings. Both kinds draw the same clips from the same seed, so the two data stages
    (and the two training lanes after them) can run side by side."""
    import torch
    from diffusers import AutoencoderKLWan

    from wanctl.core.models.codec import normalize
    from wanctl.core.families import DEFAULT_NEGATIVE_PROMPT

    out = work / f"data-{kind}.pt"
    if out.exists():
        return out
    rng = random.Random(seed)
    vae = AutoencoderKLWan.from_pretrained(str(vae_dir(work, kind))).eval()
    stride = 16 if kind == "wan2.2" else 8
    lat, masks, cond_first, cond_both, captions = [], [], [], [], []
    with torch.inference_mode():
        for start in range(0, n, 16):
            clips, caps, fg = _clip_batch(rng, min(16, n - start), masks=True, held_out=True)
            x = _to_pixels(clips)
            lat.append(normalize(vae.encode(x).latent_dist.mode(), vae).half())
            masks.append(latent_mask(torch.from_numpy(fg), stride))
            if kind == "wan2.1":
                # the i2v condition videos [first, 0..., (last)] (0 is mid-gray), as conditioning.py builds them
                video = torch.zeros_like(x)
                video[:, :, 0] = x[:, :, 0]
                cond_first.append(normalize(vae.encode(video).latent_dist.mode(), vae).half())
                video[:, :, -1] = x[:, :, -1]
                cond_both.append(normalize(vae.encode(video).latent_dist.mode(), vae).half())
            captions += caps
            if (start // 16) % 20 == 0:
                log(f"data-{kind}", start + len(caps), clips=start + len(caps))
    data = {"latents": torch.cat(lat), "shape_masks": torch.cat(masks), "captions": captions,
            "embeddings": _caption_embeddings(work, sorted(set(captions)) + ["", DEFAULT_NEGATIVE_PROMPT], kind)}
    if kind == "wan2.1":
        data.update(cond_first=torch.cat(cond_first), cond_both=torch.cat(cond_both))
    tmp = out.with_suffix(".tmp")
    torch.save(data, tmp)
    tmp.replace(out)
    return out


def latent_mask(fg, stride: int):
    """Pixel shape masks (B, T, H, W) bool -> (B, T_latent, H / stride, W / stride) bool: a latent
    pixel is a shape pixel when any pixel of the frames and the square it encodes is (latent frame 0
    encodes frame 0, latent frame k > 0 frames 4k-3 .. 4k, as the causal VAE groups them)."""
    import torch
    import torch.nn.functional as F

    b, t, h, w = fg.shape
    groups = [fg[:, :1]] + [fg[:, 4 * k - 3 : 4 * k + 1] for k in range(1, (t - 1) // 4 + 1)]
    per_frame = torch.stack([g.any(dim=1) for g in groups], dim=1).float()  # (B, T_latent, H, W)
    return F.max_pool2d(per_frame.flatten(0, 1)[:, None], stride)[:, 0].view(b, len(groups), h // stride, w // stride) > 0


def _caption_embeddings(work: Path, prompts: list[str], lane: str) -> dict:
    """Embeddings of every caption with the built-in tiny umT5 (frozen, random, fixed seed)."""
    from wanctl.core.families import FAMILIES
    from wanctl.core.models.builtin import write_text_components
    from wanctl.core.models.bundle import LoadOptions, ModelBundle, ModelSpec
    from wanctl.core.models.diffusers_layout import DiffusersLayout
    from wanctl.core.models.text import encode_prompts

    text_dir = work / "text"
    if not (text_dir / "text_encoder").exists():
        # each lane writes its own copy and moves it into place: the two lanes may race here,
        # and the components are deterministic, so whichever lands first is the same files
        tmp = work / f"text-{lane}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        write_text_components(tmp)
        try:
            tmp.rename(text_dir)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
    # a folder with only the text components: its layout is given, not read
    spec = ModelSpec(name="toy-text", layout=DiffusersLayout(text_dir, FAMILIES["t2v-a14b"], model_index={}, configs={}))
    bundle = ModelBundle(spec, LoadOptions(device="cpu", dtype="fp32", cache=False))
    out = {}
    for i in range(0, len(prompts), 64):
        out.update({p: e.half() for p, e in encode_prompts(bundle, prompts[i : i + 64]).items()})
    return out


# --------------------------------------------------------------------------- DiTs


def _timesteps(rng: torch.Generator, b: int):
    import torch

    u = torch.rand(b, generator=rng)
    s = 3.0 * u / (1.0 + 2.0 * u)
    t = (s * 1000).long().clamp(max=999)
    return t.float() / 1000.0, t  # the level the noise is mixed at equals the model's timestep


def _text_batch(data, idx, rng: random.Random):
    import torch

    from wanctl.core.families import DEFAULT_NEGATIVE_PROMPT

    embs = []
    for i in idx:
        cap = data["captions"][i]
        r = rng.random()
        if r < 0.05:
            cap = ""
        elif r < 0.10:
            cap = DEFAULT_NEGATIVE_PROMPT
        embs.append(data["embeddings"][cap])
    return torch.cat(embs).float()


def train_dit(family: str, steps: int, batch: int, work: Path, log: Log, seed: int, stop_after: int = 0) -> Path | None:
    import torch
    from diffusers import WanTransformer3DModel

    out = work / f"dit-{family}"
    if (out / "config.json").exists():
        return out
    ti2v = family == "ti2v"
    data = torch.load(work / f"data-{'wan2.2' if ti2v else 'wan2.1'}.pt")
    lat = data["latents"].float()
    # shapes cover a few latent pixels: their flow-matching error counts SHAPE_WEIGHT times, or the
    # DiT learns backgrounds first and the shapes (what the prompt is about) last
    pixel_weight = 1.0 + (SHAPE_WEIGHT - 1.0) * data["shape_masks"].float()[:, None]  # (N, 1, T, h, w)
    n = lat.shape[0]
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    rng = random.Random(seed)
    cfg = dit_config(**DIT_SIZES, in_channels=48 if ti2v else 36, out_channels=48 if ti2v else 16)
    dit = WanTransformer3DModel(**cfg)
    ema = EMA(dit)
    opt = torch.optim.AdamW(dit.parameters(), lr=1e-3, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-3, total_steps=steps, pct_start=0.05)
    avg = None
    _, _, T, h, w = lat.shape
    per_frame = (h // 2) * (w // 2)
    for step in range(1, steps + 1):
        idx = torch.randint(0, n, (batch,), generator=gen).tolist()
        x0 = lat[idx]
        eps = torch.randn(x0.shape, generator=gen)
        s, t = _timesteps(gen, batch)
        sv = s.view(-1, 1, 1, 1, 1)
        xs = (1 - sv) * x0 + sv * eps
        target = eps - x0
        text = _text_batch(data, idx, rng)
        weight = pixel_weight[idx].clone()
        if ti2v:
            image = torch.rand(batch, generator=gen) < 0.5
            xs[image, :, 0] = x0[image, :, 0]  # pinned clean first frame
            ts = t.view(-1, 1).repeat(1, T * per_frame)
            ts[image, :per_frame] = 0
            weight[image, :, 0] = 0.0
            inp = xs
        else:
            r = torch.rand(batch, generator=gen)
            cond = torch.zeros(batch, 20, T, h, w)
            # t2v (toy-t2v-a14b is this network with the condition at zero) gets the largest share
            first = r < COND_FIRST
            both = (r >= COND_FIRST) & (r < COND_FIRST + COND_BOTH)
            for mask_idx, key, last in ((first, "cond_first", False), (both, "cond_both", True)):
                if mask_idx.any():
                    from wanctl.core.sampling.conditioning import i2v_mask

                    m = i2v_mask(FRAMES, T, h, w, True, last, batch=int(mask_idx.sum()))
                    cond[mask_idx] = torch.cat([m, data[key][torch.tensor(idx)[mask_idx]].float()], dim=1)
            inp = torch.cat([xs, cond], dim=1)
            ts = t
        pred = dit(hidden_states=inp, timestep=ts, encoder_hidden_states=text, return_dict=False)[0]
        loss = (((pred - target) ** 2) * weight).sum() / (weight.sum() * pred.shape[1])
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(dit.parameters(), 1.0)
        opt.step()
        sched.step()
        ema.update(dit, step)
        avg = loss.item() if avg is None else 0.98 * avg + 0.02 * loss.item()
        if step % 100 == 0 or step == steps:
            log(f"dit-{family}", step, loss=avg)
        if step == stop_after:
            return None
    ema.copy_to(dit)  # the averaged weights are the ones shipped
    dit.eval().save_pretrained(str(out), safe_serialization=True)
    return out


class EMA:
    """Exponential moving average of a model's weights, decay warming up as (1 + k) / (10 + k) to
    EMA_DECAY: sampling from the average is smoother than from the last noisy step."""

    def __init__(self, model):
        self.shadow = {k: v.detach().clone().float() for k, v in model.state_dict().items()}

    def update(self, model, step: int) -> None:
        import torch

        d = min(EMA_DECAY, (1 + step) / (10 + step))
        with torch.no_grad():
            for k, v in model.state_dict().items():
                self.shadow[k].mul_(d).add_(v.detach().float(), alpha=1 - d)

    def copy_to(self, model) -> None:
        model.load_state_dict({k: v.to(model.state_dict()[k].dtype) for k, v in self.shadow.items()})


def t2v_from_i2v(i2v):
    """The t2v DiT inside an i2v DiT trained with condition dropout: the same weights with only
    the first 16 input channels of the patch embedding. Exact: the dropped condition is zeros."""
    import torch
    from diffusers import WanTransformer3DModel

    cfg = dict(i2v.config)
    cfg = {k: v for k, v in cfg.items() if not k.startswith("_")}
    cfg["in_channels"] = 16
    t2v = WanTransformer3DModel(**cfg)
    sd = dict(i2v.state_dict())
    sd["patch_embedding.weight"] = sd["patch_embedding.weight"][:, :16].clone()
    t2v.load_state_dict(sd)
    return t2v.eval().to(torch.float32)


# --------------------------------------------------------------------------- assembly

MODEL_CARD = """# {name}: a toy {family} model trained by wanctl

A small model with the real diffusers architecture of Wan2.2 {family_title}, trained from scratch
on a CPU by `python -m wanctl.toy.train` ({minutes:.0f} minutes for all three toy models), for
demos, tests and algorithm measurements. It is not a video model of the world: it knows only
synthetic 17-frame 64x64 clips of one or two coloured shapes (circle, square, triangle; 8 colours)
moving left, right, up or down over plain or gradient backgrounds, with captions like
"a red circle moving right on a black background".

| component | what | parameters |
|---|---|---|
| vae | AutoencoderKLWan, {vae} type (base {vae_base}, decoder base {vae_dec}), random {window}-frame {crop}x{crop} pieces of clips, then whole clips; L1 + L2 (shape pixels x{shape_weight:g}) | {vae_params:,} |
| transformer{experts} | WanTransformer3DModel, dim 128 (4 heads x 32), 4 layers, ffn 512 | {dit_params:,} |
| text_encoder | umT5 encoder, d_model 32, random and frozen (seed {seed}) | {te_params:,} |

Training: flow matching (x_s = (1-s) x0 + s eps, target eps - x0), s = shift-3 of U(0, 1),
t = int(1000 s), latent pixels covering a shape weighted x{shape_weight:g} in the loss, AdamW with
one-cycle LR, batch {batch}, {dit_steps} steps on {clips} clips, fixed seeds; the shipped weights are
the exponential moving average (decay {ema}) of the trained ones.
{conditioning}
Captions were dropped 10% of the time (to "" or to the official negative prompt). No training
clip shows one of the 12 (colour, shape, direction) combinations of `wanctl.toy.shapes.HELD_OUT`:
benchmarks/quality.py measures prompt adherence on those.
Trained on: {machine}.

Final losses (exponential moving average; the full log is `train_log.jsonl`):
{losses}

Weights are stored in fp16. Use at 64x64 (or other multiples of {mult}), 17 frames, 16 fps.
"""


def assemble(work: Path, dest: Path, log_path: Path, budget: Budget, seed: int) -> list[Path]:
    import torch
    from diffusers import AutoencoderKLWan, WanTransformer3DModel

    from wanctl.core.models.builtin import write_pipeline_files

    losses = _final_losses(log_path)
    minutes = _training_minutes(log_path)
    vaes = {k: AutoencoderKLWan.from_pretrained(str(vae_dir(work, k))) for k in VAE_KINDS}
    ti2v = WanTransformer3DModel.from_pretrained(str(work / "dit-ti2v"))
    i2v = WanTransformer3DModel.from_pretrained(str(work / "dit-i2v"))
    t2v = t2v_from_i2v(i2v)
    from transformers import UMT5EncoderModel

    te_params = sum(p.numel() for p in UMT5EncoderModel.from_pretrained(str(work / "text" / "text_encoder")).parameters())
    made = []
    for name, family, vae_kind, dit in (("toy-ti2v-5b", "ti2v-5b", "wan2.2", ti2v), ("toy-t2v-a14b", "t2v-a14b", "wan2.1", t2v),
                                        ("toy-i2v-a14b", "i2v-a14b", "wan2.1", i2v)):
        out = dest / name
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        shutil.copytree(work / "text" / "tokenizer", out / "tokenizer")
        shutil.copytree(work / "text" / "text_encoder", out / "text_encoder")
        factors = fit_rgb_factors(vaes[vae_kind].to(torch.float32), seed)
        vaes[vae_kind].to(torch.float16).save_pretrained(str(out / "vae"), safe_serialization=True)
        (out / "vae" / "latent_rgb_factors.json").write_text(json.dumps(factors, indent=1))
        experts = ["transformer"] + (["transformer_2"] if family != "ti2v-5b" else [])
        for e in experts:
            dit.to(torch.float16).save_pretrained(str(out / e), safe_serialization=True)
        write_pipeline_files(out, family)
        (out / "wanctl_presets.json").write_text(json.dumps(TOY_PRESETS, indent=2) + "\n")
        _drop_machine_paths(out)
        shutil.copy(log_path, out / "train_log.jsonl")
        stage = "dit-ti2v" if family == "ti2v-5b" else "dit-i2v"
        cond = {
            "ti2v-5b": "Half the samples in image mode (latent frame 0 clean, timestep 0 on its tokens, no loss there), half text-only.",
            "i2v-a14b": f"i2v condition: first frame {COND_FIRST:.0%}, first + last frame {COND_BOTH:.0%}, dropped to zeros "
                        f"{1 - COND_FIRST - COND_BOTH:.0%}. Both experts share the network.",
            "t2v-a14b": "Derived exactly from toy-i2v-a14b (trained with condition dropout to zeros): the patch embedding's first 16 input channels. Both experts share the network.",
        }[family]
        card = MODEL_CARD.format(
            name=name, family=family, family_title=family.upper(), minutes=minutes, vae=vae_kind,
            vae_params=sum(p.numel() for p in vaes[vae_kind].parameters()),
            dit_params=sum(p.numel() for p in dit.parameters()), experts=" / transformer_2" if len(experts) == 2 else "",
            te_params=te_params, seed=seed, batch=budget.batch_dit, vae_base=VAE_RECIPES[vae_kind]["base_dim"],
            vae_dec=VAE_RECIPES[vae_kind]["decoder_base_dim"], window=VAE_RECIPES[vae_kind]["window"],
            crop=VAE_RECIPES[vae_kind]["crop"], shape_weight=SHAPE_WEIGHT,
            clips=budget.clips, ema=EMA_DECAY, machine=_machine(),
            dit_steps=budget.ti2v if family == "ti2v-5b" else budget.i2v, conditioning=cond,
            losses="\n".join(f"- {k}: {v:.4f}" for k, v in losses.items() if k.startswith(("vae-" + vae_kind, stage))),
            mult=32 if family == "ti2v-5b" else 16,
        )
        (out / "MODEL_CARD.md").write_text(card)
        made.append(out)
    return made


def _machine() -> str:
    import platform

    import torch

    return f"{os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), torch {torch.__version__}"


def _drop_machine_paths(folder: Path) -> None:
    """diffusers writes the folder a model was loaded from into its config (``_name_or_path``): a
    path on the training machine, which a shipped model must not carry."""
    for cfg in sorted(folder.glob("*/config.json")):
        data = json.loads(cfg.read_text())
        if data.pop("_name_or_path", None) is not None:
            cfg.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def fit_rgb_factors(vae, seed: int) -> dict:
    """Least-squares linear map from a normalized latent pixel to its RGB patch mean (for
    `wanctl preview`), fitted on fresh clips: {"rgb_factors": C x 3, "rgb_bias": 3}."""
    import torch
    import torch.nn.functional as F

    from wanctl.core.models.codec import normalize

    rng = random.Random(seed)
    clips, _ = _clip_batch(rng, 48)
    x = _to_pixels(clips)  # (B, 3, 17, 64, 64)
    with torch.inference_mode():
        z = normalize(vae.encode(x).latent_dist.mode(), vae)  # (B, C, 5, h, w)
    b, c, t, h, w = z.shape
    # latent frame 0 is pixel frame 0; latent frame k > 0 covers pixel frames 4k-3 .. 4k
    groups = [x[:, :, :1]] + [x[:, :, 4 * k - 3 : 4 * k + 1] for k in range(1, t)]
    rgb = torch.stack([F.adaptive_avg_pool2d(g.mean(dim=2), (h, w)) for g in groups], dim=2)
    a = z.permute(0, 2, 3, 4, 1).reshape(-1, c)
    y = rgb.permute(0, 2, 3, 4, 1).reshape(-1, 3)
    a1 = torch.cat([a, torch.ones(a.shape[0], 1)], dim=1)
    sol = torch.linalg.lstsq(a1, y).solution
    return {"rgb_factors": [[round(v, 5) for v in row] for row in sol[:c].tolist()],
            "rgb_bias": [round(v, 5) for v in sol[c].tolist()],
            "note": "fitted by wanctl.toy.train: normalized latent pixel -> RGB in [-1, 1]"}


def _training_minutes(log_path: Path) -> float:
    """Wall minutes of the slower lane, from the log: each stage's span between its first and last
    record, stretched by one logging interval. A stage restarted from scratch (its step count
    goes back) counts from the restart."""
    spans: dict = {}
    for line in log_path.read_text().splitlines():
        rec = json.loads(line)
        pts = spans.setdefault(rec["stage"], [])
        if pts and rec["step"] <= pts[-1][0]:
            pts.clear()
        pts.append((rec["step"], rec["time"]))
    def span(stage: str) -> float:
        pts = spans.get(stage, [])
        if len(pts) < 2:
            return 0.0
        (s0, t0), (s1, t1) = pts[0], pts[-1]
        return (t1 - t0) * s1 / max(s1 - s0, 1)
    lanes = [["vae-wan2.2", "vae-wan2.2-full", "data-wan2.2", "dit-ti2v"], ["vae-wan2.1", "vae-wan2.1-full", "data-wan2.1", "dit-i2v"]]
    return max(sum(span(st) for st in lane) for lane in lanes) / 60


def _final_losses(log_path: Path) -> dict:
    last: dict = {}
    for line in log_path.read_text().splitlines():
        rec = json.loads(line)
        key = "l1" if "l1" in rec else "loss" if "loss" in rec else None
        if key:
            last[f"{rec['stage']} {key}"] = rec[key]
    return last


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Train the wanctl toy models (see the module docstring).")
    ap.add_argument("out", help="folder for the finished models (the three toy-* folders)")
    ap.add_argument("--work", help="folder for intermediate results (default OUT/work)")
    ap.add_argument("--quick", action="store_true", help="a few steps of every stage: checks the pipeline in minutes")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every stage's steps")
    ap.add_argument("--stages", default="all",
                    help="comma-separated subset of vae21,vae22,vae21full,vae22full,data21,data22,ti2v,i2v,assemble (default: "
                         "all, as two lanes side by side: vae22 -> vae22full -> data22 -> ti2v and the same for 21 / i2v)")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--stop-after", type=int, default=0, metavar="N",
                    help="stop each training stage after N steps (same schedule), save nothing: checks the loss curve's start")
    ap.add_argument("--compare-log", metavar="REF", help="after the run, compare its losses with REF (a train_log.jsonl)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads per process (default: cores / lanes)")
    a = ap.parse_args(argv)
    out = Path(a.out)
    work = Path(a.work) if a.work else out / "work"
    work.mkdir(parents=True, exist_ok=True)
    if a.stages == "all":
        # tiny models use two cores badly from one process: two single-threaded lanes finish
        # both DiTs in about the time one two-threaded run takes for one
        _run_lanes(a, work)
        stages = ["assemble"]
    else:
        stages = a.stages.split(",")
    import torch

    torch.set_num_threads(a.threads or os.cpu_count() or 1)
    from wanctl.core.models.runtime import quiet_libraries

    quiet_libraries()
    budget = Budget().scaled(0.004 if a.quick else a.scale)
    if a.quick:
        budget.clips = 32
    log = Log(work / "train_log.jsonl")
    if "vae21" in stages:
        train_vae("wan2.1", budget.vae21, work, log, a.seed, a.stop_after)
    if "vae22" in stages:
        train_vae("wan2.2", budget.vae22, work, log, a.seed + 1, a.stop_after)
    if "vae21full" in stages:
        train_vae("wan2.1", budget.vae21_full, work, log, a.seed + 5, a.stop_after, full=True, batch_full=budget.batch_vae_full)
    if "vae22full" in stages:
        train_vae("wan2.2", budget.vae22_full, work, log, a.seed + 6, a.stop_after, full=True, batch_full=budget.batch_vae_full)
    for kind, name in (("wan2.1", "data21"), ("wan2.2", "data22")):
        if name in stages:
            build_data(work, kind, budget.clips, a.seed + 2, log)
    if "ti2v" in stages:
        train_dit("ti2v", budget.ti2v, budget.batch_dit, work, log, a.seed + 3, a.stop_after)
    if "i2v" in stages:
        train_dit("i2v", budget.i2v, budget.batch_dit, work, log, a.seed + 4, a.stop_after)
    if "assemble" in stages:
        for p in assemble(work, out, work / "train_log.jsonl", budget, a.seed):
            print(f"wrote {p}")
    if a.compare_log:
        rows = compare_logs(Path(a.compare_log), work / "train_log.jsonl")
        for stage, step, key, ref, new in rows:
            print(f"{stage:12s} step {step:5d} {key:8s} reference {ref:.5f}  re-run {new:.5f}  diff {abs(new - ref) / abs(ref):.2%}")
        if rows:
            print(f"max relative difference: {max(abs(n - r) / abs(r) for *_, r, n in rows):.2%}")


def compare_logs(ref: Path, new: Path) -> list[tuple]:
    """(stage, step, quantity, reference value, re-run value) for every logged point both runs share."""
    def points(path: Path) -> dict:
        out = {}
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            for key in ("l1", "shape_l1", "loss"):
                if key in rec:
                    out[(rec["stage"], rec["step"], key)] = rec[key]
        return out

    a, b = points(ref), points(new)
    return [(*k, a[k], b[k]) for k in sorted(a.keys() & b.keys())]


def _run_lanes(a, work: Path) -> None:
    import subprocess
    import sys

    lanes = ["vae22,vae22full,data22,ti2v", "vae21,vae21full,data21,i2v"]
    threads = a.threads or max(1, (os.cpu_count() or 2) // len(lanes))
    base = [sys.executable, "-m", "wanctl.toy.train", a.out, "--work", str(work), "--seed", str(a.seed),
            "--threads", str(threads), "--scale", str(a.scale)] + (["--quick"] if a.quick else [])
    procs = [subprocess.Popen(base + ["--stages", lane]) for lane in lanes]
    codes = [p.wait() for p in procs]
    if any(codes):
        raise SystemExit(f"a training lane failed (exit codes {codes}); rerun the same command to resume")


if __name__ == "__main__":
    main()
