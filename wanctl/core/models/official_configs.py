"""diffusers / transformers configs of Wan2.2 components, inferred from a checkpoint's tensor
shapes (safetensors headers or memory-mapped pickles: no tensor data) plus, for the DiT, the
official ``config.json``, so checkpoints that are not the released sizes work too.

Shapes are given under the diffusers / transformers names (see :mod:`official_keys`). Values the
weights cannot tell come from the released models: wan/configs/*.py, wan/modules/model.py and
t5.py of Wan-Video/Wan2.2, and diffusers' scripts/convert_wan_to_diffusers.py.
"""

from __future__ import annotations

import math
import re
from typing import Any

from wanctl.core.errors import model_error as _err

# transformers UMT5Config of the umT5-XXL encoder. wan/modules/t5.py umt5_xxl(): vocab 256384, dim 4096,
# dim_attn 4096 (64 heads x 64), dim_ffn 10240, 24 layers, 32 buckets, per-layer relative bias
# (shared_pos=False), T5RelativeEmbedding max_dist 128, gated tanh-GELU FFN, T5LayerNorm eps 1e-6.
UMT5_XXL_CONFIG: dict = dict(
    vocab_size=256384,
    d_model=4096,
    d_kv=64,
    d_ff=10240,
    num_layers=24,
    num_decoder_layers=24,
    num_heads=64,
    relative_attention_num_buckets=32,
    relative_attention_max_distance=128,
    dropout_rate=0.1,
    layer_norm_epsilon=1e-6,
    feed_forward_proj="gated-gelu",
    is_encoder_decoder=True,
    tie_word_embeddings=False,
    pad_token_id=0,
    eos_token_id=1,
    decoder_start_token_id=0,
)


def _block_count(shapes: dict, pattern: str) -> int:
    rx = re.compile(pattern)
    idx = {int(m.group(1)) for k in shapes if (m := rx.match(k))}
    if idx and sorted(idx) != list(range(len(idx))):
        raise _err(f"block indices are not contiguous: {sorted(idx)[:8]}")
    return len(idx)


def need_weight(shapes: dict, key: str, source: str) -> tuple[int, ...]:
    if key not in shapes:
        raise _err(f"{source}: weight {key!r} is missing")
    return tuple(shapes[key])


def infer_dit_config(shapes: dict, official: dict | None = None, source: str = "DiT checkpoint") -> dict:
    """``WanTransformer3DModel`` kwargs from the tensor shapes (diffusers names) and, when there is
    one, the official ``config.json`` (which has no text_dim or patch size; the weights do)."""
    official = official or {}
    dim, in_ch, *patch = need_weight(shapes, "patch_embedding.weight", source)
    text_dim = need_weight(shapes, "condition_embedder.text_embedder.linear_1.weight", source)[1]
    freq_dim = need_weight(shapes, "condition_embedder.time_embedder.linear_1.weight", source)[1]
    ffn_dim = need_weight(shapes, "blocks.0.ffn.net.0.proj.weight", source)[0]
    layers = _block_count(shapes, r"^blocks\.(\d+)\.")
    out_ch = need_weight(shapes, "proj_out.weight", source)[0] // math.prod(patch)
    got = dict(dim=dim, in_dim=in_ch, out_dim=out_ch, ffn_dim=ffn_dim, freq_dim=freq_dim, num_layers=layers, text_dim=text_dim)
    for k, v in got.items():
        if k in official and official[k] != v:
            raise _err(f"{source}: config.json says {k}={official[k]} but the weights have {v}")
    heads = official.get("num_heads")
    if heads is None:
        if dim % 128:
            raise _err(f"{source}: cannot tell the number of attention heads of a dim-{dim} DiT (no config.json); give it as an override")
        heads = dim // 128  # every released Wan DiT has 128-dim heads
    if dim % heads:
        raise _err(f"{source}: dim {dim} is not a multiple of num_heads {heads}")
    return dict(
        patch_size=list(patch),
        num_attention_heads=int(heads),
        attention_head_dim=dim // int(heads),
        in_channels=in_ch,
        out_channels=out_ch,
        text_dim=text_dim,
        freq_dim=freq_dim,
        ffn_dim=ffn_dim,
        num_layers=layers,
        cross_attn_norm="blocks.0.norm2.weight" in shapes,
        qk_norm="rms_norm_across_heads" if "blocks.0.attn1.norm_q.weight" in shapes else None,
        eps=float(official.get("eps", 1e-6)),
        image_dim=None,
        added_kv_proj_dim=None,
        rope_max_seq_len=1024,  # official rope_params(1024, ...); positions only, no weights
        pos_embed_seq_len=None,
    )


def infer_vae_config(shapes: dict, source: str = "VAE checkpoint") -> tuple[str, dict]:
    """(kind, ``AutoencoderKLWan`` kwargs) from the tensor shapes (diffusers names). The latent
    statistics are not weights: they come with the kind (z_dim 16: Wan2.1, 48: Wan2.2)."""
    from wanctl.core.models.vae_stats import WAN21_MEAN, WAN21_STD, WAN22_MEAN, WAN22_STD

    base, in_ch = need_weight(shapes, "encoder.conv_in.weight", source)[:2]
    z_dim = need_weight(shapes, "post_quant_conv.weight", source)[0]
    out_ch, dec_last = need_weight(shapes, "decoder.conv_out.weight", source)[:2]
    residual = any(k.startswith("encoder.down_blocks.0.resnets.") for k in shapes)
    if any(".attentions." in k for k in shapes if ".mid_block." not in k) or any(
        re.match(r"^encoder\.down_blocks\.\d+\.to_qkv\.", k) for k in shapes
    ):
        raise _err(f"{source}: attention inside the VAE down/up blocks is not a Wan VAE")
    mults: list[int] = []
    temporal: list[bool] = []
    res_per_level: list[int] = []
    if residual:
        levels = _block_count(shapes, r"^encoder\.down_blocks\.(\d+)\.")
        for i in range(levels):
            n = _block_count(shapes, rf"^encoder\.down_blocks\.{i}\.resnets\.(\d+)\.")
            res_per_level.append(n)
            mults.append(need_weight(shapes, f"encoder.down_blocks.{i}.resnets.0.conv1.weight", source)[0] // base)
            if i < levels - 1:
                temporal.append(f"encoder.down_blocks.{i}.downsampler.time_conv.weight" in shapes)
    else:
        n = _block_count(shapes, r"^encoder\.down_blocks\.(\d+)\.")
        count, last = 0, base
        for i in range(n):
            if f"encoder.down_blocks.{i}.conv1.weight" in shapes:
                count += 1
                last = shapes[f"encoder.down_blocks.{i}.conv1.weight"][0]
            elif f"encoder.down_blocks.{i}.resample.1.weight" in shapes:
                res_per_level.append(count)
                mults.append(last // base)
                temporal.append(f"encoder.down_blocks.{i}.time_conv.weight" in shapes)
                count = 0
            else:
                raise _err(f"{source}: encoder block {i} is neither a residual block nor a resample")
        res_per_level.append(count)
        mults.append(last // base)
    if len(set(res_per_level)) != 1 or not res_per_level[0]:
        raise _err(f"{source}: uneven residual blocks per level {res_per_level}")
    levels = len(mults)
    kind = "wan2.2" if residual else "wan2.1"
    cfg: dict[str, Any] = dict(
        base_dim=base,
        z_dim=z_dim,
        dim_mult=mults,
        num_res_blocks=res_per_level[0],
        attn_scales=[],
        temperal_downsample=temporal,
        dropout=0.0,
        in_channels=in_ch,
        out_channels=out_ch,
        is_residual=residual,
        scale_factor_temporal=2 ** sum(temporal),
    )
    dec_base = dec_last // mults[0]
    if residual:
        patch = int(round(math.sqrt(in_ch / 3)))
        if 3 * patch * patch != in_ch:
            raise _err(f"{source}: {in_ch} input channels is not a patchified RGB video")
        cfg.update(decoder_base_dim=dec_base, patch_size=patch, scale_factor_spatial=patch * 2 ** (levels - 1))
    else:
        if dec_base != base:
            cfg["decoder_base_dim"] = dec_base
        cfg.update(patch_size=None, scale_factor_spatial=2 ** (levels - 1))
    if z_dim == 16:
        cfg.update(latents_mean=list(WAN21_MEAN), latents_std=list(WAN21_STD))
    elif z_dim == 48:
        cfg.update(latents_mean=list(WAN22_MEAN), latents_std=list(WAN22_STD))
    return kind, cfg


def infer_umt5_config(shapes: dict, source: str = "text encoder checkpoint") -> dict:
    """transformers ``UMT5Config`` kwargs from the tensor shapes (transformers names). Values that are
    not in the weights (max distance 128, eps, ids) are the umT5-XXL ones."""
    vocab, d_model = need_weight(shapes, "shared.weight", source)
    layers = _block_count(shapes, r"^encoder\.block\.(\d+)\.")
    buckets, heads = need_weight(shapes, "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight", source)
    attn = need_weight(shapes, "encoder.block.0.layer.0.SelfAttention.q.weight", source)[0]
    if "encoder.block.0.layer.1.DenseReluDense.wi_0.weight" not in shapes:
        raise _err(f"{source}: no gated feed-forward (wi_0): not a umT5 encoder")
    d_ff = shapes["encoder.block.0.layer.1.DenseReluDense.wi_0.weight"][0]
    if attn % heads:
        raise _err(f"{source}: attention width {attn} is not a multiple of {heads} heads")
    return dict(
        UMT5_XXL_CONFIG,
        vocab_size=vocab,
        d_model=d_model,
        d_kv=attn // heads,
        d_ff=d_ff,
        num_layers=layers,
        num_decoder_layers=layers,
        num_heads=heads,
        relative_attention_num_buckets=buckets,
    )
