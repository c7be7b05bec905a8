"""Sample pages written as PDFs: with a text layer (as an office program saves them) or scanned (pictures only).

Both carry a fixed creation date, so the same pages give the same bytes every time.
"""

from __future__ import annotations

import datetime
import io
import time
from collections.abc import Sequence

from PIL import Image

_CREATED = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)


def text_layer_pdf(pages: Sequence[Sequence[str]], font_size: int = 11) -> bytes:
    """Each page's lines as a PDF page with a text layer (Latin text: other letters become ``?``)."""
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_creation_date(_CREATED)
    pdf.set_font("helvetica", size=font_size)
    for lines in pages:
        pdf.add_page()
        for line in lines:
            pdf.cell(text=line.encode("latin-1", "replace").decode("latin-1"), new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())


def scanned_pdf(images: Sequence[Image.Image], resolution: float = 96) -> bytes:
    """The images as a PDF of pictures only, one a page, as a scanner makes it."""
    buffer = io.BytesIO()
    pictures = [image.convert("RGB") for image in images]
    stamp = time.gmtime(_CREATED.timestamp())
    pictures[0].save(buffer, "PDF", save_all=True, append_images=pictures[1:], resolution=resolution,
                     creationDate=stamp, modDate=stamp)
    return buffer.getvalue()
