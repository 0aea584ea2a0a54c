"""Tiny LoRA files written in each format wanctl reads, with the merge each should give.

A LoRA here is a dict {diffusers module: (down (r, in), up (out, r), alpha or None)} plus full
deltas {diffusers parameter: tensor}; ``write(path, fmt, pairs, diffs)`` writes it as a file of
that format, ``expected(base, pairs, diffs, strength)`` is the hand merge
``W + strength * alpha / rank * up @ down`` (alpha None: scale 1).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

# diffusers module -> official WanModel name (wan/modules/model.py)
_BLOCK = {
    "attn1.to_q": "self_attn.q", "attn1.to_k": "self_attn.k", "attn1.to_v": "self_attn.v", "attn1.to_out.0": "self_attn.o",
    "attn2.to_q": "cross_attn.q", "attn2.to_k": "cross_attn.k", "attn2.to_v": "cross_attn.v", "attn2.to_out.0": "cross_attn.o",
    "ffn.net.0.proj": "ffn.0", "ffn.net.2": "ffn.2", "norm2": "norm3", "attn1.norm_q": "self_attn.norm_q",
}
_TOP = {"proj_out": "head.head", "condition_embedder.text_embedder.linear_1": "text_embedding.0",
        "condition_embedder.text_embedder.linear_2": "text_embedding.2"}
BLOCK_LINEARS = [k for k in _BLOCK if not k.startswith(("norm", "attn1.norm"))]


def official(module: str) -> str:
    if module in _TOP:
        return _TOP[module]
    _, i, rest = module.split(".", 2)
    return f"blocks.{i}.{_BLOCK[rest]}"


def make_pairs(model, modules: list[str], rank: int = 4, alpha: float | None = 2.0, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name in modules:
        lin = model.get_submodule(name)
        down = torch.randn(rank, lin.in_features, generator=g) * 0.1
        up = torch.randn(lin.out_features, rank, generator=g) * 0.1
        out[name] = (down, up, alpha)
    return out


def make_diffs(model, params: list[str], seed: int = 1) -> dict:
    g = torch.Generator().manual_seed(seed)
    sd = dict(model.named_parameters())
    return {p: torch.randn(sd[p].shape, generator=g) * 0.05 for p in params}


def write(path: Path, fmt: str, pairs: dict, diffs: dict | None = None) -> Path:
    """fmt: diffusers (no alpha), diffusers-meta (alpha in the adapter metadata), diffusers-alpha
    (<module>.alpha keys), official (lora_down/up + .alpha, diffs as .diff/.diff_b), official-AB
    (lora_A/B, no alpha), kohya (lora_unet_* + .alpha)."""
    sd, metadata = {}, None
    for name, (down, up, alpha) in pairs.items():
        if fmt.startswith("diffusers"):
            sd[f"transformer.{name}.lora_A.weight"] = down.clone()
            sd[f"transformer.{name}.lora_B.weight"] = up.clone()
            if fmt == "diffusers-alpha":
                sd[f"transformer.{name}.alpha"] = torch.tensor(float(alpha))
        elif fmt.startswith("official"):
            o = official(name)
            a, b = ("lora_A", "lora_B") if fmt == "official-AB" else ("lora_down", "lora_up")
            sd[f"diffusion_model.{o}.{a}.weight"] = down.clone()
            sd[f"diffusion_model.{o}.{b}.weight"] = up.clone()
            if fmt == "official":
                sd[f"diffusion_model.{o}.alpha"] = torch.tensor(float(alpha))
        elif fmt == "kohya":
            o = official(name).replace(".", "_")
            sd[f"lora_unet_{o}.lora_down.weight"] = down.clone()
            sd[f"lora_unet_{o}.lora_up.weight"] = up.clone()
            sd[f"lora_unet_{o}.alpha"] = torch.tensor(float(alpha))
        else:
            raise ValueError(fmt)
    if fmt == "diffusers-meta":
        down, _, alpha = next(iter(pairs.values()))  # one rank and alpha for all, as diffusers saves them
        metadata = {"lora_adapter_metadata": json.dumps({"transformer.r": down.shape[0], "transformer.lora_alpha": alpha})}
    for pname, delta in (diffs or {}).items():
        assert fmt.startswith("official"), "full deltas exist in the official format only"
        module, _, kind = pname.rpartition(".")
        if kind == "scale_shift_table":  # the block's modulation: a parameter, not a module's weight
            sd[f"diffusion_model.{module}.modulation.diff"] = delta.clone()
            continue
        sd[f"diffusion_model.{official(module)}.{'diff' if kind == 'weight' else 'diff_b'}"] = delta.clone()
    save_file(sd, str(path), metadata=metadata)
    return path


def scale(fmt: str, down, alpha) -> float:
    """The alpha / rank a format means (no alpha: 1)."""
    if fmt in ("diffusers", "official-AB") or alpha is None:
        return 1.0
    return alpha / down.shape[0]


def expected(base: dict, fmt: str, pairs: dict, diffs: dict | None, strength: float) -> dict:
    want = {k: v.clone().double() for k, v in base.items()}
    for name, (down, up, alpha) in pairs.items():
        want[f"{name}.weight"] += strength * scale(fmt, down, alpha) * (up.double() @ down.double())
    for pname, delta in (diffs or {}).items():
        want[pname] += strength * delta.double()
    return want


def assert_merged(got: dict, want: dict, rel: float = 1e-6) -> None:
    for k, w in want.items():
        g = got[k].double()
        err = (g - w).abs().max().item()
        assert err <= rel * max(w.abs().max().item(), 1e-12), f"{k}: max error {err} vs max {w.abs().max().item()}"
