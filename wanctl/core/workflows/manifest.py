"""Manifests: one row per output of a many-output run (``denoise`` targets, ``t2v`` prompts),
as CSV (a header row; Excel's UTF-8 BOM accepted) or JSONL. Shared by the workflows so that
every command reads them, resolves their paths and reports their bad rows the same way.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

from wanctl.core.errors import BadInputError
from wanctl.core.shard import Shard


def read_manifest(path: str, columns: tuple[str, ...], *, paths: tuple[str, ...] = (),
                  integers: tuple[str, ...] = ()) -> list[dict]:
    """Rows of a manifest with the given ``columns``; the ``paths`` columns are resolved
    relative to the manifest's folder, the ``integers`` columns parsed (an empty cell is None).
    Each row carries its 1-based ``row``. A row that cannot be read (more fields than the
    header, a malformed JSON line, a number where a path belongs, a seed that is not an
    integer) carries an ``error`` and fails alone; an unknown CSV column or an empty manifest
    refuses the whole run."""
    p = Path(path)
    if not p.is_file():
        raise BadInputError(f"manifest {path}: no such file")
    base = p.parent
    rows: list[dict] = []
    try:
        text = p.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise BadInputError(f"manifest {path}: cannot read it as UTF-8 text ({e})") from None
    if p.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError as e:
                rows.append({"row": n, "error": f"not valid JSON ({e.msg})"})
                continue
            if not isinstance(obj, dict):
                rows.append({"row": n, "error": "not a JSON object"})
                continue
            rows.append(dict(obj, row=n))
    else:
        try:
            # a stream, not lines: a quoted field may hold a newline
            reader = csv.DictReader(io.StringIO(text, newline=""), restkey="_extra")
            for n, r in enumerate(reader, 1):
                if r.get("_extra"):
                    rows.append({"row": n, "error": f"it has more fields than the header ({', '.join(reader.fieldnames or [])})"})
                else:
                    rows.append({k: (v if v != "" or k not in integers else None) for k, v in r.items()} | {"row": n})
        except csv.Error as e:
            raise BadInputError(f"manifest {path}: cannot parse ({e})") from None
        unknown = set(reader.fieldnames or []) - set(columns)
        if unknown:
            raise BadInputError(f"manifest {path}: unknown column(s) {', '.join(sorted(unknown))}")
    for r in rows:
        if "error" in r:
            continue
        unknown = set(r) - set(columns) - {"row"}
        if unknown:
            r["error"] = f"unknown field(s) {', '.join(sorted(unknown))}"
            continue
        texts = [k for k in columns if k not in integers]
        bad = [k for k in texts if r.get(k) is not None and not isinstance(r[k], str)]
        if bad:
            r["error"] = f"{', '.join(bad)} must be text, got {', '.join(type(r[k]).__name__ for k in bad)}"
            continue
        for key in integers:  # seeds: what --seed takes, 0 .. 2^64 - 1
            v = r.get(key)
            try:
                if isinstance(v, str):
                    v = int(v.strip())
                if v is not None and (isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 2**64):
                    raise ValueError
            except ValueError:
                r["error"] = f"{key} must be an integer from 0 to 2^64-1, got {r.get(key)!r}"
                break
            r[key] = v
        if "error" in r:
            continue
        for key in paths:
            v = (r.get(key) or "").strip()
            r[key] = str(base / v) if v and not Path(v).is_absolute() else (v or None)
    if not rows:
        raise BadInputError(f"manifest {path}: no rows")
    return rows


def take_share(targets: list, shard: Shard | None, *, force: bool = False) -> None:
    """Mark this process's rows (``mine``) and, under a shard, the ones already written
    (``skipped``): decided once, from the full plan, so that every process agrees on who makes
    what and a restarted job makes only what is missing. Works on any row with ``output``,
    ``error``, ``mine`` and ``skipped`` (denoise targets, t2v rows)."""
    if shard is None or not shard.active:
        return
    for i, t in enumerate(targets):
        t.mine = shard.owns(i)
        if t.mine and not t.error and not force and t.output not in ("", "-") and Path(t.output).exists():
            t.skipped = True


def prepare_outputs(rows: list, folder: str, *, shared: bool, force: bool, dry_run: bool, cleanup) -> None:
    """Before any work: ``folder`` (-o) is a folder, not an artifact name; every output this process will write (rows with ``output``, ``label``,
    ``error``, ``mine``, ``skipped``) must be an artifact name, and, for a real run, writable in
    its folder, else the run is refused with the row named. A real run creates ``folder``:
    through ``cleanup`` (a contextlib.ExitStack) it is removed again if the run fails while it is
    still empty, unless ranks share it (``shared``: none of them removes it)."""
    from wanctl.core.files import check_output_file, created_folder
    from wanctl.core.io.artifact import output_format

    if folder == "-" or Path(folder).suffix in (".safetensors", ".zarr"):
        raise BadInputError(f"{len(rows)} outputs: -o must be a folder, not {folder}")
    mine = [r for r in rows if r.mine and not r.skipped and not r.error]

    def each(check) -> None:
        for r in mine:
            try:
                check(r)
            except BadInputError as e:
                raise BadInputError(f"{r.label}: {e.message}", e.hint) from None

    each(lambda r: output_format(r.output))
    if dry_run:  # nothing is created, but what the real run would refuse is refused here too
        def folder_exists(r) -> None:
            parent = Path(r.output).parent
            if not parent.is_dir() and parent.resolve() != Path(folder).resolve():
                raise BadInputError(f"output folder {parent} does not exist")

        each(folder_exists)
        return
    if shared:
        Path(folder).mkdir(parents=True, exist_ok=True)
    else:
        cleanup.enter_context(created_folder(folder))
    each(lambda r: check_output_file(r.output, force))


def share_summary(shard: Shard, rows: list, written: int) -> tuple[str, list]:
    """This process's summary line (``rank I/N: D rows done, S skipped, F failed``; unsharded:
    ``manifest: ...``) and its failed rows."""
    mine = [t for t in rows if t.mine]
    failed = [t for t in mine if t.error]
    skipped = sum(1 for t in mine if t.skipped)
    who = shard.label if shard.active else "manifest"
    return f"{who}: {written} rows done, {skipped} skipped, {len(failed)} failed", failed


@dataclass
class Row:
    """One output of a manifest run of ``t2v`` / ``flf2v``."""

    row: int  # 1-based manifest row
    prompt: str = ""
    output: str = ""
    seed: int | None = None  # None: the command's --seed
    paths: dict[str, str] = field(default_factory=dict)  # first_frame, last_frame (flf2v)
    error: str | None = None
    mine: bool = True
    skipped: bool = False

    @property
    def label(self) -> str:
        return f"manifest row {self.row}"


def plan_rows(manifest: str, *, columns: tuple[str, ...], required: tuple[str, ...] = (), prompt: str | None,
              output: str, allow_outside: bool = False, shard: Shard | None = None, force: bool = False) -> list[Row]:
    """Every row of a prompt manifest (``columns``: ``prompt``, ``seed``, ``output`` and the
    path columns in ``required``), decided once for all processes: the prompt (the row's, else
    ``prompt``), the output (the row's, relative to the manifest, else
    ``<output folder>/row-<n>.safetensors``), this process's share and what is already written
    (:func:`take_share`). Two rows writing one file, or an output outside both the manifest's
    folder and ``output`` (unless ``allow_outside``), refuse the run before any work; a row
    that cannot be read, or lacks a required path, fails alone."""
    recs = read_manifest(manifest, columns, paths=("output",) + required, integers=("seed",))
    roots = [Path(output).resolve(), Path(manifest).resolve().parent]
    rows: list[Row] = []
    seen: dict[Path, int] = {}
    for r in recs:
        n = r["row"]
        if r.get("error"):
            rows.append(Row(n, error=r["error"]))
            continue
        p = r.get("prompt") or prompt
        if not p:
            raise BadInputError(f"manifest row {n}: no prompt (give -p or a prompt column)")
        missing = [k for k in required if not r.get(k)]
        out = r.get("output")
        if not out:
            out = str(Path(output) / f"row-{n}.safetensors")
        elif not allow_outside and not any(Path(out).resolve().is_relative_to(root) for root in roots):
            raise BadInputError(f"manifest row {n}: output {out} is outside the manifest's folder and -o; "
                                "pass --allow-outside to write there")
        key = Path(out).resolve()
        if key in seen:
            raise BadInputError(f"manifest row {n}: output {out} is also the output of manifest row {seen[key]}; "
                                "nothing was run")
        seen[key] = n
        rows.append(Row(n, p, out, r.get("seed"), {k: r[k] for k in required if r.get(k)},
                        error=f"no {', '.join(missing)}" if missing else None))
    take_share(rows, shard, force=force)
    return rows
