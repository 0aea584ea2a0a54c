"""CLI basics: start-up without torch, help, version, model and info commands, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import assert_one_line_error, invoke, run_cli


def test_help_imports_no_torch():
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "wanctl", "--help"], capture_output=True, text=True, check=True
    )
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if "|" in line}
    assert "encode" in proc.stdout and "decode" in proc.stdout
    assert not {m for m in imported if m.split(".")[0] in ("torch", "diffusers", "transformers", "safetensors")}


def test_info_imports_no_torch(tmp_path):
    import torch

    from wanctl.core.io.artifact import Artifact, new_meta, write_artifact

    p = tmp_path / "a.safetensors"
    write_artifact(str(p), Artifact({"latents": torch.zeros(1, 16, 2, 4, 4)},
                                    new_meta("latent", family="t2v-a14b", command="t", noise_level=0.0)))
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "wanctl", "info", str(p), "--json"],
                          capture_output=True, text=True, check=True)
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if "|" in line}
    assert json.loads(proc.stdout)["family"] == "t2v-a14b"
    assert not {m for m in imported if m.split(".")[0] in ("torch", "diffusers", "transformers", "safetensors", "numpy")}


def test_every_command_has_help_with_examples():
    for cmd in (["encode"], ["decode"], ["info"], ["invert"], ["denoise"], ["t2v"], ["flf2v"], ["preview"], ["export"],
                ["model", "init"], ["model", "check"], ["model", "list"], ["cache", "list"], ["cache", "size"], ["cache", "prune"]):
        r = invoke(*cmd, "--help")
        assert r.exit_code == 0
        assert "Example" in r.stdout, cmd


def test_help_texts_print_their_brackets():
    """Typer renders help as Rich markup, where "[first, ..., last]" is a tag and vanishes: every
    help text of every command escapes what Rich would take for one."""
    import re

    import typer

    from wanctl.cli import app

    tag = re.compile(r"(?<!\\)\[[a-z#/@][^\[]*?\]")
    found = []

    def walk(cmd, path):
        texts = [cmd.help or "", getattr(cmd, "epilog", None) or ""] + [getattr(p, "help", None) or "" for p in cmd.params]
        found.extend((path, m.group(0)) for t in texts for m in tag.finditer(t))
        for name, sub in getattr(cmd, "commands", {}).items():
            walk(sub, f"{path} {name}")

    walk(typer.main.get_command(app), "wanctl")
    assert not found
    r = invoke("flf2v", "--help")
    assert "[first, zeros..., last]" in " ".join(r.stdout.split())


def test_version_and_usage_errors():
    r = invoke("--version")
    assert r.exit_code == 0 and r.stdout.startswith("wanctl ")
    r = invoke("encode")  # missing argument: Typer's usage error
    assert r.exit_code == 2
    r = invoke("frobnicate")
    assert r.exit_code == 2


def test_model_list_init_check(tmp_path):
    r = invoke("model", "list", "--json")
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert {row["name"] for row in rows} >= {"tiny-ti2v-5b", "tiny-t2v-a14b", "tiny-i2v-a14b"}
    assert {row["name"] for row in rows if row["trained"]} == {"toy-ti2v-5b", "toy-t2v-a14b", "toy-i2v-a14b"}
    dest = tmp_path / "tiny"
    r = invoke("model", "init", "tiny-t2v-a14b", str(dest))
    assert r.exit_code == 0, r.stderr
    r = invoke("model", "check", str(dest), "--json")
    assert r.exit_code == 0, r.stdout
    rep = json.loads(r.stdout)
    assert rep["family"] == "t2v-a14b" and rep["ok"] and rep["boundary"] == 0.875
    assert {c["component"] for c in rep["components"]} == {"transformer", "transformer_2", "vae", "text_encoder", "tokenizer"}
    r = invoke("model", "init", "tiny-t2v-a14b", str(dest))
    assert_one_line_error(r, 3, "--force")
    r = invoke("model", "init", "nope", str(tmp_path / "x"))
    assert_one_line_error(r, 4, "unknown built-in")


def test_default_model_notice_and_env(tmp_path, assets):
    r = invoke("encode", str(assets["green-triangle"]), "-o", str(tmp_path / "a.safetensors"))
    assert r.exit_code == 0
    assert "no --model given" in r.stderr
    proc = run_cli(
        "encode", str(assets["green-triangle"]), "-o", str(tmp_path / "b.safetensors"), "--json",
        env={"WANCTL_MODEL": "tiny-i2v-a14b"},
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["family"] == "i2v-a14b"
    assert b"no --model given" not in proc.stderr


def test_info_stdin_and_errors(tmp_path, assets):
    a = tmp_path / "a.safetensors"
    assert invoke("encode", str(assets["green-triangle"]), "-o", str(a)).exit_code == 0
    proc = subprocess.run([sys.executable, "-m", "wanctl", "info", "-", "--json"], input=a.read_bytes(), capture_output=True)
    assert proc.returncode == 0 and json.loads(proc.stdout)["kind"] == "latent"
    r = invoke("info", str(a))
    assert r.exit_code == 0 and "ti2v-5b" in r.stdout and "provenance" not in r.stderr
    r = invoke("info", str(tmp_path / "missing.safetensors"))
    assert_one_line_error(r, 3, "no such file")
    r = invoke("info", str(assets["clip"]))
    assert_one_line_error(r, 3, "not a safetensors file")


def test_library_warnings_and_log_records_stay_off_stderr():
    code = ("import logging, warnings; from wanctl.cli import _quiet_libraries; _quiet_libraries(); "
            "warnings.warn('a library warning'); logging.getLogger('diffusers.models').warning('a library log record')")
    env = {k: v for k, v in os.environ.items() if k != "WANCTL_DEBUG"}
    quiet = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert quiet.stderr == ""
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env=dict(env, WANCTL_DEBUG="1"), check=True)
    assert "a library warning" in shown.stderr and "a library log record" in shown.stderr


def test_user_text_prints_as_typed(tmp_path):
    """Prompts and paths are not Rich markup: `info` showed "[red]a:fire:b" as a red "a🔥b" and
    dropped "[link]"; an error line turned ":fire:" in a file name into an emoji."""
    import torch

    from wanctl.core.io.artifact import Artifact, new_meta, write_artifact

    prompt = "[red]a:fire:b [/red] [link]"
    meta = new_meta("latent", family="t2v-a14b", command="t", noise_level=0.0)
    meta["params"] = {"prompt": prompt}
    p = tmp_path / "a.safetensors"
    write_artifact(str(p), Artifact({"latents": torch.zeros(1, 16, 2, 4, 4)}, meta))
    r = run_cli("info", str(p), env={"COLUMNS": "200"})
    assert prompt in r.stdout.decode()
    err = run_cli("info", str(tmp_path / "clip:fire:.safetensors")).stderr.decode()
    assert "clip:fire:.safetensors" in err
