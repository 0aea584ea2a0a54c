"""Official Wan2.2 checkpoints (as released by Wan-AI) and ComfyUI single files, as a
:class:`~wanctl.core.models.layout.ModelLayout` that loads into the diffusers / transformers
modules the rest of wanctl uses.

Official folders::

    Wan2.2-T2V-A14B/ or Wan2.2-I2V-A14B/        Wan2.2-TI2V-5B/
      high_noise_model/ config.json + shards      config.json + diffusion_pytorch_model*.safetensors
      low_noise_model/  config.json + shards      Wan2.2_VAE.pth
      Wan2.1_VAE.pth                              models_t5_umt5-xxl-enc-bf16.pth
      models_t5_umt5-xxl-enc-bf16.pth             google/umt5-xxl/ (tokenizer)
      google/umt5-xxl/ (tokenizer)

ComfyUI "repackaged" files are single ``.safetensors``: a DiT, a VAE and a text encoder. The DiT
may also be a ComfyUI full checkpoint (its DiT part is used), an ``fp8_scaled`` or plain fp8 file,
or a GGUF file (:mod:`quantized`).

The layout holds paths only (:mod:`official_detect` finds them). A component's config comes
from the checkpoint's tensor shapes (:mod:`official_configs`); loading builds the module with
empty weights, maps the key names (:mod:`official_keys`) and assigns the tensors shard by shard
(:mod:`weights`, which also keeps pickles safe).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from wanctl.core.errors import ModelError
from wanctl.core.errors import model_error as _err
from wanctl.core.families import FamilySpec
from wanctl.core.models.layout import COMPONENTS, ModelLayout
from wanctl.core.models.official_configs import infer_dit_config, infer_umt5_config, infer_vae_config
from wanctl.core.models.official_keys import (
    convert_dit_state_dict,
    convert_t5_state_dict,
    is_scaled_fp8,
    map_dit_key,
    map_t5_key,
    strip_dit_prefix,
    vae_key_map,
    weight_keys,
)
from wanctl.core.models.weights import Checkpoint

# File names in the official repos (wan/configs/*.py: vae_checkpoint, t5_checkpoint, t5_tokenizer)
VAE_FILES = {"wan2.1": "Wan2.1_VAE", "wan2.2": "Wan2.2_VAE"}
T5_FILE = "models_t5_umt5-xxl-enc-bf16.pth"
TOKENIZER_DIR = "google/umt5-xxl"
EXPERT_DIRS = {"transformer": "high_noise_model", "transformer_2": "low_noise_model"}


def mapped_dit_shapes(files: Iterable[Path]) -> dict[str, tuple[int, ...]]:
    """diffusers names -> shapes of a (possibly sharded, possibly prefixed) official DiT: weights
    only (no fp8_scaled marker or scales), logical shapes for GGUF, a full checkpoint's DiT part."""
    shapes: dict = {}
    for f in files:
        raw = Checkpoint(f).shapes()
        prefix, keys = strip_dit_prefix(raw)
        shapes.update({map_dit_key(k, str(f)): raw[prefix + k] for k in weight_keys(keys)})
    return shapes


@dataclass(eq=False)
class OfficialLayout(ModelLayout):
    """Where the parts of an official Wan2.2 model are. Only paths and small configs: components
    are built on demand by :meth:`load`.

    ``transformer`` is the high-noise expert of an A14B model (``high_noise_model/``) or the only
    DiT of TI2V-5B; ``transformer_2`` the low-noise expert (empty for TI2V-5B or when a single
    ComfyUI expert file was given alone). ``overrides`` holds per-component config values that
    the checkpoint cannot tell (merged last into :meth:`config`).
    """

    path: Path
    kind: str  # "official-folder" (official release) | "official-files" (ComfyUI single files)
    family: FamilySpec
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
    _formats: dict[str, str | None] = field(default_factory=dict, repr=False)

    def model_index(self) -> dict:
        """model_index.json as the diffusers conversion of this family has it."""
        from wanctl.core.models.diffusers_layout import model_index_for

        return model_index_for(self.family.name)

    def has(self, component: str) -> bool:
        if component not in COMPONENTS:
            raise ValueError(component)
        return bool(self.files(component)) if component != "tokenizer" else self.tokenizer is not None

    def files(self, component: str) -> list[Path]:
        """The files a component is read from; [] when absent."""
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
            "vae": f"no VAE ({VAE_FILES[self.family.vae]}.pth) found; give the VAE file",
            "text_encoder": f"no text encoder ({T5_FILE}) found; give the text encoder file",
            "tokenizer": f"no tokenizer ({TOKENIZER_DIR}/) found; give the tokenizer folder",
        }
        raise _err(f"{self.path}: {hints.get(component, f'{component} is missing')}")

    def config(self, component: str) -> dict:
        """The config of a component, from the checkpoint's shapes, the official config.json and
        ``overrides``. Reads no tensor data."""
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
                source = str(files[0].parent if self.kind == "official-folder" else files[0])
                cfg = infer_dit_config(mapped_dit_shapes(files), official, source=source)
                cfg.update(over)
            elif component == "vae":
                kind, cfg = infer_vae_config(self._shapes("vae"), str(self.vae))
                cfg.update(self.overrides.get("vae", {}))
                if "latents_mean" not in cfg:
                    raise _err(f"{self.vae}: unknown VAE latent size z_dim={cfg['z_dim']}: no latent statistics")
                want = self.family.vae
                if kind != want:
                    raise _err(f"{self.vae}: a {kind} VAE, but {self.family.name} needs the {want} VAE ({VAE_FILES[want]})")
            else:
                cfg = infer_umt5_config(self._shapes("text_encoder"), str(self.text_encoder))
                cfg.update(self.overrides.get("text_encoder", {}))
            self._configs[component] = cfg
        return dict(self._configs[component])

    def fingerprint_config(self, component: str) -> dict | None:
        return self.config(component)

    def weight_format(self, component: str) -> str | None:
        """gguf Q8_0 / fp8_scaled (float8_e4m3fn) / fp8_e4m3fn / bf16... of an expert's or the
        text encoder's files."""
        if component not in ("transformer", "transformer_2", "text_encoder") or not self.has(component):
            return None
        if component not in self._formats:
            from wanctl.core.models.quantized import weight_format

            self._formats[component] = weight_format(self.files(component))
        return self._formats[component]

    def _shapes(self, component: str) -> dict[str, tuple[int, ...]]:
        """Mapped (diffusers / transformers) names -> shapes, without reading tensor data."""
        if component in ("transformer", "transformer_2"):
            return mapped_dit_shapes(self.files(component))
        ck = Checkpoint(self.files(component)[0])
        if component == "vae":
            _, mapping = vae_key_map(ck.shapes(), str(ck.path))
            return {mapping[k]: s for k, s in ck.shapes().items()}
        out = {}
        shapes = ck.shapes()
        for k in weight_keys(shapes):  # an fp8_scaled encoder: its marker and scales are no weights
            s = shapes[k]
            new = map_t5_key(k, str(ck.path))
            if new is not None:
                out["shared.weight" if new == "encoder.embed_tokens.weight" else new] = s
        return out

    # ----------------------------------------------------------------------- loading

    def load(self, component: str, dtype: Any = None) -> Any:
        """Build one component as the diffusers / transformers module, on the CPU.

        transformer | transformer_2 (WanTransformer3DModel), vae (AutoencoderKLWan), text_encoder
        (UMT5EncoderModel), tokenizer. ``dtype`` (torch dtype or "bf16"/"fp16"/"fp32"; default
        float32) applies to floating weights, except the modules the library itself keeps in
        float32 (as ``from_pretrained(torch_dtype=...)`` does). Weights are assigned shard by shard.
        """
        if component not in COMPONENTS:
            raise ValueError(f"unknown component {component!r}")
        self._require(component)
        if component == "tokenizer":
            from transformers import AutoTokenizer

            try:
                return AutoTokenizer.from_pretrained(str(self.tokenizer))
            except (OSError, ValueError) as e:
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise _err(f"{self.tokenizer}: cannot load the tokenizer: {first}") from None

        from wanctl.core.models.runtime import quiet_libraries
        from wanctl.core.models.weights import assign, build_empty, torch_dtype

        quiet_libraries()
        dt = torch_dtype(dtype)
        model = build_empty(component, self.config(component))
        files = self.files(component)
        if component in ("transformer", "transformer_2"):
            source = str(files[0].parent) if len(files) > 1 else str(files[0])
            if files[0].suffix.lower() == ".gguf":
                from wanctl.core.models.quantized import load_gguf_dit

                return load_gguf_dit(files[0], self.config(component), dt, source)
            return assign(model, _dit_batches(files), dt, source)
        ck = Checkpoint(files[0])
        if component == "vae":
            _, mapping = vae_key_map(ck.shapes(), str(ck.path))
            batch = {mapping[k]: t for k, t in ck.tensors()}
            return assign(model, iter([batch]), dt, str(ck.path))
        sd = dict(ck.tensors())
        if is_scaled_fp8(sd):  # ComfyUI's umt5_xxl_fp8_e4m3fn_scaled: dequantized block by block
            from wanctl.core.models.quantized import dequantize_scaled_fp8

            batches = (convert_t5_state_dict(b, str(ck.path)) for b in dequantize_scaled_fp8(sd, str(ck.path)))
        else:
            batches = iter([convert_t5_state_dict(sd, str(ck.path))])
        return assign(model, batches, dt, str(ck.path), tied={"encoder.embed_tokens.weight": "shared.weight"})

    def verify(self) -> list[dict]:
        """Check every component's weight names and shapes against its config (no tensor data read)."""
        from wanctl.core.models.runtime import quiet_libraries
        from wanctl.core.models.weights import build_empty

        quiet_libraries()
        rows = []
        for comp in self.verify_components():
            row = {"component": comp, "status": "ok", "detail": ""}
            try:
                if not self.has(comp):
                    row.update(status="missing", detail=f"no {comp} in {self.path}")
                elif comp == "tokenizer":
                    row["detail"] = ", ".join(f.name for f in self.files(comp))
                else:
                    have = self._shapes(comp)
                    want = {k: tuple(v.shape) for k, v in build_empty(comp, self.config(comp)).state_dict().items()}
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
                    row["detail"] = f"{len(self.files(comp))} file(s), {len(have)} tensors ({n / 1e6:.1f}M values) match the config"
                    if self.weight_format(comp):
                        row["detail"] += f" ({self.weight_format(comp)})"
            except ModelError as e:
                row.update(status="error", detail=e.message)
            rows.append(row)
        return rows


def _dit_batches(files: list[Path]) -> Iterator[dict]:
    """Dicts of diffusers-named tensors: one per DiT shard, or one per block of an fp8_scaled file
    (dequantized, :mod:`quantized`). A full checkpoint's other parts are never read."""
    from wanctl.core.models.quantized import dequantize_scaled_fp8

    for f in files:
        ck = Checkpoint(f)
        prefix, keys = strip_dit_prefix(ck.shapes())
        whole = len(keys) == len(ck.shapes())  # else a full checkpoint: its DiT part only is read
        sd = {k[len(prefix):]: t for k, t in (ck.tensors() if whole else ck.tensors([prefix + k for k in keys]))}
        if is_scaled_fp8(sd):
            for batch in dequantize_scaled_fp8(sd, str(f)):
                yield convert_dit_state_dict(batch, str(f))
        else:
            yield convert_dit_state_dict(sd, str(f))
