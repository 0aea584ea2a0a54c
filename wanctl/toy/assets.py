"""Write the example assets: `python -m wanctl.toy.assets OUTDIR [--demo]`.

OUTDIR/clip.mp4 (the example clip) and OUTDIR/targets/*.png (first frames for the edit
workflow). The default is a 128x96 clip of two shapes; ``--demo`` writes the 64x64 one-shape clip
the toy models were trained for, and its first and last frames as OUTDIR/first.png and
OUTDIR/last.png (the flf2v demo). Deterministic; nothing is downloaded.
"""

from __future__ import annotations

import sys
from pathlib import Path

from wanctl.toy.shapes import demo_clip, demo_targets, example_clip, render, target_frames


def write_assets(out: str | Path, force: bool = False, demo: bool = False) -> dict[str, Path]:
    from wanctl.core.io.video import VideoWriter, save_image

    out = Path(out)
    (out / "targets").mkdir(parents=True, exist_ok=True)
    clip = demo_clip() if demo else example_clip()
    frames = render(clip)
    paths = {"clip": out / "clip.mp4"}
    if force or not paths["clip"].exists():
        with VideoWriter(str(paths["clip"]), clip.fps, force=True) as w:
            for f in frames:
                w.write(f)
    targets = demo_targets(clip.width) if demo else target_frames(clip.width, clip.height)
    ends = {"first": (out / "first.png", frames[0]), "last": (out / "last.png", frames[-1])} if demo else {}
    for name, (p, img) in ends.items():
        paths[name] = p
        if force or not p.exists():
            save_image(str(p), img, force=True)
    for name, img in targets.items():
        p = out / "targets" / f"{name}.png"
        paths[name] = p
        if force or not p.exists():
            save_image(str(p), img, force=True)
    return paths


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    demo = "--demo" in argv
    argv = [a for a in argv if a != "--demo"]
    if len(argv) != 1:
        print("usage: python -m wanctl.toy.assets OUTDIR [--demo]", file=sys.stderr)
        raise SystemExit(2)
    for name, p in write_assets(argv[0], demo=demo).items():
        print(f"{name}: {p}")


if __name__ == "__main__":
    main()
