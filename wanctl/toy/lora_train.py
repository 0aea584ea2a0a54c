"""Fine-tune a small LoRA on the toy ti2v-5b DiT (text mode) so that one property of its output
changes: every shape comes out in one colour, whatever colour the prompt asks for.

Used by ``benchmarks/lora_toy.py`` (which then measures the LoRA through ``wanctl t2v --lora``).

Data: random one- or two-shape clips of :func:`wanctl.toy.shapes.random_clip`, rendered with every
shape recoloured to the target colour but captioned with the colours they had before, encoded by
the toy's own VAE (posterior mean, normalized: the latents the DiT was trained on, see
:func:`wanctl.toy.train.build_data`) and the captions by its text encoder. Loss: the toy's own
flow-matching objective in text mode (the timestep draw and the 10% caption dropout of
:mod:`wanctl.toy.train`, so the unconditional branch of CFG learns the colour too), with the
latent pixels the shapes cover weighted x10 (``shape_weight``) as train.py weights the VAE's
shape pixels: with the uniform loss, 3.5 minutes of training mostly dimmed the shapes under CFG
instead of recolouring them (benchmarks/RESULTS.md).

The adapter is hand-written: each targeted ``nn.Linear`` becomes ``W x + (alpha / rank) B A x``
with the base frozen, ``A`` random and ``B`` zero at the start (the LoRA starts as a no-op). The
file is written in the diffusers / PEFT layout (``transformer.<module>.lora_A.weight`` /
``lora_B.weight``, rank and alpha in the ``lora_adapter_metadata`` header, as diffusers saves
them), which :mod:`wanctl.core.models.lora` reads.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

# every linear layer of a Wan block: self- and cross-attention projections and the FFN
BLOCK_LINEARS = ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0",
                 "attn2.to_q", "attn2.to_k", "attn2.to_v", "attn2.to_out.0", "ffn.net.0.proj", "ffn.net.2")


@dataclass
class LoraTrainConfig:
    model: str = "toy-ti2v-5b"
    color: str = "green"  # the colour every shape gets
    rank: int = 8
    alpha: float = 8.0  # scale alpha / rank = 1
    lr: float = 3e-3
    batch: int = 16
    clips: int = 192
    seconds: float = 210.0  # training budget (wall clock, after the data is built)
    # loss weight of the latent pixels the shapes cover (1: train.py's uniform loss): the colour
    # lives in a few of the 5x4x4 latent pixels, and a uniform loss spends the small budget on the
    # background
    shape_weight: float = 10.0
    max_steps: int = 0  # 0: as many as the budget allows
    seed: int = 77
    threads: int = 1  # torch threads (0: all cores; one is faster on a shared 2-core machine)


class LoRALinear(torch.nn.Module):
    """``base(x) + (alpha / rank) * B A x`` with ``base`` frozen."""

    def __init__(self, base: torch.nn.Linear, rank: int, alpha: float, gen: torch.Generator):
        super().__init__()
        self.base = base.requires_grad_(False)
        # A as PEFT initialises it (uniform, bound 1/sqrt(in)), B zero: the LoRA is a no-op at step 0
        bound = 1.0 / math.sqrt(base.in_features)
        self.lora_A = torch.nn.Parameter((torch.rand(rank, base.in_features, generator=gen) * 2 - 1) * bound)
        self.lora_B = torch.nn.Parameter(torch.zeros(base.out_features, rank))
        self.scale = alpha / rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.lora_A.t() @ self.lora_B.t()) * self.scale


def add_adapters(dit, rank: int, alpha: float, seed: int = 0, modules: tuple = BLOCK_LINEARS) -> dict:
    """Replace every targeted linear of every block by a LoRA-wrapped one, in place; the base
    model is frozen. Returns {diffusers module name: adapter module}."""
    dit.requires_grad_(False)
    gen = torch.Generator().manual_seed(seed)
    adapters = {}
    for i in range(len(dit.blocks)):
        for m in modules:
            name = f"blocks.{i}.{m}"
            parent_name, _, child = name.rpartition(".")
            parent = dit.get_submodule(parent_name)
            wrapped = LoRALinear(dit.get_submodule(name), rank, alpha, gen)
            setattr(parent, child, wrapped)  # to_out.0 / net.2: a ModuleList's children are named "0", "2"
            adapters[name] = wrapped
    return adapters


def save_lora(path: str | Path, pairs: dict, rank: int, alpha: float) -> Path:
    """Write {module: (A (rank, in), B (out, rank))} as a diffusers / PEFT LoRA file (fp32)."""
    from safetensors.torch import save_file

    from wanctl.core.files import atomic_path

    sd = {}
    for name, (a, b) in pairs.items():
        sd[f"transformer.{name}.lora_A.weight"] = a.detach().to(torch.float32).contiguous().clone()
        sd[f"transformer.{name}.lora_B.weight"] = b.detach().to(torch.float32).contiguous().clone()
    meta = {"lora_adapter_metadata": json.dumps({"transformer.r": rank, "transformer.lora_alpha": alpha,
                                                 "transformer.target_modules": list(BLOCK_LINEARS)})}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(str(path), force=True) as tmp:
        save_file(sd, tmp, metadata=meta)
    return path


def recoloured_clips(n: int, color: str, seed: int, masks: bool = False):
    """n random clips rendered with every shape in ``color``: (frames (n, T, H, W, 3) uint8,
    captions naming the original colours); with masks=True also where the shapes are
    (n, T, H, W) bool, from the difference to the clip's background alone (as train._clip_batch)."""
    from wanctl.toy.shapes import random_clip, render
    from wanctl.toy.train import FRAMES, SIZE

    rng = random.Random(seed)
    videos, captions, fg = [], [], []
    for _ in range(n):
        clip = random_clip(rng.randrange(1 << 30), SIZE, SIZE, FRAMES, n_shapes=rng.choice([1, 1, 2]))
        captions.append(clip.caption())
        shown = replace(clip, shapes=[replace(s, color=color) for s in clip.shapes])
        if shown.background == "white" and color == "white":
            shown = replace(shown, background="black")
        video = render(shown)
        videos.append(video)
        if masks:
            bg = render(replace(shown, shapes=[]))
            fg.append(np.abs(video.astype(np.int16) - bg.astype(np.int16)).max(axis=-1) > 12)
    if masks:
        return np.stack(videos), captions, np.stack(fg)
    return np.stack(videos), captions


def latent_weights(fg: np.ndarray, latent_shape: tuple, weight: float) -> torch.Tensor:
    """Per latent pixel loss weights (n, 1, t, h, w): ``weight`` where any pixel of the shapes falls
    in the latent pixel's footprint (frame 0 alone, then groups of 4 frames; square patches), 1
    elsewhere."""
    n, frames, height, width = fg.shape
    t, h, w = latent_shape
    groups = [fg[:, :1]] + [fg[:, 4 * k - 3 : 4 * k + 1] for k in range(1, t)]
    cells = np.stack([g.any(axis=1) for g in groups], axis=1)  # (n, t, H, W)
    cells = cells.reshape(n, t, h, height // h, w, width // w).any(axis=(3, 5))
    return torch.from_numpy(1.0 + (weight - 1.0) * cells.astype(np.float32)).unsqueeze(1)


def build_data(bundle, cfg: LoraTrainConfig, log=print) -> dict:
    """Latents of the recoloured clips and the caption embeddings (as train.build_data stores them)."""
    from wanctl.core.families import DEFAULT_NEGATIVE_PROMPT
    from wanctl.core.models.codec import normalize
    from wanctl.core.models.text import encode_prompts
    from wanctl.toy.train import _to_pixels

    t0 = time.perf_counter()
    videos, captions, fg = recoloured_clips(cfg.clips, cfg.color, cfg.seed, masks=True)
    vae = bundle.vae()
    lat = []
    with torch.inference_mode():
        for start in range(0, len(videos), 16):
            x = _to_pixels(videos[start : start + 16])
            lat.append(normalize(vae.encode(x).latent_dist.mode(), vae).float())
    prompts = sorted(set(captions)) + ["", DEFAULT_NEGATIVE_PROMPT]
    emb = encode_prompts(bundle, prompts)
    log(f"data: {len(videos)} clips recoloured to {cfg.color}, encoded in {time.perf_counter() - t0:.1f} s")
    lat = torch.cat(lat)
    return {"latents": lat, "captions": captions, "embeddings": emb,
            "weights": latent_weights(fg, tuple(lat.shape[2:]), cfg.shape_weight)}


def train_lora(cfg: LoraTrainConfig, out: str | Path, log=print) -> dict:
    """Train and save the LoRA; returns a summary (steps, seconds, losses at the start and end)."""
    import os

    from wanctl.core.models.bundle import LoadOptions, open_bundle
    from wanctl.core.models.runtime import quiet_libraries
    from wanctl.toy.train import _text_batch, _timesteps

    quiet_libraries()
    torch.set_num_threads(cfg.threads or os.cpu_count() or 1)
    torch.manual_seed(cfg.seed)
    bundle = open_bundle(cfg.model, options=LoadOptions(device="cpu", dtype="fp32", cache=False))
    data = build_data(bundle, cfg, log)
    dit = bundle.transformer()
    adapters = add_adapters(dit, cfg.rank, cfg.alpha, cfg.seed)
    params = [p for a in adapters.values() for p in (a.lora_A, a.lora_B)]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    warmup = 20
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    rng = random.Random(cfg.seed + 2)
    lat = data["latents"]
    n, _, T, h, w = lat.shape
    per_frame = (h // 2) * (w // 2)  # tokens per latent frame (patch 1x2x2)
    dit.train()
    losses, avg, step = [], None, 0
    t0 = time.perf_counter()
    while True:
        step += 1
        for g in opt.param_groups:
            g["lr"] = cfg.lr * min(1.0, step / warmup)
        idx = torch.randint(0, n, (cfg.batch,), generator=gen).tolist()
        x0 = lat[idx]
        eps = torch.randn(x0.shape, generator=gen)
        s, t = _timesteps(gen, cfg.batch)
        sv = s.view(-1, 1, 1, 1, 1)
        xs = (1 - sv) * x0 + sv * eps
        ts = t.view(-1, 1).repeat(1, T * per_frame)  # ti2v takes a timestep per token (text mode: all equal)
        pred = dit(hidden_states=xs, timestep=ts, encoder_hidden_states=_text_batch(data, idx, rng), return_dict=False)[0]
        wt = data["weights"][idx]
        loss = (((pred - (eps - x0)) ** 2) * wt).sum() / (wt.sum() * pred.shape[1])
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        avg = loss.item() if avg is None else 0.98 * avg + 0.02 * loss.item()
        losses.append(avg)
        elapsed = time.perf_counter() - t0
        if step % 25 == 0:
            log(f"step {step}: loss {avg:.4f} ({elapsed:.0f} s)")
        if (cfg.max_steps and step >= cfg.max_steps) or (not cfg.max_steps and elapsed >= cfg.seconds):
            break
    dit.eval()
    path = save_lora(out, {k: (a.lora_A, a.lora_B) for k, a in adapters.items()}, cfg.rank, cfg.alpha)
    return {"path": str(path), "steps": step, "seconds": time.perf_counter() - t0, "loss_first": losses[0],
            "loss_last": losses[-1], "layers": len(adapters), "params": sum(p.numel() for p in params)}
