"""Atomic writes: outputs committed together (all or none), and a write probe that finds an
unwritable or full output folder before any work."""

from __future__ import annotations

import errno

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
