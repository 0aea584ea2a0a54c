"""File helpers shared by the artifact, video and model code: content digests, atomic writes,
JSON objects from model folders, safetensors headers.

A leaf module: it imports only the standard library and :mod:`wanctl.core.errors`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import struct
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from wanctl.core.errors import BadInputError, ModelError

# --------------------------------------------------------------------------- digests


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


class DigestMemo:
    """sha256 of files, memoised in a JSON file by (resolved path, size, mtime).

    Hashing multi-gigabyte weights once per change, not once per run. A memo that cannot be read
    starts empty; one that cannot be written only costs time.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self._memo: dict[str, str] | None = None
        self._dirty = False

    def _entries(self) -> dict[str, str]:
        if self._memo is None:
            try:
                data = json.loads(self.path.read_text())
                self._memo = data if isinstance(data, dict) else {}
            except (OSError, ValueError):
                self._memo = {}
        return self._memo

    def digest(self, f: Path) -> str:
        st = f.stat()
        key = f"{f.resolve()}|{st.st_size}|{st.st_mtime_ns}"
        memo = self._entries()
        if key not in memo:
            memo[key] = sha256_file(f)
            self._dirty = True
        return memo[key]

    def save(self) -> None:
        if not self._dirty or self._memo is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = _tmp_name(self.path)  # unique, not per pid: pids repeat across nodes sharing a cache
            tmp.write_text(json.dumps(self._memo))
            os.replace(tmp, self.path)
            self._dirty = False
        except OSError:  # a read-only cache only costs time
            pass


# --------------------------------------------------------------------------- JSON


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


# --------------------------------------------------------------------------- atomic writes


_STDOUT_TAKEN = False  # an artifact went to stdout (-o -): reports must not follow it there


def write_stdout(data: bytes) -> None:
    """Write an artifact's bytes to stdout (-o -); after this, stdout belongs to that artifact."""
    global _STDOUT_TAKEN
    _STDOUT_TAKEN = True
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


def stdout_taken() -> bool:
    return _STDOUT_TAKEN


def check_output_file(path: str, force: bool) -> None:
    """Refuse to overwrite without --force; the destination folder must exist and take a new
    file (a probe file is created and removed), so a read-only or full folder is found before
    the work, not after it."""
    p = Path(path)
    if p.exists() and not force:
        raise BadInputError(f"{path} exists; pass --force to overwrite")
    if p.is_dir() and not p.is_symlink():
        check_replaceable_folder(p)
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise BadInputError(f"output folder {parent} does not exist")
    try:
        probe = _tmp_name(p)
    except OSError as e:
        raise write_error(e, parent) from None
    probe.unlink()


# what a folder wanctl writes whole holds: PNG frames, a zarr store, a diffusers model folder
_FRAME_NAME = re.compile(r"frame_\d+\.png")
_MODEL_EXTRAS = {"model_index.json", "wanctl_presets.json", "MODEL_CARD.md", "train_log.jsonl", "README.md"}


def check_replaceable_folder(p: Path) -> None:
    """--force replaces an output, never a folder of the user's: an existing folder is replaced
    only when it is empty or is what wanctl writes as one output (PNG frames named frame_N.png, a
    zarr artifact, a model folder), and never when it is the current folder or holds it."""
    here = Path.cwd().resolve()
    where = p.resolve()
    if where == here or where in here.parents:
        raise BadInputError(f"{p} is the current folder or holds it; --force will not replace it")
    names = sorted(e.name for e in where.iterdir())
    if "zarr.json" in names:
        return
    known: set = set()  # a model folder's parts: the entries of its model_index.json
    if "model_index.json" in names:
        try:
            known = set(json.loads((where / "model_index.json").read_text())) | _MODEL_EXTRAS
        except (OSError, ValueError, TypeError):
            pass
    other = [n for n in names if not _FRAME_NAME.fullmatch(n) and n not in known]
    if other:
        raise BadInputError(f"{p} is a folder that holds other files (such as {other[0]!r}); --force replaces only "
                            "wanctl's own outputs: remove it or choose another -o")


def write_error(e: OSError, where: str | os.PathLike | None = None) -> Exception:
    """The one-line error for an OSError of the file system: a full disk is exit 5, a file or
    folder that refuses access exit 3; anything else is returned unchanged."""
    import errno

    from wanctl.core.errors import OutOfSpaceError

    where = where or e.filename or "the output folder"
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return OutOfSpaceError(f"no space left on the device writing {where}", "free some space or write elsewhere")
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        why = "read-only file system" if e.errno == errno.EROFS else "permission denied"
        return BadInputError(f"cannot write in {where} ({why})" if e.filename is None or where != e.filename
                             else f"{where}: {why}")
    return e


def _tmp_name(dest: Path) -> Path:
    fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent if str(dest.parent) else ".")
    os.close(fd)
    return Path(name)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _apply_umask(p: Path) -> None:
    """Give a finished output the permissions a plain ``open()`` would: mkstemp makes 0600 files,
    which a colleague or a web server could not read."""
    mask = _umask()
    if p.is_dir():
        for root, dirs, files in os.walk(p):
            os.chmod(root, 0o777 & ~mask)
            for f in files:
                os.chmod(os.path.join(root, f), 0o666 & ~mask)
    else:
        os.chmod(p, 0o666 & ~mask)


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _fsync_tree(d: Path) -> None:
    for root, _dirs, files in os.walk(d):
        for f in files:
            fd = os.open(os.path.join(root, f), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(root))


_PENDING: list | None = None  # the atomic writes of the innermost `together` block


class together:
    """Outputs written inside this block are committed together when it ends: if the block
    fails (or is interrupted) none of them is, so a command's outputs are all there or none
    (``t2v --decode``: the latent and its video). Only the final renames happen at the end."""

    def __enter__(self) -> "together":
        global _PENDING
        self._outer, self.pending = _PENDING, []
        _PENDING = self.pending
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        global _PENDING
        _PENDING = self._outer
        done = 0
        try:
            if exc_type is None:
                for write in self.pending:  # refuse before the first move, not halfway
                    if write.dest.exists() and not write.force:
                        raise BadInputError(f"{write.dest} appeared while writing; pass --force to overwrite")
                for write in self.pending:
                    write.commit()
                    done += 1
        finally:
            for write in self.pending[done:]:
                _remove(write.tmp)
        return False


class atomic_path:
    """Context manager yielding a temporary path next to ``dest``; on success it is fsynced and
    moved onto ``dest``; on any failure (or Ctrl-C) it is removed and ``dest`` is untouched.
    Inside a :class:`together` block the move waits for the end of the block.

    Works for files and for directories (zarr stores, model folders). Used by every writer in wanctl.
    """

    def __init__(self, dest: str | os.PathLike, force: bool = False, directory: bool = False):
        self.dest = Path(dest)
        self.force = force
        self.directory = directory
        self.tmp: Path | None = None

    def __enter__(self) -> Path:
        check_output_file(str(self.dest), self.force)
        self.tmp = _tmp_name(self.dest)
        if self.directory:
            self.tmp.unlink()
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> bool:
        assert self.tmp is not None
        if exc_type is not None:
            _remove(self.tmp)
            return False
        try:
            _apply_umask(self.tmp)
            if self.tmp.is_dir():
                _fsync_tree(self.tmp)
            else:
                fd = os.open(self.tmp, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        except BaseException:
            _remove(self.tmp)
            raise
        if _PENDING is not None:
            _PENDING.append(self)
            return False
        self.commit()
        return False

    def commit(self) -> None:
        """Move the finished temporary onto the destination."""
        try:
            if self.dest.exists() and not self.force:
                raise BadInputError(f"{self.dest} appeared while writing; pass --force to overwrite")
            if self.dest.is_dir() and not self.dest.is_symlink():
                # os.replace cannot replace a non-empty directory: move it aside first
                trash = _tmp_name(self.dest)
                trash.unlink()
                os.replace(self.dest, trash)
                os.replace(self.tmp, self.dest)
                _remove(trash)
            else:
                if self.tmp.is_dir() and self.dest.exists():
                    self.dest.unlink()
                os.replace(self.tmp, self.dest)
            _fsync_dir(self.dest.parent if str(self.dest.parent) else Path("."))
        except BaseException:
            _remove(self.tmp)
            raise


def _remove(p: Path) -> None:
    try:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        elif p.exists() or p.is_symlink():
            p.unlink()
    except OSError:  # pragma: no cover
        pass


# --------------------------------------------------------------------------- safetensors headers

# safetensors dtype names <-> torch dtype names (as strings: no torch import here)
_ST_DTYPES = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U8": "uint8",
    "BOOL": "bool",
}
MAX_HEADER = 100 * 1024 * 1024


@dataclass
class TensorInfo:
    shape: tuple[int, ...]
    dtype: str


def safetensors_head(path: str | os.PathLike, max_header: int = MAX_HEADER) -> bytes:
    """The first bytes of a safetensors file: the length prefix and the JSON header (when sane)."""
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) == 8:
            (n,) = struct.unpack("<Q", head)
            if 1 < n <= max_header:
                head += f.read(n)
    return head


def parse_safetensors_header(data: bytes, total_size: int, where: str,
                             max_header: int = MAX_HEADER) -> tuple[dict, dict[str, TensorInfo], dict]:
    """Parse the JSON header of a safetensors blob; ``data`` holds at least the header bytes.

    Returns (metadata strings, tensor infos, raw entries). Detects truncation from the data
    offsets against ``total_size`` so a cut-off file is reported without reading tensors.
    """
    if total_size < 8 or len(data) < 8:
        raise BadInputError(f"{where}: not a safetensors file (too short: {total_size} bytes)")
    (n,) = struct.unpack("<Q", data[:8])
    if max_header < n <= MAX_HEADER:
        raise BadInputError(f"{where}: safetensors header of {n} bytes is larger than the {max_header >> 20} MiB accepted here")
    if n <= 1 or n > max_header or n > total_size - 8:
        if 8 + n > total_size and n <= max_header:
            raise BadInputError(f"{where}: truncated safetensors file (header needs {n} bytes, file has {total_size - 8})")
        raise BadInputError(f"{where}: not a safetensors file (bad header length)")
    if len(data) < 8 + n:
        raise BadInputError(f"{where}: truncated safetensors file")
    try:
        header = json.loads(data[8 : 8 + n].decode("utf-8"))
        if not isinstance(header, dict):
            raise ValueError
    except RecursionError:
        raise BadInputError(f"{where}: safetensors header nested too deep") from None
    except (UnicodeDecodeError, ValueError):
        raise BadInputError(f"{where}: not a safetensors file (corrupt header)") from None
    strmeta = header.pop("__metadata__", None) or {}
    if not isinstance(strmeta, dict) or not all(isinstance(v, str) for v in strmeta.values()):
        raise BadInputError(f"{where}: not a safetensors file (corrupt __metadata__)")
    infos: dict[str, TensorInfo] = {}
    end = 0
    for name, ent in header.items():
        try:
            dtype = _ST_DTYPES.get(ent["dtype"], ent["dtype"].lower())
            shape = tuple(int(s) for s in ent["shape"])
            start, stop = (int(o) for o in ent["data_offsets"])
        except (KeyError, TypeError, ValueError, AttributeError):
            raise BadInputError(f"{where}: corrupt safetensors header entry for {name!r}") from None
        infos[name] = TensorInfo(shape, dtype)
        end = max(end, stop)
    if 8 + n + end > total_size:
        raise BadInputError(
            f"{where}: truncated safetensors file ({total_size} bytes, tensors need {8 + n + end})"
        )
    return strmeta, infos, header


class created_folder:
    """Create ``path`` (and missing parents) for a run's outputs; if the run fails, remove what
    was created here while it is still empty, so a failed run leaves no new empty folder."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.made: list[Path] = []

    def __enter__(self) -> Path:
        missing = []
        p = self.path
        while not p.exists():
            missing.append(p)
            if p.parent == p:
                break
            p = p.parent
        self.path.mkdir(parents=True, exist_ok=True)
        self.made = missing  # deepest first
        return self.path

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is not None:
            for d in self.made:
                try:
                    d.rmdir()  # only succeeds while empty
                except OSError:
                    break
        return False
