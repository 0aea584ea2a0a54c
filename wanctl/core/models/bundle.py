"""Model bundles: find a local diffusers-format Wan2.2 folder, detect its family from the
configs, fingerprint it, and load only the components a command needs.

Built-in models (``tiny-*``) are generated offline into the cache dir on first use and then go
through exactly the same loading code as real weights.
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
from wanctl.core.families import FAMILIES, FamilySpec

if TYPE_CHECKING:  # pragma: no cover
    import torch

COMPONENTS = ("transformer", "transformer_2", "vae", "text_encoder", "tokenizer", "scheduler")
_WEIGHT_NAMES = {
    "transformer": ("diffusion_pytorch_model",),
    "transformer_2": ("diffusion_pytorch_model",),
    "vae": ("diffusion_pytorch_model",),
    "text_encoder": ("model",),
}
DTYPES = {
    "fp32": "float32",
    "float32": "float32",
    "fp16": "float16",
    "float16": "float16",
    "half": "float16",
    "bf16": "bfloat16",
    "bfloat16": "bfloat16",
}


def parse_dtype(name: str) -> "torch.dtype":
    import torch

    try:
        return getattr(torch, DTYPES[name.lower()])
    except KeyError:
        raise BadInputError(f"unknown dtype {name!r}; use bf16, fp16 or fp32") from None


def read_json(p: Path, what: str, folder: str = "model folder") -> dict:
    """A JSON object from a model folder, or a one-line ModelError naming what is missing or corrupt."""
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise ModelError(f"{p.parent}: incomplete {folder}, {what} is missing ({p.name})") from None
    except (ValueError, UnicodeDecodeError):
        raise ModelError(f"{p}: corrupt {what} (not JSON)") from None
    if not isinstance(data, dict):
        raise ModelError(f"{p}: corrupt {what} (not a JSON object)")
    return data


def weight_files(component_dir: Path, component: str) -> list[Path]:
    """The weight files of a component (single file or a sharded index)."""
    stems = _WEIGHT_NAMES[component]
    for stem in stems:
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


@dataclass
class ModelSpec:
    """What a model folder is, read from its configs (no torch)."""

    path: Path
    name: str
    family: FamilySpec
    model_index: dict
    configs: dict[str, dict]
    builtin: bool = False
    official: Any = None  # an official.OfficialLayout for official folders / ComfyUI files

    @property
    def boundary(self) -> float | None:
        if self.family.experts == 1:
            return None
        b = self.model_index.get("boundary_ratio")
        return float(b) if b is not None else self.family.preset.boundary

    @property
    def vae_config(self) -> dict:
        return self.configs["vae"]

    def has(self, component: str) -> bool:
        entry = self.model_index.get(component)
        return isinstance(entry, list) and len(entry) == 2 and entry[0] is not None

    def describe(self) -> dict:
        out = {"name": self.name, "path": str(self.path), "family": self.family.name, "builtin": self.builtin}
        if self.official is not None:
            out["layout"] = f"official-{self.official.kind}"
        return out


def _detect_family(path: Path, index: dict, tcfg: dict, vcfg: dict, has_t2: bool) -> FamilySpec:
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


def spec_from_official(layout) -> ModelSpec:
    return ModelSpec(path=layout.path, name=layout.name, family=FAMILIES[layout.family],
                     model_index=layout.model_index(), configs=layout.configs(), official=layout)


def inspect_official(path: Path) -> ModelSpec | None:
    """An official Wan2.2 folder, a ComfyUI single DiT file, or a JSON model description
    ({"transformer": ..., "transformer_2": ..., "vae": ..., "text_encoder": ..., "tokenizer": ...},
    paths relative to the JSON file); None when ``path`` is none of these."""
    from wanctl.core.models.official import detect_official

    if path.is_file() and path.suffix.lower() == ".json":
        desc = read_json(path, "model description")
        overrides = desc.pop("overrides", None)  # config values weights cannot tell (non-released sizes)
        base = path.parent
        where = {k: (str(base / v) if v and not Path(v).is_absolute() else v) for k, v in desc.items()}
        unknown = set(where) - {"transformer", "transformer_2", "vae", "text_encoder", "tokenizer"}
        if unknown or "transformer" not in where:
            raise ModelError(f"{path}: a model description names transformer (and optionally transformer_2, vae, "
                             f"text_encoder, tokenizer){'; unknown: ' + ', '.join(sorted(unknown)) if unknown else ''}")
        layout = detect_official(where.pop("transformer"), overrides=overrides, **where)
        if layout is None:
            raise ModelError(f"{path}: its transformer is not a Wan2.2 DiT checkpoint")
        return spec_from_official(layout)
    layout = detect_official(path)
    return spec_from_official(layout) if layout is not None else None


def inspect_folder(path: str | os.PathLike, name: str | None = None, builtin: bool = False) -> ModelSpec:
    """Read a model's configs and detect its family: a diffusers-format Wan2.2 folder, else an
    official Wan2.2 folder / ComfyUI file / model description (see :func:`inspect_official`)."""
    p = Path(path).expanduser()
    if not p.exists():
        raise ModelError(f"model folder {p} does not exist")
    if not (p / "model_index.json").exists():
        spec = inspect_official(p)
        if spec is not None:
            return spec
    if not p.is_dir():
        raise ModelError(f"{p} is not a model folder or a Wan2.2 checkpoint file")
    index = read_json(p / "model_index.json", "model_index.json")
    has_t2 = isinstance(index.get("transformer_2"), list) and index["transformer_2"][0] is not None
    configs: dict[str, dict] = {}
    for comp in ("transformer", "vae"):
        configs[comp] = read_json(p / comp / "config.json", f"{comp}/config.json")
    if has_t2:
        configs["transformer_2"] = read_json(p / "transformer_2" / "config.json", "transformer_2/config.json")
    if (p / "text_encoder" / "config.json").exists():
        configs["text_encoder"] = read_json(p / "text_encoder" / "config.json", "text_encoder/config.json")
    if (p / "scheduler" / "scheduler_config.json").exists():
        configs["scheduler"] = read_json(p / "scheduler" / "scheduler_config.json", "scheduler_config.json")
    family = _detect_family(p, index, configs["transformer"], configs["vae"], has_t2)
    return ModelSpec(path=p, name=name or p.name, family=family, model_index=index, configs=configs, builtin=builtin)


# --------------------------------------------------------------------------- fingerprints


def _fingerprint_cache_path() -> Path:
    from wanctl.core.env import cache_dir

    return cache_dir() / "fingerprints.json"


def _file_digest(f: Path, memo: dict) -> str:
    """sha256 of a weight file, memoised in the cache dir by (path, size, mtime)."""
    st = f.stat()
    key = f"{f.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    if key in memo:
        return memo[key]
    from wanctl.core.io.artifact import sha256_file

    digest = sha256_file(f)
    memo[key] = digest
    memo["__dirty__"] = True
    return digest


def _load_memo() -> dict:
    try:
        data = json.loads(_fingerprint_cache_path().read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _save_memo(memo: dict) -> None:
    if not memo.pop("__dirty__", False):
        return
    p = _fingerprint_cache_path()
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(memo))
        os.replace(tmp, p)
    except OSError:  # a read-only cache only costs time
        pass


def component_fingerprint(spec: ModelSpec, component: str, memo: dict | None = None) -> str:
    """sha256 over the component's config and its weight files' digests (16 hex chars)."""
    own = memo is None
    memo = _load_memo() if own else memo
    cdir = spec.path / component
    h = hashlib.sha256()
    if spec.official is not None:
        layout = spec.official
        h.update(json.dumps(layout.config(component), sort_keys=True, default=str).encode())
        for f in layout.files(component):
            h.update(f.name.encode())
            h.update(_file_digest(f, memo).encode())
    elif component == "tokenizer":
        for f in sorted(cdir.iterdir()):
            if f.is_file():
                h.update(f.name.encode())
                h.update(_file_digest(f, memo).encode())
    else:
        cfg = spec.configs.get(component) or read_json(cdir / "config.json", f"{component}/config.json")
        # diffusers writes its own version into configs; it does not change the weights' meaning
        cfg = {k: v for k, v in cfg.items() if not k.startswith("_")}
        h.update(json.dumps(cfg, sort_keys=True).encode())
        for f in weight_files(cdir, component):
            h.update(f.name.encode())
            h.update(_file_digest(f, memo).encode())
    if own:
        _save_memo(memo)
    return h.hexdigest()[:16]


def fingerprints(spec: ModelSpec, components: list[str]) -> dict:
    memo = _load_memo()
    out = {c: component_fingerprint(spec, c, memo) for c in components}
    _save_memo(memo)
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
    """Turn ``--model`` (a folder or a built-in name) into a ModelSpec.

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
        elif rec_path and Path(rec_path).is_dir():
            value = rec_path
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
    return inspect_folder(p)


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


OFFLOAD_MODES = ("none", "model", "group")
HEAVY = ("transformer", "transformer_2", "text_encoder", "vae")


@dataclass
class ModelBundle:
    """A model folder plus the components loaded so far. Components load on first use, once."""

    spec: ModelSpec
    options: LoadOptions = field(default_factory=LoadOptions)
    _loaded: dict[str, Any] = field(default_factory=dict)
    _fingerprints: dict[str, str] = field(default_factory=dict)

    @property
    def family(self) -> FamilySpec:
        return self.spec.family

    @property
    def device(self) -> "torch.device":
        import torch

        return torch.device(self.options.device)

    @property
    def dtype(self) -> "torch.dtype":
        return parse_dtype(self.options.dtype)

    def fingerprint(self, component: str) -> str:
        if component not in self._fingerprints:
            self._fingerprints.update(fingerprints(self.spec, [component]))
        return self._fingerprints[component]

    def record(self, components: list[str]) -> dict:
        """The ``model`` block of artifact metadata for the components a command used."""
        missing = [c for c in components if c not in self._fingerprints]
        if missing:
            self._fingerprints.update(fingerprints(self.spec, missing))
        parts = {c: self._fingerprints[c] for c in components}
        rec = self.spec.describe()
        rec["components"] = parts
        rec["fingerprint"] = combined_fingerprint(parts)
        return rec

    def _load(self, component: str, loader: Callable[[], Any]) -> Any:
        if component not in self._loaded:
            _hub_offline()
            trace.event("load", component=component, model=self.spec.name)
            try:
                module = loader()
            except (ModelError, BadInputError):
                raise
            except Exception as e:
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise ModelError(f"{self.spec.path / component}: cannot load {component}: {first}") from None
            self._loaded[component] = self._place(component, module) if component in HEAVY else module
        module = self._loaded[component]
        if self.options.offload == "model" and component in HEAVY:
            self._activate(component)
        return module

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
        the CPU, so an A14B run holds one expert on the device at a time."""
        for name, mod in self._loaded.items():
            if name in HEAVY and name != component and _device_of(mod) != "cpu":
                mod.to("cpu")
                trace.event("offload", component=name)
        import torch

        mod = self._loaded[component]
        target = self._home(component)
        if _device_of(mod) != str(torch.device(target)):
            mod.to(target)
            trace.event("onload", component=component)

    def _official(self, component: str, dtype):
        from wanctl.core.models.official import load_official_component

        return load_official_component(self.spec.official, component, dtype=dtype, device="cpu")

    def vae(self):
        def load():
            from diffusers import AutoencoderKLWan

            if self.spec.official is not None:
                vae = self._official("vae", parse_dtype(self.options.vae_dtype))
                if self.options.vae_tiling:
                    vae.enable_tiling()
                return vae
            weight_files(self.spec.path / "vae", "vae")
            vae = AutoencoderKLWan.from_pretrained(
                str(self.spec.path / "vae"), torch_dtype=parse_dtype(self.options.vae_dtype)
            )
            vae = vae.eval().requires_grad_(False)
            if self.options.vae_tiling:
                vae.enable_tiling()
            return vae

        return self._load("vae", load)

    def tokenizer(self):
        def load():
            from transformers import AutoTokenizer

            if self.spec.official is not None:
                return self._official("tokenizer", None)
            tdir = self.spec.path / "tokenizer"
            if not tdir.is_dir():
                raise ModelError(f"{self.spec.path}: incomplete model folder, tokenizer/ is missing")
            return AutoTokenizer.from_pretrained(str(tdir))

        return self._load("tokenizer", load)

    def text_encoder(self):
        def load():
            from transformers import UMT5EncoderModel

            if self.spec.official is not None:
                return self._official("text_encoder", self.dtype)
            weight_files(self.spec.path / "text_encoder", "text_encoder")
            te = UMT5EncoderModel.from_pretrained(str(self.spec.path / "text_encoder"), dtype=self.dtype)
            return te.eval().requires_grad_(False)

        return self._load("text_encoder", load)

    def transformer(self, which: str = "transformer"):
        if which not in ("transformer", "transformer_2"):
            raise ValueError(which)

        def load():
            from diffusers import WanTransformer3DModel

            if self.spec.official is not None:
                return self._official(which, self.dtype)
            weight_files(self.spec.path / which, which)
            m = WanTransformer3DModel.from_pretrained(str(self.spec.path / which), torch_dtype=self.dtype)
            return m.eval().requires_grad_(False)

        return self._load(which, load)

    def experts(self) -> list[str]:
        return ["transformer", "transformer_2"] if self.family.experts == 2 else ["transformer"]


def _device_of(module) -> str:
    p = next(iter(module.parameters()), None)
    return str(p.device) if p is not None else "cpu"


def _hub_offline() -> None:
    # wanctl never downloads: make any accidental hub access fail fast instead of hanging
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    quiet_libraries()


def quiet_libraries() -> None:
    """The libraries' own progress bars and info logs would interleave with wanctl's output."""
    import diffusers
    import transformers

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    diffusers.utils.logging.set_verbosity_error()


def open_bundle(
    value: str | None,
    *,
    family: str | None = None,
    recorded: dict | None = None,
    notice: Callable[[str], None] | None = None,
    options: LoadOptions | None = None,
) -> ModelBundle:
    spec = resolve_model(value, family=family, recorded=recorded, notice=notice)
    return ModelBundle(spec=spec, options=options or LoadOptions())


# --------------------------------------------------------------------------- verification


def _header_shapes(files: list[Path]) -> dict[str, tuple[int, ...]]:
    from wanctl.core.io.artifact import parse_safetensors_header

    shapes: dict[str, tuple[int, ...]] = {}
    for f in files:
        if f.suffix != ".safetensors":
            continue
        size = f.stat().st_size
        with open(f, "rb") as fh:
            head = fh.read(8)
            n = int.from_bytes(head, "little") if len(head) == 8 else 0
            head += fh.read(min(n, 100 * 1024 * 1024))
        try:
            _, infos, _ = parse_safetensors_header(head, size, str(f))
        except BadInputError as e:
            raise ModelError(e.message) from None
        shapes.update({k: v.shape for k, v in infos.items()})
    return shapes


def _expected_shapes(spec: ModelSpec, component: str) -> dict[str, tuple[int, ...]]:
    """Parameter shapes of the component built from its config on the meta device (no memory)."""
    import torch

    cfg = spec.configs.get(component)
    with torch.device("meta"):
        if component in ("transformer", "transformer_2"):
            from diffusers import WanTransformer3DModel

            m = WanTransformer3DModel.from_config(cfg)
        elif component == "vae":
            from diffusers import AutoencoderKLWan

            m = AutoencoderKLWan.from_config(cfg)
        else:
            from transformers import UMT5Config, UMT5EncoderModel

            m = UMT5EncoderModel(UMT5Config(**{k: v for k, v in cfg.items() if not k.startswith("_")}))
    return {k: tuple(v.shape) for k, v in m.state_dict().items()}


def verify(spec: ModelSpec) -> list[dict]:
    """Check every component: configs, weight files, and weight names/shapes against the config.

    Returns one row per component: {component, status: ok|missing|error, detail, fingerprint}.
    """
    memo = _load_memo()
    if spec.official is not None:
        from wanctl.core.models.official import verify_official

        rows = verify_official(spec.official)
        for r in rows:
            if r["status"] == "ok":
                r["fingerprint"] = component_fingerprint(spec, r["component"], memo)
        _save_memo(memo)
        return rows
    rows = []
    needed = ["transformer"] + (["transformer_2"] if spec.family.experts == 2 else []) + ["vae", "text_encoder", "tokenizer"]
    for comp in needed:
        row = {"component": comp, "status": "ok", "detail": ""}
        try:
            cdir = spec.path / comp
            if not cdir.is_dir():
                raise ModelError(f"{comp}/ is missing")
            if comp == "tokenizer":
                if not any((cdir / n).exists() for n in ("tokenizer.json", "spiece.model", "tokenizer_config.json")):
                    raise ModelError("no tokenizer files")
                row["detail"] = ", ".join(sorted(f.name for f in cdir.iterdir() if f.is_file()))
            else:
                if comp == "text_encoder" and "text_encoder" not in spec.configs:
                    raise ModelError("text_encoder/config.json is missing")
                files = weight_files(cdir, comp)
                have = _header_shapes(files)
                if have:
                    want = _expected_shapes(spec, comp)
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
                    row["detail"] = f"{len(files)} file(s), {len(have)} tensors match the config"
                else:
                    row["detail"] = f"{len(files)} legacy file(s), names not checked"
            row["fingerprint"] = component_fingerprint(spec, comp, memo)
        except ModelError as e:
            row["status"] = "error"
            row["detail"] = e.message
        rows.append(row)
    _save_memo(memo)
    return rows
