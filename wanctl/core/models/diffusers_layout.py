"""The diffusers layout of a Wan2.2 model, as the Wan-AI ``*-Diffusers`` repositories and the
built-in models have it::

    model_index.json  scheduler/  text_encoder/  tokenizer/  transformer/  [transformer_2/]  vae/

Each weighted component folder holds a ``config.json`` and its weights (one safetensors file, a
sharded index, or a legacy ``.bin`` / ``.pt``). The family is detected from the configs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from wanctl.core.errors import BadInputError, ModelError
from wanctl.core.families import FAMILIES, FamilySpec
from wanctl.core.files import parse_safetensors_header, read_json, safetensors_head
from wanctl.core.models.layout import ModelLayout

_WEIGHT_STEMS = {
    "transformer": "diffusion_pytorch_model",
    "transformer_2": "diffusion_pytorch_model",
    "vae": "diffusion_pytorch_model",
    "text_encoder": "model",
}
_TOKENIZER_FILES = ("tokenizer.json", "spiece.model", "tokenizer_config.json")


def weight_files(component_dir: Path, component: str) -> list[Path]:
    """The weight files of a component (single file or a sharded index)."""
    stem = _WEIGHT_STEMS[component]
    single = component_dir / f"{stem}.safetensors"
    if single.exists():
        return [single]
    index = component_dir / f"{stem}.safetensors.index.json"
    if index.exists():
        idx = read_json(index, "weight index")
        shards = sorted(set((idx.get("weight_map") or {}).values()))
        files = [component_dir / s for s in shards]
        missing = [f.name for f in files if not f.exists()]
        if missing:
            raise ModelError(f"{component_dir}: incomplete weights, missing shard(s) {', '.join(missing[:3])}")
        return files
    for ext in (".bin", ".pt"):
        legacy = component_dir / f"{stem}{ext}"
        if legacy.exists():
            return [legacy]
    raise ModelError(f"{component_dir}: incomplete model folder, no weights for {component}")


def model_index_for(family: str) -> dict:
    """model_index.json as the real Wan2.2 diffusers repos have it."""
    idx = {
        "_class_name": "WanPipeline",
        "_diffusers_version": "0.35.0.dev0",
        "scheduler": ["diffusers", "UniPCMultistepScheduler"],
        "text_encoder": ["transformers", "UMT5EncoderModel"],
        "tokenizer": ["transformers", "T5TokenizerFast"],
        "transformer": ["diffusers", "WanTransformer3DModel"],
        "vae": ["diffusers", "AutoencoderKLWan"],
    }
    if family == "ti2v-5b":
        idx.update({"boundary_ratio": None, "expand_timesteps": True, "transformer_2": [None, None]})
    elif family == "t2v-a14b":
        idx.update({"boundary_ratio": 0.875, "transformer_2": ["diffusers", "WanTransformer3DModel"]})
    else:
        idx.update(
            {
                "_class_name": "WanImageToVideoPipeline",
                "boundary_ratio": 0.9,
                "image_encoder": [None, None],
                "image_processor": [None, None],
                "transformer_2": ["diffusers", "WanTransformer3DModel"],
            }
        )
    return dict(sorted(idx.items()))


def detect_family(path: Path, tcfg: dict, vcfg: dict, has_t2: bool) -> FamilySpec:
    in_ch = tcfg.get("in_channels")
    out_ch = tcfg.get("out_channels", in_ch)
    z = vcfg.get("z_dim")
    if in_ch == 48 and z == 48 and not has_t2:
        return FAMILIES["ti2v-5b"]
    if has_t2 and in_ch == 16 and out_ch == 16 and z == 16:
        return FAMILIES["t2v-a14b"]
    if has_t2 and in_ch == 36 and out_ch == 16 and z == 16:
        return FAMILIES["i2v-a14b"]
    guess = ""
    if not has_t2 and z == 16 and in_ch in (16, 36):
        guess = " (looks like a Wan2.1 model: one transformer, no expert switch)"
    raise ModelError(
        f"{path}: unknown model family{guess}: transformer in_channels={in_ch}, vae z_dim={z}, "
        f"transformer_2={'yes' if has_t2 else 'no'}; wanctl supports {', '.join(FAMILIES)}"
    )


class DiffusersLayout(ModelLayout):
    """A diffusers-format folder. :meth:`read` reads one from disk; the constructor takes the
    configs as given (a model assembled in memory, or a folder holding only some components)."""

    kind = "diffusers"

    def __init__(self, path: Path, family: FamilySpec, model_index: dict, configs: dict[str, dict]):
        self.path = Path(path)
        self.family = family
        self._model_index = model_index
        self._configs = configs
        self.notes = []

    @classmethod
    def read(cls, path: Path) -> "DiffusersLayout":
        """Read a folder's model_index.json and component configs, and detect its family."""
        p = Path(path)
        index = read_json(p / "model_index.json", "model_index.json")
        entry = index.get("transformer_2")
        has_t2 = isinstance(entry, list) and len(entry) == 2 and entry[0] is not None
        configs: dict[str, dict] = {}
        for comp in ("transformer", "vae") + (("transformer_2",) if has_t2 else ()):
            configs[comp] = read_json(p / comp / "config.json", f"{comp}/config.json")
        if (p / "text_encoder" / "config.json").exists():
            configs["text_encoder"] = read_json(p / "text_encoder" / "config.json", "text_encoder/config.json")
        family = detect_family(p, configs["transformer"], configs["vae"], has_t2)
        return cls(p, family, index, configs)

    def model_index(self) -> dict:
        return self._model_index

    def has(self, component: str) -> bool:
        if component == "tokenizer":
            return (self.path / "tokenizer").is_dir()
        return component in self._configs

    def config(self, component: str) -> dict:
        if component == "tokenizer":
            return {}
        if component not in self._configs:
            self._configs[component] = read_json(self.path / component / "config.json", f"{component}/config.json")
        return self._configs[component]

    def files(self, component: str) -> list[Path]:
        cdir = self.path / component
        if component == "tokenizer":
            if not cdir.is_dir():
                raise ModelError(f"{self.path}: incomplete model folder, tokenizer/ is missing")
            return sorted(f for f in cdir.iterdir() if f.is_file())
        return weight_files(cdir, component)

    def fingerprint_config(self, component: str) -> dict | None:
        if component == "tokenizer":
            return None
        # diffusers writes its own version into configs; it does not change the weights' meaning
        return {k: v for k, v in self.config(component).items() if not k.startswith("_")}

    def load(self, component: str, dtype: Any = None) -> Any:
        from wanctl.core.models.weights import torch_dtype

        where = str(self.path / component)
        if component == "tokenizer":
            from transformers import AutoTokenizer

            self.files("tokenizer")  # a one-line error when the folder is missing
            return AutoTokenizer.from_pretrained(where)
        self.files(component)  # a one-line error naming what is missing, before the library tries
        dt = torch_dtype(dtype)
        if component == "vae":
            from diffusers import AutoencoderKLWan

            module = AutoencoderKLWan.from_pretrained(where, torch_dtype=dt)
        elif component == "text_encoder":
            from transformers import UMT5EncoderModel

            module = UMT5EncoderModel.from_pretrained(where, dtype=dt)
        elif component in ("transformer", "transformer_2"):
            from diffusers import WanTransformer3DModel

            module = WanTransformer3DModel.from_pretrained(where, torch_dtype=dt)
        else:
            raise ValueError(f"unknown component {component!r}")
        return module.eval().requires_grad_(False)

    def verify(self) -> list[dict]:
        rows = []
        for comp in self.verify_components():
            row = {"component": comp, "status": "ok", "detail": ""}
            try:
                row["detail"] = self._check(comp)
            except ModelError as e:
                row.update(status="error", detail=e.message)
            rows.append(row)
        return rows

    def _check(self, comp: str) -> str:
        cdir = self.path / comp
        if not cdir.is_dir():
            raise ModelError(f"{comp}/ is missing")
        if comp == "tokenizer":
            if not any((cdir / n).exists() for n in _TOKENIZER_FILES):
                raise ModelError("no tokenizer files")
            return ", ".join(f.name for f in self.files(comp))
        if comp == "text_encoder" and not self.has("text_encoder"):
            raise ModelError("text_encoder/config.json is missing")
        files = self.files(comp)
        have = _header_shapes(files)
        if not have:
            return f"{len(files)} legacy file(s), names not checked"
        want = _expected_shapes(comp, self.config(comp))
        missing = [k for k in want if k not in have]
        # tied input embeddings may be stored under either name
        missing = [k for k in missing if not (k.endswith("embed_tokens.weight") and "shared.weight" in have)]
        bad = [k for k in want if k in have and tuple(have[k]) != want[k]]
        if missing or bad:
            parts = []
            if missing:
                parts.append(f"{len(missing)} missing weight(s), e.g. {missing[0]}")
            if bad:
                parts.append(f"{len(bad)} shape mismatch(es), e.g. {bad[0]} {have[bad[0]]} != {want[bad[0]]}")
            raise ModelError("; ".join(parts))
        return f"{len(files)} file(s), {len(have)} tensors match the config"


def _header_shapes(files: list[Path]) -> dict[str, tuple[int, ...]]:
    """Tensor shapes from the safetensors headers of the files (legacy files add nothing)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for f in files:
        if f.suffix != ".safetensors":
            continue
        try:
            _, infos, _ = parse_safetensors_header(safetensors_head(f), f.stat().st_size, str(f))
        except BadInputError as e:
            raise ModelError(e.message) from None
        shapes.update({k: v.shape for k, v in infos.items()})
    return shapes


def _expected_shapes(component: str, cfg: dict) -> dict[str, tuple[int, ...]]:
    """Parameter shapes of the component built from its config with empty weights (no memory)."""
    from wanctl.core.models.runtime import quiet_libraries
    from wanctl.core.models.weights import build_empty

    quiet_libraries()
    return {k: tuple(v.shape) for k, v in build_empty(component, cfg).state_dict().items()}
