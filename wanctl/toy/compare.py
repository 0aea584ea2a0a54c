"""Side-by-side preview of videos: `python -m wanctl.toy.compare OUT.png VIDEO...`.

One row per video (label above nothing: the row order is the argument order), every
``--every``-th frame, upscaled x``--scale`` with nearest neighbour so shapes stay crisp.
"""

from __future__ import annotations

import argparse

import numpy as np


def side_by_side(videos: list[str], every: int = 4, scale: int = 2) -> np.ndarray:
    from wanctl.core.io.preview import contact_sheet, upscale
    from wanctl.core.io.video import read_video_frames

    rows = []
    for v in videos:
        frames = read_video_frames(v)
        rows.append([upscale(f, scale) for f in frames[::every]])
    width = max(len(r) for r in rows)
    rows = [r + [np.zeros_like(r[0])] * (width - len(r)) for r in rows]
    return contact_sheet(rows, gap=4)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("videos", nargs="+")
    ap.add_argument("--every", type=int, default=4)
    ap.add_argument("--scale", type=int, default=2)
    a = ap.parse_args(argv)
    from PIL import Image

    from wanctl.core.files import atomic_path

    with atomic_path(a.out, force=True) as tmp:
        Image.fromarray(side_by_side(a.videos, a.every, a.scale)).save(tmp, format="PNG")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
