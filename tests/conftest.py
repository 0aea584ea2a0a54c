"""Shared fixtures: an isolated cache dir (built-in models generated once per session), the
example assets, and two ways to run the CLI: in-process (fast) and as a real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def cache_dir(tmp_path_factory) -> Path:
    """Every test (and every subprocess it starts) uses one fresh cache dir for this session."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # shared by all xdist workers: built-ins are generated once
    d = Path(os.environ.get("WANCTL_TEST_CACHE_DIR") or base / "wanctl-cache")
    d.mkdir(parents=True, exist_ok=True)
    os.environ["WANCTL_CACHE_DIR"] = str(d)
    os.environ["WANCTL_DEVICE"] = "cpu"
    os.environ.pop("WANCTL_MODEL", None)
    os.environ["WANCTL_NO_PROGRESS"] = "1"
    return d


@pytest.fixture(scope="session")
def assets(tmp_path_factory) -> dict[str, Path]:
    from wanctl.toy.assets import write_assets

    return write_assets(tmp_path_factory.mktemp("assets"))


@pytest.fixture(scope="session")
def bundles():
    """Loaded built-in bundles, cached for the session: bundles(name) -> ModelBundle (fp32, cpu)."""
    from wanctl.core.models.bundle import LoadOptions, open_bundle

    cache: dict = {}

    def get(name: str):
        if name not in cache:
            cache[name] = open_bundle(name, options=LoadOptions(device="cpu", dtype="fp32"))
        return cache[name]

    return get


@pytest.fixture(scope="module")
def tiny_noise(tmp_path_factory, assets):
    """A small tiny-ti2v-5b noise (64x64, 5 frames, 2 inversion steps) for denoise target tests."""
    d = tmp_path_factory.mktemp("tiny-noise")
    assert invoke("encode", str(assets["clip"]), "-m", "tiny-ti2v-5b", "--frames", "5", "--size", "64x64",
                  "-o", str(d / "c.safetensors")).exit_code == 0
    r = invoke("invert", str(d / "c.safetensors"), "-p", "a red circle", "--steps", "2", "-o", str(d / "n.safetensors"))
    assert r.exit_code == 0, r.stderr
    return d / "n.safetensors"


def bomb_png(path, side: int = 12000) -> None:
    """A valid 1-bit PNG of side x side black pixels: a few kB that decode to side**2 pixels."""
    import struct
    import zlib

    row = b"\x00" * (1 + (side + 7) // 8)
    z = zlib.compressobj(9)
    data = b"".join(z.compress(row) for _ in range(side)) + z.flush()

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", data) + chunk(b"IEND", b""))


def run_cli(*args: str, input: bytes | None = None, env: dict | None = None, cwd=None, check: bool = False):
    """Run `python -m wanctl ARGS` as a real subprocess; returns CompletedProcess (bytes)."""
    e = dict(os.environ)
    e.update(env or {})
    proc = subprocess.run(
        [sys.executable, "-m", "wanctl", *args], input=input, capture_output=True, env=e, cwd=cwd, timeout=600
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"wanctl {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr.decode()}")
    return proc


def invoke(*args: str, input: bytes | None = None):
    """Run the CLI in this process (fast; for error paths). Returns click's Result."""
    from typer.testing import CliRunner

    from wanctl.cli import app

    return CliRunner().invoke(app, list(args), input=input)


def assert_one_line_error(result_or_stderr, code: int, contains: str | None = None):
    """The failure contract: exit code, exactly one 'error:' line (plus an optional hint)."""
    if hasattr(result_or_stderr, "exit_code"):
        rc, err = result_or_stderr.exit_code, result_or_stderr.stderr
    else:
        rc, err = result_or_stderr.returncode, result_or_stderr.stderr.decode()
    assert rc == code, f"exit code {rc} != {code}; stderr:\n{err}"
    lines = [line for line in err.strip().splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, f"expected one error line, got:\n{err}"
    assert "Traceback" not in err
    others = [line for line in lines if not line.startswith(("error:", "hint:", "note:", "warning:", "wrote "))]
    assert not others, f"unexpected output on stderr:\n{err}"
    if contains:
        assert contains in errors[0], f"{contains!r} not in {errors[0]!r}"
    return errors[0]
