"""Quantized DiT weight files, and fp8 weight storage.

* GGUF DiT files (city96 / ComfyUI-GGUF layout: official ``WanModel`` key names, quantized linear
  weights, 1-D and small tensors in F32, the 5-D patch embedding as an F32 tensor): loaded with
  diffusers' ``from_single_file`` and ``GGUFQuantizationConfig``. The quantized linear layers stay
  quantized in memory and are dequantized to the compute dtype at each forward (pure torch, so
  CPUs work too).
* ComfyUI ``fp8_scaled`` files (a ``scaled_fp8`` marker tensor, per linear layer an fp8 weight and
  ``<layer>.scale_weight``): dequantized at load, ``W = W_fp8.float() * scale_weight``, then cast
  to the compute dtype by :func:`~wanctl.core.models.weights.assign`. Plain fp8 files (no scales)
  need nothing here: assign upcasts them.
* ``--weights-dtype fp8``: the DiT's float weights stored as float8_e4m3fn with diffusers'
  layerwise casting (each layer upcast to the compute dtype for its own forward).

torch, diffusers and gguf are imported inside the functions only.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from wanctl.core.errors import BadInputError
from wanctl.core.errors import model_error as _err
from wanctl.core.models.official_keys import SCALED_FP8, convert_dit_state_dict, is_scaled_fp8, strip_dit_prefix
from wanctl.core.models.weights import Checkpoint

if TYPE_CHECKING:  # pragma: no cover
    import torch

WEIGHTS_DTYPES = ("auto", "fp8")  # --weights-dtype: auto = the compute dtype (--dtype)
_FLOAT_NAMES = {"BF16": "bf16", "F16": "fp16", "F32": "fp32", "F64": "fp64"}
_FP8_NAMES = {"F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2"}


# --------------------------------------------------------------------------- formats


def weight_format(files: list[Path]) -> str | None:
    """How a component's files (a DiT, or a text encoder) store its weights: "gguf Q8_0, F16"
    (GGML types by tensor count, leaving out the F32 that GGUF files keep small tensors in),
    "fp8_scaled (float8_e4m3fn)", "fp8_e4m3fn" / "fp8_e5m2" (plain fp8), or the dominant float
    dtype ("bf16", "fp16", "fp32"). Reads headers only."""
    counts: Counter = Counter()
    gguf = scaled = False
    for f in files:
        ck = Checkpoint(f)
        dtypes = ck.dtypes()
        gguf |= ck.is_gguf
        prefix, keys = strip_dit_prefix(dtypes)
        scaled |= is_scaled_fp8(keys)
        counts.update(dtypes[prefix + k] for k in keys if k != SCALED_FP8)
    if not counts:
        return None
    if gguf:
        kinds = [t for t, _ in counts.most_common() if t != "F32"] or ["F32"]
        return "gguf " + ", ".join(kinds)
    fp8 = [_FP8_NAMES[t] for t, _ in counts.most_common() if t in _FP8_NAMES]
    if scaled:
        return f"fp8_scaled ({fp8[0] if fp8 else 'no fp8 tensors'})"
    if fp8:
        return fp8[0].replace("float8", "fp8")
    main = counts.most_common(1)[0][0]
    return _FLOAT_NAMES.get(main, main.lower())


def is_gguf_format(fmt: str | None) -> bool:
    return bool(fmt) and fmt.startswith("gguf")


def check_weights_dtype(layout, value: str) -> None:
    """--weights-dtype against the model, before anything loads (reads headers only)."""
    if value not in WEIGHTS_DTYPES:
        raise BadInputError(f"unknown --weights-dtype {value!r}; use one of {', '.join(WEIGHTS_DTYPES)}")
    if value == "fp8":
        for expert in layout.experts():
            if layout.has(expert) and is_gguf_format(layout.weight_format(expert)):
                raise BadInputError(f"--weights-dtype fp8 stores float weights in fp8, but {expert} is a GGUF file "
                                    "(already quantized): drop --weights-dtype fp8")


# --------------------------------------------------------------------------- fp8_scaled


def _block_of(key: str) -> str:
    """The transformer block a key is in ("blocks.3." of a DiT, "encoder.block.3." of umT5), or ""."""
    m = re.match(r"^(.*?\bblocks?\.\d+\.)", key)
    return m.group(1) if m else ""


def dequantize_scaled_fp8(sd: dict, source: str) -> Iterator[dict]:
    """Plain tensors from a ComfyUI fp8_scaled state dict (a DiT, official names, prefix stripped;
    or a umT5 encoder, ComfyUI's umt5_xxl_fp8_e4m3fn_scaled).

    ``W = W_fp8.float() * scale_weight`` for every weight with a scale (a per-tensor scalar, or
    one value per output row); fp8 tensors without one are upcast as they are (scale 1, as
    ComfyUI's scaled layers default). ``scale_input`` is dropped: it only sets the range that the
    activations are quantized to for an fp8 x fp8 matmul (ComfyUI's fast fp8 path); here the
    matmul runs in the compute dtype on unquantized activations, where the product does not
    depend on it (ComfyUI ignores it too when it upcasts weights).

    Yields one dict per transformer block (plus one for the other weights), float32 where a
    tensor was fp8 or scaled, so that only one block is ever held in float32 while
    :func:`~wanctl.core.models.weights.assign` casts it to the compute dtype. Pops from ``sd``.
    """
    import torch

    sd.pop(SCALED_FP8, None)
    scales = {k[: -len(".scale_weight")]: sd.pop(k) for k in [k for k in sd if k.endswith(".scale_weight")]}
    for k in [k for k in sd if k.endswith(".scale_input")]:
        sd.pop(k)
    orphans = [m for m in scales if f"{m}.weight" not in sd]
    if orphans:
        raise _err(f"{source}: {orphans[0]}.scale_weight has no {orphans[0]}.weight")
    fp8 = {torch.float8_e4m3fn, torch.float8_e5m2}
    order: dict[str, list[str]] = {}
    for k in sd:
        order.setdefault(_block_of(k), []).append(k)
    for keys in order.values():
        batch = {}
        for k in keys:
            t = sd.pop(k)
            layer = k[: -len(".weight")] if k.endswith(".weight") else None
            if layer in scales:
                scale = scales.pop(layer).float()
                if scale.numel() == 1:
                    scale = scale.reshape(())
                elif t.dim() >= 1 and scale.numel() == t.shape[0]:
                    scale = scale.reshape(-1, *([1] * (t.dim() - 1)))  # one scale per output row
                else:
                    raise _err(f"{source}: {layer}.scale_weight has shape {tuple(scale.shape)}, "
                               f"not one value or one per row of {k} {tuple(t.shape)}")
                t = t.float() * scale
            elif t.dtype in fp8:
                t = t.float()
            batch[k] = t
        yield batch


# --------------------------------------------------------------------------- GGUF


def load_gguf_dit(path: Path, cfg: dict, dtype: "torch.dtype", source: str):
    """A ``WanTransformer3DModel`` from a GGUF DiT file (official ``WanModel`` key names, as
    city96's converter writes them, optionally ``model.diffusion_model.``-prefixed), through
    diffusers' ``from_single_file`` with ``GGUFQuantizationConfig(compute_dtype=dtype)``, on the
    CPU, eval mode, no gradients.

    diffusers would rename official keys itself, but silently leaves missing weights on the meta
    device and only warns about unknown ones: the names are mapped here with wanctl's own strict
    DiT key mapping (the one the safetensors files use) and checked against ``cfg``, so a bad file
    is a one-line error; the tensors are then handed over already in diffusers naming. The config
    is passed as a local folder, so nothing is downloaded. diffusers computes quantized weights only in linear layers: any other quantized
    tensor (and any quantized bias) is dequantized here."""
    import torch

    from wanctl.core.models.weights import build_empty

    try:
        from diffusers import GGUFQuantizationConfig, WanTransformer3DModel
        from diffusers.models.model_loading_utils import load_gguf_checkpoint
        from diffusers.quantizers.gguf.utils import GGUFParameter, dequantize_gguf_tensor
    except ImportError:
        raise _err(f"{source}: loading GGUF files needs the gguf package (pip install gguf)") from None
    try:
        raw = load_gguf_checkpoint(str(path))
    except Exception as e:  # gguf / numpy errors on a damaged file, ValueError on unsupported types
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise _err(f"{source}: cannot read the GGUF file: {first}") from None
    sd = convert_dit_state_dict(raw, source)
    empty = build_empty("transformer", cfg)
    expected = {k: tuple(v.shape) for k, v in empty.state_dict().items()}
    linear = {f"{n}.weight" for n, m in empty.named_modules() if isinstance(m, torch.nn.Linear)}
    for k, t in list(sd.items()):
        if k not in expected:
            raise _err(f"{source}: unexpected weight {k!r} for this architecture")
        shape = tuple(t.quant_shape) if isinstance(t, GGUFParameter) else tuple(t.shape)
        if shape != expected[k]:
            raise _err(f"{source}: {k} has shape {shape}, the architecture wants {expected[k]}")
        if isinstance(t, GGUFParameter) and k not in linear:
            sd[k] = dequantize_gguf_tensor(t).float()
    missing = sorted(set(expected) - set(sd))
    if missing:
        raise _err(f"{source}: {len(missing)} weight(s) missing, e.g. {missing[0]}")
    with tempfile.TemporaryDirectory(prefix="wanctl-gguf-") as d:
        (Path(d) / "config.json").write_text(json.dumps(dict(cfg, _class_name="WanTransformer3DModel")))
        model = WanTransformer3DModel.from_single_file(
            sd, config=d, local_files_only=True, quantization_config=GGUFQuantizationConfig(compute_dtype=dtype)
        )
    still_meta = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if still_meta:
        raise _err(f"{source}: {still_meta[0]} was not loaded")
    return model.eval().requires_grad_(False)


# --------------------------------------------------------------------------- fp8 storage


def store_in_fp8(module: Any, compute_dtype: "torch.dtype") -> Any:
    """Keep a DiT's layer weights in float8_e4m3fn, each layer upcast to ``compute_dtype`` for its
    own forward (diffusers layerwise casting, which leaves the embeddings, norms, the output
    projection and the modules kept in float32 as they are). e4m3 rather than e5m2: weights need
    mantissa more than range, and it is the type of the released fp8 checkpoints. Weights are
    rounded to fp8 without a scale, as plain fp8_e4m3fn files are; fp8 matmuls are not used."""
    import torch

    module.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=compute_dtype)
    return module


def parameter_bytes(module: Any) -> int:
    """Bytes the module's parameters hold (GGUF ones at their quantized size)."""
    return sum(p.numel() * p.element_size() for p in module.parameters())
