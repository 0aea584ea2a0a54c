"""Media as a viewer shows them, through the CLI: --background checked before anything loads,
notices for what reading did, and a decompression bomb among denoise targets failing alone."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from conftest import assert_one_line_error, bomb_png, invoke, run_cli
from wanctl.core.io.artifact import read_artifact


def _img(path, value, size=64):
    Image.fromarray(np.full((size, size, 3), value, np.uint8)).save(path)


def test_bad_background_is_one_line_before_any_model_loads(tmp_path):
    img = tmp_path / "a.png"
    _img(img, 40)
    out = tmp_path / "o.safetensors"
    # the model does not exist: the colour must be refused first (exit 3, not the model's exit 4)
    missing = str(tmp_path / "no-such-model")
    for args in (["encode", str(img), "-o", str(out)],
                 ["denoise", "-i", str(img), "-p", "x", "-o", str(out)],
                 ["flf2v", "-i", str(img), "-l", str(img), "-p", "x", "-o", str(out)]):
        r = run_cli(*args, "-m", missing, "--background", "not-a-colour")
        assert_one_line_error(r, 3, "--background 'not-a-colour' is not a colour")
    r = run_cli("encode", str(img), "-o", str(out), "-m", missing, "--background", "#ff000080")
    assert_one_line_error(r, 3, "must be opaque")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]


def _transparent_png_named_jpg(path):
    a = np.zeros((64, 64, 4), np.uint8)
    a[..., 0] = 255  # red hidden under alpha 0 on the left half
    a[:, 32:, 3] = 255
    Image.fromarray(a, "RGBA").save(path, format="PNG")


def test_flf2v_notices_what_reading_did_before_the_model_loads(tmp_path):
    first = tmp_path / "first.jpg"
    _transparent_png_named_jpg(first)
    last = tmp_path / "last.png"
    _img(last, 90)
    # the images are read (and what reading did is said) before the model is looked for
    r = run_cli("flf2v", "-m", str(tmp_path / "no-such-model"), "-i", str(first), "-l", str(last), "-p", "x",
                "--background", "white", "--dry-run")
    err = r.stderr.decode()
    assert r.returncode == 4, err
    lines = err.splitlines()
    assert lines[:2] == [f"note: {first} is a PNG image, not a JPEG as its name says: read as PNG",
                         f"note: {first}: transparent pixels composited on white (--background sets the colour)"]


def test_encode_a_transparent_gif_with_varying_durations(tmp_path):
    # 100, 250 and 150 ms: at 10 fps the frames showing at 0, .1, .2, .3, .4 s are 0, 1, 1, 1, 2
    frames = []
    for i, value in enumerate((30, 120, 210)):
        f = np.zeros((64, 64, 4), np.uint8)
        f[..., :3] = value
        f[:, :32, 3] = 255  # the right half transparent
        frames.append(Image.fromarray(f, "RGBA"))
    gif = tmp_path / "anim.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=[100, 250, 150], loop=0, disposal=2)
    out = tmp_path / "a.safetensors"
    r = invoke("encode", str(gif), "-m", "tiny-ti2v-5b", "--fps", "10", "--background", "255,255,255", "-o", str(out))
    err = r.stderr
    assert r.exit_code == 0, err
    assert "frame durations vary (100 to 250 ms)" in err and "transparent pixels composited on white" in err
    art = read_artifact(str(out))
    assert art.meta["video"]["frames"] == 5 and art.meta["params"]["background"] == "#ffffff"
    ff = art.tensors["first_frame"][0].permute(1, 2, 0).numpy()
    assert np.all(ff[:, :32] == 30) and np.all(ff[:, 32:] == 255)


@pytest.fixture(scope="module")
def noise(tiny_noise):
    return tiny_noise


def test_a_bomb_among_denoise_targets_fails_alone(tmp_path, noise):
    good1 = tmp_path / "good1.jpg"
    _transparent_png_named_jpg(good1)
    bomb_png(tmp_path / "bomb.png")
    _img(tmp_path / "good2.png", 200)
    out = tmp_path / "out"
    r = run_cli("denoise", str(noise), "-i", str(good1), "-i", str(tmp_path / "bomb.png"),
                "-i", str(tmp_path / "good2.png"), "-p", "a green circle", "--guidance", "1", "-o", str(out))
    line = assert_one_line_error(r, 3, "1 of 3 targets failed")  # not exit 1, no Python warning line
    assert "target 2" in line and "too large to decode" in line and "2 written" in line
    err = r.stderr.decode()
    assert "DecompressionBomb" not in err
    assert f"note: {good1} is a PNG image" in err and f"note: {good1}: transparent pixels composited on black" in err
    assert sorted(p.name for p in out.iterdir()) == ["good1.safetensors", "good2.safetensors"]
    ff = read_artifact(str(out / "good1.safetensors")).tensors["first_frame"][0].permute(1, 2, 0).numpy()
    assert np.all(ff[:, :32] == 0) and np.all(ff[:, 32:] == (255, 0, 0))  # black, never the hidden red


def test_a_bomb_first_does_not_size_seeded_noise(tmp_path):
    """Without a noise artifact the first readable target image gives the size; the bomb fails alone."""
    bomb_png(tmp_path / "a_bomb.png")
    _img(tmp_path / "b.png", 90)
    out = tmp_path / "out"
    r = invoke("denoise", "-m", "tiny-ti2v-5b", "-i", str(tmp_path / "a_bomb.png"), "-i", str(tmp_path / "b.png"),
               "-p", "x", "--frames", "5", "--steps", "1", "--guidance", "1", "-o", str(out))
    assert_one_line_error(r, 3, "1 of 2 targets failed")
    art = read_artifact(str(out / "b.safetensors"))
    assert (art.meta["video"]["width"], art.meta["video"]["height"]) == (64, 64)
