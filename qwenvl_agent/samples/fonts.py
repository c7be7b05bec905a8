"""Fonts for the sample documents: Pillow's own for Latin text, Debian's Noto CJK for Chinese."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

from PIL import ImageFont

CJK_CANDIDATES = (
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/google-noto-cjk/NotoSansCJK-Regular.ttc",
    "/System/Library/Fonts/PingFang.ttc",
)


class FontMissingError(RuntimeError):
    """No font that can draw Chinese is installed."""


def latin(size: int):
    return ImageFont.load_default(size=size)


@functools.lru_cache(maxsize=1)
def cjk_path() -> str:
    for candidate in CJK_CANDIDATES:
        if Path(candidate).is_file():
            return candidate
    try:  # fontconfig knows where the system keeps its fonts
        found = subprocess.run(["fc-match", "-f", "%{file}", "sans:lang=zh-cn"], capture_output=True, text=True, timeout=10)
        if found.returncode == 0 and found.stdout.strip().endswith((".ttc", ".otf", ".ttf")) and "CJK" in found.stdout:
            return found.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    raise FontMissingError(
        "The Chinese documents need a CJK font and none is installed. On Debian or Ubuntu: "
        "apt-get install fonts-noto-cjk. Or run the English part only: qwenvl eval --lang en."
    )


def cjk(size: int):
    return ImageFont.truetype(cjk_path(), size)


def has_cjk() -> bool:
    try:
        cjk_path()
    except FontMissingError:
        return False
    return True
