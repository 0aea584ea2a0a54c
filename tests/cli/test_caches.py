"""Caches: text embeddings and inversions are reused, corrupt entries are rebuilt, --no-cache."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import assert_one_line_error, invoke
from wanctl.core import trace
from wanctl.core.io.artifact import read_artifact


@pytest.fixture()
def cache_env(tmp_path, monkeypatch):
    """A private cache dir (built-in models reused from the session cache) and a trace file."""
    import os

    from wanctl.core.models import builtin
    
    for name, b in builtin.BUILTINS.items():  # generate them in the shared cache first
        if not b.packaged:
            builtin.ensure(name)
    shared = os.environ["WANCTL_CACHE_DIR"]
    d = tmp_path / "cache"
    d.mkdir()
    (d / "models").symlink_to(os.path.join(shared, "models"), target_is_directory=True)
    monkeypatch.setenv("WANCTL_CACHE_DIR", str(d))
    tr = tmp_path / "trace.jsonl"
    monkeypatch.setenv("WANCTL_TRACE", str(tr))
    return d, tr


def _loads(tr):
    events = trace.read(tr)
    tr.unlink(missing_ok=True)
    return [e["component"] for e in events if e["event"] == "load"], events


def test_fully_cached_run_skips_text_encoder(tmp_path, cache_env):
    d, tr = cache_env
    args = ["t2v", "-m", "tiny-t2v-a14b", "-p", "a blue square moving up", "--size", "64x64", "--frames", "5", "--steps", "3"]
    assert invoke(*args, "-o", str(tmp_path / "a.safetensors")).exit_code == 0
    loads, _ = _loads(tr)
    assert "text_encoder" in loads
    assert len(list((d / "embeddings").glob("*.safetensors"))) == 2  # prompt + negative prompt
    r = invoke(*args, "-o", str(tmp_path / "b.safetensors"))
    assert r.exit_code == 0, r.stderr
    loads, events = _loads(tr)
    assert "text_encoder" not in loads and "tokenizer" not in loads
    assert len([e for e in events if e["event"] == "cache_hit"]) == 2
    a, b = (read_artifact(str(tmp_path / n)).latents for n in ("a.safetensors", "b.safetensors"))
    assert torch.equal(a, b)


def test_repeated_invert_uses_cache_without_dit(tmp_path, cache_env, assets):
    d, tr = cache_env
    lat = tmp_path / "c.safetensors"
    assert invoke("encode", str(assets["clip"]), "--frames", "5", "--size", "64x64", "-o", str(lat)).exit_code == 0
    inv = ["invert", str(lat), "-p", "a red circle", "--steps", "4"]
    r = invoke(*inv, "-o", str(tmp_path / "n1.safetensors"), "--json")
    assert r.exit_code == 0 and not json.loads(r.stdout)["cached"]
    _loads(tr)
    r = invoke(*inv, "-o", str(tmp_path / "n2.safetensors"), "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["cached"]
    loads, _ = _loads(tr)
    assert "transformer" not in loads and "text_encoder" not in loads
    n1, n2 = (read_artifact(str(tmp_path / n)) for n in ("n1.safetensors", "n2.safetensors"))
    assert torch.equal(n1.latents, n2.latents) and n2.meta["params"]["cache"] == "hit"
    # another parameter is another entry
    r = invoke(*inv[:-1], "5", "-o", str(tmp_path / "n3.safetensors"), "--json")
    assert r.exit_code == 0 and not json.loads(r.stdout)["cached"]
    # a corrupt entry is dropped and recomputed, never used
    entry = next(p for p in (d / "inversions").glob("*.safetensors") if read_artifact(str(p)).meta["params"]["schedule"]["steps"] == 4)
    entry.write_bytes(entry.read_bytes()[:200])
    _loads(tr)
    r = invoke(*inv, "-o", str(tmp_path / "n4.safetensors"), "--json")
    assert r.exit_code == 0, r.stderr
    assert "dropping a corrupt cache entry" in r.stderr and not json.loads(r.stdout)["cached"]
    assert torch.equal(read_artifact(str(tmp_path / "n4.safetensors")).latents, n1.latents)
    assert read_artifact(str(entry)).latents.shape == n1.latents.shape  # rebuilt
    # an entry whose tensor bytes were zeroed still parses: its checksum gives it away
    data = bytearray(entry.read_bytes())
    header = 8 + int.from_bytes(data[:8], "little")
    data[header:] = bytes(len(data) - header)
    entry.write_bytes(bytes(data))
    r = invoke(*inv, "-o", str(tmp_path / "n5.safetensors"), "--json")
    assert r.exit_code == 0, r.stderr
    assert "do not match their checksum" in r.stderr and not json.loads(r.stdout)["cached"]
    n5 = read_artifact(str(tmp_path / "n5.safetensors"))
    assert torch.equal(n5.latents, n1.latents) and "cache_payload_sha256" not in n5.meta


def test_no_cache_and_cache_commands(tmp_path, cache_env, assets):
    d, tr = cache_env
    args = ["t2v", "-m", "tiny-ti2v-5b", "-p", "a cat", "--size", "64x64", "--frames", "5", "--steps", "2"]
    assert invoke(*args, "--no-cache", "-o", str(tmp_path / "a.safetensors")).exit_code == 0
    assert not (d / "embeddings").exists()
    assert invoke(*args, "-o", str(tmp_path / "b.safetensors")).exit_code == 0
    r = invoke("cache", "list", "--json")
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert {x["kind"] for x in rows} == {"embeddings"} and len(rows) == 2
    r = invoke("cache", "size", "--json")
    assert json.loads(r.stdout)["bytes"]["embeddings"] > 0
    r = invoke("cache", "prune", "--older-than", "1d", "--json")
    assert json.loads(r.stdout)["deleted"] == 0
    for age in ("-5d", "nand", "infh"):  # a negative age deleted everything
        assert_one_line_error(invoke("cache", "prune", "--older-than", age), 3, "at least 0")
    assert len(invoke("cache", "list", "--json").stdout.splitlines()) == 2
    r = invoke("cache", "prune", "--json")
    assert json.loads(r.stdout)["deleted"] == 2
    assert invoke("cache", "prune", "--older-than", "soon").exit_code == 3
    assert (d / "models").exists()  # built-in models are not cache entries
