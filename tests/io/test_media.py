"""Media read as a viewer shows them: each odd file is built here (PIL, numpy, the ffmpeg of
imageio_ffmpeg) and the pixels and frame times read back are checked."""

from __future__ import annotations

import struct
import subprocess
import warnings
import zlib
from fractions import Fraction

import imageio_ffmpeg
import numpy as np
import pytest
from PIL import Image

from conftest import bomb_png
from wanctl.core.errors import BadInputError
from wanctl.core.io import media
from wanctl.core.io import video as vio

RED, BLUE, GREEN = (255, 0, 0), (0, 0, 255), (0, 255, 0)


def _close(pixel, rgb, tol=6):
    return bool(np.all(np.abs(np.asarray(pixel, int) - np.asarray(rgb, int)) <= tol))


# --------------------------------------------------------------------------- EXIF orientation


def _sideways_jpeg(path, orientation=6):
    """A 40x20 picture stored red left / blue right, tagged to be shown turned."""
    a = np.zeros((20, 40, 3), np.uint8)
    a[:, :20] = RED
    a[:, 20:] = BLUE
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(a).save(path, quality=95, exif=exif)


def test_exif_orientation_turns_the_picture_and_its_probed_size(tmp_path):
    p = tmp_path / "phone.jpg"
    _sideways_jpeg(p)  # orientation 6: shown turned 90 degrees clockwise
    info = vio.probe(str(p))
    assert (info.kind, info.width, info.height) == ("image", 20, 40)
    img = vio.load_image(p)
    assert img.shape == (40, 20, 3)
    assert _close(img[5, 10], RED, 30) and _close(img[35, 10], BLUE, 30)  # the left side is now on top

    (tmp_path / "frames").mkdir()
    for i in range(2):
        _sideways_jpeg(tmp_path / "frames" / f"f{i}.jpg")
    fi = vio.probe(str(tmp_path / "frames"))
    assert (fi.width, fi.height) == (20, 40)
    frames = list(vio.iter_frames(str(tmp_path / "frames"), fi, fps=10))
    assert [f.shape for f in frames] == [(40, 20, 3)] * 2


# --------------------------------------------------------------------------- alpha


def _rgba_png(path):
    """Hidden red under alpha 0 in the top half, half-transparent green in the bottom half."""
    a = np.zeros((8, 8, 4), np.uint8)
    a[:4] = (255, 0, 0, 0)
    a[4:] = (0, 255, 0, 128)
    Image.fromarray(a, "RGBA").save(path)


def test_alpha_is_composited_on_the_background_never_the_hidden_rgb(tmp_path):
    p = tmp_path / "logo.png"
    _rgba_png(p)
    notes: list[str] = []
    img = vio.load_image(p, notices=notes)
    assert _close(img[0, 0], (0, 0, 0), 0) and _close(img[7, 7], (0, 128, 0), 1)
    assert len(notes) == 1 and "transparent pixels composited on black" in notes[0]
    white = vio.load_image(p, background=media.parse_color("white"))
    assert _close(white[0, 0], (255, 255, 255), 0) and _close(white[7, 7], (127, 255, 127), 1)

    # an RGBA picture without a transparent pixel is just RGB, and says nothing
    Image.new("RGBA", (4, 4), (10, 20, 30, 255)).save(tmp_path / "opaque.png")
    quiet: list[str] = []
    assert _close(vio.load_image(tmp_path / "opaque.png", notices=quiet)[0, 0], (10, 20, 30), 0) and quiet == []


def test_alpha_in_la_palette_webp_and_gif_frames(tmp_path):
    grey = (200, 200, 200)
    la = Image.new("LA", (4, 4), (90, 0))
    la.save(tmp_path / "la.png")
    assert _close(vio.load_image(tmp_path / "la.png", background=grey)[0, 0], grey, 0)

    pal = Image.new("P", (4, 4), 1)
    pal.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    pal.save(tmp_path / "pal.png", transparency=1)  # index 1 (red) is the transparent one
    assert _close(vio.load_image(tmp_path / "pal.png", background=grey)[0, 0], grey, 0)

    Image.new("RGBA", (4, 4), (255, 0, 0, 0)).save(tmp_path / "still.webp", lossless=True, exact=True)
    assert _close(vio.load_image(tmp_path / "still.webp", background=BLUE)[0, 0], BLUE, 0)

    # animated: frame 0 half transparent, frame 1 opaque
    f0 = np.zeros((8, 8, 4), np.uint8)
    f0[:, :4] = (255, 0, 0, 255)
    f0[:, 4:] = (0, 255, 0, 0)
    f1 = np.full((8, 8, 4), (0, 0, 255, 255), np.uint8)
    frames = [Image.fromarray(f0, "RGBA"), Image.fromarray(f1, "RGBA")]
    for name in ("a.webp", "a.gif"):
        p = tmp_path / name
        opts = {"lossless": True} if name.endswith("webp") else {"disposal": 2}
        frames[0].save(p, save_all=True, append_images=frames[1:], duration=100, loop=0, **opts)
        info = vio.probe(str(p))
        assert info.animated and info.frames == 2
        notes: list[str] = []
        got = list(vio.iter_frames(str(p), info, background=(255, 255, 255), notices=notes))
        assert len(got) == 2, name
        assert _close(got[0][0, 0], RED, 2) and _close(got[0][0, 7], (255, 255, 255), 2), name
        assert _close(got[1][0, 7], BLUE, 2), name
        assert len(notes) == 1 and "composited on white" in notes[0], name


# --------------------------------------------------------------------------- bit depth and grey


def _png(path, w, h, depth, color_type, rows: bytes):
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, depth, color_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def test_16_bit_float_and_grey_pictures_are_scaled_to_8_bit_rgb(tmp_path):
    Image.fromarray(np.full((4, 4), 32768, np.uint16)).save(tmp_path / "g16.png")
    with Image.open(tmp_path / "g16.png") as im:
        assert im.mode == "I;16"
    img = vio.load_image(tmp_path / "g16.png")
    assert img.shape == (4, 4, 3) and img.dtype == np.uint8 and np.all(img == 128)  # mid-grey, not white

    ramp = np.array([[0, 257 * 64, 65535, 1000]], np.int32)
    Image.fromarray(ramp).save(tmp_path / "i32.tif")  # mode I
    with Image.open(tmp_path / "i32.tif") as im:
        assert im.mode == "I"
    assert vio.load_image(tmp_path / "i32.tif")[0, :, 0].tolist() == [0, 64, 255, 4]

    Image.fromarray(np.array([[0.0, 0.5, 1.0, 7.0]], np.float32)).save(tmp_path / "f.tif")  # mode F: 0..1
    assert vio.load_image(tmp_path / "f.tif")[0, :, 0].tolist() == [0, 128, 255, 255]

    Image.fromarray(np.full((4, 4), 77, np.uint8)).save(tmp_path / "l.png")
    assert np.all(vio.load_image(tmp_path / "l.png") == 77)

    # 16-bit RGB with a 16-bit alpha: 0x8000 red, full green, half alpha
    _png(tmp_path / "rgba16.png", 1, 1, 16, 6, b"\x00" + struct.pack(">HHHH", 32768, 65535, 0, 32896))
    assert _close(vio.load_image(tmp_path / "rgba16.png")[0, 0], (64, 128, 0), 1)


# --------------------------------------------------------------------------- animation timing


def _flat_frames(n, size=8):
    # frame i is grey 30 * i: the colour tells which frame was picked
    return [Image.fromarray(np.full((size, size, 3), 30 * i, np.uint8)) for i in range(n)]


def _which(frames):
    return [int(round(f[0, 0, 0] / 30)) for f in frames]


def _showing(durations_ms, start, fps):
    """Reference: the frame showing at each time start + k / fps before the end."""
    bounds = np.cumsum([0] + list(durations_ms)) / 1000
    out, k = [], 0
    while start + k / fps < bounds[-1] - 1e-9:
        t = start + k / fps
        out.append(int(np.searchsorted(bounds, t + 1e-9, side="right") - 1))
        k += 1
    return out


@pytest.mark.parametrize("name", ["vary.gif", "vary.webp", "vary.png"])
def test_animations_are_timed_by_their_frame_durations(tmp_path, name):
    durations = [100, 300, 50, 200, 120]
    p = tmp_path / name
    fr = _flat_frames(len(durations))
    fr[0].save(p, save_all=True, append_images=fr[1:], duration=durations, loop=0,
               **({"lossless": True} if name.endswith("webp") else {}))
    info = vio.probe(str(p))
    assert info.kind == {"gif": "gif", "webp": "webp", "png": "apng"}[name.split(".")[1]]
    assert info.fps is None and info.durations == durations
    assert any("durations vary" in n for n in info.notes)
    got = _which(vio.iter_frames(str(p), info, fps=10))
    assert got == _showing(durations, 0, 10) == [0, 1, 1, 1, 2, 3, 3, 4]
    assert vio.frames_available(info, 0, 10) == len(got)
    late = _which(vio.iter_frames(str(p), info, start=0.42, fps=20))
    assert late == _showing(durations, 0.42, 20) and vio.frames_available(info, 0.42, 20) == len(late)
    assert _which(vio.iter_frames(str(p), info)) == [0, 1, 2, 3, 4]  # no rate asked: each frame once


def test_constant_gif_keeps_its_rate_and_zero_durations_show_for_100_ms(tmp_path):
    fr = _flat_frames(4)
    fr[0].save(tmp_path / "c.gif", save_all=True, append_images=fr[1:], duration=50, loop=0)
    info = vio.probe(str(tmp_path / "c.gif"))
    assert info.fps == 20 and info.notes == []
    assert _which(vio.iter_frames(str(tmp_path / "c.gif"), info, fps=20)) == [0, 1, 2, 3]
    fr[0].save(tmp_path / "z.gif", save_all=True, append_images=fr[1:], duration=0, loop=0)
    assert vio.probe(str(tmp_path / "z.gif")).durations == [100] * 4  # as browsers show them


# --------------------------------------------------------------------------- variable-frame-rate video


def _vfr_clip(tmp_path, units, name="vfr.mp4", codec=("-c:v", "libx264", "-pix_fmt", "yuv420p")):
    """Frame i (grey 30 * i) shown for units[i] * 40 ms: the concat demuxer writes real,
    unequal timestamps (multiples of 1/25 s, so they are exact in the container)."""
    lines = ["ffconcat version 1.0"]
    for i, (im, u) in enumerate(zip(_flat_frames(len(units), 16), units)):
        im.save(tmp_path / f"v{i}.png")
        lines += [f"file v{i}.png", f"duration {u * 0.04:.2f}"]
    lines.append(f"file v{len(units) - 1}.png")  # the concat demuxer needs the last file again
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    out = tmp_path / name
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "concat", "-safe", "0",
                    "-i", str(tmp_path / "list.txt"), "-fps_mode", "vfr", *codec, str(out)], check=True)
    return out


def test_variable_frame_rate_video_is_read_by_its_timestamps(tmp_path):
    units = [2, 3, 7, 1, 1, 5, 9, 2]  # 80 ms, 120 ms, 280 ms, 40 ms...
    clip = _vfr_clip(tmp_path, units)
    durations = [u * 40 for u in units] + [40]  # the repeated last file shows for one 1/25 s tick
    expect = [min(i, len(units) - 1) for i in _showing(durations, 0, 10)]
    info = vio.probe(str(clip))
    assert info.kind == "video"
    got = _which(vio.iter_frames(str(clip), info, fps=10))
    assert got == expect == [0, 1, 2, 2, 2, 3, 5, 5, 6, 6, 6, 6, 7]
    for start in (0.25, 0.5, 0.9):
        want = [min(i, len(units) - 1) for i in _showing(durations, start, 10)]
        assert _which(vio.iter_frames(str(clip), info, start=start, fps=10)) == want, start


def test_video_with_alpha_is_composited(tmp_path):
    a = np.zeros((16, 16, 4), np.uint8)
    a[..., 0] = 255  # red, hidden under alpha 0 on the right half
    a[:, :8, 3] = 255
    src = tmp_path / "a.png"
    Image.fromarray(a, "RGBA").save(src)
    out = tmp_path / "alpha.mov"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-loop", "1", "-framerate", "5",
                    "-i", str(src), "-frames:v", "3", "-c:v", "png", str(out)], check=True)
    info = vio.probe(str(out))
    assert info.alpha
    notes: list[str] = []
    frames = list(vio.iter_frames(str(out), info, background=GREEN, notices=notes))
    assert len(frames) == 3 and _close(frames[0][0, 0], RED, 0) and _close(frames[0][0, 15], GREEN, 0)
    assert len(notes) == 1 and "composited" in notes[0]


def test_rotated_video_is_read_turned_at_its_turned_size(tmp_path):
    ff = imageio_ffmpeg.get_ffmpeg_exe()
    flat, turned = tmp_path / "flat.mp4", tmp_path / "turned.mp4"
    subprocess.run([ff, "-y", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc=size=64x32:rate=10", "-t", "0.5",
                    "-pix_fmt", "yuv420p", str(flat)], check=True)
    subprocess.run([ff, "-y", "-loglevel", "error", "-display_rotation", "90", "-i", str(flat), "-c", "copy", str(turned)],
                   check=True)  # a phone's portrait clip: landscape pixels and a rotation tag
    info = vio.probe(str(turned))
    assert (info.width, info.height) == (32, 64)
    assert [f.shape for f in vio.iter_frames(str(turned), info, fps=10)] == [(64, 32, 3)] * 5


def test_ntsc_rates_are_the_fractions_they_stand_for():
    assert vio.video_rate(29.97) == Fraction(30000, 1001) and vio.video_rate(23.98) == Fraction(24000, 1001)
    assert vio.video_rate(25.0) == 25 and vio.video_rate(16) == 16


# --------------------------------------------------------------------------- folders


def test_frame_folders_are_in_natural_order(tmp_path):
    d = tmp_path / "frames"
    d.mkdir()
    names = ["frame_10.png", "frame_9.png", "Frame_2.png", "frame_1.png", "frame_01.png", "notes.txt"]
    for i, n in enumerate(names):
        (d / n).write_bytes(b"x") if n.endswith(".txt") else Image.new("RGB", (4, 4), (i, 0, 0)).save(d / n)
    order = ["frame_01.png", "frame_1.png", "Frame_2.png", "frame_9.png", "frame_10.png"]
    assert [f.name for f in vio.probe(str(d)).files] == order

    from wanctl.core.workflows.denoise import image_files

    notes = []
    assert [p.rsplit("/", 1)[1] for p in image_files(str(d), notes.append)] == order
    assert notes == [f"{d}: skipped 1 file(s) that are not still images (notes.txt)"]  # said, not silent


# --------------------------------------------------------------------------- content, not suffix


def test_files_are_read_by_content_with_a_notice(tmp_path):
    Image.new("RGB", (6, 4), RED).save(tmp_path / "really_png.jpg", format="PNG")
    notes: list[str] = []
    assert _close(vio.load_image(tmp_path / "really_png.jpg", notices=notes)[0, 0], RED, 0)
    assert len(notes) == 1 and "is a PNG image, not a JPEG" in notes[0]

    Image.new("RGB", (6, 4), BLUE).save(tmp_path / "really_jpeg.png", format="JPEG")
    info = vio.probe(str(tmp_path / "really_jpeg.png"))
    assert info.kind == "image" and "is a JPEG image, not a PNG" in info.notes[0]

    clip = _vfr_clip(tmp_path, [2, 2, 2], name="clip.mp4")
    fake = tmp_path / "clip.gif"
    fake.write_bytes(clip.read_bytes())
    info = vio.probe(str(fake))
    assert info.kind == "video" and "is a video (MP4), not a GIF" in info.notes[0]
    assert _which(vio.iter_frames(str(fake), info, fps=12.5)) == [0, 1, 2, 2]

    fr = _flat_frames(3)
    fr[0].save(tmp_path / "anim.png", format="GIF", save_all=True, append_images=fr[1:], duration=100)
    info = vio.probe(str(tmp_path / "anim.png"))
    assert info.kind == "gif" and info.frames == 3 and "is a GIF image, not a PNG" in info.notes[0]

    notes = []
    first = vio.load_image(fake, notices=notes)  # a video where an image is expected: its first frame
    assert first.shape == (16, 16, 3) and any("first frame" in n for n in notes)


# --------------------------------------------------------------------------- decompression bombs


@pytest.mark.parametrize("side", [12000, 15000])  # over wanctl's limit; over PIL's own hard limit too
def test_decompression_bombs_are_bad_input_without_a_python_warning(tmp_path, side):
    p = tmp_path / "bomb.png"
    bomb_png(p, side)
    assert side * side > media.MAX_IMAGE_PIXELS and p.stat().st_size < 100_000
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(BadInputError, match="too large to decode"):
            vio.load_image(p)
        with pytest.raises(BadInputError, match="too large to decode"):
            vio.probe(str(p))
    assert [w for w in caught if "DecompressionBomb" in type(w.message).__name__] == []


# --------------------------------------------------------------------------- colours


def test_parse_color():
    assert media.parse_color("black") == (0, 0, 0) and media.parse_color("White") == (255, 255, 255)
    assert media.parse_color("grey") == media.parse_color("gray") == (128, 128, 128)
    assert media.parse_color("#ff8000") == (255, 128, 0) == media.parse_color("255, 128,0")
    for bad in ("nope", "#12345", "300,0,0", "#ff000080", ""):
        with pytest.raises(BadInputError):
            media.parse_color(bad)
