"""Manifests as spreadsheets and scripts write them: a BOM, a bad row that fails alone, outputs
that collide or escape, all decided before any work."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from conftest import assert_one_line_error, invoke


@pytest.fixture(scope="module")
def noise(tiny_noise):
    return tiny_noise


def _img(path, value):
    Image.fromarray(np.full((64, 64, 3), value, np.uint8)).save(path)


def _run(noise, manifest, out, *extra):
    return invoke("denoise", str(noise), "--manifest", str(manifest), "-o", str(out), "--guidance", "1", *extra)


def test_excel_csv_with_bom_and_a_row_with_extra_fields(tmp_path, noise):
    _img(tmp_path / "a.png", 40)
    _img(tmp_path / "b.png", 200)
    m = tmp_path / "m.csv"
    m.write_bytes("\ufefffirst_frame,prompt,output\na.png,green,a.safetensors\nb.png,red,b.safetensors,oops\n".encode())
    r = _run(noise, m, tmp_path / "out")
    line = assert_one_line_error(r, 3, "1 of 2 targets failed")
    assert "manifest row 2" in line and "more fields than the header" in line
    assert (tmp_path / "a.safetensors").exists() and not (tmp_path / "b.safetensors").exists()


def test_jsonl_bad_lines_fail_alone(tmp_path, noise):
    _img(tmp_path / "a.png", 40)
    m = tmp_path / "m.jsonl"
    m.write_text(json.dumps({"first_frame": "a.png", "prompt": "x", "output": "a.safetensors"}) + "\n"
                 + '{"first_frame": "a.png", "prompt": \n'
                 + json.dumps({"first_frame": 7, "prompt": "x", "output": "c.safetensors"}) + "\n")
    r = _run(noise, m, tmp_path / "out")
    line = assert_one_line_error(r, 3, "2 of 3 targets failed")
    assert "manifest row 2: not valid JSON" in line and "manifest row 3: first_frame must be text" in line
    assert (tmp_path / "a.safetensors").exists() and not (tmp_path / "c.safetensors").exists()


def test_colliding_or_escaping_outputs_are_refused_before_work(tmp_path, noise):
    (tmp_path / "m").mkdir()
    _img(tmp_path / "m" / "a.png", 40)
    m = tmp_path / "m" / "m.csv"
    m.write_text("first_frame,prompt,output\na.png,x,o.safetensors\na.png,y,./sub/../o.safetensors\n")
    assert_one_line_error(_run(noise, m, tmp_path / "m" / "out"), 3, "is also the output of manifest row 1; nothing was run")
    m.write_text("first_frame,prompt,output\na.png,x,../escaped.safetensors\n")
    assert_one_line_error(_run(noise, m, tmp_path / "m" / "out"), 3, "--allow-outside")
    assert sorted(p.name for p in tmp_path.rglob("*.safetensors")) == []
    r = _run(noise, m, tmp_path / "m" / "out", "--allow-outside")
    assert r.exit_code == 0, r.stderr
    assert (tmp_path / "escaped.safetensors").exists()


def test_a_run_where_every_target_fails_leaves_no_new_folder(tmp_path, noise):
    m = tmp_path / "m.csv"
    m.write_text("first_frame,prompt,output\nmissing1.png,x,\nmissing2.png,y,\n")
    r = _run(noise, m, tmp_path / "new" / "edits")
    assert_one_line_error(r, 3, "2 of 2 targets failed")
    assert not (tmp_path / "new").exists()


T2V = ("-m", "tiny-t2v-a14b", "--frames", "5", "--size", "64x64", "--steps", "2")


def test_manifest_seeds_outside_what_seed_takes_fail_their_row(tmp_path):
    m = tmp_path / "m.csv"
    m.write_text(f"prompt,seed,output\na cat,-1,a.safetensors\na dog,{2**64},b.safetensors\na cow,1.5,c.safetensors\n")
    r = invoke("t2v", "--manifest", str(m), "-o", str(tmp_path / "out"), *T2V)
    line = assert_one_line_error(r, 3, "3 failed")
    for n, v in ((1, "-1"), (2, str(2**64)), (3, "1.5")):
        assert f"manifest row {n}: seed must be an integer from 0 to 2^64-1, got '{v}'" in r.stderr
    assert "manifest row" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.csv"]  # no output, no new folder


@pytest.mark.parametrize("command", ["t2v", "flf2v"])
def test_a_row_output_that_is_not_an_artifact_is_refused_naming_its_row(tmp_path, command):
    _img(tmp_path / "a.png", 40)
    m = tmp_path / "m.csv"
    if command == "t2v":
        m.write_text("prompt,output\nx,good.safetensors\ny,a.png\n")
        modes = [(), ("--dry-run",)]  # --dry-run finds it too
        args = T2V
    else:
        m.write_text("first_frame,last_frame,prompt,output\na.png,a.png,x,good.safetensors\na.png,a.png,y,a.mp4\n")
        modes = [()]  # flf2v --manifest has no --dry-run
        args = ("-m", "tiny-i2v-a14b", "--frames", "5", "--steps", "2")
    for extra in modes:
        r = invoke(command, "--manifest", str(m), "-o", str(tmp_path / "new" / "out"), *args, *extra)
        assert_one_line_error(r, 3, "manifest row 2: output")
        assert "must end in .safetensors or .zarr" in r.stderr
        assert not (tmp_path / "new").exists() and not (tmp_path / "good.safetensors").exists()


def test_minus_o_that_names_an_artifact_is_refused_for_several_outputs(tmp_path, noise):
    """-o is the folder of a manifest's outputs (one check, core/workflows/manifest.prepare_outputs)."""
    m = tmp_path / "m.csv"
    m.write_text("prompt\nx\ny\n")
    for out in ("all.safetensors", "all.zarr", "-"):
        assert_one_line_error(invoke("t2v", "--manifest", str(m), "-o", out, "--dry-run", *T2V), 3,
                              f"2 outputs: -o must be a folder, not {out}")
    _img(tmp_path / "a.png", 40)
    targets = tmp_path / "t.csv"
    targets.write_text("first_frame,prompt\na.png,x\na.png,y\n")
    assert_one_line_error(_run(noise, targets, tmp_path / "e.safetensors"), 3, "2 outputs: -o must be a folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "m.csv", "t.csv"]


def test_quoted_newline_in_a_csv_field_is_kept(tmp_path):
    """A prompt spread over two lines in a quoted CSV field lost its newline (the manifest was
    split into lines before the CSV reader saw it)."""
    from wanctl.core.workflows.manifest import read_manifest

    m = tmp_path / "m.csv"
    m.write_text('prompt,output\n"a red circle\nmoving right",a.safetensors\nb,b.safetensors\n', newline="")
    rows = read_manifest(str(m), ("prompt", "output"))
    assert [r["prompt"] for r in rows] == ["a red circle\nmoving right", "b"] and [r["row"] for r in rows] == [1, 2]


def test_dry_run_refuses_a_row_output_in_a_missing_folder(tmp_path):
    """The real run refused it up front; --dry-run passed it. The -o folder itself may be new."""
    m = tmp_path / "m.csv"
    m.write_text("prompt,output\nx,sub/dir/d.zarr\ny,\n")
    r = invoke("t2v", "--manifest", str(m), "-o", str(tmp_path / "out"), *T2V, "--dry-run")
    assert_one_line_error(r, 3, "manifest row 1: output folder")
    m.write_text("prompt,output\nx,\ny,\n")
    assert invoke("t2v", "--manifest", str(m), "-o", str(tmp_path / "out"), *T2V, "--dry-run").exit_code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.csv"]


def test_flf2v_row_the_model_cannot_run_fails_alone(tmp_path):
    """Every row is planned before the weights load: a first frame too wide for the model's
    rotary embedding (it sets the row's size) fails its row, not the run (it was exit 1)."""
    _img(tmp_path / "a.png", 40)
    Image.fromarray(np.full((16, 4000, 3), 90, np.uint8)).save(tmp_path / "wide.png")
    m = tmp_path / "m.csv"
    m.write_text("first_frame,last_frame,prompt,output\nwide.png,a.png,x,w.safetensors\na.png,a.png,y,good.safetensors\n")
    r = invoke("flf2v", "--manifest", str(m), "-o", str(tmp_path / "out"), "-m", "tiny-i2v-a14b", "--frames", "5",
               "--steps", "2")
    assert_one_line_error(r, 3, "1 rows done, 0 skipped, 1 failed")
    assert "manifest row 1: 4000x16, 5 frames" in r.stderr
    assert (tmp_path / "good.safetensors").exists() and not (tmp_path / "w.safetensors").exists()
