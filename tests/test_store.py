"""ImageStore: ids for images, PDF pages and crops; guards; messages; concurrent use."""

from __future__ import annotations

import io
import threading

import pytest
from PIL import Image, ImageDraw, ImageFont

from qwenvl_agent.tools.store import ImageInfo, ImageStore, UnknownImageError
from qwenvl_agent.vlm.errors import ImageInputError


def _drawing(text: str, size: tuple[int, int] = (400, 200)) -> Image.Image:
    image = Image.new("RGB", size, "white")
    ImageDraw.Draw(image).text((10, 10), text, fill="black", font=ImageFont.load_default(size=24))
    return image


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _pdf(pages: int, size: tuple[int, int] = (200, 100)) -> bytes:
    """A PDF of ``pages`` pages; at Pillow's 72 dpi each page is ``size`` points."""
    images = [_drawing(f"page {number}", size) for number in range(1, pages + 1)]
    buffer = io.BytesIO()
    images[0].save(buffer, format="PDF", save_all=True, append_images=images[1:], resolution=72)
    return buffer.getvalue()


def _encrypted_pdf() -> bytes:
    """A one-page PDF behind the standard security handler; its /U entry matches no password."""
    return (
        b"%PDF-1.4\n1 0 obj <</Type/Catalog/Pages 2 0 R>> endobj\n"
        b"2 0 obj <</Type/Pages/Kids[3 0 R]/Count 1>> endobj\n"
        b"3 0 obj <</Type/Page/Parent 2 0 R/MediaBox[0 0 100 100]>> endobj\n"
        b"4 0 obj <</Filter/Standard/V 1/R 2/O<" + b"11" * 32 + b">/U<" + b"22" * 32 + b">/P -4>> endobj\n"
        b"trailer <</Root 1 0 R/Size 5/Encrypt 4 0 R"
        b"/ID[<00112233445566778899aabbccddeeff><00112233445566778899aabbccddeeff>]>>\n%%EOF\n"
    )


def test_images_get_counted_ids_from_every_kind_of_source(tmp_path):
    path = tmp_path / "note.png"
    _drawing("hello").save(path)
    store = ImageStore()

    ids = [store.add(path), store.add(str(path)), store.add(_png(_drawing("bytes"))), store.add(_drawing("pil"))]

    assert ids == ["img-1", "img-2", "img-3", "img-4"]
    assert store.ids() == ids
    assert len(store) == 4 and "img-4" in store and "img-5" not in store
    assert store.get("img-1").size == (400, 200) and store.get("img-1").mode == "RGB"


def test_pdf_pages_are_rendered_at_the_store_dpi(tmp_path):
    path = tmp_path / "report.pdf"
    path.write_bytes(_pdf(3))
    store = ImageStore(dpi=144)

    first = store.add(path)
    second = store.add(_pdf(1))
    image = store.add(_drawing("after"))

    assert first == ["doc-1/page-1", "doc-1/page-2", "doc-1/page-3"]
    assert second == ["doc-2/page-1"]
    assert image == "img-1"
    assert store.get("doc-1/page-2").size == (400, 200)  # 200x100 points at 2x (144/72)
    assert store.info("doc-1/page-3") == ImageInfo(
        "doc-1/page-3", "page", "document 1, page 3", None, 3, None, (400, 200)
    )


def test_progress_is_reported_after_each_page():
    calls = []
    ImageStore(dpi=36).add(_pdf(3), progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 3), (2, 3), (3, 3)]


def test_pdf_over_the_page_cap_fails_before_rendering():
    store = ImageStore(max_pages=2)
    calls = []
    with pytest.raises(ImageInputError) as error:
        store.add(_pdf(3), name="big.pdf", progress=lambda *args: calls.append(args))
    message = str(error.value)
    assert "big.pdf has 3 pages" in message and "limit of 2" in message and "max_pages=3" in message
    assert calls == [] and len(store) == 0


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"%PDF-1.7\nthis is not really a PDF", "not a readable PDF"),
        (_encrypted_pdf(), "encrypted"),
        (b"definitely not an image", None),  # load_image's own message
        (b"", None),
    ],
)
def test_unreadable_input_raises_image_input_error(data, expected):
    store = ImageStore()
    with pytest.raises(ImageInputError, match=expected):
        store.add(data)
    assert len(store) == 0


def test_garbage_pdf_file_is_named_by_its_label(tmp_path):
    path = tmp_path / "broken.pdf"
    path.write_bytes(b"%PDF-1.4\n1 0 obj garbage")
    with pytest.raises(ImageInputError, match="upload.pdf is not a readable PDF"):
        ImageStore().add(path, name="upload.pdf")


def test_missing_file_raises_image_input_error(tmp_path):
    with pytest.raises(ImageInputError, match="No image file"):
        ImageStore().add(tmp_path / "absent.png")


def test_exif_orientation_is_applied():
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: display rotated 90 degrees clockwise
    buffer = io.BytesIO()
    _drawing("rotated", (300, 100)).save(buffer, format="JPEG", exif=exif)

    store = ImageStore()
    image_id = store.add(buffer.getvalue())

    assert store.get(image_id).size == (100, 300)
    assert store.info(image_id).size == (100, 300)


def test_a_region_read_by_ocr_is_named_as_one_and_leads_back_to_its_page():
    store = ImageStore(dpi=72, index_pages=False)
    store.add(_pdf(1))
    zoom = store.add_crop("doc-1/page-1", (0, 0, 500, 500))
    region = store.add_crop("doc-1/page-1", (0, 0, 500, 500), name="region")
    inner = store.add_crop(region, (0, 0, 500, 500))
    assert (zoom, region, inner) == ("doc-1/page-1/zoom-1", "doc-1/page-1/region-1", "doc-1/page-1/region-1/zoom-1")
    assert store.info(region).label.endswith(", region 1") and store.info(region).kind == "crop"
    assert [store.origin(i) for i in (zoom, region, inner, "doc-1/page-1")] == ["doc-1/page-1"] * 4


def test_crops_get_ids_per_parent_and_the_pixels_of_their_box():
    store = ImageStore(dpi=72)
    store.add(Image.new("RGB", (1000, 500), "white"))
    store.add(_pdf(2))

    first = store.add_crop("img-1", (100, 200, 600, 800))
    second = store.add_crop("img-1", [0, 0, 1000, 1000])
    on_page = store.add_crop("doc-1/page-2", (0, 0, 500, 500))
    nested = store.add_crop(first, (0, 0, 500, 500))

    assert (first, second, on_page, nested) == (
        "img-1/zoom-1", "img-1/zoom-2", "doc-1/page-2/zoom-1", "img-1/zoom-1/zoom-1"
    )
    assert store.get(first).size == (500, 300)
    assert store.get(second).size == (1000, 500)
    assert store.get(on_page).size == (100, 50)
    assert store.get(nested).size == (250, 150)
    info = store.info(on_page)
    assert (info.kind, info.parent, info.page, info.box) == ("crop", "doc-1/page-2", 2, (0, 0, 500, 500))
    assert info.label == "document 1, page 2, zoom 1"


def test_crop_box_is_clamped_to_the_image():
    store = ImageStore()
    store.add(Image.new("RGB", (200, 100)))
    crop_id = store.add_crop("img-1", (-50, 500, 1200, 1000))
    assert store.info(crop_id).box == (0, 500, 1000, 1000)
    assert store.get(crop_id).size == (200, 50)


def test_a_tiny_box_still_gives_at_least_one_pixel():
    store = ImageStore()
    store.add(Image.new("RGB", (100, 100)))
    assert store.get(store.add_crop("img-1", (500, 500, 500.5, 500.5))).size == (1, 1)


@pytest.mark.parametrize(
    ("box", "hint"),
    [
        ((600, 100, 200, 400), "selects no area"),
        ((100, 100, 100, 400), "selects no area"),
        ((1100, 0, 1500, 500), "selects no area"),
        ((1, 2, 3), "four numbers"),
        (("left", 0, 10, 10), "not a number"),
        ("0, 0, 10, 10", "four numbers"),
        (None, "four numbers"),
        ((0, 0, float("nan"), 10), "four numbers"),
    ],
)
def test_invalid_boxes_say_what_a_box_must_be(box, hint):
    store = ImageStore()
    store.add(Image.new("RGB", (100, 100)))
    with pytest.raises(ValueError, match=hint) as error:
        store.add_crop("img-1", box)
    assert "box must be [x1, y1, x2, y2]" in str(error.value)
    assert store.ids() == ["img-1"]


def test_unknown_id_lists_the_known_ones():
    store = ImageStore()
    with pytest.raises(UnknownImageError, match="No images have been added yet"):
        store.get("img-1")
    store.add(Image.new("RGB", (10, 10)))
    store.add(_pdf(1))

    with pytest.raises(KeyError) as error:
        store.get("img-9")

    assert str(error.value) == "No image 'img-9'. Known ids: img-1, doc-1/page-1"
    with pytest.raises(UnknownImageError):
        store.add_crop("img-9", (0, 0, 10, 10))
    with pytest.raises(UnknownImageError):
        store.info("doc-2/page-1")


@pytest.mark.parametrize("spelling", [" img-1 ", "'img-1'", '"img-1"', "`img-1`", "[img-1]", "IMG-1", "img-1."])
def test_ids_are_found_despite_wrapping_a_model_adds(spelling):
    store = ImageStore()
    store.add(Image.new("RGB", (10, 10)))
    assert spelling in store
    assert store.get(spelling).size == (10, 10)
    assert store.add_crop(spelling, (0, 0, 500, 500)) == "img-1/zoom-1"


def test_describe_lists_every_id_with_label_and_size():
    store = ImageStore(dpi=72)
    assert store.describe() == "No images yet."
    store.add(Image.new("RGB", (1240, 1754)), name="invoice.png")
    store.add(_pdf(2), name="report\n.pdf")
    store.add(Image.new("RGB", (20, 10)))
    store.add_crop("img-1", (0, 0, 500, 250))

    assert store.describe().splitlines() == [
        "img-1: invoice.png (1240x1754)",
        "doc-1/page-1: report .pdf, page 1 (200x100)",
        "doc-1/page-2: report .pdf, page 2 (200x100)",
        "img-2: image 2 (20x10)",
        "img-1/zoom-1: invoice.png, zoom 1, box [0, 0, 500, 250] (620x439)",
    ]


def test_name_is_only_a_label_never_a_path(tmp_path):
    store = ImageStore()
    image_id = store.add(_png(Image.new("RGB", (5, 5))), name=str(tmp_path / "does-not-exist.png"))
    assert store.info(image_id).label.endswith("does-not-exist.png")
    assert not (tmp_path / "does-not-exist.png").exists()
    long_name = store.info(store.add(_png(Image.new("RGB", (5, 5))), name="/deep" * 60 + "/scan 7.png")).label
    assert long_name.endswith("/scan 7.png") and long_name.startswith("…") and len(long_name) <= 80


def test_invalid_settings_are_refused():
    with pytest.raises(ValueError, match="dpi"):
        ImageStore(dpi=0)
    with pytest.raises(ValueError, match="max_pages"):
        ImageStore(max_pages=0)


def test_concurrent_adds_get_unique_ids():
    store = ImageStore(dpi=36)
    image_bytes = _png(Image.new("RGB", (8, 8)))
    pdf_bytes = _pdf(2)
    start = threading.Barrier(8)
    results: list[str | list[str]] = []
    results_lock = threading.Lock()

    def worker(number: int) -> None:
        start.wait()
        for _ in range(5):
            added = store.add(pdf_bytes if number % 4 == 0 else image_bytes)
            with results_lock:
                results.append(added)
            store.describe()

    threads = [threading.Thread(target=worker, args=(number,)) for number in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    images = sorted(result for result in results if isinstance(result, str))
    documents = [result for result in results if isinstance(result, list)]
    assert images == sorted(f"img-{n}" for n in range(1, 31))
    assert sorted(pages[0] for pages in documents) == sorted(f"doc-{n}/page-1" for n in range(1, 11))
    assert all(pages[1] == pages[0].replace("page-1", "page-2") for pages in documents)
    assert len(store) == 30 + 20 == len(set(store.ids()))
