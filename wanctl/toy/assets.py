"""Write the example assets: `python -m wanctl.toy.assets OUTDIR`.

OUTDIR/clip.mp4 (the example clip), OUTDIR/clip.gif, and OUTDIR/targets/*.png (first frames
for the edit workflow). Deterministic; nothing is downloaded.
"""

from __future__ import annotations

import sys
from pathlib import Path

from wanctl.toy.shapes import example_clip, render, target_frames


def write_assets(out: str | Path, force: bool = False) -> dict[str, Path]:
    from wanctl.core.video import VideoWriter, save_image

    out = Path(out)
    (out / "targets").mkdir(parents=True, exist_ok=True)
    clip = example_clip()
    frames = render(clip)
    paths = {"clip": out / "clip.mp4"}
    if force or not paths["clip"].exists():
        with VideoWriter(str(paths["clip"]), clip.fps, force=True) as w:
            for f in frames:
                w.write(f)
    for name, img in target_frames(clip.width, clip.height).items():
        p = out / "targets" / f"{name}.png"
        paths[name] = p
        if force or not p.exists():
            save_image(str(p), img, force=True)
    return paths


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m wanctl.toy.assets OUTDIR", file=sys.stderr)
        raise SystemExit(2)
    for name, p in write_assets(argv[0]).items():
        print(f"{name}: {p}")


if __name__ == "__main__":
    main()
