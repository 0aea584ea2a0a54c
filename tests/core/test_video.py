"""Video I/O: probing and reading each input kind, fps resampling, resize/crop, writers."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from wanctl.core.io import video as vio
from wanctl.core.errors import BadInputError
from wanctl.toy.shapes import example_clip, render


def test_probe_and_read_mp4(assets):
    info = vio.probe(str(assets["clip"]))
    assert (info.kind, info.width, info.height, info.fps) == ("video", 128, 96, 16.0)
    frames = list(vio.iter_frames(str(assets["clip"]), info))
    assert len(frames) == 33 and frames[0].shape == (96, 128, 3)
    # lossy codec, but close to the rendered clip
    ref = render(example_clip())
    assert np.abs(frames[10].astype(int) - ref[10].astype(int)).mean() < 4


def test_start_offset(assets):
    info = vio.probe(str(assets["clip"]))
    frames = list(vio.iter_frames(str(assets["clip"]), info, start=1.0))
    assert len(frames) == 17


def test_gif_folder_image(tmp_path):
    ref = render(example_clip(frames=5))
    with vio.VideoWriter(str(tmp_path / "c.gif"), 10) as w:
        for f in ref:
            w.write(f)
    g = vio.probe(str(tmp_path / "c.gif"))
    assert g.kind == "gif" and g.frames == 5
    assert len(list(vio.iter_frames(str(tmp_path / "c.gif"), g))) == 5

    with vio.VideoWriter(str(tmp_path / "frames"), 10) as w:
        for f in ref:
            w.write(f)
    fi = vio.probe(str(tmp_path / "frames"))
    assert fi.kind == "frames" and fi.frames == 5
    back = list(vio.iter_frames(str(tmp_path / "frames"), fi))
    assert np.array_equal(back[3], ref[3])  # PNG is lossless

    Image.fromarray(ref[0]).save(tmp_path / "one.png")
    one = vio.probe(str(tmp_path / "one.png"))
    assert one.kind == "image" and one.frames == 1


def test_unreadable_inputs(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"this is not a video" * 10)
    with pytest.raises(BadInputError, match="cannot read video"):
        vio.probe(str(bad))
    img = tmp_path / "bad.png"
    img.write_bytes(b"nope")
    with pytest.raises(BadInputError, match="cannot read image"):
        vio.load_image(img)
    with pytest.raises(BadInputError, match="no such"):
        vio.probe(str(tmp_path / "missing.mp4"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(BadInputError, match="no image frames"):
        vio.probe(str(tmp_path / "empty"))


def test_resize_crop():
    img = np.zeros((100, 200, 3), np.uint8)
    img[:, 90:110] = 255  # a bar in the middle survives a center crop
    out = vio.resize_crop(img, 64, 64)
    assert out.shape == (64, 64, 3)
    assert out[:, 32].mean() > 200 and out[:, 2].mean() < 10
    assert vio.fit_size(130, 100, 32, None, what="a.png") == (128, 96)
    with pytest.raises(BadInputError, match="a.png is 20x20, smaller than the minimum 32x32"):
        vio.fit_size(20, 20, 32, None, what="a.png")


def test_resampling_picks_the_frame_showing_at_each_time():
    from fractions import Fraction as F

    def at(n, src, dst, start=0):
        return list(vio.resample(iter(range(n)), [F(1, src)] * n, F(start), F(dst)))

    assert at(8, 30, 15) == [0, 2, 4, 6]
    # 24 -> 16 fps: output k at k/16 s shows source frame floor(k * 1.5)
    assert at(6, 24, 16) == [0, 1, 3, 4]
    assert at(4, 10, 20) == [0, 0, 1, 1, 2, 2, 3, 3]
    assert at(10, 10, 10, start=0.35) == [3, 4, 5, 6, 7, 8, 9]
    assert vio.max_frames_at(33, 16, 8) == 17 == len(at(33, 16, 8))
    assert vio.max_frames_at(6, 24, 16) == 4


def test_writer_atomic_on_error(tmp_path):
    with pytest.raises(RuntimeError):
        with vio.VideoWriter(str(tmp_path / "x.mp4"), 16) as w:
            w.write(np.zeros((32, 32, 3), np.uint8))
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_writer_mp4_readable(tmp_path):
    import imageio_ffmpeg

    ref = render(example_clip(frames=9))
    out = tmp_path / "x.mp4"
    with vio.VideoWriter(str(out), 16) as w:
        for f in ref:
            w.write(f)
    gen = imageio_ffmpeg.read_frames(str(out))
    meta = next(gen)
    n = sum(1 for _ in gen)
    assert meta["size"] == (128, 96) and n == 9 and meta["fps"] == 16
    assert "h264" in meta["codec"]
