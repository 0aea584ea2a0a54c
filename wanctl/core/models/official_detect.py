"""Which official Wan2.2 layout a path is: an official release folder, a ComfyUI single DiT file
(``.safetensors`` in bf16/fp16/fp32, fp8_scaled or plain fp8, a ComfyUI full checkpoint, or a
``.gguf``; the other parts given separately), or a JSON model description naming such files.

Detection reads configs and file headers only (safetensors, GGUF), and returns an
:class:`~wanctl.core.models.official.OfficialLayout`, or None when the path is none of these.
"""

from __future__ import annotations

import math
from pathlib import Path

from wanctl.core.errors import ModelError
from wanctl.core.errors import model_error as _err
from wanctl.core.families import FAMILIES
from wanctl.core.files import read_json
from wanctl.core.models.diffusers_layout import weight_files
from wanctl.core.models.official import EXPERT_DIRS, T5_FILE, TOKENIZER_DIR, VAE_FILES, OfficialLayout
from wanctl.core.models.official_configs import need_weight
from wanctl.core.models.official_keys import map_dit_key, other_parts, strip_dit_prefix, weight_keys
from wanctl.core.models.weights import Checkpoint

_OFFICIAL = "official model folder"  # how read_json names an official folder in its errors
DESCRIPTION_PARTS = ("transformer", "transformer_2", "vae", "text_encoder", "tokenizer")


def _family_from_channels(in_ch: int, out_ch: int, experts: int, where: str) -> str:
    if experts == 1 and in_ch == 48 and out_ch == 48:
        return "ti2v-5b"
    if experts == 2 and out_ch == 16 and in_ch in (16, 36):
        return "t2v-a14b" if in_ch == 16 else "i2v-a14b"
    if experts == 1 and in_ch in (16, 36):
        raise _err(f"{where}: one DiT with in_dim {in_ch}: a Wan2.1 model (no expert switch), not a Wan2.2 family wanctl supports")
    raise _err(f"{where}: unknown Wan DiT (in_dim {in_ch}, out_dim {out_ch}); wanctl supports {', '.join(FAMILIES)}")


def _is_dit_config(cfg: dict) -> bool:
    return cfg.get("_class_name") == "WanModel" or {"dim", "in_dim", "num_heads"} <= set(cfg)


def _find_vae(folder: Path, kind: str) -> Path | None:
    for ext in (".pth", ".safetensors"):
        p = folder / f"{VAE_FILES[kind]}{ext}"
        if p.is_file():
            return p
    return None


def _find_t5(folder: Path) -> Path | None:
    if (folder / T5_FILE).is_file():
        return folder / T5_FILE
    cands = sorted(folder.glob("models_t5_*.pth")) + sorted(folder.glob("models_t5_*.safetensors"))
    return cands[0] if cands else None


def _detect_folder(p: Path) -> OfficialLayout | None:
    hi, lo = p / EXPERT_DIRS["transformer"], p / EXPERT_DIRS["transformer_2"]
    markers = [f.name for f in p.iterdir() if f.name.startswith(("Wan2.1_VAE", "Wan2.2_VAE", "models_t5_"))]
    if hi.is_dir() or lo.is_dir():
        for d in (hi, lo):
            if not d.is_dir():
                raise _err(f"{p}: incomplete official A14B folder, {d.name}/ is missing")
        cfgs = [read_json(d / "config.json", f"{d.name}/config.json", _OFFICIAL) for d in (hi, lo)]
        for d, c in zip((hi, lo), cfgs):
            if not _is_dit_config(c):
                raise _err(f"{d / 'config.json'}: not an official Wan DiT config")
        fams = [_family_from_channels(c.get("in_dim", 16), c.get("out_dim", 16), 2, str(d)) for d, c in zip((hi, lo), cfgs)]
        if fams[0] != fams[1]:
            raise _err(f"{p}: the experts disagree: {hi.name} is {fams[0]}, {lo.name} is {fams[1]}")
        layout = OfficialLayout(p, "official-folder", FAMILIES[fams[0]], _weight_files(hi), _weight_files(lo), cfgs[0], cfgs[1])
    elif (p / "config.json").is_file():
        cfg = read_json(p / "config.json", "config.json", _OFFICIAL)
        if not _is_dit_config(cfg):
            return None
        fam = _family_from_channels(cfg.get("in_dim", 16), cfg.get("out_dim", 16), 1, str(p))
        layout = OfficialLayout(p, "official-folder", FAMILIES[fam], _weight_files(p), (), cfg)
    else:
        if markers:
            raise _err(f"{p}: looks like an official Wan folder ({markers[0]}) but has no DiT (config.json / high_noise_model/)")
        return None
    kind = layout.family.vae
    layout.vae = _find_vae(p, kind)
    if layout.vae is None:
        other = _find_vae(p, "wan2.2" if kind == "wan2.1" else "wan2.1")
        layout.notes.append(
            f"{VAE_FILES[kind]}.pth is missing" + (f" ({other.name} is the other family's VAE)" if other else "")
        )
    layout.text_encoder = _find_t5(p)
    tok = p / TOKENIZER_DIR
    layout.tokenizer = tok if tok.is_dir() else None
    return layout


def _weight_files(d: Path) -> tuple[Path, ...]:
    files = weight_files(d, "transformer")
    bad = [f.name for f in files if f.suffix != ".safetensors"]
    if bad:
        raise _err(f"{d}: DiT weights must be .safetensors (found {bad[0]})")
    return tuple(files)


def _dit_file_info(f: Path) -> tuple[dict, int, int] | None:
    """(shapes, in_ch, out_ch) of a single-file DiT, or None when the file is not a Wan DiT."""
    raw = Checkpoint(f).shapes()
    prefix, keys = strip_dit_prefix(raw)
    if "patch_embedding.weight" not in keys:
        return None
    shapes = {map_dit_key(k, str(f)): raw[prefix + k] for k in weight_keys(keys)}
    _, in_ch, *patch = shapes["patch_embedding.weight"]
    out_ch = need_weight(shapes, "proj_out.weight", str(f))[0] // math.prod(patch)
    return shapes, in_ch, out_ch


def _not_a_dit(f: Path) -> None:
    """Raise a helpful error when a VAE or text encoder file is given where a DiT is expected."""
    name = f.name.lower()
    if "vae" in name or "t5" in name or "umt5" in name:
        raise _err(f"{f}: a VAE / text encoder file, not a DiT; give the DiT file and this one separately")
    if f.suffix.lower() == ".safetensors":
        keys = list(Checkpoint(f).shapes())
        if any(k.startswith(("encoder.downsamples.", "decoder.upsamples.")) for k in keys):
            raise _err(f"{f}: a Wan VAE file, not a DiT; give the DiT file and this one as the VAE")
        if any(k.startswith(("encoder.block.", "blocks.0.attn.", "token_embedding.")) for k in keys):
            raise _err(f"{f}: a umT5 text encoder file, not a DiT; give the DiT file and this one as the text encoder")


def _expert_rank(f: Path) -> int | None:
    n = f.name.lower()
    if "high_noise" in n or "high-noise" in n:
        return 0
    if "low_noise" in n or "low-noise" in n:
        return 1
    return None


def _full_checkpoint_note(f: Path) -> str | None:
    """The notice for a ComfyUI full checkpoint (DiT + VAE + text encoders in one file)."""
    n, parts = other_parts(Checkpoint(f).shapes())
    if not n:
        return None
    return (f"{f.name} is a full checkpoint: using its DiT (model.diffusion_model.*) only, as ComfyUI's diffusion "
            f"model loader does; {n} other tensor(s) ({', '.join(parts)}) ignored: give the VAE and text encoder files separately")


def _detect_file(p: Path, transformer_2: Path | None) -> OfficialLayout | None:
    suffix = p.suffix.lower()
    if suffix not in (".safetensors", ".gguf"):
        if suffix in (".pth", ".pt", ".bin", ".ckpt"):
            _not_a_dit(p)
        return None
    info = _dit_file_info(p)
    if info is None:
        _not_a_dit(p)
        return None
    _, in_ch, out_ch = info
    experts = 2 if out_ch == 16 else 1
    fam = _family_from_channels(in_ch, out_ch, experts, str(p))
    notes: list[str] = [n for n in (_full_checkpoint_note(p),) if n]
    first, second = (p,), ()
    if transformer_2 is not None:
        if experts == 1:
            raise _err(f"{p}: a {fam} DiT has no second expert ({transformer_2} given)")
        info2 = _dit_file_info(transformer_2)
        if info2 is None:
            _not_a_dit(transformer_2)
            raise _err(f"{transformer_2}: not a Wan DiT file")
        if (info2[1], info2[2]) != (in_ch, out_ch):
            raise _err(f"{transformer_2}: the experts disagree (in_dim {info2[1]} vs {in_ch})")
        second = (transformer_2,)
        notes += [n for n in (_full_checkpoint_note(transformer_2),) if n]
        if (_expert_rank(p), _expert_rank(transformer_2)) == (1, 0):
            first, second = second, first
            notes.append(f"{p.name} is the low-noise expert by its name: used as transformer_2")
    elif experts == 2:
        notes.append("one A14B expert file given: the other expert (transformer_2) is missing")
    return OfficialLayout(p, "official-files", FAMILIES[fam], first, second, notes=notes)


def _existing(value, what: str) -> Path | None:
    if value is None:
        return None
    q = Path(value).expanduser()
    if not q.exists():
        raise _err(f"{what} {q} does not exist")
    return q


def detect_official(
    path,
    *,
    transformer_2=None,
    vae=None,
    text_encoder=None,
    tokenizer=None,
    overrides: dict[str, dict] | None = None,
) -> OfficialLayout | None:
    """Recognise an official Wan2.2 folder or a ComfyUI single DiT file.

    Returns None when ``path`` is neither (a diffusers folder, an unrelated file or folder), so the
    caller can try the diffusers layout. Raises :class:`ModelError` when it is one but unusable
    (a Wan2.1 model, an incomplete A14B folder, an unreadable file...). ``vae`` / ``text_encoder`` /
    ``tokenizer`` / ``transformer_2`` give separate files (they replace what a folder holds);
    ``overrides`` gives per-component config values the weights cannot tell. Reads only configs
    and file headers.
    """
    p = Path(path).expanduser()
    if not p.exists():
        return None
    t2 = _existing(transformer_2, "transformer_2 file")
    if p.is_dir():
        if (p / "model_index.json").exists():
            return None
        layout = _detect_folder(p)
        if layout is not None and t2 is not None:
            raise _err(f"{p}: an official folder holds its own experts; transformer_2 is only for single files")
    else:
        layout = _detect_file(p, t2)
    if layout is None:
        return None
    for attr, value, what in (("vae", vae, "VAE file"), ("text_encoder", text_encoder, "text encoder file"), ("tokenizer", tokenizer, "tokenizer folder")):
        q = _existing(value, what)
        if q is not None and q.suffix.lower() == ".gguf":
            raise _err(f"{what} {q}: GGUF is read for the DiT only; give this part as .safetensors or .pth")
        if q is not None:
            setattr(layout, attr, q)
    if layout.tokenizer is not None and not layout.tokenizer.is_dir():
        raise _err(f"tokenizer {layout.tokenizer} is not a folder")
    layout.overrides = {k: dict(v) for k, v in (overrides or {}).items()}
    return layout


def detect_description(path: Path) -> OfficialLayout:
    """A JSON model description: ``{"transformer": ..., "transformer_2": ..., "vae": ...,
    "text_encoder": ..., "tokenizer": ..., "overrides": {component: {config values}}}``, paths
    relative to the JSON file; only ``transformer`` is required."""
    desc = read_json(path, "model description")
    overrides = desc.pop("overrides", None)  # config values weights cannot tell (non-released sizes)
    base = path.parent
    where = {k: (str(base / v) if v and not Path(v).is_absolute() else v) for k, v in desc.items()}
    unknown = set(where) - set(DESCRIPTION_PARTS)
    if unknown or "transformer" not in where:
        raise ModelError(f"{path}: a model description names transformer (and optionally transformer_2, vae, "
                         f"text_encoder, tokenizer){'; unknown: ' + ', '.join(sorted(unknown)) if unknown else ''}")
    layout = detect_official(where.pop("transformer"), overrides=overrides, **where)
    if layout is None:
        raise ModelError(f"{path}: its transformer is not a Wan2.2 DiT checkpoint")
    return layout
