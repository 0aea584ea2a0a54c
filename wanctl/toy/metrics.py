"""Pixel metrics for the synthetic shape clips: segment the shape, follow its centroid, name its
colour and kind, compare frames. Used by benchmarks/quality.py; tested on rendered clips.
"""

from __future__ import annotations

import math

import numpy as np

from wanctl.toy.shapes import COLORS, DIRECTIONS


def segment(frame: np.ndarray, background: np.ndarray | None = None, color: tuple | None = None,
            threshold: float = 60.0) -> np.ndarray:
    """Boolean mask of the shape: pixels near ``color`` if given, else far from the background
    (estimated from the frame's border when not given)."""
    f = frame.astype(np.float32)
    if color is not None:
        return np.linalg.norm(f - np.array(color, np.float32), axis=-1) < threshold
    if background is None:
        border = np.concatenate([f[0], f[-1], f[:, 0], f[:, -1]])
        background = np.median(border, axis=0)
    bg = np.asarray(background, np.float32)
    if bg.ndim == 1:
        bg = bg.reshape(1, 1, 3)
    return np.linalg.norm(f - bg, axis=-1) > threshold


def centroid(mask: np.ndarray) -> tuple[float, float] | None:
    ys, xs = np.nonzero(mask)
    if len(xs) < 3:
        return None
    return float(xs.mean()) + 0.5, float(ys.mean()) + 0.5  # pixel i covers [i, i+1)


def path(frames, **seg) -> list[tuple[float, float] | None]:
    return [centroid(segment(f, **seg)) for f in frames]


def path_error(a: list, b: list) -> float:
    """Mean distance (pixels) between two centroid paths over frames where both are found;
    inf when either path is never found."""
    d = [math.dist(p, q) for p, q in zip(a, b) if p is not None and q is not None]
    return float(np.mean(d)) if d else math.inf


def smoothness(p: list) -> float:
    """Mean |second difference| of a centroid path (pixels / frame^2): 0 for uniform motion."""
    pts = [q for q in p if q is not None]
    if len(pts) < 3:
        return math.inf
    a = np.array(pts)
    return float(np.linalg.norm(a[2:] - 2 * a[1:-1] + a[:-2], axis=1).mean())


def dominant_color(frame: np.ndarray, mask: np.ndarray) -> str | None:
    """The palette colour nearest the mean colour of the masked pixels."""
    if mask.sum() < 3:
        return None
    mean = frame[mask].astype(np.float32).mean(axis=0)
    return min(COLORS, key=lambda c: np.linalg.norm(mean - np.array(COLORS[c], np.float32)))


def shape_kind(mask: np.ndarray) -> str | None:
    """circle / square / triangle from the fill ratio of the mask's bounding box
    (pi/4 = 0.785, 1.0, 0.5)."""
    ys, xs = np.nonzero(mask)
    if len(xs) < 6:
        return None
    box = (xs.max() - xs.min() + 1) * (ys.max() - ys.min() + 1)
    fill = len(xs) / box
    return min((("circle", math.pi / 4), ("square", 1.0), ("triangle", 0.5)), key=lambda kv: abs(kv[1] - fill))[0]


def direction(p: list) -> str | None:
    """right / left / up / down from the net displacement of a centroid path."""
    pts = [q for q in p if q is not None]
    if len(pts) < 2:
        return None
    dx, dy = pts[-1][0] - pts[0][0], pts[-1][1] - pts[0][1]
    if math.hypot(dx, dy) < 1.0:
        return None
    return max(DIRECTIONS, key=lambda d: DIRECTIONS[d][0] * dx + DIRECTIONS[d][1] * dy)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * math.log10(255.0**2 / mse)
