"""Image decoding: every accepted form, the guards, and clear errors."""

from __future__ import annotations

import base64
import http.server
import threading
from pathlib import Path

import pytest
from documents import draw_text_image, png_bytes
from PIL import Image

from qwenvl_agent.vlm import ImageInputError, load_image
from qwenvl_agent.vlm import images as images_module
from qwenvl_agent.vlm.images import pixel_budget


@pytest.fixture(scope="module")
def http_server(tmp_path_factory):
    """A real HTTP server on loopback serving a PNG, a text file and a large file."""
    root = tmp_path_factory.mktemp("www")
    (root / "page.png").write_bytes(png_bytes(draw_text_image(["served"], size=(64, 48))))
    (root / "notes.txt").write_text("not an image")
    (root / "big.png").write_bytes(b"\x89PNG" + b"0" * 4096)

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_every_local_form_decodes_to_the_same_rgb_image(tmp_path):
    original = draw_text_image(["hello"], size=(64, 40))
    data = png_bytes(original)
    path = tmp_path / "page.png"
    path.write_bytes(data)
    b64 = base64.b64encode(data).decode()
    forms = [original, data, bytearray(data), path, str(path), f"file://{path}", b64, f"data:image/png;base64,{b64}"]
    for form in forms:
        image = load_image(form)
        assert image.mode == "RGB" and image.size == (64, 40), form if not isinstance(form, bytes) else "bytes"
        assert image.getpixel((0, 0)) == (255, 255, 255)


def test_transparency_becomes_white_and_exif_orientation_is_applied(tmp_path):
    rgba = Image.new("RGBA", (10, 20), (0, 0, 0, 0))
    assert load_image(rgba).getpixel((5, 5)) == (255, 255, 255)
    rotated = Image.new("RGB", (30, 10), "red")
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    path = tmp_path / "phone.jpg"
    rotated.save(path, exif=exif)
    assert load_image(path).size == (10, 30)


def test_http_images_are_fetched_from_a_real_server(http_server):
    assert load_image(f"{http_server}/page.png").size == (64, 48)


def test_remote_fetching_can_be_turned_off(http_server):
    with pytest.raises(ImageInputError, match="remote images is turned off"):
        load_image(f"{http_server}/page.png", allow_remote=False)


def test_remote_errors_name_the_problem(http_server):
    with pytest.raises(ImageInputError, match="Could not download"):
        load_image(f"{http_server}/missing.png")
    with pytest.raises(ImageInputError, match="not an image file"):
        load_image(f"{http_server}/notes.txt")
    with pytest.raises(ImageInputError, match="limit"):
        load_image(f"{http_server}/big.png", max_bytes=1000)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (b"", "empty"),
        (b"definitely not a picture", "not an image file"),
        ("", "empty"),
        ("/no/such/file.png", "No image file"),
        ("data:image/png,rawbytes", "base64"),
        ("data:image/png;base64,@@@@", "base64"),
        (12345, "Cannot use a int"),
    ],
)
def test_unreadable_inputs_raise_image_input_error(source, message):
    with pytest.raises(ImageInputError, match=message):
        load_image(source)


def test_truncated_image_is_rejected():
    data = png_bytes(draw_text_image(["x"] * 5))
    with pytest.raises(ImageInputError):
        load_image(data[: len(data) // 2])


def test_pixel_guard_rejects_decompression_bombs(monkeypatch):
    monkeypatch.setattr(images_module, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(ImageInputError, match="pixel limit"):
        load_image(png_bytes(Image.new("RGB", (20, 20))))


def test_pixel_budget_is_tokens_times_32_squared():
    assert pixel_budget(1024) == {"min_pixels": 64 * 1024, "max_pixels": 1024 * 1024}  # Qwen3-VL's own minimum
    assert pixel_budget(16) == {"min_pixels": 16 * 1024, "max_pixels": 16 * 1024}
    assert pixel_budget(256, 64) == {"min_pixels": 64 * 1024, "max_pixels": 256 * 1024}
    with pytest.raises(ValueError):
        pixel_budget(0)
    with pytest.raises(ValueError):
        pixel_budget(16, 32)


def test_paths_given_as_path_objects_are_not_confused_with_base64(tmp_path):
    missing = Path(tmp_path) / "a" / "b.png"
    with pytest.raises(ImageInputError, match="No image file"):
        load_image(missing)
