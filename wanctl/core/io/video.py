"""Video and image I/O: read clips, folders of frames and images; write mp4, gif, PNG folders.

Frames are numpy uint8 arrays (H, W, 3). Readers stream (generators) so long clips need not fit
in memory; writers consume iterables of frames.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from wanctl.core.errors import BadInputError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}
GIF_EXTS = {".gif"}


@dataclass
class SourceInfo:
    kind: str  # "video" | "gif" | "frames" | "image"
    width: int
    height: int
    fps: float | None
    frames: int | None  # None when unknown before reading
    files: list[Path] = field(default_factory=list)


def probe(path: str) -> SourceInfo:
    p = Path(path)
    if not p.exists():
        raise BadInputError(f"{path}: no such file or folder")
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_EXTS)
        if not files:
            raise BadInputError(f"{path}: folder contains no image frames ({', '.join(sorted(IMAGE_EXTS))})")
        w, h = _image_size(files[0])
        return SourceInfo("frames", w, h, None, len(files), files)
    ext = p.suffix.lower()
    if ext in IMAGE_EXTS:
        w, h = _image_size(p)
        return SourceInfo("image", w, h, None, 1, [p])
    if ext in GIF_EXTS:
        return _probe_gif(p)
    return _probe_video(p)


def _image_size(p: Path) -> tuple[int, int]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(p) as im:
            return im.size
    except (UnidentifiedImageError, OSError):
        raise BadInputError(f"{p}: cannot read image") from None


def load_image(path: str | os.PathLike) -> "np.ndarray":
    """One RGB image as uint8 (H, W, 3)."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    if not p.exists():
        raise BadInputError(f"{path}: no such image")
    if p.is_dir():
        raise BadInputError(f"{path}: is a folder, expected an image")
    try:
        with Image.open(p) as im:
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError):
        raise BadInputError(f"{path}: cannot read image") from None


def _probe_gif(p: Path) -> SourceInfo:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(p) as im:
            n = getattr(im, "n_frames", 1)
            dur = im.info.get("duration") or 100
            return SourceInfo("gif", im.size[0], im.size[1], 1000.0 / dur, n, [p])
    except (UnidentifiedImageError, OSError):
        raise BadInputError(f"{p}: cannot read GIF") from None


def _probe_video(p: Path) -> SourceInfo:
    import imageio_ffmpeg

    try:
        gen = imageio_ffmpeg.read_frames(str(p), pix_fmt="rgb24")
        meta = next(gen)
        gen.close()
    except (RuntimeError, OSError, StopIteration) as e:
        raise BadInputError(f"{p}: {_ffmpeg_reason(str(e))}") from None
    w, h = meta.get("size", (0, 0))
    if not w or not h:
        raise BadInputError(f"{p}: cannot read video (no video stream)")
    fps = meta.get("fps") or None
    dur = meta.get("duration") or 0
    frames = int(round(dur * fps)) if fps and dur else None
    return SourceInfo("video", int(w), int(h), float(fps) if fps else None, frames, [p])


def _ffmpeg_reason(msg: str) -> str:
    """One readable line out of ffmpeg's error output."""
    if "matches no streams" in msg or "does not contain any stream" in msg:
        return "contains no video frames (no video stream)"
    if "Invalid data found" in msg or "moov atom not found" in msg:
        return "cannot read video (not a video file, or truncated)"
    lines = [line for line in msg.strip().splitlines() if line.strip()]
    return f"cannot read video ({lines[-1] if lines else 'ffmpeg failed'})"


def iter_frames(path: str, info: SourceInfo, start: float = 0.0) -> Iterator["np.ndarray"]:
    """Yield RGB uint8 frames from ``start`` seconds on."""
    import numpy as np

    if info.kind in ("frames", "image"):
        fps = info.fps or 1.0
        skip = int(round(start * fps)) if info.kind == "frames" else 0
        for f in info.files[skip:]:
            img = load_image(f)
            if img.shape[1] != info.width or img.shape[0] != info.height:
                raise BadInputError(
                    f"{f}: frame size {img.shape[1]}x{img.shape[0]} differs from the first frame's {info.width}x{info.height}"
                )
            yield img
        return
    if info.kind == "gif":
        from PIL import Image, ImageSequence

        skip = int(round(start * (info.fps or 10)))
        with Image.open(info.files[0]) as im:
            for i, fr in enumerate(ImageSequence.Iterator(im)):
                if i >= skip:
                    yield np.asarray(fr.convert("RGB"))
        return
    import imageio_ffmpeg

    params = ["-ss", f"{start:.6f}"] if start > 0 else None
    try:
        gen = imageio_ffmpeg.read_frames(str(info.files[0]), pix_fmt="rgb24", input_params=params)
        meta = next(gen)
        w, h = meta["size"]
        for raw in gen:
            yield np.frombuffer(raw, dtype=np.uint8).reshape(h, w, 3)
    except RuntimeError as e:
        raise BadInputError(f"{path}: {_ffmpeg_reason(str(e))}") from None


def max_frames_at(n_src: int, src_fps: float, dst_fps: float) -> int:
    """How many output frames at dst_fps fit in n_src source frames."""
    ratio = Fraction(src_fps).limit_denominator(10000) / Fraction(dst_fps).limit_denominator(10000)
    k = 0
    while int(k * ratio + Fraction(1, 2)) < n_src:
        k += 1
    return k


# --------------------------------------------------------------------------- resize / crop


def fit_size(src_w: int, src_h: int, multiple: int, size: tuple[int, int] | None) -> tuple[int, int]:
    """Target size: ``size`` if given, else the source size cropped down to the multiple."""
    if size is not None:
        return size
    w, h = src_w // multiple * multiple, src_h // multiple * multiple
    if w == 0 or h == 0:
        raise BadInputError(f"source is {src_w}x{src_h}, smaller than the minimum {multiple}x{multiple}")
    return w, h


def resize_crop(frame: "np.ndarray", width: int, height: int) -> "np.ndarray":
    """Resize to cover (width, height) keeping the aspect ratio, then center-crop."""
    import numpy as np
    from PIL import Image

    h0, w0 = frame.shape[:2]
    if (w0, h0) == (width, height):
        return frame
    scale = max(width / w0, height / h0)
    nw, nh = max(width, round(w0 * scale)), max(height, round(h0 * scale))
    img = Image.fromarray(frame)
    if (nw, nh) != (w0, h0):
        img = img.resize((nw, nh), Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.BICUBIC)
    left, top = (nw - width) // 2, (nh - height) // 2
    return np.asarray(img.crop((left, top, left + width, top + height)))


def aspect_differs(w0: int, h0: int, w1: int, h1: int, tol: float = 0.01) -> bool:
    return abs(w0 / h0 - w1 / h1) > tol * (w1 / h1)


# --------------------------------------------------------------------------- writing


def output_kind(path: str) -> str:
    p = str(path)
    ext = Path(p).suffix.lower()
    if ext in (".mp4", ".mov", ".mkv", ".m4v"):
        return "video"
    if ext == ".webm":
        return "webm"
    if ext == ".gif":
        return "gif"
    if ext == "" or p.endswith(os.sep):
        return "frames"
    raise BadInputError(f"output {path}: use .mp4, .webm, .gif or a folder name (no suffix) for PNG frames")


class VideoWriter:
    """Streams frames into ``dest`` through an atomic temporary path."""

    def __init__(self, dest: str, fps: float, force: bool = False, crf: int = 17):
        from wanctl.core.files import atomic_path

        self.kind = output_kind(dest)
        self.fps = fps
        self.crf = crf
        self._atomic = atomic_path(dest.rstrip(os.sep), force=force, directory=self.kind == "frames")
        self._tmp: Path | None = None
        self._gen = None
        self._gif: list = []
        self.count = 0

    def __enter__(self) -> "VideoWriter":
        self._tmp = self._atomic.__enter__()
        if self.kind == "frames":
            self._tmp.mkdir()
        return self

    def write(self, frame: "np.ndarray") -> None:
        import numpy as np

        frame = np.ascontiguousarray(frame, dtype=np.uint8)
        if self.kind == "frames":
            from PIL import Image

            Image.fromarray(frame).save(self._tmp / f"frame_{self.count:05d}.png")
        elif self.kind == "gif":
            self._gif.append(frame)
        else:
            if self._gen is None:
                self._gen = self._open_ffmpeg(frame.shape[1], frame.shape[0])
            self._gen.send(frame)
        self.count += 1

    def _open_ffmpeg(self, w: int, h: int):
        import imageio_ffmpeg

        if self.kind == "webm":
            codec, extra = "libvpx-vp9", ["-b:v", "0", "-crf", str(self.crf + 14)]
        else:
            codec, extra = "libx264", ["-crf", str(self.crf), "-preset", "medium", "-movflags", "+faststart"]
        # ffmpeg guesses the container from the name; the temp name ends in .tmp, so say it
        fmt = "webm" if self.kind == "webm" else "mp4"
        gen = imageio_ffmpeg.write_frames(
            str(self._tmp),
            (w, h),
            fps=self.fps,
            codec=codec,
            pix_fmt_in="rgb24",
            pix_fmt_out="yuv420p",
            quality=None,
            macro_block_size=2,
            output_params=extra + ["-f", fmt],
            ffmpeg_log_level="error",
        )
        gen.send(None)
        return gen

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            if exc_type is None:
                if self.count == 0:
                    raise BadInputError("no frames to write")
                if self._gen is not None:
                    self._gen.close()
                    self._gen = None
                if self.kind == "gif":
                    from PIL import Image

                    imgs = [Image.fromarray(f) for f in self._gif]
                    imgs[0].save(
                        self._tmp,
                        format="GIF",
                        save_all=True,
                        append_images=imgs[1:],
                        duration=max(20, round(1000 / self.fps)),
                        loop=0,
                    )
        except BaseException as e:
            if self._gen is not None:
                try:
                    self._gen.close()
                except Exception:
                    pass
            self._atomic.__exit__(type(e), e, e.__traceback__)
            raise
        finally:
            if exc_type is not None and self._gen is not None:
                try:
                    self._gen.close()
                except Exception:
                    pass
        return self._atomic.__exit__(exc_type, exc, tb)


def save_image(path: str, frame: "np.ndarray", force: bool = False) -> None:
    from PIL import Image

    from wanctl.core.files import atomic_path

    fmt = (Path(path).suffix.lstrip(".") or "png").upper()
    fmt = "JPEG" if fmt == "JPG" else fmt
    with atomic_path(path, force=force) as tmp:
        Image.fromarray(frame).save(tmp, format=fmt)


def read_video_frames(path: str) -> list["np.ndarray"]:
    """All frames of a file (for tests and small clips)."""
    info = probe(path)
    return list(iter_frames(path, info))
