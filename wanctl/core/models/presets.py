"""A model's own sampling defaults: ``wanctl_presets.json`` at the top of a model folder, merged
over the family's official :class:`~wanctl.core.families.Preset`.

Any subset of the fields, e.g. for a model trained at 64x64::

    {"steps": 30, "frames": 17, "fps": 16, "sizes": [[64, 64]]}

Keys starting with ``_`` are comments. A folder without the file (every real Wan2.2 release)
uses the official presets.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from wanctl.core.errors import ModelError
from wanctl.core.families import FamilySpec, Preset
from wanctl.core.files import read_json

PRESETS_FILE = "wanctl_presets.json"
FIELDS = ("steps", "shift", "guidance_high", "guidance_low", "frames", "fps", "sizes")
MAX_SIDE = 8192


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _whole(v, lo: int, hi: int) -> int | None:
    return v if _is_int(v) and lo <= v <= hi else None


def parse_preset(data: dict, family: FamilySpec, where: str) -> dict:
    """The validated preset fields of a presets file's JSON object (a one-line ModelError otherwise)."""

    def bad(field: str, want: str) -> ModelError:
        return ModelError(f"{where}: {field} must be {want} (got {data[field]!r})")

    unknown = sorted(k for k in data if k not in FIELDS and not str(k).startswith("_"))
    if unknown:
        raise ModelError(f"{where}: unknown preset field(s) {', '.join(unknown)}; known: {', '.join(FIELDS)}")
    out: dict = {}
    if "steps" in data:
        if _whole(data["steps"], 1, 1000) is None:
            raise bad("steps", "a whole number from 1 to 1000")
        out["steps"] = data["steps"]
    if "shift" in data:
        v = data["shift"]
        if not (_is_number(v) and 0 < v <= 100):
            raise bad("shift", "a number above 0, at most 100")
        out["shift"] = float(v)
    for g in ("guidance_high", "guidance_low"):
        if g in data:
            v = data[g]
            if not (_is_number(v) and 0 <= v <= 100):
                raise bad(g, "a number from 0 to 100")
            out[g] = float(v)
    if "frames" in data:
        v = data["frames"]
        if _whole(v, 1, 10001) is None or (v - 1) % 4:
            raise bad("frames", "a whole number 4n+1 (1, 5, 9, ... 81, 121), at most 10001")
        out["frames"] = v
    if "fps" in data:
        if _whole(data["fps"], 1, 240) is None:
            raise bad("fps", "a whole number from 1 to 240")
        out["fps"] = data["fps"]
    if "sizes" in data:
        v, m = data["sizes"], family.size_multiple
        pairs = isinstance(v, list) and v and all(
            isinstance(s, list) and len(s) == 2 and all(_whole(x, m, MAX_SIDE) is not None and x % m == 0 for x in s)
            for s in v
        )
        if not pairs:
            raise bad("sizes", f"a non-empty list of [width, height], each a multiple of {m} for {family.name} "
                               f"from {m} to {MAX_SIDE}")
        out["sizes"] = tuple((int(w), int(h)) for w, h in v)
    return out


def model_preset(folder: Path | None, family: FamilySpec, boundary: float | None) -> Preset:
    """The family's preset with the model's own ``boundary`` and, when ``folder`` holds a presets
    file, the file's fields over it."""
    preset = family.preset if boundary == family.preset.boundary else replace(family.preset, boundary=boundary)
    if folder is None or not folder.is_dir():
        return preset
    f = folder / PRESETS_FILE
    if not f.is_file():
        return preset
    return replace(preset, **parse_preset(read_json(f, PRESETS_FILE), family, str(f)))
