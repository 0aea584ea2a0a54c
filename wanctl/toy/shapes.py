"""Deterministic synthetic clips: coloured shapes moving in a direction at a speed.

Used for the bundled example clip, target first frames, tests and (later) toy-model training.
Rendering is numpy only, anti-aliased by 4x4 supersampling of each shape's coverage mask.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (225, 45, 45),
    "green": (40, 190, 70),
    "blue": (45, 90, 230),
    "yellow": (240, 215, 40),
    "orange": (245, 140, 30),
    "purple": (150, 60, 200),
    "cyan": (40, 210, 220),
    "white": (245, 245, 245),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "black": (10, 10, 12),
    "gray": (110, 110, 115),
    "white": (235, 235, 235),
    "dark blue": (15, 20, 60),
}
SHAPES = ("circle", "square", "triangle")
DIRECTIONS: dict[str, tuple[float, float]] = {"right": (1, 0), "left": (-1, 0), "up": (0, -1), "down": (0, 1)}
# (colour, shape, direction) combinations the toy DiTs never see in training (wanctl.toy.train
# redraws a clip that has one): benchmarks/quality.py measures prompt adherence on captions made of
# them, so adherence there is generalization to new combinations, not recall of training captions.
# Each shape appears 4 times, each direction 3 times, every colour but white once or twice.
HELD_OUT: tuple[tuple[str, str, str], ...] = (
    ("red", "circle", "up"), ("green", "square", "left"), ("blue", "triangle", "up"), ("yellow", "circle", "down"),
    ("orange", "square", "up"), ("purple", "triangle", "right"), ("cyan", "circle", "left"), ("red", "triangle", "down"),
    ("green", "circle", "right"), ("blue", "square", "right"), ("yellow", "triangle", "left"), ("purple", "square", "down"),
)


@dataclass
class Shape:
    shape: str
    color: str
    direction: str
    speed: float  # pixels per frame
    size: float  # radius (circle) / half side (square) / circumradius (triangle), pixels
    x: float  # start centre
    y: float

    def combination(self) -> tuple[str, str, str]:
        return self.color, self.shape, self.direction

    def center(self, t: int) -> tuple[float, float]:
        dx, dy = DIRECTIONS[self.direction]
        return self.x + dx * self.speed * t, self.y + dy * self.speed * t


@dataclass
class Clip:
    width: int
    height: int
    frames: int
    shapes: list[Shape]
    background: str = "black"
    gradient: str | None = None  # second background colour for a vertical gradient
    fps: int = 16
    extra: dict = field(default_factory=dict)

    def caption(self) -> str:
        bg = f"a {self.background} to {self.gradient} gradient background" if self.gradient else f"a {self.background} background"
        parts = [f"a {s.color} {s.shape} moving {s.direction}" for s in self.shapes]
        return " and ".join(parts) + f" on {bg}"


def _coverage(shape: Shape, cx: float, cy: float, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    dx, dy = xs - cx, ys - cy
    r = shape.size
    if shape.shape == "circle":
        return (dx * dx + dy * dy) <= r * r
    if shape.shape == "square":
        return (np.abs(dx) <= r) & (np.abs(dy) <= r)
    if shape.shape == "triangle":  # upward-pointing equilateral triangle, enlarged to a similar area
        r = 1.3 * r
        top, bottom = -r, 0.5 * r
        half_w = (dy - top) / (bottom - top) * (r * np.sqrt(3) / 2)
        return (dy >= top) & (dy <= bottom) & (np.abs(dx) <= half_w)
    raise ValueError(f"unknown shape {shape.shape!r}")


def background(clip: Clip) -> np.ndarray:
    top = np.array(BACKGROUNDS.get(clip.background, COLORS.get(clip.background, (0, 0, 0))), dtype=np.float32)
    if clip.gradient is None:
        return np.broadcast_to(top, (clip.height, clip.width, 3)).copy()
    bottom = np.array(BACKGROUNDS.get(clip.gradient, COLORS.get(clip.gradient, (0, 0, 0))), dtype=np.float32)
    a = np.linspace(0.0, 1.0, clip.height, dtype=np.float32)[:, None, None]
    return np.broadcast_to(top * (1 - a) + bottom * a, (clip.height, clip.width, 3)).copy()


def render_frame(clip: Clip, t: int, ss: int = 4) -> np.ndarray:
    """One frame as uint8 (H, W, 3)."""
    img = background(clip)
    off = (np.arange(ss, dtype=np.float32) + 0.5) / ss
    ys = (np.arange(clip.height, dtype=np.float32)[:, None] + off[None, :]).reshape(-1)
    xs = (np.arange(clip.width, dtype=np.float32)[:, None] + off[None, :]).reshape(-1)
    X, Y = np.meshgrid(xs, ys)
    for s in clip.shapes:
        cx, cy = s.center(t)
        cov = _coverage(s, cx, cy, X, Y).astype(np.float32)
        cov = cov.reshape(clip.height, ss, clip.width, ss).mean(axis=(1, 3))[..., None]
        img = img * (1 - cov) + np.array(COLORS[s.color], dtype=np.float32) * cov
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def render(clip: Clip) -> np.ndarray:
    """All frames as uint8 (T, H, W, 3)."""
    return np.stack([render_frame(clip, t) for t in range(clip.frames)])


def random_clip(seed: int, width: int = 64, height: int = 64, frames: int = 17, n_shapes: int = 1, fps: int = 16) -> Clip:
    """A random clip, fully determined by ``seed``; shapes stay in frame for the whole clip."""
    rng = random.Random(seed)
    shapes = []
    for _ in range(n_shapes):
        kind = rng.choice(SHAPES)
        color = rng.choice(list(COLORS))
        direction = rng.choice(list(DIRECTIONS))
        size = rng.uniform(0.1, 0.16) * min(width, height)
        travel_room = (width if direction in ("left", "right") else height) - 2 * size - 4
        speed = rng.uniform(0.35, 0.8) * travel_room / max(frames - 1, 1)
        dx, dy = DIRECTIONS[direction]
        dist = speed * (frames - 1)
        # start so that the whole path stays inside the frame
        lo_x = size + 2 + (dist if dx < 0 else 0)
        hi_x = width - size - 2 - (dist if dx > 0 else 0)
        lo_y = size + 2 + (dist if dy < 0 else 0)
        hi_y = height - size - 2 - (dist if dy > 0 else 0)
        shapes.append(Shape(kind, color, direction, speed, size, rng.uniform(lo_x, hi_x), rng.uniform(lo_y, hi_y)))
    bg = rng.choice(list(BACKGROUNDS))
    grad = rng.choice([None, None] + [b for b in BACKGROUNDS if b != bg])
    # keep the shapes visible: avoid a background of the same tone as a shape
    if bg == "white" and any(s.color == "white" for s in shapes):
        bg = "black"
    return Clip(width, height, frames, shapes, bg, grad, fps)


def example_clip(width: int = 128, height: int = 96, frames: int = 33, fps: int = 16) -> Clip:
    """The bundled example: a red circle moving right and a blue square moving up on a gradient."""
    return Clip(
        width,
        height,
        frames,
        [
            Shape("circle", "red", "right", 1.8, 13, 22, 30),
            Shape("square", "blue", "up", 0.8, 10, 106, 78),
        ],
        background="dark blue",
        gradient="black",
        fps=fps,
    )


def target_frames(width: int = 128, height: int = 96) -> dict[str, np.ndarray]:
    """First frames for the edit demo: the example's layout with other shapes and colours."""
    base = example_clip(width, height, 1)
    variants = {
        "green-triangle": [("triangle", "green"), ("square", "blue")],
        "yellow-square": [("square", "yellow"), ("circle", "orange")],
    }
    out = {}
    for name, looks in variants.items():
        shapes = [Shape(k, c, s.direction, s.speed, s.size, s.x, s.y) for (k, c), s in zip(looks, base.shapes)]
        out[name] = render_frame(Clip(width, height, 1, shapes, base.background, base.gradient), 0)
    return out


def demo_clip(size: int = 64, frames: int = 17, fps: int = 16) -> Clip:
    """The demo source for the toy models: one red circle moving right on a dark background."""
    return Clip(size, size, frames, [Shape("circle", "red", "right", 1.9, 8, 17, 34)], background="black", fps=fps)


def demo_targets(size: int = 64) -> dict[str, np.ndarray]:
    """First frames for the toy edit demo: other shapes and colours where the circle starts."""
    base = demo_clip(size, 1).shapes[0]
    out = {}
    for name, (kind, color) in {"green-square": ("square", "green"), "yellow-triangle": ("triangle", "yellow")}.items():
        shape = Shape(kind, color, base.direction, base.speed, base.size, base.x, base.y)
        out[name] = render_frame(Clip(size, size, 1, [shape], background="black"), 0)
    return out
