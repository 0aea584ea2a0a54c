"""The one reader/writer for wanctl artifacts.

An artifact is a set of named tensors plus one JSON document of metadata:

* ``.safetensors``: tensors in the file, the JSON under the metadata key ``wanctl``.
  ``-`` reads from stdin / writes to stdout.
* ``.zarr`` (a directory): one array per tensor, chunked one latent frame per chunk and
  compressed, the JSON in the root group's attributes under ``wanctl``.

Metadata can be read without torch (``read_meta``), which keeps ``wanctl info`` fast.
Writes are atomic: a unique temporary name in the destination folder, fsync, ``os.replace``.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

from wanctl.core.errors import BadInputError
# re-exported: the artifact writers' callers use them with the rest of this module
from wanctl.core.files import (  # noqa: F401
    write_stdout,
    TensorInfo,
    atomic_path,
    check_output_file,
    parse_safetensors_header,
    safetensors_head,
    sha256_file,
)

if TYPE_CHECKING:  # pragma: no cover
    import torch

# re-exported: the schema's names are the artifact format's
from wanctl.core.io.schema import FORMAT_NAME, FORMAT_VERSION, KINDS, check_meta, check_tensors  # noqa: F401

META_KEY = "wanctl"
MAX_HEADER = 16 * 1024 * 1024  # an artifact's safetensors header (a 1000-step trajectory needs < 1 MiB)
STDIN_CHUNK = 1 << 24
STDIO = "-"


@dataclass
class Header:
    """What can be known about an artifact without loading tensors (or importing torch)."""

    meta: dict
    tensors: dict[str, TensorInfo]
    path: str
    format: str  # "safetensors" | "zarr"
    size_bytes: int
    notices: list[str] = field(default_factory=list)


@dataclass
class Artifact:
    """Tensors plus metadata. ``tensors['latents']`` is always present: (B, C, T, H, W)."""

    tensors: dict[str, Any]
    meta: dict
    path: str | None = None
    extras: dict = field(default_factory=dict)

    @property
    def latents(self) -> "torch.Tensor":
        return self.tensors["latents"]

    @property
    def kind(self) -> str:
        return self.meta["kind"]

    @property
    def family(self) -> str | None:
        return self.meta.get("family")


# --------------------------------------------------------------------------- metadata


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def new_meta(
    kind: str,
    *,
    family: str | None,
    command: str,
    noise_level: float,
    video: dict | None = None,
    model: dict | None = None,
    params: dict | None = None,
    inputs: list[dict] | None = None,
    extra: dict | None = None,
) -> dict:
    """Build the metadata document every artifact carries."""
    from wanctl.core.env import versions

    if kind not in KINDS:
        raise ValueError(f"unknown artifact kind {kind!r}")
    meta = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "family": family,
        "latent_space": "normalized",
        "noise_level": float(noise_level),
        "video": video or {},
        "model": model or {},
        "params": params or {},
        "provenance": {
            "command": command,
            "inputs": inputs or [],
            "created": now_iso(),
            "versions": versions(),
        },
    }
    if extra:
        meta.update(extra)
    return meta


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def input_record(role: str, path: str, sha256: str, **more) -> dict:
    rec = {"role": role, "path": path, "sha256": sha256}
    rec.update(more)
    return rec


# --------------------------------------------------------------------------- output paths


def output_format(path: str) -> str:
    if path == STDIO:
        return "safetensors"
    p = str(path).rstrip("/")
    if p.endswith(".safetensors"):
        return "safetensors"
    if p.endswith(".zarr"):
        return "zarr"
    raise BadInputError(f"output {path!r} must end in .safetensors or .zarr (or be '-' for stdout)")


def check_output(path: str, force: bool) -> None:
    """Fail early (before any expensive work) if an output cannot be written."""
    if path == STDIO:
        if sys.stdout.isatty():
            raise BadInputError("refusing to write a binary artifact to a terminal; redirect stdout or use -o FILE")
        return
    output_format(path)
    check_output_file(path, force)


# --------------------------------------------------------------------------- header parsing


def _meta_from_strings(strmeta: dict, where: str) -> dict:
    raw = strmeta.get(META_KEY)
    if raw is None:
        raise BadInputError(
            f"{where}: not a wanctl artifact (no '{META_KEY}' metadata); "
            "ComfyUI .latent files are read with a .latent suffix"
        )
    try:
        meta = json.loads(raw)
    except RecursionError:
        raise BadInputError(f"{where}: wanctl metadata nested too deep") from None
    except ValueError:
        raise BadInputError(f"{where}: corrupt wanctl metadata (not JSON)") from None
    return check_meta(meta, where)


def _zarr_json(p: Path) -> dict:
    """A zarr v3 node's zarr.json: an object whose ``attributes``, where present, is an object."""
    try:
        node = json.loads((p / "zarr.json").read_text())
    except FileNotFoundError:
        raise BadInputError(f"{p}: not a zarr v3 store (no zarr.json)") from None
    except RecursionError:
        raise BadInputError(f"{p}: zarr.json nested too deep") from None
    except (ValueError, UnicodeDecodeError):
        raise BadInputError(f"{p}: corrupt zarr.json") from None
    if not isinstance(node, dict) or not isinstance(node.get("attributes") or {}, dict):
        raise BadInputError(f"{p}: corrupt zarr.json (not a zarr v3 node object)")
    return node


def _zarr_arrays(root: Path, prefix: str = "") -> dict[str, TensorInfo]:
    out: dict[str, TensorInfo] = {}
    for child in sorted(root.iterdir()):
        if not child.is_dir():
            continue
        zj = child / "zarr.json"
        if not zj.exists():
            continue
        node = _zarr_json(child)
        name = prefix + child.name
        if node.get("node_type") == "array":
            try:
                attrs = node.get("attributes") or {}
                dtype = str(attrs.get("torch_dtype") or node.get("data_type"))
                shape = tuple(int(s) for s in node["shape"])
            except (KeyError, TypeError, ValueError, AttributeError):
                raise BadInputError(f"{child}: corrupt zarr array metadata") from None
            out[name] = TensorInfo(shape, dtype)
        elif node.get("node_type") == "group":
            out.update(_zarr_arrays(child, name + "/"))
    return out


def _dir_size(p: Path) -> int:
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def read_header(path: str, stdin_bytes: bytes | None = None) -> Header:
    """Metadata and tensor shapes without loading tensors or importing torch; the metadata is
    checked against the schema (:mod:`schema`) and the declared tensors against the metadata."""
    if path == STDIO:
        if stdin_bytes is None:
            raise BadInputError("internal: stdin bytes missing")
        where, fmt, size = "<stdin>", "safetensors", len(stdin_bytes)
        strmeta, infos, _ = parse_safetensors_header(stdin_bytes, size, where, MAX_HEADER)
        meta = _meta_from_strings(strmeta, where)
    else:
        p, where = Path(path), path
        if not p.exists():
            raise BadInputError(f"{path}: no such file")
        if p.is_dir():
            if not (p / "zarr.json").exists():
                raise BadInputError(f"{path}: a folder that is not a .zarr artifact")
            root = _zarr_json(p)
            meta = (root.get("attributes") or {}).get(META_KEY)
            if not isinstance(meta, dict):
                raise BadInputError(f"{path}: not a wanctl artifact (no '{META_KEY}' attributes)")
            meta, infos, fmt, size = check_meta(meta, path), _zarr_arrays(p), "zarr", _dir_size(p)
        else:
            fmt, size = "safetensors", p.stat().st_size
            strmeta, infos, _ = parse_safetensors_header(safetensors_head(p, MAX_HEADER), size, path, MAX_HEADER)
            meta = _meta_from_strings(strmeta, path)
    hdr = Header(meta, infos, path, fmt, size)
    hdr.notices = check_tensors(meta, infos, where)
    return hdr


def read_meta(path: str) -> dict:
    return read_header(path).meta


# --------------------------------------------------------------------------- reading


def read_stdin() -> bytes:
    """One safetensors blob from stdin, read as its header says: the 8-byte length first (a
    header over :data:`MAX_HEADER` is refused before reading it), then the header, then exactly
    the tensor bytes it declares, in chunks (memory grows only with what arrives)."""
    import struct

    if sys.stdin.isatty():
        raise BadInputError("input '-' means stdin, but stdin is a terminal; pipe an artifact in")
    stream = sys.stdin.buffer
    head = stream.read(8)
    if not head:
        raise BadInputError("<stdin>: empty input (did the previous command in the pipe fail?)")
    if len(head) < 8:
        raise BadInputError(f"<stdin>: not a safetensors stream (only {len(head)} bytes)")
    (n,) = struct.unpack("<Q", head)
    if n <= 1 or n > MAX_HEADER:
        raise BadInputError(f"<stdin>: not a wanctl artifact stream (header length {n} outside 2..{MAX_HEADER})")
    buf = bytearray(head)
    _read_exactly(stream, buf, 8 + n)
    _, _, header = parse_safetensors_header(bytes(buf), sys.maxsize, "<stdin>", MAX_HEADER)
    end = max((int(e["data_offsets"][1]) for e in header.values()), default=0)
    _read_exactly(stream, buf, 8 + n + end)
    if stream.read(1):
        raise BadInputError("<stdin>: more bytes follow the artifact (one artifact per pipe)")
    return bytes(buf)


def _read_exactly(stream, buf: bytearray, total: int) -> None:
    while len(buf) < total:
        chunk = stream.read(min(STDIN_CHUNK, total - len(buf)))
        if not chunk:
            raise BadInputError(f"<stdin>: truncated artifact ({len(buf)} of {total} bytes arrived)")
        buf += chunk


def read_artifact(
    path: str,
    *,
    kinds: Iterable[str] | None = None,
    check_finite: bool = True,
    stdin_bytes: bytes | None = None,
    notice: Callable[[str], None] | None = None,
) -> Artifact:
    """Load and validate an artifact. ``kinds`` restricts what the caller accepts;
    ``stdin_bytes`` is what was already read from stdin for ``-``. Latents stored in half
    precision are widened to float32 (``notice`` says so)."""
    data = (stdin_bytes if stdin_bytes is not None else read_stdin()) if path == STDIO else None
    where = "<stdin>" if path == STDIO else path
    hdr = read_header(path, stdin_bytes=data)
    meta = hdr.meta
    if kinds is not None:
        kinds = tuple(kinds)
        if meta["kind"] not in kinds:
            raise BadInputError(f"{where}: expected a {' or '.join(kinds)} artifact, got a {meta['kind']} artifact")
    try:
        if hdr.format == "safetensors":
            from safetensors.torch import load, load_file

            tensors = load(data) if data is not None else load_file(path)
        else:
            tensors = _read_zarr(Path(path), hdr.tensors)
    except BadInputError:
        raise
    except Exception as e:  # safetensors raises its own error types on corrupt payloads
        raise BadInputError(f"{where}: cannot read tensors ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    tensors = validate(tensors, meta, where, check_finite=check_finite)
    for line in hdr.notices:
        if notice:
            notice(line)
    from wanctl.core import trace

    trace.event("read_artifact", path=where, kind=meta["kind"])
    art = Artifact(tensors=tensors, meta=meta, path=path)
    if data is not None:
        art.extras["sha256"] = sha256_bytes(data)
    return art


def artifact_digest(art: Artifact) -> str:
    """sha256 of an artifact as read (file bytes; for zarr, all files in order), for provenance."""
    if "sha256" in art.extras:
        return art.extras["sha256"]
    p = Path(art.path) if art.path else None
    if p is None or not p.exists():
        return ""
    if p.is_dir():
        h = hashlib.sha256()
        for f in sorted(x for x in p.rglob("*") if x.is_file()):
            h.update(str(f.relative_to(p)).encode())
            h.update(sha256_file(f).encode())
        digest = h.hexdigest()
    else:
        digest = sha256_file(p)
    art.extras["sha256"] = digest
    return digest


def first_frame(art: Artifact, index: int = 0):
    """The stored first frame of video ``index`` as uint8 (H, W, 3), or None."""
    ff = art.tensors.get("first_frame")
    if ff is None:
        return None
    i = min(index, ff.shape[0] - 1)
    return ff[i].permute(1, 2, 0).contiguous().numpy()


def validate(tensors: dict, meta: dict, where: str, check_finite: bool = True) -> dict:
    """Loaded tensors (their names, shapes and dtypes were checked on the header by
    :func:`read_header`), with half-precision latents widened to float32; refuses non-finite ones."""
    import torch

    out = dict(tensors)
    for name, t in tensors.items():
        if (name == "latents" or name.startswith("trajectory/")) and t.dtype != torch.float32:
            out[name] = t.float()
    if check_finite:
        for name, t in out.items():
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                raise BadInputError(f"{where}: tensor {name!r} contains NaN or infinite values")
    return out


def _read_zarr(p: Path, infos: dict[str, TensorInfo]) -> dict:
    """Every array, refusing one with a missing chunk: zarr would serve its fill value (zeros)."""
    import numpy as np
    import torch
    import zarr

    g = zarr.open_group(str(p), mode="r")
    out = {}
    for name in infos:
        arr = g[name]
        if arr.nchunks_initialized < arr.nchunks:
            missing = arr.nchunks - arr.nchunks_initialized
            raise BadInputError(f"{p}: array {name!r} is missing {missing} of its {arr.nchunks} chunks (incomplete copy?)")
        out[name] = torch.from_numpy(np.ascontiguousarray(arr[...]))
    return out


# --------------------------------------------------------------------------- writing


def _finalize_meta(tensors: dict, meta: dict) -> dict:
    meta = dict(meta)
    meta["tensors"] = {
        name: {"shape": list(t.shape), "dtype": str(t.dtype).replace("torch.", "")} for name, t in tensors.items()
    }
    return meta


def write_artifact(path: str, artifact: Artifact, *, force: bool = False) -> None:
    """Write atomically to ``path`` (``.safetensors``, ``.zarr`` or ``-`` for stdout)."""
    import torch

    tensors = {k: v.detach().to("cpu").contiguous() for k, v in artifact.tensors.items()}
    for k, v in tensors.items():
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise BadInputError(f"refusing to write {path}: tensor {k!r} holds NaN or infinite values")
    fmt = output_format(path)
    if fmt == "zarr":
        # zarr 3 has no bfloat16: widen losslessly to float32
        tensors = {k: (v.float() if v.dtype == torch.bfloat16 else v) for k, v in tensors.items()}
    meta = _finalize_meta(tensors, artifact.meta)
    try:
        meta_json = json.dumps(meta, ensure_ascii=False, allow_nan=False)  # NaN / Infinity are not JSON
    except ValueError:
        raise BadInputError(f"refusing to write {path}: its metadata holds NaN or an infinite number") from None
    if path == STDIO:
        from safetensors.torch import save

        check_output(path, force)
        write_stdout(save(tensors, metadata={META_KEY: meta_json}))
        return
    if fmt == "safetensors":
        from safetensors.torch import save_file

        with atomic_path(path, force=force) as tmp:
            save_file(tensors, str(tmp), metadata={META_KEY: meta_json})
    else:
        with atomic_path(path, force=force, directory=True) as tmp:
            _write_zarr(tmp, tensors, meta)


def _write_zarr(p: Path, tensors: dict, meta: dict) -> None:
    import zarr

    g = zarr.open_group(str(p), mode="w")
    for name, t in tensors.items():
        arr = t.numpy()
        if t.ndim == 5:  # (B, C, T, H, W): one latent frame per chunk
            chunks = (1, t.shape[1], 1, t.shape[3], t.shape[4])
        else:
            chunks = tuple(max(1, s) for s in t.shape) or None
        # every chunk is written, zeros too, so a missing chunk on read means a damaged store
        z = g.create_array(name, shape=arr.shape, dtype=arr.dtype, chunks=chunks, config={"write_empty_chunks": True})
        z[...] = arr
        z.attrs["torch_dtype"] = str(t.dtype).replace("torch.", "")
    g.attrs[META_KEY] = meta


# --------------------------------------------------------------------------- family checks


def check_family(artifact: Artifact | Header, family: str, where: str | None = None) -> None:
    fam = artifact.meta.get("family")
    if fam is not None and fam != family:
        raise BadInputError(
            f"{where or artifact.path}: artifact is for family {fam}, but the model is {family}; use a {fam} model"
        )
