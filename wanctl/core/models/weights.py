"""Weight files read safely, and modules filled from them without a second copy in memory.

* :class:`Checkpoint`: one ``.safetensors`` file, torch pickle or ``.gguf`` file. Shapes and
  dtypes come without reading tensor data (the safetensors header; a memory-mapped pickle; the
  GGUF header, read with the ``gguf`` package). Pickles are only ever read with
  ``torch.load(..., weights_only=True, map_location="cpu")``: an arbitrary pickle is refused,
  never run. GGUF tensors are read by diffusers' GGUF loader (:mod:`quantized`), not here.
* :func:`build_empty` builds a diffusers / transformers module with empty (meta) weights from
  its config; :func:`assign` fills it shard by shard, checking every name and shape, with the
  dtype rules of the libraries' own ``from_pretrained``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from wanctl.core.errors import model_error as _err
from wanctl.core.models.runtime import parse_dtype

if TYPE_CHECKING:  # pragma: no cover
    import torch


class Checkpoint:
    """One weight file. ``shapes()`` / ``dtypes()`` read no tensor data (safetensors header;
    memory-mapped pickle; GGUF header); ``tensors()`` yields (key, tensor) once (not for GGUF).
    Pickles: torch.load(weights_only=True) only."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._sd: dict | None = None
        self._shapes: dict | None = None
        self._dtypes: dict | None = None

    @property
    def is_safetensors(self) -> bool:
        return self.path.suffix.lower() == ".safetensors"

    @property
    def is_gguf(self) -> bool:
        return self.path.suffix.lower() == ".gguf"

    def _read_gguf(self) -> None:
        """Logical (torch-order) shapes and GGML type names from a GGUF header (data stays mapped)."""
        try:
            from gguf import GGUFReader
        except ImportError:
            raise _err(f"{self.path}: reading GGUF files needs the gguf package (pip install gguf)") from None
        try:
            reader = GGUFReader(str(self.path))
            # GGUF stores dimensions innermost first; torch shapes are the reverse
            shapes = {t.name: tuple(int(d) for d in reversed(t.shape.tolist())) for t in reader.tensors}
            dtypes = {t.name: t.tensor_type.name for t in reader.tensors}
        except Exception as e:  # the reader raises ValueError, struct / numpy errors on bad files
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise _err(f"{self.path}: not a readable GGUF file: {first}") from None
        if not shapes:
            raise _err(f"{self.path}: a GGUF file without tensors")
        self._shapes, self._dtypes = shapes, dtypes

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
            if self.is_gguf:
                self._read_gguf()
            elif self.is_safetensors:
                from safetensors import safe_open

                try:
                    with safe_open(str(self.path), framework="pt") as f:
                        shapes, dtypes = {}, {}
                        for k in f.keys():
                            sl = f.get_slice(k)
                            shapes[k] = tuple(sl.get_shape())
                            dtypes[k] = sl.get_dtype()
                except Exception as e:  # safetensors raises its own error types
                    raise _err(f"{self.path}: not a readable safetensors file: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
                self._shapes, self._dtypes = shapes, dtypes
            else:
                sd = self._torch_load()
                self._shapes = {k: tuple(v.shape) for k, v in sd.items()}
                self._dtypes = {k: _DTYPE_NAMES.get(str(v.dtype), str(v.dtype)) for k, v in sd.items()}
        return self._shapes

    def dtypes(self) -> dict[str, str]:
        """Tensor dtypes as the file names them: safetensors names ("BF16", "F8_E4M3"...) for
        safetensors and pickles, GGML type names ("Q8_0", "BF16", "F32"...) for GGUF."""
        self.shapes()
        return dict(self._dtypes or {})

    def tensors(self, keys=None) -> Iterator[tuple[str, "torch.Tensor"]]:
        """(key, tensor) pairs, all or only ``keys`` (a full checkpoint's DiT: the rest is never read)."""
        if self.is_gguf:
            raise ValueError("GGUF tensors are read by diffusers' GGUF loader")
        wanted = None if keys is None else set(keys)
        if self.is_safetensors:
            from safetensors import safe_open

            with safe_open(str(self.path), framework="pt") as f:
                for k in f.keys():
                    if wanted is None or k in wanted:
                        yield k, f.get_tensor(k)
        else:
            sd = self._torch_load()
            for k in list(sd):
                if wanted is None or k in wanted:
                    yield k, sd[k]
            self._sd = None  # drop the mapping so loaded tensors are owned by the model only


# torch dtype -> the safetensors name of it (so pickles report dtypes like safetensors files)
_DTYPE_NAMES = {"torch.float32": "F32", "torch.float16": "F16", "torch.bfloat16": "BF16", "torch.float64": "F64",
                "torch.float8_e4m3fn": "F8_E4M3", "torch.float8_e5m2": "F8_E5M2"}


def torch_dtype(dtype) -> "torch.dtype":
    """A torch dtype from a torch dtype, a name ("bf16", "fp16", "fp32"...) or None (float32)."""
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


def assign(model, batches: Iterator[dict], dtype, source: str, tied: dict[str, str] | None = None):
    """Assign mapped tensors (one dict per shard) into a model built with empty weights, on the
    CPU. ``tied``: {parameter: parameter it shares its tensor with}. Returns the model, eval mode,
    no gradients."""
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
                t = t.to(device="cpu", dtype=want)
            else:
                t = t.to(device="cpu")
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
    still_meta = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if still_meta:
        raise _err(f"{source}: {still_meta[0]} was not loaded")
    return model.eval().requires_grad_(False)


def build_empty(component: str, cfg: dict):
    """The module of a component (DiT, VAE, umT5 encoder) from its config, with meta weights."""
    from accelerate import init_empty_weights

    with init_empty_weights():
        if component in ("transformer", "transformer_2"):
            from diffusers import WanTransformer3DModel

            return WanTransformer3DModel.from_config(cfg)
        if component == "vae":
            from diffusers import AutoencoderKLWan

            return AutoencoderKLWan.from_config(cfg)
        from transformers import UMT5Config, UMT5EncoderModel

        return UMT5EncoderModel(UMT5Config(**{k: v for k, v in cfg.items() if not k.startswith("_")}))
