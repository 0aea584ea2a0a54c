"""Key names of the official Wan2.2 checkpoints (as released by Wan-AI, and as ComfyUI repackages
them) mapped to the diffusers / transformers module names wanctl loads into.

The DiT uses the official ``WanModel`` names (``blocks.0.self_attn.q.weight``...), sometimes
prefixed ``model.diffusion_model.`` by ComfyUI; the VAE and umT5 files use the official module
names; ComfyUI text encoder files usually carry transformers ``UMT5EncoderModel`` names already.
The names come from the official code (Wan-Video/Wan2.2 ``wan/modules/model.py``, ``vae2_1.py``,
``vae2_2.py``, ``t5.py``) and agree with diffusers' ``scripts/convert_wan_to_diffusers.py``.
Pure functions on strings: no torch.
"""

from __future__ import annotations

import re
from typing import Iterable

from wanctl.core.errors import model_error as _err

_DIT_PREFIXES = ("model.diffusion_model.", "diffusion_model.")
# name fragments of quantized checkpoints (fp8 scaled weights, ComfyUI quantization)
_QUANT_MARKERS = ("scaled_fp8", ".scale_weight", ".scale_input", ".weight_scale", ".input_scale", ".comfy_quant")
# ComfyUI fp8_scaled files: an empty marker tensor (its dtype names the fp8 type) and, per
# linear layer, ``<layer>.scale_weight`` (optionally ``<layer>.scale_input``); see quantized.py
SCALED_FP8 = "scaled_fp8"
_SCALE_SUFFIXES = (".scale_weight", ".scale_input")

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
        return " (a quantized checkpoint in a format wanctl does not read; it reads GGUF, fp8_scaled and plain fp8 DiT files)"
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
    """The common ComfyUI prefix of a DiT checkpoint's keys ('' if none) and the stripped keys.

    A ComfyUI full checkpoint holds the DiT under ``model.diffusion_model.`` next to other parts
    (``vae.``, ``text_encoders.``...): as ComfyUI's diffusion-model loader does, only its DiT keys
    are returned (:func:`other_parts` names what is left out)."""
    keys = list(keys)
    for prefix in _DIT_PREFIXES:
        if keys and all(k.startswith(prefix) for k in keys):
            return prefix, [k[len(prefix):] for k in keys]
    full = _DIT_PREFIXES[0]
    dit = [k[len(full):] for k in keys if k.startswith(full)]
    if dit:
        return full, dit
    return "", keys


def other_parts(keys: Iterable[str]) -> tuple[int, list[str]]:
    """(count, top-level names) of the keys :func:`strip_dit_prefix` leaves out (a full checkpoint's
    VAE, text encoders...); (0, []) for a DiT-only file."""
    keys = list(keys)
    prefix, dit = strip_dit_prefix(keys)
    rest = [k for k in keys if not k.startswith(prefix)] if prefix and len(dit) < len(keys) else []
    return len(rest), sorted({k.split(".")[0] for k in rest})


def is_scaled_fp8(keys: Iterable[str]) -> bool:
    """Whether (stripped) keys are a ComfyUI fp8_scaled checkpoint: its marker tensor is there."""
    return SCALED_FP8 in set(keys)


def weight_keys(keys: Iterable[str]) -> list[str]:
    """(Stripped) DiT or umT5 keys without the fp8_scaled marker and scales, only when the marker
    is there: scales without it are an unknown format, refused by :func:`map_dit_key` /
    :func:`map_t5_key`."""
    keys = list(keys)
    if not is_scaled_fp8(keys):
        return keys
    return [k for k in keys if k != SCALED_FP8 and not k.endswith(_SCALE_SUFFIXES)]


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
    """Official (optionally ``model.diffusion_model.``-prefixed) DiT state dict -> diffusers names
    (a full checkpoint: its DiT part only)."""
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


def _vae_kind(keys: Iterable[str]) -> str:
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
    kind = _vae_kind(keys)
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

