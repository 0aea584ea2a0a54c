"""Image files read as a viewer shows them.

What a viewer does and a bare ``Image.open(...).convert("RGB")`` does not:

* turn the picture by its EXIF orientation (a phone JPEG stored sideways is shown upright);
* composite transparent pixels on a background colour instead of showing the RGB that hides
  under alpha 0;
* scale 16-bit and float pixels to 8 bits (a 16-bit grey of 32768 is mid-grey, not white);
* tell the format by content, not by the name's suffix;
* refuse a picture too large to decode (a "decompression bomb") as bad input, for that file only.

Nothing here knows about videos or frame timing: :mod:`wanctl.core.io.video` builds on it.
"""

from __future__ import annotations

import re
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from wanctl.core.errors import BadInputError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    from PIL import Image

# Pictures larger than this are refused before decoding. It sits below PIL's own hard limit
# (2 * PIL.Image.MAX_IMAGE_PIXELS, about 179M pixels), so one rule with one message applies;
# 2**27 is 11585x11585, far above any size the models take.
MAX_IMAGE_PIXELS = 2**27

BLACK = (0, 0, 0)

_NAMES = {(0, 0, 0): "black", (255, 255, 255): "white", (128, 128, 128): "grey"}


# --------------------------------------------------------------------------- colours


def parse_color(text: str) -> tuple[int, int, int]:
    """'black', 'white', 'grey' (any CSS colour name), '#rrggbb', '#rgb' or 'r,g,b' -> (r, g, b)."""
    from PIL import ImageColor

    value = (text or "").strip()
    if re.fullmatch(r"\d{1,3}\s*,\s*\d{1,3}\s*,\s*\d{1,3}", value):
        rgb = tuple(int(v) for v in value.split(","))
        if max(rgb) > 255:
            raise BadInputError(f"--background {text!r}: r,g,b values must be 0..255")
        return rgb  # type: ignore[return-value]
    try:
        rgb = ImageColor.getrgb(value.lower())
    except ValueError:
        raise BadInputError(
            f"--background {text!r} is not a colour; use a name (black, white, grey...), #rrggbb or r,g,b"
        ) from None
    if len(rgb) == 4:
        raise BadInputError(f"--background {text!r}: the background must be opaque (no alpha)")
    return tuple(rgb)  # type: ignore[return-value]


def color_text(rgb: tuple[int, int, int]) -> str:
    return _NAMES.get(tuple(rgb), "#{:02x}{:02x}{:02x}".format(*rgb))


# --------------------------------------------------------------------------- names and content


def natural_key(name: str) -> tuple:
    """Sort key putting frame_9 before frame_10, case-insensitively; equal keys (frame_01 and
    frame_1) fall back to the plain name, so the order is total and stable."""
    parts = re.split(r"(\d+)", name.casefold(), flags=re.ASCII)
    # split() alternates text, digits, text...: same positions hold the same types
    return tuple(int(s) if i % 2 else s for i, s in enumerate(parts)), name


IMAGE_FORMATS = ("PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF")
VIDEO_FORMATS = ("MP4", "QuickTime", "Matroska/WebM", "AVI", "MPEG-TS", "MPEG-PS", "Ogg", "FLV")

SUFFIX_FORMATS = {
    ".png": "PNG", ".apng": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".jpe": "JPEG", ".gif": "GIF", ".webp": "WEBP",
    ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF",
    ".mp4": "MP4", ".m4v": "MP4", ".mov": "QuickTime", ".mkv": "Matroska/WebM", ".webm": "Matroska/WebM",
    ".avi": "AVI", ".ts": "MPEG-TS", ".mpg": "MPEG-PS", ".mpeg": "MPEG-PS", ".ogv": "Ogg", ".flv": "FLV",
}


def sniff(path: str | Path) -> str | None:
    """The file's format from its first bytes (one of IMAGE_FORMATS / VIDEO_FORMATS), or None."""
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError:
        return None
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "AVI"
    if head[:2] == b"BM" and len(head) >= 26:
        return "BMP"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    if head[4:8] == b"ftyp":
        if head[8:12] in (b"avif", b"avis", b"heic", b"heix", b"mif1", b"msf1"):
            return None  # HEIF/AVIF pictures share the MP4 box format: left to the suffix
        return "QuickTime" if head[8:12] == b"qt  " else "MP4"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "Matroska/WebM"
    if head[:4] == b"OggS":
        return "Ogg"
    if head[:3] == b"FLV":
        return "FLV"
    if head[:4] == b"\x00\x00\x01\xba":
        return "MPEG-PS"
    if len(head) > 376 and head[0] == head[188] == head[376] == 0x47:
        return "MPEG-TS"
    return None


def is_video_format(fmt: str | None) -> bool:
    return fmt in VIDEO_FORMATS


def mismatch_note(path: str | Path, fmt: str | None) -> str | None:
    """A notice when the content is not what the suffix says (an image of another format, or a
    video named as an image or the other way round); videos of another container than the suffix
    names are not worth one (ffmpeg reads them by content all the same)."""
    claim = SUFFIX_FORMATS.get(Path(path).suffix.lower())
    if fmt is None or claim is None or claim == fmt:
        return None
    if is_video_format(fmt) and is_video_format(claim):
        return None
    what = f"a video ({fmt})" if is_video_format(fmt) else f"a {fmt} image"
    said = f"a {claim} video" if is_video_format(claim) else f"a {claim}"
    how = "a video" if is_video_format(fmt) else fmt
    return f"{path} is {what}, not {said} as its name says: read as {how}"


# --------------------------------------------------------------------------- opening


@contextmanager
def decoding(path: str | Path) -> Iterator[None]:
    """Around PIL's open, seek and load: its DecompressionBombWarning silenced (the pixel limit
    here replaces it, and a Python warning line on stderr is no message), its
    DecompressionBombError a one-line BadInputError."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            yield
        except Image.DecompressionBombError:
            raise BadInputError(f"{path}: image too large to decode (over {MAX_IMAGE_PIXELS} pixels)") from None


@contextmanager
def open_image(path: str | Path) -> Iterator["Image.Image"]:
    """``PIL.Image.open`` with one-line errors: unreadable, or more than MAX_IMAGE_PIXELS pixels
    (checked from the header, before any decoding)."""
    from PIL import Image, UnidentifiedImageError

    with decoding(path):
        try:
            im = Image.open(path)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
            raise BadInputError(f"{path}: cannot read image") from None
    with im:
        w, h = im.size
        check_pixels(path, w, h)
        yield im


def check_pixels(path, w: int, h: int) -> None:
    if w * h > MAX_IMAGE_PIXELS:
        raise BadInputError(
            f"{path}: {w}x{h} image is too large to decode ({w * h} pixels, the limit is {MAX_IMAGE_PIXELS})"
        )


_SWAPS_SIDES = (5, 6, 7, 8)  # EXIF orientations that turn the picture by 90 degrees


def oriented_size(im: "Image.Image") -> tuple[int, int]:
    """(width, height) as shown, after the EXIF orientation."""
    w, h = im.size
    try:
        orientation = im.getexif().get(0x0112, 1)
    except Exception:  # noqa: BLE001 - a broken EXIF block is ignored, as viewers do
        orientation = 1
    return (h, w) if orientation in _SWAPS_SIDES else (w, h)


def oriented(im: "Image.Image") -> "Image.Image":
    """The picture turned by its EXIF orientation, as viewers show it."""
    from PIL import ImageOps

    try:
        return ImageOps.exif_transpose(im)
    except Exception:  # noqa: BLE001 - a broken EXIF block is ignored, as viewers do
        return im


# --------------------------------------------------------------------------- pixels


_ALPHA_MODES = ("RGBA", "LA", "La", "RGBa", "PA")
_INT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def to_rgb(im: "Image.Image", background: tuple[int, int, int] = BLACK) -> tuple["np.ndarray", bool]:
    """uint8 (H, W, 3) pixels of a decoded picture, and whether it had transparent pixels (which
    are composited on ``background``).

    16-bit integer pixels (modes I;16* and I, as 16-bit PNG and TIFF greys open) are scaled from
    0..65535; float pixels (mode F) are taken as 0..1, the convention of float image files; greys
    are expanded to RGB.
    """
    import numpy as np

    alpha = None
    mode = im.mode
    if mode in _INT_MODES:
        a = np.asarray(im).astype(np.int64)
        key = im.info.get("transparency")
        if isinstance(key, int):  # a tRNS grey key: pixels of that value are transparent
            alpha = np.where(a == key, 0, 255).astype(np.uint8)
        grey = ((np.clip(a, 0, 65535) * 255 + 32767) // 65535).astype(np.uint8)
        rgb = np.repeat(grey[..., None], 3, axis=2)
    elif mode == "F":
        a = np.nan_to_num(np.asarray(im, dtype=np.float32), nan=0.0, posinf=1.0, neginf=0.0)
        grey = np.rint(np.clip(a, 0.0, 1.0) * 255).astype(np.uint8)
        rgb = np.repeat(grey[..., None], 3, axis=2)
    elif mode in _ALPHA_MODES or "transparency" in im.info:
        rgba = np.asarray(im.convert("RGBA"))
        rgb, alpha = rgba[..., :3], rgba[..., 3]
    else:
        rgb = np.asarray(im.convert("RGB"))
    if alpha is None or bool((alpha == 255).all()):
        return np.ascontiguousarray(rgb, dtype=np.uint8), False
    return composite(rgb, alpha, background), True


def composite(rgb: "np.ndarray", alpha: "np.ndarray", background: tuple[int, int, int]) -> "np.ndarray":
    """rgb over an opaque background by alpha (uint8 in, uint8 out, rounded)."""
    import numpy as np

    a = alpha.astype(np.uint32)[..., None]
    bg = np.asarray(background, dtype=np.uint32)
    return ((rgb.astype(np.uint32) * a + bg * (255 - a) + 127) // 255).astype(np.uint8)


def read_still(path: str | Path, background: tuple[int, int, int] = BLACK) -> tuple["np.ndarray", bool]:
    """One picture (the first frame of an animation) as shown: oriented, composited, 8-bit RGB;
    returns (pixels, had transparency)."""
    with open_image(path) as im:
        try:
            with decoding(path):
                im.load()
                return to_rgb(oriented(im), background)
        except BadInputError:
            raise
        except (OSError, SyntaxError, ValueError, EOFError):
            raise BadInputError(f"{path}: cannot read image (truncated or corrupt)") from None


def transparency_note(path, background: tuple[int, int, int]) -> str:
    return f"{path}: transparent pixels composited on {color_text(background)} (--background sets the colour)"
