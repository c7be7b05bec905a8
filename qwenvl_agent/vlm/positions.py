"""Qwen3-VL's multimodal rotary positions, computed for a whole prompt (both engines prefill in parts)."""

from __future__ import annotations

from .errors import GenerationError
from .reuse import ImageSpan


def mrope_positions(length: int, spans: list[ImageSpan], grids, merge: int):
    """Qwen3-VL's 3-D rotary positions (temporal, height, width) for a whole prompt, and the offset
    between position and index after the last image ("rope delta"), which decoding continues from.

    Text advances all three by one per token; an image's tokens take its grid coordinates, and the text
    after it starts past the image's larger side.
    """
    import torch

    pieces, position, cursor = [], 0, 0
    grid_list = grids.tolist() if grids is not None else []
    if len(grid_list) != len(spans):
        raise GenerationError(f"The prompt has {len(spans)} images but the processor prepared {len(grid_list)}.")
    for span, (t, h, w) in zip(spans, grid_list):
        text = span.start - cursor
        pieces.append(torch.arange(position, position + text).expand(3, -1))
        position += text
        rows, cols = h // merge, w // merge
        if span.end - span.start != t * rows * cols:
            raise GenerationError("An image's placeholder tokens do not match its grid; the processor and the model disagree.")
        temporal = torch.arange(t).repeat_interleave(rows * cols)
        height = torch.arange(rows).repeat_interleave(cols).repeat(t)
        width = torch.arange(cols).repeat(t * rows)
        pieces.append(torch.stack([temporal, height, width]) + position)
        position += max(rows, cols)
        cursor = span.end
    pieces.append(torch.arange(position, position + length - cursor).expand(3, -1))
    position += length - cursor
    return torch.cat(pieces, dim=1), position - length
