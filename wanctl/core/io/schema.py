"""The one schema of wanctl artifact metadata, checked on read before anything uses a field.

The schema is data: each field names the JSON types it may hold and a check of its value.
:func:`check_meta` walks it over a metadata document; :func:`check_tensors` checks the tensors a
header declares (names, dtypes, shapes) against the metadata, still without reading tensor
data. Unknown fields are allowed (a later minor version may add some); known ones must be right.
A problem is one :class:`BadInputError` line naming the field, so a hand-edited or hostile file
fails at the boundary, never as a torch error deep inside a run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

from wanctl.core.errors import BadInputError

FORMAT_NAME = "wanctl-artifact"
FORMAT_VERSION = 1
KINDS = ("latent", "noise", "trajectory", "embedding")
VIDEO_KINDS = ("latent", "noise", "trajectory")  # kinds whose latents decode to a video
GRID_NAMES = ("official", "diffusers", "dpm", "custom")
MAX_DEPTH = 32  # nesting of the metadata JSON (wanctl writes at most 6)
MAX_SIDE = 16384  # pixels
MAX_FRAMES = 100_001
MAX_STEPS = 1000  # as wanctl/core/sampling/schedule.py (io cannot import sampling)
# latents as stored: float32 is native; half precision is widened (with a notice); nothing else
LATENT_DTYPES = ("float32", "float16", "bfloat16", "float64")
HALF_DTYPES = ("float16", "bfloat16", "float64")


# --------------------------------------------------------------------------- value checks
# Each returns None when the value is right, else what it should be (completes "must be ...").


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _integer(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def int_in(lo: int, hi: int) -> Callable[[Any], str | None]:
    return lambda v: None if _integer(v) and lo <= v <= hi else f"an integer in {lo}..{hi}"


def number_in(lo: float, hi: float, *, open_low: bool = False) -> Callable[[Any], str | None]:
    def check(v):
        ok = _number(v) and (v > lo if open_low else v >= lo) and v <= hi
        return None if ok else f"a finite number in {'(' if open_low else '['}{lo:g}, {hi:g}]"

    return check


def one_of(*names: str) -> Callable[[Any], str | None]:
    return lambda v: None if v in names else f"one of {', '.join(names)}"


def list_of(check: Callable[[Any], str | None], *, max_len: int) -> Callable[[Any], str | None]:
    def run(v):
        if not isinstance(v, list) or len(v) > max_len:
            return f"a list of at most {max_len} values"
        problems = [p for p in map(check, v) if p is not None]
        return f"a list whose every value is {problems[0]}" if problems else None

    return run


def frames_4n1(v: Any) -> str | None:
    if not _integer(v) or not 1 <= v <= MAX_FRAMES or (v - 1) % 4:
        return f"an integer 4n+1 in 1..{MAX_FRAMES}"
    return None


def family_name(v: Any) -> str | None:
    from wanctl.core.families import FAMILIES

    return None if v is None or v in FAMILIES else f"null or one of {', '.join(FAMILIES)}"


def levels(v: Any) -> str | None:
    ok = isinstance(v, list) and len(v) <= MAX_STEPS + 1 and all(_number(x) and 0 <= x <= 1 for x in v)
    return None if ok else "a list of noise levels in [0, 1]"


def decreasing(v: Any) -> str | None:
    if levels(v) is not None or any(a < b for a, b in zip(v, v[1:])):
        return "a non-increasing list of noise levels in [0, 1]"
    return None


@dataclass(frozen=True)
class Field:
    types: tuple[type, ...]
    required: bool = False
    check: Callable[[Any], str | None] | None = None
    children: dict[str, "Field"] = field(default_factory=dict)
    items: dict[str, "Field"] | None = None  # a list whose every item is an object with these fields
    table: dict[str, "Field"] | None = None  # an object whose every value is an object with these fields


NUM = (int, float)
STR, DICT, LIST, BOOL, NONE = (str,), (dict,), (list,), (bool,), (type(None),)

VIDEO = {
    "width": Field((int,), check=int_in(1, MAX_SIDE)),
    "height": Field((int,), check=int_in(1, MAX_SIDE)),
    "frames": Field((int,), check=frames_4n1),
    "fps": Field(NUM + NONE, check=lambda v: None if v is None or (_number(v) and 0 < v <= 1000) else "null or a number in (0, 1000]"),
}

SCHEDULE = {
    "grid": Field(STR, check=one_of(*GRID_NAMES)),
    "steps": Field((int,), check=int_in(1, MAX_STEPS)),
    "shift": Field(NUM + NONE, check=lambda v: None if v is None or (_number(v) and v > 0) else "null or a finite number > 0"),
    "strength": Field(NUM, check=number_in(0, 1)),
    "sigmas": Field(LIST, check=decreasing),
    "timesteps": Field(LIST, check=list_of(number_in(0, 1000), max_len=MAX_STEPS + 1)),
}

PARAMS = {
    "schedule": Field(DICT, children=SCHEDULE),
    "seed": Field((int,) + NONE, check=lambda v: None if v is None or (_integer(v) and 0 <= v < 2**64) else "null or an integer in 0..2^64-1"),
    "prompt": Field(STR + NONE),
    "negative_prompt": Field(STR + NONE),
    "solver": Field(STR),
    "strength": Field(NUM, check=number_in(0, 1)),
    "levels": Field(LIST, check=levels),
    "plan": Field(DICT),
    "guidance": Field(NUM + DICT + NONE),
    "boundary": Field(NUM + NONE, check=lambda v: None if v is None or (_number(v) and 0 <= v <= 1) else "null or a number in [0, 1]"),
}


def tensor_shape(v: Any) -> str | None:
    ok = isinstance(v, list) and len(v) <= 8 and all(_integer(x) and x >= 0 for x in v)
    return None if ok else "a list of at most 8 integers >= 0"


TENSOR = {"shape": Field(LIST, check=tensor_shape), "dtype": Field(STR)}  # one entry of the "tensors" table
LORA = {
    "path": Field(STR),
    "sha256": Field(STR),
    "strength": Field(NUM, check=lambda v: None if _number(v) else "a finite number"),
    "target": Field(STR + NONE),
    "experts": Field(LIST, check=list_of(lambda v: None if isinstance(v, str) else "a string", max_len=2)),
    "fused": Field(BOOL),
}
INPUT = {"role": Field(STR), "path": Field(STR), "sha256": Field(STR + NONE)}

MODEL = {
    "name": Field(STR + NONE),
    "path": Field(STR + NONE),
    "family": Field(STR + NONE, check=family_name),
    "builtin": Field(BOOL),
    "layout": Field(STR),
    "components": Field(DICT),
    "fingerprint": Field(STR),
    "loras": Field(LIST, items=LORA),
}

PROVENANCE = {
    "command": Field(STR),
    "inputs": Field(LIST, items=INPUT),
    "created": Field(STR),
    "versions": Field(DICT),
}

TOP = {
    "kind": Field(STR, required=True, check=one_of(*KINDS)),
    "family": Field(STR + NONE, check=family_name),
    "latent_space": Field(STR, check=one_of("normalized", "raw")),
    "noise_level": Field(NUM, check=number_in(0, 1)),
    "video": Field(DICT, children=VIDEO),
    "model": Field(DICT, children=MODEL),
    "params": Field(DICT, children=PARAMS),
    "provenance": Field(DICT, children=PROVENANCE),
    "tensors": Field(DICT, table=TENSOR),
}

_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", dict: "an object", list: "a list",
               bool: "true or false", type(None): "null"}


# --------------------------------------------------------------------------- metadata


def depth(value: Any) -> int:
    """Nesting depth of a JSON value, without recursion (a hostile document can be deep)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, (dict, list)):
            deepest = max(deepest, d)
            if d > MAX_DEPTH:
                return d
            stack.extend((x, d + 1) for x in (v.values() if isinstance(v, dict) else v))
    return deepest


def check_meta(meta: Any, where: str) -> dict:
    """Validate a metadata document against the schema; returns it."""
    if not isinstance(meta, dict):
        raise BadInputError(f"{where}: corrupt wanctl metadata (not a JSON object)")
    if depth(meta) > MAX_DEPTH:
        raise BadInputError(f"{where}: wanctl metadata nested deeper than {MAX_DEPTH} levels")
    if meta.get("format") != FORMAT_NAME:
        raise BadInputError(f"{where}: not a wanctl artifact (format {meta.get('format')!r})")
    v = meta.get("format_version")
    if not _integer(v) or v < 1:
        raise BadInputError(f"{where}: wanctl metadata has no valid format_version")
    if v > FORMAT_VERSION:
        raise BadInputError(
            f"{where}: artifact format version {v} is newer than this wanctl supports ({FORMAT_VERSION}); upgrade wanctl"
        )
    _walk(meta, TOP, "", where)
    kind = meta["kind"]
    if kind == "noise":  # denoising a noise builds the target's shape from this block
        video = meta.get("video") or {}
        missing = [k for k in ("width", "height", "frames") if k not in video]
        if missing:
            raise BadInputError(f"{where}: a {kind} artifact's metadata needs video.{missing[0]}")
    return meta


def _walk(doc: dict, schema: dict[str, Field], prefix: str, where: str) -> None:
    for name, spec in schema.items():
        path = prefix + name
        if name not in doc:
            if spec.required:
                raise BadInputError(f"{where}: wanctl metadata has no '{path}'")
            continue
        value = doc[name]
        if not _has_type(value, spec.types):
            want = " or ".join(_TYPE_NAMES[t] for t in spec.types if not (t is int and float in spec.types))
            raise BadInputError(f"{where}: metadata field {path} must be {want}, not {_show(value)}")
        if spec.check is not None and (problem := spec.check(value)) is not None:
            raise BadInputError(f"{where}: metadata field {path} must be {problem}, not {_show(value)}")
        if spec.children and isinstance(value, dict):
            _walk(value, spec.children, path + ".", where)
        if spec.items is not None:
            for i, item in enumerate(value):
                if not isinstance(item, dict):
                    raise BadInputError(f"{where}: metadata field {path}[{i}] must be an object, not {_show(item)}")
                _walk(item, spec.items, f"{path}[{i}].", where)
        if spec.table is not None:
            for key, item in value.items():
                if not isinstance(item, dict):
                    raise BadInputError(f"{where}: metadata field {path}.{key} must be an object, not {_show(item)}")
                _walk(item, spec.table, f"{path}.{key}.", where)


def _has_type(value: Any, types: tuple[type, ...]) -> bool:
    if isinstance(value, bool):
        return bool in types
    return isinstance(value, types)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


# --------------------------------------------------------------------------- tensors


def check_tensors(meta: dict, tensors: dict, where: str) -> list[str]:
    """Check the tensors of an artifact (name -> an object with ``shape`` and ``dtype``, as a
    header declares them or as loaded) against its metadata. Returns notices (half-precision
    latents that the reader widens)."""
    notices: list[str] = []
    declared = meta.get("tensors") or {}
    for name, info in tensors.items():
        want = declared.get(name)
        shape = list(info.shape)
        if isinstance(want, dict) and "shape" in want and list(want["shape"]) != shape:
            raise BadInputError(f"{where}: '{name}' shape {tuple(shape)} does not match the metadata ({tuple(want['shape'])})")
    kind = meta["kind"]
    if kind == "embedding":
        emb = tensors.get("embedding")
        if emb is None or len(emb.shape) != 2:
            raise BadInputError(f"{where}: embedding artifact needs a 2-D 'embedding' tensor (tokens, dim)")
        return notices
    lat = tensors.get("latents")
    if lat is None:
        raise BadInputError(f"{where}: artifact has no 'latents' tensor")
    for name, info in tensors.items():
        if name == "latents" or name.startswith("trajectory/"):
            dtype = _dtype_name(info.dtype)
            if dtype not in LATENT_DTYPES:
                raise BadInputError(f"{where}: '{name}' is {dtype}; latents must be float32 (or float16 / bfloat16)")
            if dtype in HALF_DTYPES and name == "latents":
                notices.append(f"{where}: latents stored as {dtype}, computing in float32")
    shape = tuple(lat.shape)
    if len(shape) != 5:
        raise BadInputError(f"{where}: 'latents' must be 5-D (batch, C, T, H, W), got shape {shape}")
    if min(shape) < 1:
        raise BadInputError(f"{where}: 'latents' has an empty dimension {shape}")
    for name, info in tensors.items():
        if name.startswith("trajectory/") and tuple(info.shape) != shape:
            raise BadInputError(f"{where}: '{name}' shape {tuple(info.shape)} differs from the latents' {shape}")
    from wanctl.core.families import FAMILIES

    fam = FAMILIES.get(meta.get("family")) if meta.get("family") else None
    if fam is not None and shape[1] != fam.latent_channels:
        raise BadInputError(f"{where}: 'latents' has {shape[1]} channels but family {fam.name} uses {fam.latent_channels}")
    video = meta.get("video") or {}
    if kind in VIDEO_KINDS and video:
        frames = video.get("frames")
        if frames and shape[2] != (frames - 1) // 4 + 1:
            raise BadInputError(f"{where}: {shape[2]} latent frames do not match {frames} pixel frames in the metadata")
        if fam is not None:
            sh, sw = fam.stride[1], fam.stride[2]
            for axis, side, stride, n in (("width", "width", sw, shape[4]), ("height", "height", sh, shape[3])):
                px = video.get(side)
                if px is not None and px != n * stride:
                    raise BadInputError(
                        f"{where}: metadata video.{axis} {px} disagrees with the latents ({n} x {stride} = {n * stride} pixels)"
                    )
    ff = tensors.get("first_frame")
    if ff is not None:
        fshape = tuple(ff.shape)
        if _dtype_name(ff.dtype) != "uint8" or len(fshape) != 4 or fshape[1] != 3 or fshape[0] < 1:
            raise BadInputError(f"{where}: 'first_frame' must be uint8 (N, 3, H, W), got {_dtype_name(ff.dtype)} {fshape}")
        if video.get("width") and video.get("height") and fshape[2:] != (video["height"], video["width"]):
            raise BadInputError(f"{where}: 'first_frame' is {fshape[3]}x{fshape[2]}, the metadata says {video['width']}x{video['height']}")
    return notices


def _dtype_name(dtype: Any) -> str:
    return str(dtype).replace("torch.", "").lower()
