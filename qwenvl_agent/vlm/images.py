"""Decode images from every form users hand us, with guards, and translate token budgets to pixels.

Accepted: PIL images, file paths (str or Path), raw bytes, base64 strings, ``data:`` URLs, ``file://``
URLs and http(s) URLs (fetched with a timeout and a size cap unless remote fetching is turned off).
Every image comes back EXIF-rotated, in RGB, and below a pixel-count guard.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import re
import urllib.parse
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageInputError, PixelLimitError, _short
from .fetch import fetch

# One visual token of Qwen3-VL covers 32x32 pixels (patch 16, spatial merge 2).
PIXELS_PER_TOKEN = 32 * 32
DEFAULT_MIN_IMAGE_TOKENS = 64  # the published checkpoint's own smallest image (65,536 pixels)
RELATIVE_MAX = 1000  # Qwen3-VL grounds boxes on a 0-1000 grid, whatever the image size
MAX_IMAGE_PIXELS = 64_000_000  # decompression-bomb guard, well above any real scan or photo
MAX_FETCH_BYTES = 20 * 1024 * 1024
FETCH_TIMEOUT_S = 10.0  # for the whole download, redirects included
_ORIENTATION = 0x0112  # the EXIF tag that says how to turn the picture upright
_BASE64 = re.compile(r"[A-Za-z0-9+/=\s]+")


def tokens_to_pixels(tokens: int) -> int:
    """Pixel count that the processor turns into ``tokens`` visual tokens."""
    return int(tokens) * PIXELS_PER_TOKEN


def pixel_budget(max_image_tokens: int, min_image_tokens: int | None = None) -> dict[str, int]:
    """The smallest and largest pixel count of an image for a budget given in visual tokens. The smallest
    defaults to Qwen3-VL's own (64 tokens), or the largest if that is lower."""
    if max_image_tokens < 1:
        raise ValueError(f"max_image_tokens must be at least 1, got {max_image_tokens}")
    low = min(DEFAULT_MIN_IMAGE_TOKENS, max_image_tokens) if min_image_tokens is None else min_image_tokens
    if low < 1 or low > max_image_tokens:
        raise ValueError(
            f"min_image_tokens must be between 1 and max_image_tokens ({max_image_tokens}), got {low}"
        )
    return {"min_pixels": tokens_to_pixels(low), "max_pixels": tokens_to_pixels(max_image_tokens)}


def load_image(
    source: Any,
    *,
    allow_remote: bool = True,
    allow_private: bool = True,
    local_files: bool | str | os.PathLike = True,
    timeout: float = FETCH_TIMEOUT_S,
    max_bytes: int = MAX_FETCH_BYTES,
) -> Image.Image:
    """Return ``source`` as a decoded RGB PIL image, or raise ``ImageInputError`` saying why not.

    ``allow_remote``: fetch http(s) URLs at all; ``allow_private``: also from loopback, private and other
    non-public addresses (a local user's default; a server's is False). ``local_files``: read paths and
    file:// URLs anywhere (True), nowhere (False), or only inside the given folder."""
    if isinstance(source, Image.Image):
        return _normalise(source, "the PIL image")
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _decode_bytes(bytes(source), "the image bytes")
    if isinstance(source, Path):
        return _read_file(source, local_files)
    if isinstance(source, str):
        return _load_from_string(source.strip(), allow_remote, allow_private, local_files, timeout, max_bytes)
    raise ImageInputError(
        f"Cannot use a {type(source).__name__} as an image: pass a PIL image, a file path, bytes, "
        "base64 text, or a data:, file:// or http(s) URL."
    )


def _load_from_string(text: str, allow_remote: bool, allow_private: bool, local_files, timeout: float, max_bytes: int) -> Image.Image:
    if not text:
        raise ImageInputError("The image reference is empty.")
    lowered = text[:16].lower()
    if lowered.startswith("data:"):
        return _decode_data_url(text)
    if lowered.startswith("file://"):
        try:
            parsed = urllib.parse.urlsplit(text)
        except ValueError as exc:  # e.g. an unclosed [ of an IPv6 host
            raise ImageInputError(f"{_short(text)} is not a valid URL ({exc}).") from exc
        return _read_file(Path(urllib.parse.unquote(parsed.path)), local_files)
    if lowered.startswith(("http://", "https://")):
        if not allow_remote:
            raise ImageInputError(
                f"Fetching remote images is turned off, so {_short(text)} was not downloaded. "
                "Pass the image itself (bytes, base64 or a local path) or allow remote images."
            )
        data = fetch(text, timeout=timeout, max_bytes=max_bytes, allow_private=allow_private)
        return _decode_bytes(data, _short(text))
    if re.match(r"^[a-z][a-z0-9+.-]*://", lowered):
        raise ImageInputError(f"{_short(text)} uses a scheme images cannot be read from: use data:, http(s) or a file.")
    if local_files is True and len(text) < 4096 and _is_file(_expanded(Path(text))):
        return _read_file(Path(text), local_files)
    if _BASE64.fullmatch(text) and len(text) >= 16:
        return _decode_base64(text, "the base64 image")
    return _read_file(Path(text), local_files)


def decode_base64_image(text: str) -> Image.Image:
    """Decode base64 image data (without a ``data:`` header)."""
    return _decode_base64(text, "the base64 image")


def _read_file(path: Path, local_files: bool | str | os.PathLike = True) -> Image.Image:
    if local_files is False:
        raise ImageInputError("Images cannot be read from local files here: send the image itself (base64 or a data: URL).")
    path = _expanded(path)
    if local_files is not True:
        # Checked before looking at the file, so the answer does not tell whether a path outside exists.
        folder = Path(local_files).expanduser().resolve()
        if not _inside(path, folder):
            raise ImageInputError(f"Images can be read only from files inside {folder}.")
    if not _is_file(path):
        raise ImageInputError(f"No image file at {_short(str(path))} (and it is not a URL or base64 image data).")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageInputError(f"Cannot read {path}: {exc.strerror or exc}.") from exc
    return _decode_bytes(data, str(path))


def _expanded(path: Path) -> Path:
    """``path`` with ``~`` and ``~user`` expanded; ``ImageInputError`` when it names no user of this machine."""
    try:
        return path.expanduser()
    except RuntimeError as exc:
        user = str(path).split("/")[0]
        raise ImageInputError(f"{_short(str(path))} begins with {user!r}, but there is no user {user[1:]!r} here.") from exc


def _is_file(path: Path) -> bool:
    """Whether ``path`` is a file; False also for what no file can be called (a NUL, a name too long)."""
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


def _inside(path: Path, folder: Path) -> bool:
    try:
        return path.resolve().is_relative_to(folder)
    except (OSError, ValueError, RuntimeError):  # a NUL, a name too long, a symlink loop: not a file inside
        return False


def _decode_data_url(url: str) -> Image.Image:
    header, sep, payload = url.partition(",")
    if not sep:
        raise ImageInputError("The data URL has no ',' separating its header from the image data.")
    if ";base64" not in header.lower():
        raise ImageInputError("Only base64 data URLs are supported for images (data:image/png;base64,...).")
    return _decode_base64(payload, "the data URL")


def _decode_base64(text: str, what: str) -> Image.Image:
    try:
        data = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ImageInputError(
            f"{_short(text)} is neither an existing file, a URL, nor valid base64 image data."
        ) from exc
    return _decode_bytes(data, what)


def _decode_bytes(data: bytes, what: str) -> Image.Image:
    if not data:
        raise ImageInputError(f"{what} is empty.")
    try:
        image = Image.open(io.BytesIO(data))
        _check_pixels(image, what)
        image.load()
    except ImageInputError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageInputError(f"{what} has too many pixels to be decoded safely.") from exc
    except UnidentifiedImageError as exc:
        raise ImageInputError(f"{what} is not an image file in a format Pillow can read (PNG, JPEG, WebP, …).") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageInputError(f"{what} is not a readable image ({exc}).") from exc
    return _normalise(image, what)


def _check_pixels(image: Image.Image, what: str) -> None:
    width, height = image.size
    if width < 1 or height < 1:
        raise ImageInputError(f"{what} has no pixels ({width}x{height}).")
    if width * height > MAX_IMAGE_PIXELS:
        raise PixelLimitError(
            f"{what} is {width}x{height} pixels, above the {MAX_IMAGE_PIXELS:,}-pixel limit; shrink it first.",
            width=width, height=height, limit=MAX_IMAGE_PIXELS,
        )


def _normalise(image: Image.Image, what: str) -> Image.Image:
    _check_pixels(image, what)
    try:
        if image.getexif().get(_ORIENTATION, 1) != 1:  # exif_transpose copies even an upright image
            image = ImageOps.exif_transpose(image)
    except Exception:  # a broken EXIF block should not cost the user the image
        pass
    if image.mode != "RGB":
        if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
            rgba = image.convert("RGBA")
            background = Image.new("RGB", rgba.size, (255, 255, 255))
            background.paste(rgba, mask=rgba.getchannel("A"))
            image = background
        else:
            image = image.convert("RGB")
    return image
