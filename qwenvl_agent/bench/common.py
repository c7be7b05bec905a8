"""What the benchmark's worker and its agent runs share: progress lines, peak memory, the seed's image size."""

from __future__ import annotations

import resource
import sys

from PIL import Image


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024


def shrink_like_the_seed(image: Image.Image, max_size: int = 512) -> Image.Image:
    scale = max_size / max(image.size)
    return image.resize((int(image.width * scale), int(image.height * scale)), Image.Resampling.LANCZOS)
