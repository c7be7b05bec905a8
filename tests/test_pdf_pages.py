"""PDF pages are measured before any is rendered: a small file cannot make the store render gigapixels."""

from __future__ import annotations

import io

import pypdfium2 as pdfium
import pytest

from qwenvl_agent.tools import pdf as pdf_module
from qwenvl_agent.tools.store import ImageStore
from qwenvl_agent.vlm.errors import ImageInputError


def pdf_of_sizes(*sizes: tuple[float, float]) -> bytes:
    """A PDF of empty pages of these sizes in points (a few hundred bytes, whatever the sizes)."""
    document = pdfium.PdfDocument.new()
    for width, height in sizes:
        document.new_page(width, height)
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


@pytest.fixture
def renders(monkeypatch) -> list:
    """Every page render of the store (done in tools/pdf.py), recorded (and still done)."""
    calls = []
    real = pdf_module._rendered

    def spy(page, scale, *args, **kwargs):
        calls.append(scale)
        return real(page, scale, *args, **kwargs)

    monkeypatch.setattr(pdf_module, "_rendered", spy)
    return calls


def test_a_huge_page_is_refused_before_any_page_is_rendered(renders):
    data = pdf_of_sizes((600, 800), (20000, 20000))
    assert len(data) < 2000
    store = ImageStore(dpi=144)
    with pytest.raises(ImageInputError) as error:
        store.add(data, name="poster.pdf")
    assert "Page 2 of poster.pdf would be 40000x40000 pixels at 144 dpi" in str(error.value)
    assert renders == [] and len(store) == 0


def test_pages_that_together_pass_the_stores_bound_are_refused_before_rendering(renders):
    store = ImageStore(dpi=72, max_total_pixels=3_000_000)
    store.add(pdf_of_sizes((1000, 1000)))  # 1 megapixel held
    renders.clear()
    with pytest.raises(ImageInputError) as error:
        store.add(pdf_of_sizes((1000, 1000), (1000, 1000), (1000, 1000)), name="scans.pdf")
    assert "scans.pdf would bring this conversation's images to 4 megapixels, above the limit of 3" in str(error.value)
    assert renders == [] and store.ids() == ["doc-1/page-1"]


def test_pages_within_the_budget_are_rendered_at_the_store_dpi(renders):
    store = ImageStore(dpi=72, max_total_pixels=3_000_000)
    ids = store.add(pdf_of_sizes((1000, 1000), (500, 2000)))
    assert [store.get(page_id).size for page_id in ids] == [(1000, 1000), (500, 2000)]
    assert renders == [1.0, 1.0]


def test_a_store_can_hold_pages_and_images_to_a_smaller_size(renders):
    from PIL import Image

    store = ImageStore(dpi=72, max_image_pixels=1_000_000)
    with pytest.raises(ImageInputError, match="Page 1 of scan.pdf would be 1001x1000 pixels at 72 dpi, above the 1,000,000-pixel"):
        store.add(pdf_of_sizes((1001, 1000)), name="scan.pdf")
    with pytest.raises(ImageInputError, match="photo.png is 1001x1000 pixels, above the limit of 1,000,000"):
        store.add(Image.new("RGB", (1001, 1000)), name="photo.png")
    assert renders == [] and len(store) == 0
    store.add(pdf_of_sizes((1000, 1000)))
    crop = store.get(store.add_crop("doc-1/page-1", [0, 0, 500, 500], target_pixels=4_000_000))
    assert crop.width * crop.height <= 1_000_000
