"""Model bundles: resolve ``--model`` to a model, fingerprint it, and load only the components a
command needs.

A model is a :class:`ModelSpec`: a name, a :class:`~wanctl.core.models.layout.ModelLayout`
(diffusers folder, official Wan2.2 folder, ComfyUI files; see :mod:`detect`) and the sampling
presets it carries. Everything here goes through the layout's interface, whatever the layout.

Built-in models (``toy-*`` shipped, ``tiny-*`` generated into the cache dir on first use) are
diffusers folders and go through exactly the same code as real weights.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from wanctl.core import trace
from wanctl.core.errors import BadInputError, ModelError
from wanctl.core.families import FamilySpec, Preset
from wanctl.core.files import DigestMemo
from wanctl.core.models.detect import detect_layout
from wanctl.core.models.layout import WEIGHTED, ModelLayout
from wanctl.core.models.presets import model_preset
from wanctl.core.models.runtime import device_of, hub_offline, parse_dtype, same_device  # noqa: F401 (parse_dtype: for callers)

if TYPE_CHECKING:  # pragma: no cover
    import torch


@dataclass
class ModelSpec:
    """What a model is, read from its configs (no torch)."""

    name: str
    layout: ModelLayout
    builtin: bool = False
    preset: Preset | None = None  # None: the family's official presets

    def __post_init__(self):
        if self.preset is None:
            self.preset = self.family.preset

    @property
    def path(self) -> Path:
        return self.layout.path

    @property
    def family(self) -> FamilySpec:
        return self.layout.family

    @property
    def model_index(self) -> dict:
        return self.layout.model_index()

    @property
    def configs(self) -> dict[str, dict]:
        return self.layout.configs()

    @property
    def vae_config(self) -> dict:
        return self.layout.config("vae")

    @property
    def boundary(self) -> float | None:
        if self.family.experts == 1:
            return None
        b = self.model_index.get("boundary_ratio")
        return float(b) if b is not None else self.family.preset.boundary

    def describe(self) -> dict:
        return {"name": self.name, "path": str(self.path), "family": self.family.name, "builtin": self.builtin,
                "layout": self.layout.kind}


def inspect_folder(path: str | os.PathLike, name: str | None = None, builtin: bool = False) -> ModelSpec:
    """A model folder or file as a ModelSpec: its layout, family and presets (see :func:`detect.detect_layout`)."""
    layout = detect_layout(path)
    layout.configs()  # every config now: a broken model fails here, in one line, not mid-run
    spec = ModelSpec(name=name or layout.name, layout=layout, builtin=builtin)
    spec.preset = model_preset(layout.path, spec.family, spec.boundary)
    return spec


# --------------------------------------------------------------------------- fingerprints


def _digests() -> DigestMemo:
    from wanctl.core.env import cache_dir

    return DigestMemo(cache_dir() / "fingerprints.json")


def component_fingerprint(spec: ModelSpec, component: str, memo: DigestMemo | None = None) -> str:
    """sha256 over the component's config and its files' digests (16 hex chars)."""
    own = memo is None
    memo = _digests() if own else memo
    h = hashlib.sha256()
    cfg = spec.layout.fingerprint_config(component)
    if cfg is not None:
        h.update(json.dumps(cfg, sort_keys=True, default=str).encode())
    for f in spec.layout.files(component):
        h.update(f.name.encode())
        h.update(memo.digest(f).encode())
    if own:
        memo.save()
    return h.hexdigest()[:16]


def fingerprints(spec: ModelSpec, components: list[str]) -> dict:
    memo = _digests()
    out = {c: component_fingerprint(spec, c, memo) for c in components}
    memo.save()
    return out


def combined_fingerprint(parts: dict) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- resolution


def resolve_model(
    value: str | None,
    *,
    family: str | None = None,
    recorded: dict | None = None,
    notice: Callable[[str], None] | None = None,
) -> ModelSpec:
    """Turn ``--model`` (a folder, a checkpoint file, a model description or a built-in name) into a ModelSpec.

    Without a value: ``WANCTL_MODEL``; else the model recorded in the input artifact when it is
    still available; else the default built-in (of ``family`` when known), with a notice.
    """
    from wanctl.core.models import builtin

    if value is None:
        value = os.environ.get("WANCTL_MODEL") or None
    if value is None and recorded:
        rec_name, rec_path = recorded.get("name"), recorded.get("path")
        if recorded.get("builtin") and rec_name in builtin.BUILTINS:
            value = rec_name
        elif rec_path and Path(rec_path).exists():
            value = rec_path
        elif rec_path:
            return _stand_in(recorded, family, notice)
        if value is not None and notice:
            notice(f"using the model recorded in the input artifact: {value}")
    if value is None:
        value = builtin.default_for(family)
        if notice:
            notice(f"no --model given and WANCTL_MODEL unset: using built-in '{value}' ({builtin.BUILTINS[value].summary})")
    if value in builtin.BUILTINS:
        path = builtin.ensure(value, notice=notice)
        return inspect_folder(path, name=value, builtin=True)
    p = Path(value).expanduser()
    if not p.exists():
        known = ", ".join(builtin.BUILTINS)
        if os.sep in value or value.startswith(".") or p.suffix:
            raise ModelError(f"model folder {value} does not exist")
        raise ModelError(f"unknown model {value!r}: not a folder and not a built-in ({known})")
    spec = inspect_folder(p)
    for n in spec.layout.notes if notice else ():  # what detection noticed (a full checkpoint's parts left out...)
        notice(n)
    return spec


def _stand_in(recorded: dict, family: str | None, notice: Callable[[str], None] | None) -> ModelSpec:
    """The recorded model folder is gone: a built-in of the family stands in only when its VAE
    is the one the artifact was made with (its latents mean the same pixels); else exit 4."""
    from wanctl.core.models import builtin

    gone = recorded.get("path")
    want = (recorded.get("components") or {}).get("vae")
    fam = family or recorded.get("family")
    if want:
        for name, b in builtin.BUILTINS.items():
            if b.family != fam or not builtin.available(name):
                continue
            spec = inspect_folder(builtin.ensure(name, notice=notice), name=name, builtin=True)
            if component_fingerprint(spec, "vae") == want:
                if notice:
                    notice(f"the model recorded in the input ({gone}) is gone; built-in '{name}' has the same VAE, using it")
                return spec
    raise ModelError(f"the model recorded in the input artifact ({gone}) is gone, and no built-in has its VAE; "
                     "pass --model with that model's folder")


# --------------------------------------------------------------------------- loading


@dataclass
class LoadOptions:
    device: str = "cpu"
    dtype: str = "bf16"  # DiT and text encoder
    vae_dtype: str = "fp32"
    vae_tiling: bool = False
    text_encoder_device: str | None = None
    cache: bool = True  # read/write the embedding and inversion caches
    offload: str = "none"  # none | model (one big component on the device at a time) | group (DiT blocks on demand)
    loras: tuple = ()  # lora.LoraSpec values, applied to the experts as they load (see models/lora.py)
    lora_fused: bool = True  # False: LoRAs stay PEFT adapters (--lora-unfused)
    weights_dtype: str = "auto"  # DiT weight storage: auto (the compute dtype) | fp8 (models/quantized.py)
    parallel: Any = None  # parallel.ParallelLayout of --parallel (context / CFG parallelism), or None


OFFLOAD_MODES = ("none", "model", "group")
HEAVY = ("transformer", "transformer_2", "text_encoder", "vae")


@dataclass
class ModelBundle:
    """A model plus the components loaded so far. Components load on first use, once."""

    spec: ModelSpec
    options: LoadOptions = field(default_factory=LoadOptions)
    _loaded: dict[str, Any] = field(default_factory=dict)
    _fingerprints: dict[str, str] = field(default_factory=dict)
    _lora_sha: dict[str, str] = field(default_factory=dict)

    @property
    def family(self) -> FamilySpec:
        return self.spec.family

    @property
    def preset(self) -> Preset:
        """The model's sampling defaults (its own presets file over the family's)."""
        return self.spec.preset

    @property
    def device(self) -> "torch.device":
        import torch

        return torch.device(self.options.device)

    @property
    def dtype(self) -> "torch.dtype":
        return parse_dtype(self.options.dtype)

    def fingerprint(self, component: str) -> str:
        if component not in self._fingerprints:
            self._fingerprints.update(self._with_storage(self._with_loras(fingerprints(self.spec, [component]))))
        return self._fingerprints[component]

    def record(self, components: list[str]) -> dict:
        """The ``model`` block of artifact metadata for the components a command used."""
        missing = [c for c in components if c not in self._fingerprints]
        if missing:
            self._fingerprints.update(self._with_storage(self._with_loras(fingerprints(self.spec, missing))))
        parts = {c: self._fingerprints[c] for c in components}
        rec = self.spec.describe()
        rec["components"] = parts
        rec["fingerprint"] = combined_fingerprint(parts)
        formats = {c: f for c in components if c in WEIGHTED and (f := self.spec.layout.weight_format(c))}
        if formats:  # how the weight files store them (gguf Q8_0, fp8_scaled...), headers only
            rec["weights"] = formats
        if self.options.weights_dtype != "auto" and any(c in self.experts() for c in components):
            rec["weights_dtype"] = self.options.weights_dtype
        if self.options.loras and any(c in self.experts() for c in components):
            from wanctl.core.models import lora

            rec["loras"] = [lora.record(s, self._lora_digest(s), s.experts(self.experts()), self.options.lora_fused)
                            for s in self.options.loras]
        return rec

    # --- LoRAs (models/lora.py): part of each expert's fingerprint, applied as the expert loads

    def _lora_digest(self, spec) -> str:
        if spec.path not in self._lora_sha:
            memo = _digests()
            self._lora_sha[spec.path] = memo.digest(Path(spec.path).expanduser())
            memo.save()
        return self._lora_sha[spec.path]

    def _loras_of(self, expert: str) -> list:
        return [s for s in self.options.loras if expert in s.experts(self.experts())]

    def _with_loras(self, fps: dict[str, str]) -> dict[str, str]:
        """An expert with LoRAs is another model: its fingerprint covers their content and strength
        (so they key the inversion cache and the magcache calibration)."""
        from wanctl.core.models import lora

        for c in fps:
            specs = self._loras_of(c) if c in ("transformer", "transformer_2") else []
            if specs:
                fps[c] = combined_fingerprint({"weights": fps[c],
                                               "loras": lora.fingerprint_part([(s, self._lora_digest(s)) for s in specs])})
        return fps

    def _with_storage(self, fps: dict[str, str]) -> dict[str, str]:
        """fp8 storage rounds an expert's weights: its fingerprint says so (inversion cache, magcache)."""
        if self.options.weights_dtype != "auto":
            for c in fps:
                if c in ("transformer", "transformer_2"):
                    fps[c] = combined_fingerprint({"weights": fps[c], "storage": self.options.weights_dtype})
        return fps

    def _lora_matches(self, expert: str, model) -> list:
        from wanctl.core.models import lora

        return [lora.match(lora.read(s), model, expert) for s in self._loras_of(expert)]

    def check_loras(self, notice: Callable[[str], None] | None = None) -> None:
        """Every LoRA against the experts it targets, on empty (meta) experts built from their
        configs: no weights load, and a LoRA that does not fit fails before any expert runs."""
        if not self.options.loras:
            return
        from wanctl.core.models import lora
        from wanctl.core.models.weights import build_empty

        experts = self.experts()
        seen: dict[str, list[str]] = {}
        for spec in self.options.loras:
            spec.experts(experts)  # --lora-low on a one-expert model: refused here
        for expert in experts:
            if not self._loras_of(expert):
                continue
            if self.options.lora_fused and str(self.spec.layout.weight_format(expert) or "").startswith("gguf"):
                raise BadInputError(f"cannot fuse a LoRA into {expert}'s GGUF-quantized weights: add --lora-unfused "
                                    "(the LoRA then runs as an adapter next to them)")
            meta = build_empty(expert, self.spec.layout.config(expert))
            for m in self._lora_matches(expert, meta):
                seen.setdefault(id(m.lora.spec), [m, []])[1].append(expert)
        for m, on in seen.values():
            for line in lora.describe_match(m, on, self.options.lora_fused):
                if notice:
                    notice(line)

    def _load(self, component: str, dtype, activate: bool = True) -> Any:
        if component not in self._loaded:
            hub_offline()
            trace.event("load", component=component, model=self.spec.name)
            try:
                module = self.spec.layout.load(component, dtype)
            except (ModelError, BadInputError):
                raise
            except Exception as e:
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise ModelError(f"{self.spec.path / component}: cannot load {component}: {first}") from None
            if component == "vae" and self.options.vae_tiling:
                module.enable_tiling()
            loras = self._loras_of(component) if component in ("transformer", "transformer_2") else []
            if loras and self.options.offload != "none":  # before the offloading hooks wrap the blocks
                self._apply_loras(component, module)
            if self.options.offload != "none":  # before the offloading hooks keep copies of the weights
                self._store_weights(component, module, dtype)
            self._loaded[component] = self._place(component, module) if component in HEAVY else module
            if loras and self.options.offload == "none":  # on the compute device, where the merge is fast
                self._apply_loras(component, self._loaded[component])
            if self.options.offload == "none":  # after any LoRA merge: fused into full-precision weights
                self._store_weights(component, self._loaded[component], dtype)
            if self.options.parallel is not None and component in ("transformer", "transformer_2"):
                from wanctl.core.models.parallel import enable

                enable(self._loaded[component], self.options.parallel, self.options.device)  # both experts, one mesh
        module = self._loaded[component]
        if activate and self.options.offload == "model" and component in HEAVY:
            self._activate(component)
        return module

    def _store_weights(self, component: str, module, dtype) -> None:
        """--weights-dtype fp8: the expert's layer weights kept in fp8 (models/quantized.py)."""
        if self.options.weights_dtype == "fp8" and component in ("transformer", "transformer_2"):
            from wanctl.core.models.quantized import store_in_fp8

            trace.event("weights_dtype", component=component, storage="float8_e4m3fn")
            store_in_fp8(module, dtype)

    def _apply_loras(self, expert: str, module) -> None:
        from wanctl.core.models import lora

        trace.event("lora", component=expert, count=len(self._loras_of(expert)), fused=self.options.lora_fused)
        lora.apply(module, self._lora_matches(expert, module), fused=self.options.lora_fused)

    def compute_device(self, component: str) -> str:
        """The device a component computes on (inputs go there), whatever the offload mode."""
        return self._home(component)

    def _home(self, component: str) -> str:
        if component == "text_encoder" and self.options.text_encoder_device:
            return self.options.text_encoder_device
        return self.options.device

    def _place(self, component: str, module):
        """Where a freshly loaded component lives, per --offload."""
        mode = self.options.offload
        if mode not in OFFLOAD_MODES:
            raise BadInputError(f"unknown offload mode {mode!r}; use one of {', '.join(OFFLOAD_MODES)}")
        if mode == "group" and component in ("transformer", "transformer_2", "text_encoder"):
            from diffusers.hooks import apply_group_offloading

            # weights stay on the CPU; each block comes to the device for its forward only
            module = module.to("cpu")
            apply_group_offloading(module, onload_device=self._home(component), offload_device="cpu",
                                   offload_type="block_level", num_blocks_per_group=1)
            return module
        if mode == "model":
            return module.to("cpu")
        return module.to(self._home(component))

    def _activate(self, component: str) -> None:
        """--offload model: bring ``component`` to its device and send the other big ones home to
        the CPU, so an A14B run holds one expert on the device at a time. Devices compare as
        devices ("cuda" is "cuda:0" when 0 is current): a component already in place never moves."""
        for name, mod in self._loaded.items():
            if name in HEAVY and name != component and not same_device(device_of(mod), "cpu"):
                mod.to("cpu")
                trace.event("offload", component=name)
        mod = self._loaded[component]
        target = self._home(component)
        if not same_device(device_of(mod), target):
            mod.to(target)
            trace.event("onload", component=component)

    def vae(self):
        return self._load("vae", parse_dtype(self.options.vae_dtype))

    def tokenizer(self):
        return self._load("tokenizer", None)

    def text_encoder(self):
        return self._load("text_encoder", self.dtype)

    def transformer(self, which: str = "transformer", *, activate: bool = True):
        """An expert, loaded on first use. ``activate=False`` only configures it (hooks, attention,
        compilation) without bringing it to the device under ``--offload model``."""
        if which not in ("transformer", "transformer_2"):
            raise ValueError(which)
        return self._load(which, self.dtype, activate)

    def experts(self) -> list[str]:
        return self.spec.layout.experts()


def open_bundle(
    value: str | None,
    *,
    family: str | None = None,
    recorded: dict | None = None,
    notice: Callable[[str], None] | None = None,
    options: LoadOptions | None = None,
) -> ModelBundle:
    spec = resolve_model(value, family=family, recorded=recorded, notice=notice)
    bundle = ModelBundle(spec=spec, options=options or LoadOptions())
    bundle.check_loras(notice)
    from wanctl.core.models.quantized import check_weights_dtype

    check_weights_dtype(spec.layout, bundle.options.weights_dtype)  # headers only: before anything loads
    return bundle


# --------------------------------------------------------------------------- verification


def verify(spec: ModelSpec) -> list[dict]:
    """Check every component: configs, weight files, and weight names/shapes against the config.

    Returns one row per component: {component, status: ok|missing|error, detail, fingerprint}.
    """
    memo = _digests()
    rows = spec.layout.verify()
    for r in rows:
        if r["status"] == "ok":
            try:
                r["fingerprint"] = component_fingerprint(spec, r["component"], memo)
            except ModelError as e:
                r.update(status="error", detail=e.message)
    memo.save()
    return rows
