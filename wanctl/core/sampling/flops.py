"""A FLOP model of one Wan DiT forward, for plans (--dry-run) and benchmark predictions.

Counts multiply-adds x 2 of the matrix work per block: self-attention projections (q, k, v, o),
the attention itself (QK^T and AV: quadratic in tokens), cross-attention to the text tokens
(q, o on video tokens; k, v on text tokens; the attention), and the feed-forward network.
Elementwise work (norms, RoPE, modulation) is ignored: it is a few percent.
"""

from __future__ import annotations

TEXT_TOKENS = 512


def dit_flops(config: dict, tokens: int, batch: int = 1, text_tokens: int = TEXT_TOKENS) -> float:
    d = config["num_attention_heads"] * config["attention_head_dim"]
    ffn = config["ffn_dim"]
    layers = config["num_layers"]
    L = tokens
    self_proj = 4 * L * d * d
    self_attn = 2 * L * L * d
    cross_proj = 2 * L * d * d + 2 * text_tokens * d * d
    cross_attn = 2 * L * text_tokens * d
    ff = 2 * L * d * ffn
    patch = L * d * config["in_channels"] * 4 + L * d * config["out_channels"] * 4
    return 2.0 * batch * (layers * (self_proj + self_attn + cross_proj + cross_attn + ff) + patch)


def tokens_for(latent_frames: int, latent_h: int, latent_w: int, patch=(1, 2, 2)) -> int:
    return (latent_frames // patch[0]) * (latent_h // patch[1]) * (latent_w // patch[2])
