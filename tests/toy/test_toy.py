"""The synthetic data and its metrics: deterministic clips, captions, segmentation on renders."""

from __future__ import annotations

import numpy as np

from wanctl.toy import metrics as m
from wanctl.toy.shapes import Clip, Shape, random_clip, render


def test_random_clips_deterministic_and_in_frame():
    a, b = random_clip(7), random_clip(7)
    assert a == b and np.array_equal(render(a), render(b))
    assert random_clip(8) != a
    for seed in range(20):
        c = random_clip(seed, 64, 64, 17, n_shapes=2)
        for s in c.shapes:
            for t in (0, c.frames - 1):
                x, y = s.center(t)
                assert s.size <= x <= 64 - s.size and s.size <= y <= 64 - s.size
        assert c.caption().startswith("a ") and " moving " in c.caption()


def test_metrics_on_rendered_clip():
    clip = Clip(64, 64, 9, [Shape("square", "yellow", "right", 2.0, 8, 16, 32)], background="black")
    frames = render(clip)
    p = m.path(frames, color=(240, 215, 40))
    truth = [clip.shapes[0].center(t) for t in range(9)]
    assert m.path_error(p, truth) < 0.6
    mask = m.segment(frames[0])
    assert m.dominant_color(frames[0], mask) == "yellow" and m.shape_kind(mask) == "square"
    assert m.direction(p) == "right" and m.smoothness(p) < 0.2
    for kind in ("circle", "triangle"):
        f = render(Clip(64, 64, 1, [Shape(kind, "red", "up", 1, 12, 32, 32)], background="gray"))[0]
        assert m.shape_kind(m.segment(f)) == kind
    assert m.psnr(frames[0], frames[0]) == float("inf") and m.psnr(frames[0], frames[4]) < 40
