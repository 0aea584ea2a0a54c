"""Video and image I/O: read clips, animations, folders of frames and images; write mp4, gif,
PNG folders.

Frames are numpy uint8 arrays (H, W, 3), as a viewer shows them (see :mod:`media` for pictures;
here, timing: animations by their frame durations, videos by their real timestamps). Readers
stream (generators) so long clips need not fit in memory; writers consume iterables of frames.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator

from wanctl.core.errors import BadInputError
from wanctl.core.io import media

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}
GIF_EXTS = {".gif"}
# animated images: their frames carry their own durations
ANIMATED_KINDS = ("gif", "webp", "apng")
_ANIMATED_FORMATS = {"GIF": "gif", "WEBP": "webp", "PNG": "apng"}
# browsers show GIF/WebP/APNG frames of 10 ms or less for 100 ms; so do we
_MIN_FRAME_MS, _SHORT_FRAME_MS = 10, 100


@dataclass
class SourceInfo:
    kind: str  # "video" | "gif" | "webp" | "apng" | "frames" | "image"
    width: int  # as shown (after the EXIF orientation / the video's rotation)
    height: int
    fps: float | None  # None: images, folders, animations whose frame durations vary
    frames: int | None  # None when unknown before reading (for videos: an estimate)
    files: list[Path] = field(default_factory=list)
    durations: list[float] | None = None  # animations: milliseconds each frame shows
    alpha: bool = False  # a video stream with an alpha channel (read as RGBA, composited)
    notes: list[str] = field(default_factory=list)  # what probing found (content vs suffix, varying durations)

    @property
    def animated(self) -> bool:
        return self.kind in ANIMATED_KINDS


def frame_files(folder: str | Path) -> list[Path]:
    """The image files of a folder in natural order (frame_9 before frame_10, case-insensitive)."""
    return sorted((f for f in Path(folder).iterdir() if f.suffix.lower() in IMAGE_EXTS), key=lambda f: media.natural_key(f.name))


def probe(path: str) -> SourceInfo:
    p = Path(path)
    if not p.exists():
        raise BadInputError(f"{path}: no such file or folder")
    if p.is_dir():
        files = frame_files(p)
        if not files:
            raise BadInputError(f"{path}: folder contains no image frames ({', '.join(sorted(IMAGE_EXTS))})")
        with media.open_image(files[0]) as im:
            w, h = media.oriented_size(im)
        return SourceInfo("frames", w, h, None, len(files), files)
    fmt = media.sniff(p)
    note = media.mismatch_note(p, fmt)
    if media.is_video_format(fmt) or (fmt is None and p.suffix.lower() not in IMAGE_EXTS | GIF_EXTS):
        info = _probe_video(p)
    else:
        info = _probe_image(p)
    if note:
        info.notes.insert(0, note)
    return info


def _probe_image(p: Path) -> SourceInfo:
    with media.open_image(p) as im:
        w, h = media.oriented_size(im)
        n = getattr(im, "n_frames", 1) if im.format in _ANIMATED_FORMATS else 1
        if n <= 1:
            return SourceInfo("image", w, h, None, 1, [p])
        try:
            with media.decoding(p):
                durations = _durations(im, n)
        except (OSError, EOFError, ValueError, SyntaxError):
            raise BadInputError(f"{p}: cannot read animation (truncated or corrupt)") from None
        kind = _ANIMATED_FORMATS[im.format]
    notes = []
    if len(set(durations)) == 1:
        fps = 1000.0 / durations[0]
    else:
        fps = None
        notes.append(f"{p}: frame durations vary ({min(durations):g} to {max(durations):g} ms): frames are taken "
                     "at their real times")
    return SourceInfo(kind, w, h, fps, n, [p], durations=durations, notes=notes)


def _durations(im, n: int) -> list[float]:
    out = []
    for i in range(n):
        im.seek(i)
        if im.format == "WEBP":
            im.load()  # WebP frames learn their duration when decoded
        d = float(im.info.get("duration") or 0)
        out.append(_SHORT_FRAME_MS if d <= _MIN_FRAME_MS else d)
    im.seek(0)
    return out


def load_image(path: str | os.PathLike, *, background: tuple[int, int, int] = media.BLACK,
               notices: list[str] | None = None) -> "np.ndarray":
    """One RGB image as uint8 (H, W, 3), as a viewer shows it: turned by its EXIF orientation,
    transparent pixels composited on ``background``, 16-bit and grey pixels scaled to 8-bit RGB,
    the format told by content. An animation or a video gives its first frame. What was done
    (composited, content unlike the suffix) is appended to ``notices``."""
    p = Path(path)
    if not p.exists():
        raise BadInputError(f"{path}: no such image")
    if p.is_dir():
        raise BadInputError(f"{path}: is a folder, expected an image")
    fmt = media.sniff(p)
    note = media.mismatch_note(p, fmt)
    if note and notices is not None:
        notices.append(note)
    if media.is_video_format(fmt):
        info = _probe_video(p)
        if notices is not None:
            notices.append(f"{path}: a video; using its first frame")
        frames = iter_frames(str(p), info, background=background, notices=notices)
        try:
            first = next(frames, None)
        finally:
            frames.close()
        if first is None:
            raise BadInputError(f"{path}: contains no video frames")
        return first
    img, had_alpha = media.read_still(p, background)
    if had_alpha and notices is not None:
        notices.append(media.transparency_note(path, background))
    return img


def _imageio_ffmpeg():
    import logging

    import imageio_ffmpeg

    # it logs a warning line to stderr for every rotated (phone) video, whose frames it reads
    # turned as they should be; the size it reports is the turned one too
    logging.getLogger("imageio_ffmpeg").setLevel(logging.ERROR)
    return imageio_ffmpeg


def _probe_video(p: Path) -> SourceInfo:
    imageio_ffmpeg = _imageio_ffmpeg()

    try:
        gen = imageio_ffmpeg.read_frames(str(p), pix_fmt="rgb24")
        meta = next(gen)
        gen.close()
    except (RuntimeError, OSError, StopIteration) as e:
        raise BadInputError(f"{p}: {_ffmpeg_reason(str(e))}") from None
    w, h = meta.get("size", (0, 0))
    if not w or not h:
        raise BadInputError(f"{p}: cannot read video (no video stream)")
    media.check_pixels(p, int(w), int(h))
    fps = meta.get("fps") or None
    dur = meta.get("duration") or 0
    frames = int(round(dur * fps)) if fps and dur else None
    return SourceInfo("video", int(w), int(h), float(fps) if fps else None, frames, [p],
                      alpha=_has_alpha(str(meta.get("pix_fmt") or "")))


_ALPHA_PIX_FMTS = re.compile(r"^(yuva|gbrap|ya8|ya16|rgba|bgra|argb|abgr|pal8)")


def _has_alpha(pix_fmt: str) -> bool:
    """Whether ffmpeg's decoded pixel format (e.g. 'yuva420p(tv, ...)') carries alpha. Not covered:
    VP9 WebM alpha, kept in side data that ffmpeg's own VP9 decoder ignores (read as opaque)."""
    return bool(_ALPHA_PIX_FMTS.match(pix_fmt.split("(")[0].split(",")[0].strip()))


def _ffmpeg_reason(msg: str) -> str:
    """One readable line out of ffmpeg's error output."""
    if "matches no streams" in msg or "does not contain any stream" in msg:
        return "contains no video frames (no video stream)"
    if "Invalid data found" in msg or "moov atom not found" in msg:
        return "cannot read video (not a video file, or truncated)"
    lines = [line for line in msg.strip().splitlines() if line.strip()]
    return f"cannot read video ({lines[-1] if lines else 'ffmpeg failed'})"


# --------------------------------------------------------------------------- timing
#
# A source frame is shown from its timestamp until the next one's. Reading at a constant output
# rate picks, for each output time start + k / fps, the frame showing then; the output ends at the
# source's end. Times are exact fractions, so a source at the output rate maps frame to frame.


def _frac(x: float) -> Fraction:
    return Fraction(x).limit_denominator(10000)


def video_rate(fps: float) -> Fraction:
    """A frame rate as the exact fraction it stands for: ffmpeg prints NTSC rates rounded
    (29.97 for 30000/1001), and a rate a hair too high would put every output time just before
    the frame it means."""
    for base in (24, 30, 48, 60, 120):
        if abs(fps - base * 1000 / 1001) < 0.006:
            return Fraction(base * 1000, 1001)
    return _frac(fps)


def count_ticks(duration: Fraction, start: Fraction, fps: Fraction) -> int:
    """How many output times start + k / fps fall before ``duration``."""
    if duration <= start:
        return 0
    return math.ceil((duration - start) * fps)


def resample(frames: Iterable, durations: Iterable[Fraction], start: Fraction, fps: Fraction | None) -> Iterator:
    """The frame showing at each output time (start + k / fps) of a stream of frames shown for
    ``durations`` seconds each; with ``fps`` None, every frame once from the one showing at start."""
    t = Fraction(0)
    k = 0
    tick = start
    for frame, d in zip(frames, durations):
        end = t + d
        if fps is None:
            if end > start and d > 0:
                yield frame
        else:
            while tick < end:
                yield frame
                k += 1
                tick = start + k / fps
        t = end


def max_frames_at(n_src: int, src_fps: float, dst_fps: float) -> int:
    """How many output frames at dst_fps fit in n_src source frames at src_fps."""
    return count_ticks(Fraction(n_src) / _frac(src_fps), Fraction(0), _frac(dst_fps))


def frames_available(info: SourceInfo, start: float, fps: float) -> int | None:
    """Output frames at ``fps`` from ``start`` on, as :func:`iter_frames` gives them (a folder of
    frames is taken to be at ``fps``); None for videos, whose length is known only once read."""
    if info.kind == "image":
        return 1
    if info.kind == "frames":
        return count_ticks(Fraction(info.frames) / _frac(fps), _frac(start), _frac(fps))
    if info.animated:
        total = sum((_ms(d) for d in info.durations), Fraction(0))
        return count_ticks(total, _frac(start), _frac(fps))
    return None


def _ms(d: float) -> Fraction:
    return Fraction(d).limit_denominator(1000) / 1000


# --------------------------------------------------------------------------- reading


def iter_frames(path: str, info: SourceInfo, start: float = 0.0, fps: float | None = None, *,
                background: tuple[int, int, int] = media.BLACK, notices: list[str] | None = None) -> Iterator["np.ndarray"]:
    """Yield RGB uint8 frames as shown from ``start`` seconds on, at a constant ``fps`` (the frame
    showing at each output time) or, with ``fps`` None, at the source's own rate (animations whose
    frame durations vary: every frame once). A folder of frames is taken to be at ``fps`` (else
    ``info.fps``, else 1): one file per output frame. Transparent pixels are composited on
    ``background``; what was done is appended to ``notices`` (once per kind of note)."""
    said: set[str] = set()

    def note(key: str, text: str) -> None:
        if notices is not None and key not in said:
            said.add(key)
            notices.append(text)

    if info.kind in ("frames", "image"):
        rate = _frac(fps or info.fps or 1.0)
        skip = math.floor(_frac(start) * rate) if info.kind == "frames" else 0
        for f in info.files[skip:]:
            if info.kind == "frames":
                mismatch = media.mismatch_note(f, media.sniff(f))
                if mismatch:
                    note("content", f"{mismatch} (frames are read by content)")
            img, had_alpha = media.read_still(f, background)
            if had_alpha:
                note("alpha", media.transparency_note(f if info.kind == "image" else path, background))
            if img.shape[1] != info.width or img.shape[0] != info.height:
                raise BadInputError(
                    f"{f}: frame size {img.shape[1]}x{img.shape[0]} differs from the first frame's {info.width}x{info.height}"
                )
            yield img
        return
    if info.animated:
        frames = _animation_frames(info, background, lambda: note("alpha", media.transparency_note(path, background)))
        durations = (_ms(d) for d in info.durations)
        yield from resample(frames, durations, _frac(start), _frac(fps) if fps else None)
        return
    yield from _video_frames(path, info, start, fps, background,
                             lambda: note("alpha", media.transparency_note(path, background)))


def _animation_frames(info: SourceInfo, background, on_alpha) -> Iterator["np.ndarray"]:
    p = info.files[0]
    with media.open_image(p) as im:
        for i in range(info.frames):
            try:
                with media.decoding(p):
                    im.seek(i)
                    img, had_alpha = media.to_rgb(media.oriented(im), background)
            except (OSError, EOFError, ValueError, SyntaxError):
                raise BadInputError(f"{p}: cannot read frame {i + 1} (truncated or corrupt)") from None
            if had_alpha:
                on_alpha()
            yield img


def _video_frames(path: str, info: SourceInfo, start: float, fps: float | None, background, on_alpha):
    import numpy as np

    imageio_ffmpeg = _imageio_ffmpeg()

    rate = fps or info.fps
    if rate:
        # ffmpeg picks the frames by their real timestamps (variable frame rate included): time 0
        # is the first frame, the output times are start + k / rate, and round=up takes the frame
        # showing at each. Frames before start are decoded, not skipped by seeking, since input
        # seeking drops the frame showing at start and lands off in some containers (MPEG-TS).
        r = video_rate(rate)
        shift = f"-{start:.6f}/TB" if start > 0 else ""
        params = {"output_params": ["-vf", f"setpts=PTS-STARTPTS{shift},fps=fps={r.numerator}/{r.denominator}:round=up:start_time=0"]}
    else:  # no frame rate known: ffmpeg's own timing
        params = {"input_params": ["-ss", f"{start:.6f}"] if start > 0 else None}
    channels = 4 if info.alpha else 3
    gen = imageio_ffmpeg.read_frames(str(info.files[0]), pix_fmt="rgba" if info.alpha else "rgb24", bpp=channels,
                                     **params)
    try:
        meta = next(gen)
        w, h = meta["size"]
        for raw in gen:
            frame = np.frombuffer(raw, dtype=np.uint8).reshape(h, w, channels)
            if channels == 4:
                if (frame[..., 3] < 255).any():
                    on_alpha()
                frame = media.composite(frame[..., :3], frame[..., 3], background)
            yield frame
    except RuntimeError as e:
        raise BadInputError(f"{path}: {_ffmpeg_reason(str(e))}") from None
    finally:
        gen.close()  # stops ffmpeg when the reader stops early


# --------------------------------------------------------------------------- resize / crop


def fit_size(src_w: int, src_h: int, multiple: int, size: tuple[int, int] | None, *, what: str) -> tuple[int, int]:
    """Target size: ``size`` if given, else the source size (``what`` sets it: named in the
    error) cropped down to the multiple."""
    if size is not None:
        return size
    w, h = src_w // multiple * multiple, src_h // multiple * multiple
    if w == 0 or h == 0:
        raise BadInputError(f"{what} is {src_w}x{src_h}, smaller than the minimum {multiple}x{multiple} for the video "
                            "size it sets; give --size")
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


# H.264 video outputs: the ffmpeg container (muxer) of each suffix
CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}


def output_kind(path: str) -> str:
    p = str(path)
    if p == "-":
        raise BadInputError("a video cannot be written to stdout ('-'): name a .mp4, .webm or .gif file, or a folder for PNG frames")
    ext = Path(p).suffix.lower()
    if ext in CONTAINERS:
        return "video"
    if ext == ".webm":
        return "webm"
    if ext == ".gif":
        return "gif"
    if ext == "" or p.endswith(os.sep):
        return "frames"
    raise BadInputError(f"output {path}: use .mp4 (.mov, .mkv, .m4v), .webm, .gif or a folder name (no suffix) for PNG frames")


class VideoWriter:
    """Streams frames into ``dest`` through an atomic temporary path."""

    def __init__(self, dest: str, fps: float, force: bool = False, crf: int = 17):
        from wanctl.core.files import atomic_path

        self.kind = output_kind(dest)
        self.container = "webm" if self.kind == "webm" else CONTAINERS.get(Path(dest).suffix.lower())
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
            codec, extra = "libx264", ["-crf", str(self.crf), "-preset", "medium"]
            if self.container in ("mp4", "mov"):  # index first, so players can start before the end
                extra += ["-movflags", "+faststart"]
        gen = imageio_ffmpeg.write_frames(
            str(self._tmp),
            (w, h),
            fps=self.fps,
            codec=codec,
            pix_fmt_in="rgb24",
            pix_fmt_out="yuv420p",
            quality=None,
            macro_block_size=2,
            output_params=extra + ["-f", self.container],  # the temp name ends in .tmp: say the container
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
