"""Atomic writes: outputs committed together (all or none), and a write probe that finds an
unwritable or full output folder before any work."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from wanctl.core import files
from wanctl.core.errors import BadInputError, OutOfSpaceError
from wanctl.core.files import atomic_path, check_output_file, together


def _write(path, text):
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def test_together_commits_every_output_at_the_end(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    with together():
        _write(a, "A")
        assert not a.exists()  # finished, but waiting for the block
        _write(b, "B")
    assert a.read_text() == "A" and b.read_text() == "B"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt"]


@pytest.mark.parametrize("fault", [RuntimeError, KeyboardInterrupt])
def test_together_commits_nothing_when_the_block_fails(tmp_path, fault):
    with pytest.raises(fault):
        with together():
            _write(tmp_path / "a.txt", "A")
            raise fault()
    assert list(tmp_path.iterdir()) == []  # no output, no temporary


def test_together_refuses_before_the_first_move(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    with pytest.raises(BadInputError, match="appeared while writing"):
        with together():
            _write(a, "A")
            _write(b, "B")
            b.write_text("someone else's")
    assert not a.exists() and b.read_text() == "someone else's"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.txt"]


@pytest.mark.parametrize("code,error,words", [
    (errno.EROFS, BadInputError, "read-only file system"),
    (errno.EACCES, BadInputError, "permission denied"),
    (errno.ENOSPC, OutOfSpaceError, "no space left"),
])
def test_write_probe_finds_an_unwritable_folder(tmp_path, monkeypatch, code, error, words):
    def refuse(dest):
        raise OSError(code, "refused")

    monkeypatch.setattr(files, "_tmp_name", refuse)
    with pytest.raises(error, match=words) as e:
        check_output_file(str(tmp_path / "out.safetensors"), force=False)
    assert e.value.exit_code == (5 if code == errno.ENOSPC else 3)
    assert list(tmp_path.iterdir()) == []


def test_write_probe_leaves_nothing(tmp_path):
    check_output_file(str(tmp_path / "out.safetensors"), force=False)
    assert list(tmp_path.iterdir()) == []


def test_force_replaces_only_what_wanctl_writes_as_a_folder(tmp_path, monkeypatch):
    """--force on an existing folder: a folder of frames, a zarr store, an empty folder or a model
    folder is replaced; one that holds anything else (an input, a user's file) or that is the
    current folder is refused, and left as it was."""
    monkeypatch.chdir(tmp_path)
    frames = tmp_path / "frames"
    frames.mkdir()
    _write(frames / "frame_00000.png", "x")
    store = tmp_path / "s.zarr"
    store.mkdir()
    _write(store / "zarr.json", "{}")
    model = tmp_path / "model"
    (model / "vae").mkdir(parents=True)
    _write(model / "model_index.json", '{"_class_name": "WanPipeline", "vae": ["diffusers", "AutoencoderKLWan"]}')
    (tmp_path / "empty").mkdir()
    for ok in (frames, store, model, tmp_path / "empty"):
        check_output_file(str(ok), force=True)
    user = tmp_path / "keep"
    user.mkdir()
    _write(user / "important.txt", "mine")
    _write(user / "frame_00000.png", "x")
    _write(model / "notes.txt", "mine")
    for bad, words in ((user, "important.txt"), (model, "notes.txt"), (tmp_path, "current folder"), (Path("."), "current folder")):
        with pytest.raises(BadInputError, match=words):
            check_output_file(str(bad), force=True)
    with pytest.raises(BadInputError, match="important.txt"):  # a file output where the folder is
        with atomic_path(user, force=True) as tmp:
            _write(tmp, "new")
    assert (user / "important.txt").read_text() == "mine"
