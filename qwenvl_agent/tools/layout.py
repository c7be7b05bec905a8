"""Text lines found by an OCR engine, put back into reading order: rows, columns, and Markdown tables.

An OCR engine finds pieces of text and their boxes, not a page. These pure functions rebuild it: pieces
whose vertical centres are close form a row; rows are read top to bottom and pieces left to right; a run
of rows whose pieces line up in three or more columns becomes a Markdown table; a wide vertical gap
becomes a blank line.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class TextPiece:
    """One piece of text an OCR engine found: its box in pixels ``(x1, y1, x2, y2)`` and its confidence."""

    text: str
    box: tuple[float, float, float, float]
    score: float = 1.0

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    @property
    def center_y(self) -> float:
        return (self.box[1] + self.box[3]) / 2


def group_rows(pieces: Sequence[TextPiece]) -> list[list[TextPiece]]:
    """Pieces grouped into rows, top to bottom, each row left to right."""
    rows: list[list[TextPiece]] = []
    for piece in sorted(pieces, key=lambda p: (p.center_y, p.box[0])):
        if rows:
            row = rows[-1]
            row_center = statistics.fmean(p.center_y for p in row)
            row_height = statistics.median(p.height for p in row)
            if abs(piece.center_y - row_center) <= 0.5 * max(piece.height, row_height):
                row.append(piece)
                continue
        rows.append([piece])
    return [sorted(row, key=lambda p: p.box[0]) for row in rows]


def _columns(rows: Sequence[Sequence[TextPiece]]) -> list[tuple[float, float]]:
    """The x-ranges of the columns that the pieces of ``rows`` fall into (overlapping ranges merged)."""
    spans = sorted((p.box[0], p.box[2]) for row in rows for p in row)
    columns: list[list[float]] = []
    for left, right in spans:
        if columns and left <= columns[-1][1]:
            columns[-1][1] = max(columns[-1][1], right)
        else:
            columns.append([left, right])
    return [(left, right) for left, right in columns]


def _cells(row: Sequence[TextPiece], columns: Sequence[tuple[float, float]]) -> list[str]:
    cells = [""] * len(columns)
    for piece in row:
        index = next(i for i, (left, right) in enumerate(columns) if left <= piece.box[0] <= right)
        cells[index] = f"{cells[index]} {piece.text}".strip()
    return cells


def _is_table(rows: Sequence[Sequence[TextPiece]]) -> bool:
    if len(rows) < 2:
        return False
    columns = _columns(rows)
    if len(columns) < 3:
        return False
    filled = [sum(1 for cell in _cells(row, columns) if cell) for row in rows]
    return all(count >= 2 for count in filled) and statistics.fmean(filled) >= 0.6 * len(columns)


def _table(rows: Sequence[Sequence[TextPiece]]) -> list[str]:
    columns = _columns(rows)
    lines = []
    for index, row in enumerate(rows):
        cells = [cell.replace("|", "\\|") for cell in _cells(row, columns)]
        lines.append("| " + " | ".join(cells) + " |")
        if index == 0:
            lines.append("|" + " --- |" * len(columns))
    return lines


def _plain(row: Sequence[TextPiece]) -> str:
    """A row as one line; a gap wider than two characters is kept as three spaces."""
    text = row[0].text
    for previous, piece in zip(row, row[1:]):
        gap = piece.box[0] - previous.box[2]
        text += ("   " if gap > 2 * max(previous.height, piece.height) * 0.6 else " ") + piece.text
    return text


def _gap(upper: Sequence[TextPiece], lower: Sequence[TextPiece]) -> float:
    return min(p.box[1] for p in lower) - max(p.box[3] for p in upper)


def to_text(pieces: Sequence[TextPiece]) -> str:
    """The page's text in reading order, tables as Markdown, paragraphs apart."""
    rows = group_rows([p for p in pieces if p.text.strip()])
    if not rows:
        return ""
    line_height = statistics.median(p.height for row in rows for p in row)
    blocks: list[list[list[TextPiece]]] = []  # runs of rows that may form a table, or single rows
    for row in rows:
        close = bool(blocks) and _gap(blocks[-1][-1], row) <= 1.5 * line_height  # no paragraph break between
        if close and len(row) >= 2 and all(len(r) >= 2 for r in blocks[-1]) and _is_table(blocks[-1] + [row]):
            blocks[-1].append(row)
        else:
            blocks.append([row])
    lines: list[str] = []
    previous_bottom = None
    for block in blocks:
        if previous_bottom is not None and min(p.box[1] for p in block[0]) - previous_bottom > 1.5 * line_height:
            lines.append("")
        lines += _table(block) if len(block) >= 2 else [_plain(block[0])]
        previous_bottom = max(p.box[3] for p in block[-1])
    return "\n".join(lines)
