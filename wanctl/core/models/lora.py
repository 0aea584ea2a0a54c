"""LoRAs on the DiT experts: ``FILE[:STRENGTH]`` specs, LoRA files read and checked, converted
with diffusers' own Wan converters, matched against an expert, and applied to it.

Formats (told apart by their key names, read from the safetensors header without torch):

* ``diffusers`` (diffusers / PEFT): ``[transformer.|base_model.model.]<module>.lora_A.weight`` /
  ``lora_B.weight`` (``lora_B.bias``), with an optional ``<module>.alpha`` or diffusers' adapter
  metadata (``lora_alpha``, ``r``, ``alpha_pattern``, ``use_rslora``) in the file header;
* ``official`` (the official / ComfyUI / lightx2v / Wan2.2-Lightning files):
  ``diffusion_model.<official name>.lora_down|lora_up|lora_A|lora_B.weight`` with ``.alpha``,
  and full-weight deltas ``.diff`` (a weight) / ``.diff_b`` (a bias);
* ``kohya`` (musubi-tuner / kohya): ``lora_unet_<official name with _>.lora_down|lora_up.weight``
  with ``.alpha``.

The low-rank pairs go through ``WanLoraLoaderMixin.lora_state_dict`` (diffusers' converters,
which fold ``alpha / rank`` into the pair). That converter scales some tensors of its input in
place (cross-attention and FFN ``lora_down``), so every conversion gets a fresh copy of the
tensors: converting one dict once per expert would otherwise compound the scale. The ``.diff`` /
``.diff_b`` deltas are mapped here with the official key names of
:mod:`wanctl.core.models.official_keys`: diffusers drops most of them (norm deltas, any
``.diff`` of a linear), and a LoRA is never applied in part without saying so.

Applying, per expert: the default fuses every pair into its weight, ``W += strength * up @ down``
(alpha / rank already folded in), computed in float32 and rounded once to the weight's dtype,
so the run costs nothing per step. ``fused=False`` loads the pairs as PEFT adapters through
diffusers' ``load_lora_adapter`` (``set_adapters`` gives the strengths); full-weight deltas are
merged into the weights in both modes (there is no adapter form for them).

Refused in one line (BadInputError, exit 3): a missing, unreadable or empty file, a file that is
not safetensors, DoRA and other adapter types (LoHa, LoKr, OFT, ...), keys that are not a LoRA,
a LoRA whose shapes do not fit the expert (another family or model size), a LoRA that matches
nothing in the expert. One that matches in part is applied, and :func:`describe_match` names
what it skipped.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wanctl.core.errors import BadInputError, ModelError

if TYPE_CHECKING:  # pragma: no cover
    import torch

TARGETS = {"both": "--lora", "high": "--lora-high", "low": "--lora-low"}
EXPERT_OF = {"high": "transformer", "low": "transformer_2"}
FORMATS = ("diffusers", "official", "kohya")

# --------------------------------------------------------------------------- specs

_NUMBER = re.compile(r"[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?")


@dataclass(frozen=True)
class LoraSpec:
    """One ``--lora`` / ``--lora-high`` / ``--lora-low`` value."""

    path: str
    strength: float = 1.0
    target: str = "both"  # both | high | low

    @property
    def option(self) -> str:
        return TARGETS[self.target]

    def experts(self, experts: list[str]) -> list[str]:
        """The experts of a model this LoRA applies to (a BadInputError when it names one the
        model does not have)."""
        if self.target == "both":
            return list(experts)
        want = EXPERT_OF[self.target]
        if want not in experts:
            raise BadInputError(f"{self.option} {self.path}: this model has a single expert (no low-noise "
                                f"expert {want}); use --lora")
        return [want]


def parse_spec(value: str, target: str = "both") -> LoraSpec:
    """``FILE[:STRENGTH]``: only a trailing ``:<number>`` is a strength (so ``dir:x/a.safetensors``
    stays a path), and a value naming an existing file is a path whatever it ends with."""
    if target not in TARGETS:
        raise ValueError(target)
    head, sep, tail = value.rpartition(":")
    if sep and head and _NUMBER.fullmatch(tail.strip()) and not Path(value).is_file():
        strength = float(tail)
        if not math.isfinite(strength):
            raise BadInputError(f"{TARGETS[target]} {value}: strength {tail} is not a finite number")
        return LoraSpec(head, strength, target)
    if not value:
        raise BadInputError(f"{TARGETS[target]}: empty file name")
    return LoraSpec(value, 1.0, target)


def parse_specs(both=None, high=None, low=None) -> tuple[LoraSpec, ...]:
    """The specs of the three options, in this order, each file checked (:func:`check_file`)."""
    specs = tuple(parse_spec(v, t) for t, vals in (("both", both), ("high", high), ("low", low)) for v in (vals or ()))
    for s in specs:
        check_file(s)
    return specs


# --------------------------------------------------------------------------- files (no torch)

# key fragments of adapter types that are not plain LoRA: refused, never dropped
_UNSUPPORTED = (
    (re.compile(r"dora_scale|magnitude"), "DoRA"),
    (re.compile(r"hada_"), "LoHa"),
    (re.compile(r"lokr_"), "LoKr"),
    (re.compile(r"(^|[._])b?oft_"), "OFT/BOFT"),
    (re.compile(r"(^|[._])ia3"), "IA3"),
    (re.compile(r"lora_mid"), "LoCon (Tucker)"),
    (re.compile(r"\.(a1|a2|b1|b2)\.weight$"), "GLoRA"),
)
_OFFICIAL_SUFFIXES = (".lora_down.weight", ".lora_up.weight", ".lora_A.weight", ".lora_B.weight", ".alpha", ".diff", ".diff_b")
_KOHYA_SUFFIXES = (".lora_down.weight", ".lora_up.weight", ".alpha")
_DIFFUSERS_SUFFIXES = (".lora_A.weight", ".lora_B.weight", ".lora_B.bias", ".alpha")
_DIFFUSERS_PREFIXES = ("transformer.", "base_model.model.")


def _where(spec: LoraSpec) -> str:
    return f"{spec.option} {spec.path}"


def detect_format(keys, where: str) -> str:
    """diffusers | official | kohya, from the key names; refuses other adapter types and keys
    that are not a LoRA's."""
    keys = list(keys)
    if not keys:
        raise BadInputError(f"{where}: empty LoRA (no tensors)")
    for k in keys:
        for pattern, kind in _UNSUPPORTED:
            if pattern.search(k):
                raise BadInputError(f"{where}: a {kind} file ({k}); only plain LoRA (low-rank pairs, .diff deltas) is supported")
    keys = [k.removeprefix("model.") if k.startswith("model.diffusion_model.") else k for k in keys]
    if all(k.startswith("diffusion_model.") for k in keys):
        fmt, suffixes = "official", _OFFICIAL_SUFFIXES
    elif all(k.startswith("lora_unet_") for k in keys):
        fmt, suffixes = "kohya", _KOHYA_SUFFIXES
    elif any(k.startswith(("diffusion_model.", "lora_unet_")) for k in keys):
        odd = next(k for k in keys if not k.startswith(("diffusion_model.", "lora_unet_")))
        raise BadInputError(f"{where}: mixes key styles ({odd} next to diffusion_model./lora_unet_ keys): not a LoRA wanctl can read")
    else:
        fmt, suffixes = "diffusers", _DIFFUSERS_SUFFIXES
    bad = [k for k in keys if not k.endswith(suffixes)]
    if bad:
        raise BadInputError(f"{where}: not a LoRA ({len(bad)} key(s) are not LoRA weights, e.g. {bad[0]})")
    if not any(k.endswith((".lora_A.weight", ".lora_down.weight", ".diff", ".diff_b")) for k in keys):
        raise BadInputError(f"{where}: empty LoRA (only {len(keys)} alpha value(s), no weights)")
    return fmt


def check_file(spec: LoraSpec) -> str:
    """Exists, is a readable safetensors file holding a plain LoRA: its format (reads the header only)."""
    from wanctl.core.files import parse_safetensors_header, safetensors_head

    p = Path(spec.path).expanduser()
    where = _where(spec)
    if not p.exists():
        raise BadInputError(f"{where}: no such file")
    if not p.is_file():
        raise BadInputError(f"{where}: not a file")
    if p.suffix.lower() != ".safetensors":
        raise BadInputError(f"{where}: LoRAs are read from .safetensors files only")
    try:
        head, size = safetensors_head(p), p.stat().st_size
    except OSError as e:
        raise BadInputError(f"{where}: cannot read: {e.strerror or e}") from None
    _meta, infos, _raw = parse_safetensors_header(head, size, where)
    return detect_format(infos, where)


def _adapter_metadata(path: Path) -> dict:
    """diffusers' LoRA adapter metadata (LoraConfig fields) from the file header, {} when absent."""
    from wanctl.core.files import parse_safetensors_header, safetensors_head

    meta, _, _ = parse_safetensors_header(safetensors_head(path), path.stat().st_size, str(path))
    raw = meta.get("lora_adapter_metadata")
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        return {}
    if not isinstance(data, dict):
        return {}
    return {k.removeprefix("transformer."): v for k, v in data.items()}


# --------------------------------------------------------------------------- conversion


@dataclass
class Pair:
    """One low-rank update of a linear layer: ``W += strength * up @ down`` (alpha / rank folded
    into ``down``), ``b += strength * bias`` when the LoRA trains a bias (PEFT ``lora_bias``)."""

    down: "torch.Tensor"  # (rank, in)
    up: "torch.Tensor"  # (out, rank)
    bias: "torch.Tensor | None" = None


@dataclass
class Converted:
    """A LoRA file in diffusers module names."""

    spec: LoraSpec
    fmt: str
    pairs: dict[str, Pair] = field(default_factory=dict)  # module -> pair
    diffs: dict[str, "torch.Tensor"] = field(default_factory=dict)  # parameter -> full delta
    unknown: list[str] = field(default_factory=list)  # names of the file with no diffusers module

    @property
    def size(self) -> int:
        return len(self.pairs) + len(self.diffs) + len(self.unknown)


def read(spec: LoraSpec) -> Converted:
    """Read and convert a LoRA file: fresh tensors on every call (see the module docstring)."""
    from safetensors.torch import load_file

    fmt = check_file(spec)
    path = Path(spec.path).expanduser()
    try:
        raw = load_file(str(path), device="cpu")
    except Exception as e:  # safetensors raises its own error types
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BadInputError(f"{_where(spec)}: cannot read: {first}") from None
    return convert(raw, spec, fmt, _adapter_metadata(path) if fmt == "diffusers" else {})


def convert(raw: dict, spec: LoraSpec, fmt: str | None = None, metadata: dict | None = None) -> Converted:
    """A LoRA state dict (any supported format) in diffusers module names. ``raw`` is left as it
    was: the converters get a float32 copy of every tensor (a copy: diffusers scales some in
    place; float32: so that folding alpha / rank into a bf16 ``lora_down`` does not round it)."""
    import torch

    where = _where(spec)
    fmt = fmt or detect_format(raw, where)
    out = Converted(spec, fmt)
    sd = {(k.removeprefix("model.") if k.startswith("model.diffusion_model.") else k): v.to(torch.float32, copy=True)
          for k, v in raw.items()}
    if fmt == "official":
        _split_diffs(sd, out)
        _fold_top_alphas(sd)
    elif fmt == "diffusers":
        sd = _diffusers_keys(sd, metadata or {}, where)
    if sd:
        converted = _diffusers_convert(sd, where)
        _collect_pairs(converted, out, where)
    return out


def _split_diffs(sd: dict, out: Converted) -> None:
    """Take the ``.diff`` / ``.diff_b`` deltas out of an official-format dict, in diffusers names."""
    from wanctl.core.models.official_keys import map_dit_key

    for k in [k for k in sd if k.endswith((".diff", ".diff_b"))]:
        t = sd.pop(k)
        base, _, kind = k.removeprefix("diffusion_model.").rpartition(".")
        official = base if base.endswith("modulation") and kind == "diff" else f"{base}.{'weight' if kind == 'diff' else 'bias'}"
        try:
            name = map_dit_key(official)
        except ModelError:
            out.unknown.append(k)
            continue
        out.diffs[name] = t


def _fold_top_alphas(sd: dict) -> None:
    """diffusers' converter folds ``.alpha`` into the pairs of the blocks only (and refuses the
    file for one on the head or the embeddings): fold those here, alpha / rank into the down."""
    for k in [k for k in sd if k.endswith(".alpha") and not k.startswith("diffusion_model.blocks.")]:
        base = k[: -len(".alpha")]
        down_key = next((f"{base}.{d}.weight" for d in ("lora_down", "lora_A") if f"{base}.{d}.weight" in sd), None)
        alpha = float(sd.pop(k).float().reshape(-1)[0])
        if down_key is not None:
            sd[down_key] = sd[down_key].float() * (alpha / sd[down_key].shape[0])


def _diffusers_keys(sd: dict, metadata: dict, where: str) -> dict:
    """diffusers / PEFT keys with the ``transformer.`` prefix the loader filters on, with any alpha
    (``<module>.alpha`` or the adapter metadata) folded into ``lora_A`` (and a ``lora_B.bias``)."""
    if metadata.get("use_dora"):
        raise BadInputError(f"{where}: a DoRA adapter (use_dora in its metadata); only plain LoRA is supported")
    plain = {}
    for k, v in sd.items():
        for p in _DIFFUSERS_PREFIXES:
            if k.startswith(p):
                k = k[len(p):]
                break
        plain[k] = v
    alphas = {k[: -len(".alpha")]: float(v.float().reshape(-1)[0]) for k, v in plain.items() if k.endswith(".alpha")}
    out = {}
    for k, v in plain.items():
        if k.endswith(".alpha"):
            continue
        module = k.split(".lora_")[0]
        if k.endswith(".lora_A.weight") or k.endswith(".lora_B.bias"):
            rank = plain[f"{module}.lora_A.weight"].shape[0] if f"{module}.lora_A.weight" in plain else None
            if rank is None:
                raise BadInputError(f"{where}: {k} has no lora_A.weight next to it")
            scale = _alpha_scale(module, rank, alphas, metadata)
            if scale != 1.0:
                v = v.float() * scale
        out[f"transformer.{k}"] = v
    return out


def _alpha_scale(module: str, rank: int, alphas: dict, metadata: dict) -> float:
    """alpha / rank of one module (PEFT's rule, sqrt(rank) with rsLoRA); 1 without any alpha."""
    if module in alphas:
        alpha = alphas[module]
    elif "lora_alpha" in metadata:
        alpha = float(metadata["lora_alpha"])
        for pattern, value in (metadata.get("alpha_pattern") or {}).items():
            if re.match(rf"(^|.*\.){pattern.lstrip('^')}$", module):
                alpha = float(value)
                break
    else:
        return 1.0
    return alpha / (math.sqrt(rank) if metadata.get("use_rslora") else rank)


def _diffusers_convert(sd: dict, where: str) -> dict:
    """diffusers' ``WanLoraLoaderMixin.lora_state_dict`` on a (copied) dict: official and
    musubi/kohya keys converted to diffusers names, alpha folded in."""
    from diffusers.loaders.lora_pipeline import WanLoraLoaderMixin

    from wanctl.core.models.runtime import quiet_libraries

    quiet_libraries()
    try:
        out = WanLoraLoaderMixin.lora_state_dict(sd)
    except (KeyError, ValueError, IndexError, TypeError, AttributeError, RuntimeError) as e:
        detail = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        if isinstance(e, KeyError):
            detail = f"missing key {detail}"
        raise BadInputError(f"{where}: not a Wan LoRA diffusers' converter understands ({detail})") from None
    return out


def _collect_pairs(converted: dict, out: Converted, where: str) -> None:
    parts: dict[str, dict] = {}
    for k, v in converted.items():
        name = k.removeprefix("transformer.")
        m = re.match(r"^(.+)\.lora_(A|B)\.(weight|bias)$", name)
        if not m or (m.group(2), m.group(3)) == ("A", "bias"):
            raise BadInputError(f"{where}: unexpected key after conversion: {k}")
        parts.setdefault(m.group(1), {})[f"{m.group(2)}.{m.group(3)}"] = v
    for module, p in parts.items():
        if "A.weight" not in p or "B.weight" not in p:
            raise BadInputError(f"{where}: {module} has lora_{'B' if 'A.weight' in p else 'A'} but not its pair")
        down, up = p["A.weight"], p["B.weight"]
        if down.ndim != 2 or up.ndim != 2 or down.shape[0] != up.shape[1]:
            raise BadInputError(f"{where}: {module}: down {tuple(down.shape)} and up {tuple(up.shape)} are not a low-rank pair of a linear layer")
        out.pairs[module] = Pair(down, up, p.get("B.bias"))


# --------------------------------------------------------------------------- matching


@dataclass
class Match:
    """What of a converted LoRA an expert has."""

    lora: Converted
    pairs: dict[str, Pair]
    diffs: dict[str, "torch.Tensor"]
    skipped: list[str]

    @property
    def applied(self) -> int:
        return len(self.pairs) + len(self.diffs)


def match(lora: Converted, model, expert: str) -> Match:
    """The parts of ``lora`` that ``model`` (a real or an empty, meta-weight expert) has. Shapes
    must fit (a LoRA of another family or size is refused); parts naming no module of the model
    are skipped (see :func:`describe_match`); nothing matching is refused."""
    import torch

    where = _where(lora.spec)
    modules = dict(model.named_modules())
    params = dict(model.named_parameters())
    pairs, diffs, skipped = {}, {}, list(lora.unknown)
    for name, pair in lora.pairs.items():
        mod = modules.get(name)
        if mod is None:
            skipped.append(name)
            continue
        if not isinstance(mod, torch.nn.Linear):
            raise BadInputError(f"{where}: {name} is a {type(mod).__name__} in {expert}, not a linear layer: a LoRA for another model")
        want = (mod.out_features, mod.in_features)
        have = (pair.up.shape[0], pair.down.shape[1])
        if have != want or (pair.bias is not None and tuple(pair.bias.shape) != (want[0],)):
            raise BadInputError(f"{where}: does not fit {expert}: {name} is {want[1]}->{want[0]}, the LoRA's is "
                                f"{have[1]}->{have[0]} (a LoRA for another model family or size?)")
        if pair.bias is not None and mod.bias is None:
            raise BadInputError(f"{where}: {name} has no bias in {expert}, the LoRA trains one: a LoRA for another model")
        pairs[name] = pair
    for name, delta in lora.diffs.items():
        p = params.get(name)
        if p is None:
            skipped.append(name)
            continue
        if tuple(p.shape) != tuple(delta.shape):
            raise BadInputError(f"{where}: does not fit {expert}: {name} has shape {tuple(p.shape)}, the LoRA's "
                                f"delta {tuple(delta.shape)} (a LoRA for another model family or size?)")
        diffs[name] = delta
    if not pairs and not diffs:
        example = f", e.g. {skipped[0]}" if skipped else ""
        raise BadInputError(f"{where}: none of its {lora.size} layer(s) is in {expert}{example}: not a LoRA for this model")
    return Match(lora, pairs, diffs, skipped)


def describe_match(m: Match, experts: list[str], fused: bool) -> list[str]:
    """Notices for one LoRA: what it does, and what it skipped (a count and a few names)."""
    s = m.lora.spec
    how = "fused into the weights" if fused else "as adapters"
    lines = [f"LoRA {Path(s.path).name} ({m.lora.fmt} keys) at strength {s.strength:g} on {', '.join(experts)}: "
             f"{m.applied} layer(s), {how}"]
    if m.skipped:
        few = ", ".join(m.skipped[:3]) + (", ..." if len(m.skipped) > 3 else "")
        lines.append(f"LoRA {Path(s.path).name}: skipped {len(m.skipped)} of its {m.lora.size} layer(s) that this model "
                     f"does not have ({few})")
    return lines


# --------------------------------------------------------------------------- applying


_FLOAT_WEIGHTS = ("torch.float16", "torch.bfloat16", "torch.float32", "torch.float64")


def _add(param: "torch.Tensor", delta: "torch.Tensor", strength: float, where: str) -> None:
    """param += strength * delta, in float32 (on the parameter's device), rounded once."""
    import torch

    if str(param.dtype) not in _FLOAT_WEIGHTS:
        raise BadInputError(f"{where}: cannot merge a LoRA into {param.dtype} weights; use --lora-unfused")
    with torch.no_grad():
        acc = param.detach().to(torch.float32) + strength * delta.to(device=param.device, dtype=torch.float32)
        param.data.copy_(acc.to(param.dtype))


def apply(model, matches: list[Match], fused: bool = True) -> None:
    """Apply matched LoRAs to an expert in place (see the module docstring)."""
    import torch

    for m in matches:
        where = _where(m.lora.spec)
        params = dict(model.named_parameters())
        for name, delta in m.diffs.items():
            _add(params[name], delta, m.lora.spec.strength, where)
        if not fused:
            continue
        for name, pair in m.pairs.items():
            mod = model.get_submodule(name)
            dev = mod.weight.device
            up = pair.up.to(device=dev, dtype=torch.float32)
            down = pair.down.to(device=dev, dtype=torch.float32)
            _add(mod.weight, up @ down, m.lora.spec.strength, where)
            if pair.bias is not None:
                _add(mod.bias, pair.bias, m.lora.spec.strength, where)
    if not fused:
        _load_adapters(model, [m for m in matches if m.pairs])


def _load_adapters(model, matches: list[Match]) -> None:
    """The low-rank pairs as PEFT adapters (diffusers' ``load_lora_adapter`` on the bare model),
    one per LoRA, each scaled by its strength."""
    import torch

    from wanctl.core.models.runtime import quiet_libraries

    if not matches:
        return
    try:
        import peft  # noqa: F401
    except ImportError:
        raise BadInputError("--lora-unfused needs the peft package (pip install peft)") from None
    quiet_libraries()
    names, strengths = [], []
    taken = set(getattr(model, "peft_config", {}) or {})
    for i, m in enumerate(matches):
        sd: dict[str, Any] = {}
        with_bias = any(p.bias is not None for p in m.pairs.values())
        for name, pair in m.pairs.items():
            sd[f"transformer.{name}.lora_A.weight"] = pair.down
            sd[f"transformer.{name}.lora_B.weight"] = pair.up
            if with_bias:  # PEFT's lora_bias is per adapter: zeros where this LoRA trains none
                sd[f"transformer.{name}.lora_B.bias"] = pair.bias if pair.bias is not None else torch.zeros(pair.up.shape[0], dtype=pair.up.dtype)
        name = f"wanctl_lora_{i}"
        while name in taken:
            name += "_"
        taken.add(name)
        try:
            with warnings.catch_warnings():  # PEFT warns on each adapter after the first one
                warnings.simplefilter("ignore", UserWarning)
                model.load_lora_adapter(sd, prefix="transformer", adapter_name=name)
        except (ValueError, RuntimeError, KeyError) as e:
            first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
            raise BadInputError(f"{_where(m.lora.spec)}: cannot load as an adapter: {first}") from None
        names.append(name)
        strengths.append(m.lora.spec.strength)
    model.set_adapters(names, weights=strengths)
    model.eval().requires_grad_(False)  # PEFT makes new adapters trainable; wanctl only runs them


# --------------------------------------------------------------------------- records


def record(spec: LoraSpec, sha256: str, experts: list[str], fused: bool) -> dict:
    """One LoRA in artifact metadata (the ``model`` block's ``loras`` list)."""
    return {"path": spec.path, "sha256": sha256, "strength": spec.strength, "target": spec.target,
            "experts": experts, "fused": fused}


def fingerprint_part(specs_with_sha: list[tuple[LoraSpec, str]]) -> list:
    """What an expert's fingerprint adds for its LoRAs: content and strength, order-free (merging
    adds the updates, so the order does not change the model)."""
    return sorted([sha, s.strength] for s, sha in specs_with_sha)
