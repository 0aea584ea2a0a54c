"""Official Wan2.2 checkpoints (as released by Wan-AI) and ComfyUI single files, loaded into the
diffusers / transformers modules the rest of wanctl uses.

Official folders::

    Wan2.2-T2V-A14B/ or Wan2.2-I2V-A14B/        Wan2.2-TI2V-5B/
      high_noise_model/ config.json + shards      config.json + diffusion_pytorch_model*.safetensors
      low_noise_model/  config.json + shards      Wan2.2_VAE.pth
      Wan2.1_VAE.pth                              models_t5_umt5-xxl-enc-bf16.pth
      models_t5_umt5-xxl-enc-bf16.pth             google/umt5-xxl/ (tokenizer)
      google/umt5-xxl/ (tokenizer)

The DiT weights use the official ``WanModel`` key names (``blocks.0.self_attn.q.weight``...), the
VAE and umT5 files are torch pickles of state dicts in the official module naming. ComfyUI
"repackaged" files are single ``.safetensors``: a DiT (official names, sometimes prefixed
``model.diffusion_model.``), a VAE (official names) and a text encoder (usually transformers
``UMT5EncoderModel`` names).

``detect_official(path)`` recognises such a folder or file and returns an :class:`OfficialLayout`
(paths only; nothing heavy is read). ``OfficialLayout.config(component)`` gives the diffusers /
transformers config of a component, inferred from the checkpoint's tensor *shapes* (safetensors
headers, or a memory-mapped ``torch.load``) plus the official DiT ``config.json``, so it also
works for checkpoints that are not the released sizes. ``load_official_component`` builds the
module with empty weights, maps the keys and assigns the tensors shard by shard.

Pickles are only ever read with ``torch.load(..., weights_only=True, map_location="cpu")``.

Key names come from the official code (Wan-Video/Wan2.2 ``wan/modules/model.py``, ``vae2_1.py``,
``vae2_2.py``, ``t5.py``) and agree with diffusers' ``scripts/convert_wan_to_diffusers.py``; see
``/work/notes/official.md`` for the sources and the checks made.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator

from wanctl.core.errors import ModelError
from wanctl.core.families import FAMILIES, FamilySpec, dit_config, vae_config
from wanctl.core.models.bundle import parse_dtype, quiet_libraries, read_json, weight_files

_OFFICIAL = "official model folder"  # how read_json names an official folder in its errors

if TYPE_CHECKING:  # pragma: no cover
    import torch

COMPONENTS = ("transformer", "transformer_2", "vae", "text_encoder", "tokenizer")

# --------------------------------------------------------------------------- shipped configs
# diffusers / transformers configs of the released models. Sources: Wan-Video/Wan2.2
# wan/configs/wan_{t2v_A14B,i2v_A14B,ti2v_5B}.py (dim, ffn_dim, heads, layers, eps),
# wan/modules/model.py (patch (1,2,2), freq_dim 256, text_dim 4096, rope over 1024 positions),
# and diffusers scripts/convert_wan_to_diffusers.py (get_transformer_config for "Wan2.2-*").

_DIT_SIZES = dict(attention_head_dim=128, text_dim=4096, freq_dim=256, rope_max_seq_len=1024)

DIT_CONFIGS: dict[str, dict] = {
    "ti2v-5b": dit_config(**_DIT_SIZES, num_attention_heads=24, in_channels=48, out_channels=48, ffn_dim=14336, num_layers=30),
    "t2v-a14b": dit_config(**_DIT_SIZES, num_attention_heads=40, in_channels=16, out_channels=16, ffn_dim=13824, num_layers=40),
    "i2v-a14b": dit_config(**_DIT_SIZES, num_attention_heads=40, in_channels=36, out_channels=16, ffn_dim=13824, num_layers=40),
}

# The official config.json of each DiT (WanModel naming), as shipped in the Wan-AI repos.
OFFICIAL_DIT_CONFIGS: dict[str, dict] = {
    fam: {
        "_class_name": "WanModel",
        "dim": c["num_attention_heads"] * c["attention_head_dim"],
        "eps": 1e-06,
        "ffn_dim": c["ffn_dim"],
        "freq_dim": 256,
        "in_dim": c["in_channels"],
        "model_type": {"ti2v-5b": "ti2v", "t2v-a14b": "t2v", "i2v-a14b": "i2v"}[fam],
        "num_heads": c["num_attention_heads"],
        "num_layers": c["num_layers"],
        "out_dim": c["out_channels"],
        "text_len": 512,
    }
    for fam, c in DIT_CONFIGS.items()
}


def _vae_configs() -> dict[str, dict]:
    from wanctl.core.models.vae_stats import WAN21_MEAN, WAN21_STD, WAN22_MEAN, WAN22_STD

    common = dict(dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[], dropout=0.0)
    return {
        # wan/modules/vae2_1.py _video_vae: dim 96, z 16; diffusers convert_vae() uses AutoencoderKLWan() defaults
        "wan2.1": vae_config("wan2.1", **common, base_dim=96, latents_mean=list(WAN21_MEAN), latents_std=list(WAN21_STD)),
        # wan/modules/vae2_2.py Wan2_2_VAE: c_dim 160, dec_dim 256, z 48, 12 = 3 x 2 x 2 patchified channels;
        # diffusers vae22_diffusers_config
        "wan2.2": vae_config("wan2.2", **common, base_dim=160, decoder_base_dim=256, latents_mean=list(WAN22_MEAN),
                             latents_std=list(WAN22_STD)),
    }


VAE_CONFIGS: dict[str, dict] = _vae_configs()

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

# File names in the official repos (wan/configs/*.py: vae_checkpoint, t5_checkpoint, t5_tokenizer)
VAE_FILES = {"wan2.1": "Wan2.1_VAE", "wan2.2": "Wan2.2_VAE"}
T5_FILE = "models_t5_umt5-xxl-enc-bf16.pth"
TOKENIZER_DIR = "google/umt5-xxl"
EXPERT_DIRS = {"transformer": "high_noise_model", "transformer_2": "low_noise_model"}
_DIT_PREFIXES = ("model.diffusion_model.", "diffusion_model.")
_QUANT_MARKERS = ("scaled_fp8", ".scale_weight", ".scale_input", ".weight_scale", ".input_scale", ".comfy_quant")


def _err(message: str) -> ModelError:
    """A one-line ModelError."""
    return ModelError(" ".join(str(message).split()))


# --------------------------------------------------------------------------- DiT keys


_DIT_TOP = {
    "patch_embedding": "patch_embedding",
    "text_embedding.0": "condition_embedder.text_embedder.linear_1",
    "text_embedding.2": "condition_embedder.text_embedder.linear_2",
    "time_embedding.0": "condition_embedder.time_embedder.linear_1",
    "time_embedding.2": "condition_embedder.time_embedder.linear_2",
    "time_projection.1": "condition_embedder.time_proj",
    "head.head": "proj_out",
}
_DIT_BLOCK = {
    # WanAttentionBlock: norm1 (no affine) -> self_attn, norm3 (affine, cross_attn_norm) -> cross_attn,
    # norm2 (no affine) -> ffn. diffusers calls the affine cross-attention norm ``norm2``.
    "self_attn.q": "attn1.to_q",
    "self_attn.k": "attn1.to_k",
    "self_attn.v": "attn1.to_v",
    "self_attn.o": "attn1.to_out.0",
    "self_attn.norm_q": "attn1.norm_q",
    "self_attn.norm_k": "attn1.norm_k",
    "cross_attn.q": "attn2.to_q",
    "cross_attn.k": "attn2.to_k",
    "cross_attn.v": "attn2.to_v",
    "cross_attn.o": "attn2.to_out.0",
    "cross_attn.norm_q": "attn2.norm_q",
    "cross_attn.norm_k": "attn2.norm_k",
    "norm3": "norm2",
    "ffn.0": "ffn.net.0.proj",
    "ffn.2": "ffn.net.2",
}
_DIT_BLOCK_RE = re.compile(r"^blocks\.(\d+)\.(.+)\.(weight|bias)$")


def _dit_hint(key: str) -> str:
    if any(m in key for m in _QUANT_MARKERS):
        return " (a quantized checkpoint: use the fp16/bf16 file)"
    if "img_emb" in key or "k_img" in key or "v_img" in key:
        return " (a CLIP image branch: Wan2.1 I2V/FLF2V, not a Wan2.2 model)"
    if "vace" in key or "before_proj" in key or "after_proj" in key:
        return " (a VACE model, not supported)"
    if key.startswith(("condition_embedder.", "proj_out.", "scale_shift_table")) or ".attn1." in key or ".attn2." in key:
        return " (diffusers naming: load the diffusers folder instead)"
    if any(m in key for m in ("audio", "motion", "face_", "cond_encoder", "pose")):
        return " (a Wan2.2 S2V/Animate model, not supported)"
    return ""


def strip_dit_prefix(keys: Iterable[str]) -> tuple[str, list[str]]:
    """The common ComfyUI prefix of a DiT checkpoint's keys ('' if none) and the stripped keys."""
    keys = list(keys)
    for prefix in _DIT_PREFIXES:
        if keys and all(k.startswith(prefix) for k in keys):
            return prefix, [k[len(prefix):] for k in keys]
    return "", keys


def map_dit_key(key: str, source: str = "DiT checkpoint") -> str:
    """One official ``WanModel`` key (prefix already stripped) -> its ``WanTransformer3DModel`` name."""
    if key == "head.modulation":
        return "scale_shift_table"
    m = re.match(r"^blocks\.(\d+)\.modulation$", key)
    if m:
        return f"blocks.{m.group(1)}.scale_shift_table"
    m = _DIT_BLOCK_RE.match(key)
    if m and m.group(2) in _DIT_BLOCK:
        return f"blocks.{m.group(1)}.{_DIT_BLOCK[m.group(2)]}.{m.group(3)}"
    module, _, param = key.rpartition(".")
    if param in ("weight", "bias") and module in _DIT_TOP:
        return f"{_DIT_TOP[module]}.{param}"
    raise _err(f"{source}: unknown DiT weight {key!r}{_dit_hint(key)}")


def convert_dit_state_dict(sd: dict, source: str = "DiT checkpoint") -> dict:
    """Official (optionally ``model.diffusion_model.``-prefixed) DiT state dict -> diffusers names."""
    prefix, keys = strip_dit_prefix(sd)
    return {map_dit_key(k, source): sd[prefix + k] for k in keys}


# --------------------------------------------------------------------------- VAE keys

_VAE_RES = {
    "residual.0.gamma": "norm1.gamma",
    "residual.2.weight": "conv1.weight",
    "residual.2.bias": "conv1.bias",
    "residual.3.gamma": "norm2.gamma",
    "residual.6.weight": "conv2.weight",
    "residual.6.bias": "conv2.bias",
    "shortcut.weight": "conv_shortcut.weight",
    "shortcut.bias": "conv_shortcut.bias",
}
_VAE_RESAMPLE = ("resample.1.weight", "resample.1.bias", "time_conv.weight", "time_conv.bias")
_VAE_ATTN = ("norm.gamma", "to_qkv.weight", "to_qkv.bias", "proj.weight", "proj.bias")
_VAE_FIXED = {
    "conv1.weight": "quant_conv.weight",
    "conv1.bias": "quant_conv.bias",
    "conv2.weight": "post_quant_conv.weight",
    "conv2.bias": "post_quant_conv.bias",
}
for _side in ("encoder", "decoder"):
    _VAE_FIXED.update(
        {
            f"{_side}.conv1.weight": f"{_side}.conv_in.weight",
            f"{_side}.conv1.bias": f"{_side}.conv_in.bias",
            f"{_side}.head.0.gamma": f"{_side}.norm_out.gamma",
            f"{_side}.head.2.weight": f"{_side}.conv_out.weight",
            f"{_side}.head.2.bias": f"{_side}.conv_out.bias",
        }
    )
    for _i, _j in ((0, 0), (2, 1)):
        _VAE_FIXED.update({f"{_side}.middle.{_i}.{a}": f"{_side}.mid_block.resnets.{_j}.{b}" for a, b in _VAE_RES.items()})
    _VAE_FIXED.update({f"{_side}.middle.1.{a}": f"{_side}.mid_block.attentions.0.{a}" for a in _VAE_ATTN})

_V21_ENC = re.compile(r"^encoder\.downsamples\.(\d+)\.(.+)$")
_V21_DEC = re.compile(r"^decoder\.upsamples\.(\d+)\.(.+)$")
_V22_ENC = re.compile(r"^encoder\.downsamples\.(\d+)\.downsamples\.(\d+)\.(.+)$")
_V22_DEC = re.compile(r"^decoder\.upsamples\.(\d+)\.upsamples\.(\d+)\.(.+)$")


def vae_kind_of(keys: Iterable[str]) -> str:
    """'wan2.2' when the encoder has nested residual down-blocks (vae2_2.Down_ResidualBlock), else 'wan2.1'."""
    return "wan2.2" if any(_V22_ENC.match(k) for k in keys) else "wan2.1"


def _vae_part(rest: str, key: str, source: str) -> tuple[str, str]:
    if rest in _VAE_RES:
        return "res", _VAE_RES[rest]
    if rest in _VAE_RESAMPLE:
        return "resample", rest
    if rest in _VAE_ATTN:
        raise _err(f"{source}: attention block inside the VAE down/up blocks ({key!r}); Wan VAEs have none")
    raise _err(f"{source}: unknown VAE weight {key!r}")


def vae_key_map(keys: Iterable[str], source: str = "VAE checkpoint") -> tuple[str, dict[str, str]]:
    """(kind, {official key: diffusers ``AutoencoderKLWan`` key}) for a Wan2.1 or Wan2.2 VAE."""
    keys = list(keys)
    if any(m in k for k in keys for m in _QUANT_MARKERS):
        raise _err(f"{source}: a quantized checkpoint; use the fp16/bf16/fp32 file")
    kind = vae_kind_of(keys)
    out: dict[str, str] = {}
    if kind == "wan2.2":
        for k in keys:
            if k in _VAE_FIXED:
                out[k] = _VAE_FIXED[k]
                continue
            m = _V22_ENC.match(k) or _V22_DEC.match(k)
            if not m:
                raise _err(f"{source}: unknown Wan2.2 VAE weight {k!r}")
            i, j, rest = m.groups()
            what, new = _vae_part(rest, k, source)
            side, blocks, sampler = ("encoder", "down_blocks", "downsampler") if k.startswith("encoder.") else ("decoder", "up_blocks", "upsampler")
            out[k] = f"{side}.{blocks}.{i}.resnets.{j}.{new}" if what == "res" else f"{side}.{blocks}.{i}.{sampler}.{new}"
        return kind, out
    # Wan2.1: the encoder's flat Sequential keeps its indices in diffusers (down_blocks is flat too);
    # the decoder's flat Sequential [res x (n+1), resample] x levels is grouped into up_blocks.
    dec: dict[int, list[tuple[str, str, str]]] = {}
    for k in keys:
        if k in _VAE_FIXED:
            out[k] = _VAE_FIXED[k]
            continue
        m = _V21_ENC.match(k)
        if m:
            _, new = _vae_part(m.group(2), k, source)
            out[k] = f"encoder.down_blocks.{m.group(1)}.{new}"
            continue
        m = _V21_DEC.match(k)
        if not m:
            raise _err(f"{source}: unknown Wan2.1 VAE weight {k!r}")
        what, new = _vae_part(m.group(2), k, source)
        dec.setdefault(int(m.group(1)), []).append((k, what, new))
    if sorted(dec) != list(range(len(dec))):
        raise _err(f"{source}: decoder.upsamples indices are not contiguous ({sorted(dec)[:8]}...)")
    block, res = 0, 0
    for idx in range(len(dec)):
        kinds = {what for _, what, _ in dec[idx]}
        if len(kinds) != 1:
            raise _err(f"{source}: decoder.upsamples.{idx} mixes residual and resample weights")
        if kinds == {"res"}:
            for k, _, new in dec[idx]:
                out[k] = f"decoder.up_blocks.{block}.resnets.{res}.{new}"
            res += 1
        else:
            for k, _, new in dec[idx]:
                out[k] = f"decoder.up_blocks.{block}.upsamplers.0.{new}"
            block, res = block + 1, 0
    return kind, out


def convert_vae_state_dict(sd: dict, source: str = "VAE checkpoint") -> tuple[str, dict]:
    kind, mapping = vae_key_map(sd, source)
    return kind, {mapping[k]: v for k, v in sd.items()}


# --------------------------------------------------------------------------- umT5 keys

_T5_BLOCK = {
    "norm1.weight": "layer.0.layer_norm.weight",
    "attn.q.weight": "layer.0.SelfAttention.q.weight",
    "attn.k.weight": "layer.0.SelfAttention.k.weight",
    "attn.v.weight": "layer.0.SelfAttention.v.weight",
    "attn.o.weight": "layer.0.SelfAttention.o.weight",
    "pos_embedding.embedding.weight": "layer.0.SelfAttention.relative_attention_bias.weight",
    "norm2.weight": "layer.1.layer_norm.weight",
    "ffn.gate.0.weight": "layer.1.DenseReluDense.wi_0.weight",  # gate = Linear + tanh-GELU
    "ffn.fc1.weight": "layer.1.DenseReluDense.wi_1.weight",
    "ffn.fc2.weight": "layer.1.DenseReluDense.wo.weight",
}
_T5_HF = re.compile(
    r"^(shared\.weight|encoder\.embed_tokens\.weight|encoder\.final_layer_norm\.weight|"
    r"encoder\.block\.\d+\.layer\.0\.(layer_norm\.weight|SelfAttention\.(q|k|v|o|relative_attention_bias)\.weight)|"
    r"encoder\.block\.\d+\.layer\.1\.(layer_norm\.weight|DenseReluDense\.(wi_0|wi_1|wo)\.weight))$"
)
_T5_IGNORED = re.compile(r"^(decoder\.|lm_head\.|spiece_model$)")


def map_t5_key(key: str, source: str = "text encoder checkpoint") -> str | None:
    """An official ``models_t5_*.pth`` key (or a transformers ``UMT5EncoderModel`` key) -> the
    transformers name; None for keys an encoder does not use (decoder, lm_head)."""
    if any(m in key for m in _QUANT_MARKERS):
        raise _err(f"{source}: a quantized checkpoint ({key!r}); use the fp16/bf16 file")
    if _T5_HF.match(key):
        return key
    if _T5_IGNORED.match(key):
        return None
    if key == "token_embedding.weight":
        return "shared.weight"
    if key == "norm.weight":
        return "encoder.final_layer_norm.weight"
    if key == "pos_embedding.embedding.weight":
        raise _err(f"{source}: one shared relative position embedding ({key!r}): a T5, not the umT5 encoder Wan uses")
    m = re.match(r"^blocks\.(\d+)\.(.+)$", key)
    if m and m.group(2) in _T5_BLOCK:
        return f"encoder.block.{m.group(1)}.{_T5_BLOCK[m.group(2)]}"
    raise _err(f"{source}: unknown umT5 encoder weight {key!r}")


def convert_t5_state_dict(sd: dict, source: str = "text encoder checkpoint") -> dict:
    """Official or transformers-named umT5 encoder state dict -> transformers ``UMT5EncoderModel``
    names (``shared.weight`` holds the token embedding; ``encoder.embed_tokens`` is tied to it)."""
    out: dict = {}
    for k, v in sd.items():
        new = map_t5_key(k, source)
        if new is None:
            continue
        if new == "encoder.embed_tokens.weight":
            out.setdefault("shared.weight", v)
            continue
        if new in out and new != "shared.weight":
            raise _err(f"{source}: {new!r} appears twice (mixed naming?)")
        out[new] = v
    return out


# --------------------------------------------------------------------------- configs from shapes


def _block_count(shapes: dict, pattern: str) -> int:
    rx = re.compile(pattern)
    idx = {int(m.group(1)) for k in shapes if (m := rx.match(k))}
    if idx and sorted(idx) != list(range(len(idx))):
        raise _err(f"block indices are not contiguous: {sorted(idx)[:8]}")
    return len(idx)


def _need(shapes: dict, key: str, source: str) -> tuple[int, ...]:
    if key not in shapes:
        raise _err(f"{source}: weight {key!r} is missing")
    return tuple(shapes[key])


def infer_dit_config(shapes: dict, official: dict | None = None, source: str = "DiT checkpoint") -> dict:
    """``WanTransformer3DModel`` kwargs from the tensor shapes (diffusers names) and, when there is
    one, the official ``config.json`` (which has no text_dim or patch size; the weights do)."""
    official = official or {}
    dim, in_ch, *patch = _need(shapes, "patch_embedding.weight", source)
    text_dim = _need(shapes, "condition_embedder.text_embedder.linear_1.weight", source)[1]
    freq_dim = _need(shapes, "condition_embedder.time_embedder.linear_1.weight", source)[1]
    ffn_dim = _need(shapes, "blocks.0.ffn.net.0.proj.weight", source)[0]
    layers = _block_count(shapes, r"^blocks\.(\d+)\.")
    out_ch = _need(shapes, "proj_out.weight", source)[0] // math.prod(patch)
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

    base, in_ch = _need(shapes, "encoder.conv_in.weight", source)[:2]
    z_dim = _need(shapes, "post_quant_conv.weight", source)[0]
    out_ch, dec_last = _need(shapes, "decoder.conv_out.weight", source)[:2]
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
            mults.append(_need(shapes, f"encoder.down_blocks.{i}.resnets.0.conv1.weight", source)[0] // base)
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
    vocab, d_model = _need(shapes, "shared.weight", source)
    layers = _block_count(shapes, r"^encoder\.block\.(\d+)\.")
    buckets, heads = _need(shapes, "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight", source)
    attn = _need(shapes, "encoder.block.0.layer.0.SelfAttention.q.weight", source)[0]
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


# --------------------------------------------------------------------------- reading checkpoints


class _Checkpoint:
    """One weight file. ``shapes()`` reads no tensor data (safetensors header; memory-mapped pickle);
    ``tensors()`` yields (key, tensor) once. Pickles: torch.load(weights_only=True) only."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._sd: dict | None = None
        self._shapes: dict | None = None

    @property
    def is_safetensors(self) -> bool:
        return self.path.suffix.lower() == ".safetensors"

    def _torch_load(self) -> dict:
        if self._sd is None:
            import pickle

            import torch

            try:
                try:
                    sd = torch.load(str(self.path), map_location="cpu", weights_only=True, mmap=True)
                except RuntimeError as e:  # legacy (non-zip) pickles cannot be memory-mapped
                    if "mmap" not in str(e):
                        raise
                    sd = torch.load(str(self.path), map_location="cpu", weights_only=True)
            except pickle.UnpicklingError:
                raise _err(f"{self.path}: refusing to load: not a plain tensor state dict (torch.load weights_only=True rejected it)") from None
            except (OSError, RuntimeError, EOFError, ValueError) as e:
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise _err(f"{self.path}: cannot read: {first}") from None
            for wrap in ("state_dict", "model", "module"):
                if isinstance(sd, dict) and len(sd) == 1 and isinstance(sd.get(wrap), dict):
                    sd = sd[wrap]
            if not isinstance(sd, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in sd.items()):
                raise _err(f"{self.path}: not a state dict of tensors")
            self._sd = sd
        return self._sd

    def shapes(self) -> dict[str, tuple[int, ...]]:
        if self._shapes is None:
            if self.is_safetensors:
                from safetensors import safe_open

                try:
                    with safe_open(str(self.path), framework="pt") as f:
                        shapes, dtypes = {}, set()
                        for k in f.keys():
                            sl = f.get_slice(k)
                            shapes[k] = tuple(sl.get_shape())
                            dtypes.add(sl.get_dtype())
                except Exception as e:  # safetensors raises its own error types
                    raise _err(f"{self.path}: not a readable safetensors file: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
                if any(d.startswith("F8") for d in dtypes):
                    raise _err(f"{self.path}: fp8 (quantized) weights are not supported; use the fp16/bf16 file")
                self._shapes = shapes
            else:
                self._shapes = {k: tuple(v.shape) for k, v in self._torch_load().items()}
        return self._shapes

    def tensors(self) -> Iterator[tuple[str, "torch.Tensor"]]:
        if self.is_safetensors:
            from safetensors import safe_open

            with safe_open(str(self.path), framework="pt") as f:
                for k in f.keys():
                    yield k, f.get_tensor(k)
        else:
            sd = self._torch_load()
            for k in list(sd):
                yield k, sd[k]
            self._sd = None  # drop the mapping so loaded tensors are owned by the model only


def _weight_files(d: Path) -> tuple[Path, ...]:
    files = weight_files(d, "transformer")
    bad = [f.name for f in files if f.suffix != ".safetensors"]
    if bad:
        raise _err(f"{d}: DiT weights must be .safetensors (found {bad[0]})")
    return tuple(files)


def _mapped_dit_shapes(files: Iterable[Path]) -> dict[str, tuple[int, ...]]:
    shapes: dict = {}
    for f in files:
        raw = _Checkpoint(f).shapes()
        prefix, keys = strip_dit_prefix(raw)
        shapes.update({map_dit_key(k, str(f)): raw[prefix + k] for k in keys})
    return shapes


# --------------------------------------------------------------------------- layout


@dataclass(eq=False)
class OfficialLayout:
    """Where the parts of an official Wan2.2 model are. Only paths and small configs: components
    are built on demand by :func:`load_official_component`.

    ``transformer`` is the high-noise expert of an A14B model (``high_noise_model/``) or the only
    DiT of TI2V-5B; ``transformer_2`` the low-noise expert (empty for TI2V-5B or when a single
    ComfyUI expert file was given alone). ``overrides`` holds per-component config values that
    the checkpoint cannot tell (merged last into :meth:`config`).
    """

    path: Path
    kind: str  # "folder" (official release) | "files" (ComfyUI single files)
    family: str
    transformer: tuple[Path, ...]
    transformer_2: tuple[Path, ...] = ()
    dit_config: dict = field(default_factory=dict)  # official config.json of `transformer`
    dit_config_2: dict = field(default_factory=dict)
    vae: Path | None = None
    text_encoder: Path | None = None
    tokenizer: Path | None = None
    overrides: dict[str, dict] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    _configs: dict[str, dict] = field(default_factory=dict, repr=False)

    @property
    def name(self) -> str:
        return self.path.stem if self.path.is_file() else self.path.name

    @property
    def family_spec(self) -> FamilySpec:
        return FAMILIES[self.family]

    @property
    def vae_kind(self) -> str:
        return self.family_spec.vae

    @property
    def text_len(self) -> int:
        return int(self.dit_config.get("text_len", 512))

    @property
    def boundary(self) -> float | None:
        return self.family_spec.preset.boundary if self.family_spec.experts == 2 else None

    def experts(self) -> list[str]:
        return ["transformer", "transformer_2"] if self.family_spec.experts == 2 else ["transformer"]

    def has(self, component: str) -> bool:
        if component not in COMPONENTS:
            raise ValueError(component)
        return bool(self.files(component)) if component != "tokenizer" else self.tokenizer is not None

    def files(self, component: str) -> list[Path]:
        """The files a component is read from (for fingerprints); [] when absent."""
        if component == "transformer":
            return list(self.transformer)
        if component == "transformer_2":
            return list(self.transformer_2)
        if component == "vae":
            return [self.vae] if self.vae else []
        if component == "text_encoder":
            return [self.text_encoder] if self.text_encoder else []
        if component == "tokenizer":
            return sorted(f for f in self.tokenizer.iterdir() if f.is_file()) if self.tokenizer else []
        raise ValueError(component)

    def _require(self, component: str) -> None:
        if self.has(component):
            return
        hints = {
            "transformer_2": "the low-noise expert is missing (give the low_noise_model file too)",
            "vae": f"no VAE ({VAE_FILES[self.vae_kind]}.pth) found; give the VAE file",
            "text_encoder": f"no text encoder ({T5_FILE}) found; give the text encoder file",
            "tokenizer": f"no tokenizer ({TOKENIZER_DIR}/) found; give the tokenizer folder",
        }
        raise _err(f"{self.path}: {hints.get(component, f'{component} is missing')}")

    def config(self, component: str) -> dict:
        """The diffusers (DiT, VAE) / transformers (text encoder) config of a component, from the
        checkpoint's shapes, the official config.json and ``overrides``. Reads no tensor data."""
        if component == "tokenizer":
            return {}
        if component not in self._configs:
            self._require(component)
            if component in ("transformer", "transformer_2"):
                official = dict(self.dit_config if component == "transformer" else self.dit_config_2)
                over = dict(self.overrides.get("transformer", {}), **self.overrides.get(component, {}))
                if "num_attention_heads" in over:  # the one size the weights cannot tell
                    official["num_heads"] = over.pop("num_attention_heads")
                files = self.files(component)
                source = str(files[0].parent if self.kind == "folder" else files[0])
                cfg = infer_dit_config(_mapped_dit_shapes(files), official, source=source)
                cfg.update(over)
            elif component == "vae":
                kind, cfg = infer_vae_config(_checkpoint_shapes(self, "vae"), str(self.vae))
                cfg.update(self.overrides.get("vae", {}))
                if "latents_mean" not in cfg:
                    raise _err(f"{self.vae}: unknown VAE latent size z_dim={cfg['z_dim']}: no latent statistics")
                if kind != self.vae_kind:
                    raise _err(f"{self.vae}: a {kind} VAE, but {self.family} needs the {self.vae_kind} VAE ({VAE_FILES[self.vae_kind]})")
            else:
                cfg = infer_umt5_config(_checkpoint_shapes(self, "text_encoder"), str(self.text_encoder))
                cfg.update(self.overrides.get("text_encoder", {}))
            self._configs[component] = cfg
        return dict(self._configs[component])

    def configs(self) -> dict[str, dict]:
        """Configs of the components present (what ``ModelSpec.configs`` holds for diffusers folders)."""
        return {c: self.config(c) for c in ("transformer", "transformer_2", "vae", "text_encoder") if self.has(c)}

    def model_index(self) -> dict:
        """model_index.json as the diffusers conversion of this family has it."""
        from wanctl.core.models.builtin import model_index

        return model_index(self.family)

    def describe(self) -> dict:
        return {
            "name": self.name,
            "path": str(self.path),
            "family": self.family,
            "layout": f"official-{self.kind}",
            "components": {c: [str(f) for f in self.files(c)] if c != "tokenizer" else str(self.tokenizer or "") for c in COMPONENTS},
            "notes": list(self.notes),
        }


# --------------------------------------------------------------------------- detection


def _family_from_channels(in_ch: int, out_ch: int, experts: int, where: str) -> str:
    if experts == 1 and in_ch == 48 and out_ch == 48:
        return "ti2v-5b"
    if experts == 2 and out_ch == 16 and in_ch in (16, 36):
        return "t2v-a14b" if in_ch == 16 else "i2v-a14b"
    if experts == 1 and in_ch in (16, 36):
        raise _err(f"{where}: one DiT with in_dim {in_ch}: a Wan2.1 model (no expert switch), not a Wan2.2 family wanctl supports")
    raise _err(f"{where}: unknown Wan DiT (in_dim {in_ch}, out_dim {out_ch}); wanctl supports {', '.join(FAMILIES)}")


def _is_dit_config(cfg: dict) -> bool:
    return cfg.get("_class_name") == "WanModel" or {"dim", "in_dim", "num_heads"} <= set(cfg)


def _find_vae(folder: Path, kind: str) -> Path | None:
    for ext in (".pth", ".safetensors"):
        p = folder / f"{VAE_FILES[kind]}{ext}"
        if p.is_file():
            return p
    return None


def _find_t5(folder: Path) -> Path | None:
    if (folder / T5_FILE).is_file():
        return folder / T5_FILE
    cands = sorted(folder.glob("models_t5_*.pth")) + sorted(folder.glob("models_t5_*.safetensors"))
    return cands[0] if cands else None


def _detect_folder(p: Path) -> OfficialLayout | None:
    hi, lo = p / EXPERT_DIRS["transformer"], p / EXPERT_DIRS["transformer_2"]
    markers = [f.name for f in p.iterdir() if f.name.startswith(("Wan2.1_VAE", "Wan2.2_VAE", "models_t5_"))]
    if hi.is_dir() or lo.is_dir():
        for d in (hi, lo):
            if not d.is_dir():
                raise _err(f"{p}: incomplete official A14B folder, {d.name}/ is missing")
        cfgs = [read_json(d / "config.json", f"{d.name}/config.json", _OFFICIAL) for d in (hi, lo)]
        for d, c in zip((hi, lo), cfgs):
            if not _is_dit_config(c):
                raise _err(f"{d / 'config.json'}: not an official Wan DiT config")
        fams = [_family_from_channels(c.get("in_dim", 16), c.get("out_dim", 16), 2, str(d)) for d, c in zip((hi, lo), cfgs)]
        if fams[0] != fams[1]:
            raise _err(f"{p}: the experts disagree: {hi.name} is {fams[0]}, {lo.name} is {fams[1]}")
        layout = OfficialLayout(p, "folder", fams[0], _weight_files(hi), _weight_files(lo), cfgs[0], cfgs[1])
    elif (p / "config.json").is_file():
        cfg = read_json(p / "config.json", "config.json", _OFFICIAL)
        if not _is_dit_config(cfg):
            return None
        fam = _family_from_channels(cfg.get("in_dim", 16), cfg.get("out_dim", 16), 1, str(p))
        layout = OfficialLayout(p, "folder", fam, _weight_files(p), (), cfg)
    else:
        if markers:
            raise _err(f"{p}: looks like an official Wan folder ({markers[0]}) but has no DiT (config.json / high_noise_model/)")
        return None
    kind = layout.vae_kind
    layout.vae = _find_vae(p, kind)
    if layout.vae is None:
        other = _find_vae(p, "wan2.2" if kind == "wan2.1" else "wan2.1")
        layout.notes.append(
            f"{VAE_FILES[kind]}.pth is missing" + (f" ({other.name} is the other family's VAE)" if other else "")
        )
    layout.text_encoder = _find_t5(p)
    tok = p / TOKENIZER_DIR
    layout.tokenizer = tok if tok.is_dir() else None
    return layout


def _dit_file_info(f: Path) -> tuple[dict, int, int] | None:
    """(shapes, in_ch, out_ch) of a single-file DiT, or None when the file is not a Wan DiT."""
    raw = _Checkpoint(f).shapes()
    prefix, keys = strip_dit_prefix(raw)
    if "patch_embedding.weight" not in keys:
        return None
    shapes = {map_dit_key(k, str(f)): raw[prefix + k] for k in keys}
    _, in_ch, *patch = shapes["patch_embedding.weight"]
    out_ch = _need(shapes, "proj_out.weight", str(f))[0] // math.prod(patch)
    return shapes, in_ch, out_ch


def _not_a_dit(f: Path) -> None:
    """Raise a helpful error when a VAE or text encoder file is given where a DiT is expected."""
    name = f.name.lower()
    if "vae" in name or "t5" in name or "umt5" in name:
        raise _err(f"{f}: a VAE / text encoder file, not a DiT; give the DiT file and this one separately")
    if f.suffix.lower() == ".safetensors":
        keys = list(_Checkpoint(f).shapes())
        if any(k.startswith(("encoder.downsamples.", "decoder.upsamples.")) for k in keys):
            raise _err(f"{f}: a Wan VAE file, not a DiT; give the DiT file and this one as the VAE")
        if any(k.startswith(("encoder.block.", "blocks.0.attn.", "token_embedding.")) for k in keys):
            raise _err(f"{f}: a umT5 text encoder file, not a DiT; give the DiT file and this one as the text encoder")


def _expert_rank(f: Path) -> int | None:
    n = f.name.lower()
    if "high_noise" in n or "high-noise" in n:
        return 0
    if "low_noise" in n or "low-noise" in n:
        return 1
    return None


def _detect_file(p: Path, transformer_2: Path | None) -> OfficialLayout | None:
    suffix = p.suffix.lower()
    if suffix == ".gguf":
        raise _err(f"{p}: GGUF checkpoints are not supported; use the safetensors file")
    if suffix != ".safetensors":
        if suffix in (".pth", ".pt", ".bin", ".ckpt"):
            _not_a_dit(p)
        return None
    info = _dit_file_info(p)
    if info is None:
        _not_a_dit(p)
        return None
    _, in_ch, out_ch = info
    experts = 2 if out_ch == 16 else 1
    fam = _family_from_channels(in_ch, out_ch, experts, str(p))
    notes: list[str] = []
    first, second = (p,), ()
    if transformer_2 is not None:
        if experts == 1:
            raise _err(f"{p}: a {fam} DiT has no second expert ({transformer_2} given)")
        info2 = _dit_file_info(transformer_2)
        if info2 is None:
            _not_a_dit(transformer_2)
            raise _err(f"{transformer_2}: not a Wan DiT file")
        if (info2[1], info2[2]) != (in_ch, out_ch):
            raise _err(f"{transformer_2}: the experts disagree (in_dim {info2[1]} vs {in_ch})")
        second = (transformer_2,)
        if (_expert_rank(p), _expert_rank(transformer_2)) == (1, 0):
            first, second = second, first
            notes.append(f"{p.name} is the low-noise expert by its name: used as transformer_2")
    elif experts == 2:
        notes.append("one A14B expert file given: the other expert (transformer_2) is missing")
    return OfficialLayout(p, "files", fam, first, second, notes=notes)


def _existing(value, what: str) -> Path | None:
    if value is None:
        return None
    q = Path(value).expanduser()
    if not q.exists():
        raise _err(f"{what} {q} does not exist")
    return q


def detect_official(
    path,
    *,
    transformer_2=None,
    vae=None,
    text_encoder=None,
    tokenizer=None,
    overrides: dict[str, dict] | None = None,
) -> OfficialLayout | None:
    """Recognise an official Wan2.2 folder or a ComfyUI single DiT file.

    Returns None when ``path`` is neither (a diffusers folder, an unrelated file or folder), so the
    caller can try the diffusers layout. Raises :class:`ModelError` when it is one but unusable
    (a Wan2.1 model, an incomplete A14B folder, a quantized file...). ``vae`` / ``text_encoder`` /
    ``tokenizer`` / ``transformer_2`` give separate files (they replace what a folder holds);
    ``overrides`` gives per-component config values the weights cannot tell. Reads only configs
    and safetensors headers.
    """
    p = Path(path).expanduser()
    if not p.exists():
        return None
    t2 = _existing(transformer_2, "transformer_2 file")
    if p.is_dir():
        if (p / "model_index.json").exists():
            return None
        layout = _detect_folder(p)
        if layout is not None and t2 is not None:
            raise _err(f"{p}: an official folder holds its own experts; transformer_2 is only for single files")
    else:
        layout = _detect_file(p, t2)
    if layout is None:
        return None
    for attr, value, what in (("vae", vae, "VAE file"), ("text_encoder", text_encoder, "text encoder file"), ("tokenizer", tokenizer, "tokenizer folder")):
        q = _existing(value, what)
        if q is not None:
            setattr(layout, attr, q)
    if layout.tokenizer is not None and not layout.tokenizer.is_dir():
        raise _err(f"tokenizer {layout.tokenizer} is not a folder")
    layout.overrides = {k: dict(v) for k, v in (overrides or {}).items()}
    return layout


# --------------------------------------------------------------------------- loading


def _torch_dtype(dtype) -> "torch.dtype":
    import torch

    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    return parse_dtype(str(dtype))


def _keep_fp32_parts(cls, dtype) -> set[str]:
    """Module names the library's own from_pretrained keeps in float32 at this dtype."""
    import torch

    if dtype == torch.float32:
        return set()
    if cls.__module__.startswith("transformers"):
        parts = set(getattr(cls, "_keep_in_fp32_modules_strict", None) or [])
        if dtype == torch.float16:  # transformers applies the non-strict list for fp16 only
            parts |= set(getattr(cls, "_keep_in_fp32_modules", None) or [])
        return parts
    return set(getattr(cls, "_keep_in_fp32_modules", None) or [])  # diffusers: any dtype


def _assign(model, batches: Iterator[dict], dtype, device, source: str, tied: dict[str, str] | None = None):
    """Assign mapped tensors (one dict per shard) into a model built with empty weights."""
    import torch

    tied = tied or {}
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    keep = _keep_fp32_parts(type(model), dtype)
    loaded: set[str] = set()
    for batch in batches:
        ready = {}
        while batch:  # pop as we go: the shard's original tensors are freed once converted
            k, t = batch.popitem()
            if k in loaded:
                raise _err(f"{source}: weight {k!r} appears twice")
            if k not in expected:
                raise _err(f"{source}: unexpected weight {k!r} for this architecture")
            if tuple(t.shape) != expected[k]:
                raise _err(f"{source}: {k} has shape {tuple(t.shape)}, the architecture wants {expected[k]}")
            if t.is_floating_point():
                want = torch.float32 if keep and keep & set(k.split(".")) else dtype
                t = t.to(device=device, dtype=want)
            else:
                t = t.to(device=device)
            ready[k] = t
            loaded.add(k)
        if ready:
            model.load_state_dict(ready, strict=False, assign=True)
    for dst, src in tied.items():
        if src in loaded:
            module_name, _, attr = dst.rpartition(".")
            src_module, _, src_attr = src.rpartition(".")
            setattr(model.get_submodule(module_name), attr, getattr(model.get_submodule(src_module), src_attr))
            loaded.add(dst)
    missing = sorted(set(expected) - loaded)
    if missing:
        raise _err(f"{source}: {len(missing)} weight(s) missing, e.g. {missing[0]}")
    model.to(device)  # buffers (e.g. RoPE tables) were built on the CPU
    still_meta = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if still_meta:
        raise _err(f"{source}: {still_meta[0]} was not loaded")
    return model.eval().requires_grad_(False)


def _build_empty(component: str, cfg: dict):
    from accelerate import init_empty_weights

    with init_empty_weights():
        if component in ("transformer", "transformer_2"):
            from diffusers import WanTransformer3DModel

            return WanTransformer3DModel.from_config(cfg)
        if component == "vae":
            from diffusers import AutoencoderKLWan

            return AutoencoderKLWan.from_config(cfg)
        from transformers import UMT5Config, UMT5EncoderModel

        return UMT5EncoderModel(UMT5Config(**cfg))


def _checkpoint_shapes(layout: OfficialLayout, component: str) -> dict[str, tuple[int, ...]]:
    """Mapped (diffusers / transformers) names -> shapes, without reading tensor data."""
    if component in ("transformer", "transformer_2"):
        return _mapped_dit_shapes(layout.files(component))
    ck = _Checkpoint(layout.files(component)[0])
    if component == "vae":
        _, mapping = vae_key_map(ck.shapes(), str(ck.path))
        return {mapping[k]: s for k, s in ck.shapes().items()}
    out = {}
    for k, s in ck.shapes().items():
        new = map_t5_key(k, str(ck.path))
        if new is not None:
            out["shared.weight" if new == "encoder.embed_tokens.weight" else new] = s
    return out


def verify_official(layout: OfficialLayout) -> list[dict]:
    """Check every component's weight names and shapes against its config (no tensor data read).

    One row per component, as ``models.verify``: {component, status: ok|missing|error, detail}.
    """
    quiet_libraries()
    rows = []
    for comp in layout.experts() + ["vae", "text_encoder", "tokenizer"]:
        row = {"component": comp, "status": "ok", "detail": ""}
        try:
            if not layout.has(comp):
                row.update(status="missing", detail=f"no {comp} in {layout.path}")
            elif comp == "tokenizer":
                row["detail"] = ", ".join(f.name for f in layout.files(comp))
            else:
                have = _checkpoint_shapes(layout, comp)
                want = {k: tuple(v.shape) for k, v in _build_empty(comp, layout.config(comp)).state_dict().items()}
                if comp == "text_encoder":
                    want.pop("encoder.embed_tokens.weight", None)  # tied to shared.weight
                missing = sorted(set(want) - set(have))
                extra = sorted(set(have) - set(want))
                bad = sorted(k for k in set(want) & set(have) if want[k] != tuple(have[k]))
                if missing or extra or bad:
                    parts = [f"{len(missing)} missing weight(s), e.g. {missing[0]}"] if missing else []
                    parts += [f"{len(extra)} unexpected weight(s), e.g. {extra[0]}"] if extra else []
                    parts += [f"{len(bad)} shape mismatch(es), e.g. {bad[0]}"] if bad else []
                    raise _err("; ".join(parts))
                n = sum(math.prod(s) for s in have.values())
                row["detail"] = f"{len(layout.files(comp))} file(s), {len(have)} tensors ({n / 1e6:.1f}M values) match the config"
        except ModelError as e:
            row.update(status="error", detail=e.message)
        rows.append(row)
    return rows


def _dit_batches(files: list[Path]) -> Iterator[dict]:
    for f in files:
        ck = _Checkpoint(f)
        prefix, _ = strip_dit_prefix(ck.shapes())
        batch = {}
        for k, t in ck.tensors():
            batch[map_dit_key(k[len(prefix):], str(f))] = t
        yield batch


def load_official_component(layout: OfficialLayout, component: str, dtype=None, device="cpu"):
    """Build one component of an official checkpoint as the diffusers / transformers module.

    ``component``: transformer | transformer_2 (WanTransformer3DModel), vae (AutoencoderKLWan),
    text_encoder (UMT5EncoderModel), tokenizer. ``dtype`` (torch dtype or "bf16"/"fp16"/"fp32";
    default float32) applies to floating weights, except the modules the library itself keeps in
    float32 (as ``from_pretrained(torch_dtype=...)`` does). Weights go to ``device`` shard by shard.
    """
    if component not in COMPONENTS:
        raise ValueError(f"unknown component {component!r}")
    layout._require(component)
    if component == "tokenizer":
        from transformers import AutoTokenizer

        try:
            return AutoTokenizer.from_pretrained(str(layout.tokenizer))
        except (OSError, ValueError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise _err(f"{layout.tokenizer}: cannot load the tokenizer: {first}") from None

    import torch

    quiet_libraries()
    dt = _torch_dtype(dtype)
    dev = torch.device(device)
    model = _build_empty(component, layout.config(component))
    files = layout.files(component)
    if component in ("transformer", "transformer_2"):
        source = str(files[0].parent) if len(files) > 1 else str(files[0])
        return _assign(model, _dit_batches(files), dt, dev, source)
    ck = _Checkpoint(files[0])
    if component == "vae":
        _, mapping = vae_key_map(ck.shapes(), str(ck.path))
        batch = {mapping[k]: t for k, t in ck.tensors()}
        return _assign(model, iter([batch]), dt, dev, str(ck.path))
    batch = convert_t5_state_dict(dict(ck.tensors()), str(ck.path))
    return _assign(model, iter([batch]), dt, dev, str(ck.path), tied={"encoder.embed_tokens.weight": "shared.weight"})
