"""Locate with Qwen3-VL's grounding, a zoom that magnifies (PDF regions rendered anew), and image budgets."""

from __future__ import annotations

import io

import numpy as np
import pytest
from documents import draw_invoice, draw_text_image

from qwenvl_agent.tools import ImageStore, make_tools
from qwenvl_agent.vlm import ChatQwenVL
from qwenvl_agent.vlm.testing import scripted_replies

GROUNDING = '```json\n[\n  {"bbox_2d": [40, 700, 520, 930], "label": "total"},\n  {"bbox_2d": [30, 60, 600, 200], "label": "invoice number"}\n]\n```'


def run(tool, **args):
    return tool.invoke({"name": tool.name, "args": args, "id": "call-1", "type": "tool_call"})


@pytest.fixture
def llm(tiny_model):
    return ChatQwenVL(model=tiny_model, engine="torch", max_tokens=120)


@pytest.fixture
def tools(llm):
    store = ImageStore()
    store.add(draw_invoice())
    return {t.name: t for t in make_tools(llm, store, ocr_engine="rapidocr")}


def pdf_page_bytes() -> bytes:
    buffer = io.BytesIO()
    draw_text_image(["INVOICE No. 12345678", "Total: 1,500.00"], size=(600, 400)).save(buffer, "PDF", resolution=72)
    return buffer.getvalue()


def test_locate_returns_boxes_and_labels_and_registers_nothing(llm, tools):
    store = tools["locate_in_image"].store
    with scripted_replies(llm.runtime, [GROUNDING]):
        message = run(tools["locate_in_image"], image_id="img-1", what="the total")
    boxes = message.artifact["data"]["boxes"]
    assert [b["label"] for b in boxes] == ["total", "invoice number"]
    assert boxes[0]["bbox_2d"] == [40, 700, 520, 930]
    assert "total: [40, 700, 520, 930]" in message.content
    assert store.ids() == ["img-1"]


def test_zoom_takes_a_located_box_and_magnifies_an_image_region(tools):
    zoom = tools["zoom_image"]
    message = run(zoom, image_id="img-1", box={"bbox_2d": [0, 500, 500, 1000], "label": "total"})
    crop_id = message.artifact["image_ids"][1]
    crop = zoom.store.get(crop_id)
    region_pixels = (520 // 2) * (200 // 2)
    assert crop.width * crop.height > 4 * region_pixels, "the crop is enlarged towards the tool's image budget"
    assert crop.width * crop.height <= zoom.max_image_tokens * 1024 * 1.1


@pytest.mark.parametrize(
    "box",
    [
        '{"bbox_2d": [0, 500, 500, 1000], "label": "total"}',
        [{"bbox_2d": [0, 500, 500, 1000], "label": "total"}],
        '[{"bbox_2d": [0, 500, 500, 1000], "label": "total"}]',
        "{'bbox_2d': [0, 500, 500, 1000], 'label': 'total',}",
    ],
)
def test_a_located_box_is_taken_as_text_or_alone_in_a_list(tools, box):
    message = run(tools["zoom_image"], image_id="img-1", box=box)
    assert message.status == "success" and message.artifact["data"]["box"] == [0, 500, 500, 1000]


def test_zooming_into_a_pdf_page_renders_the_region_again_from_the_pdf(llm):
    store = ImageStore(dpi=72)
    (page,) = store.add(pdf_page_bytes())
    zoom = {t.name: t for t in make_tools(llm, store)}["zoom_image"]
    first = zoom.store.get(run(zoom, image_id=page, box=[0, 0, 500, 500]).artifact["image_ids"][1])
    again = zoom.store.get(run(zoom, image_id=first_id(store, page), box=[0, 0, 500, 500]).artifact["image_ids"][1])
    upscaled = store.get(page).crop((0, 0, 300, 200)).resize(first.size)
    # rendered from the PDF, the text has crisp edges: far more pure black and white than an upscaled crop
    def crisp(image):
        pixels = np.asarray(image.convert("L"))
        return float(((pixels < 30) | (pixels > 225)).mean())

    assert first.width * first.height > 8 * 300 * 200
    assert crisp(first) > crisp(upscaled)
    assert again.size[0] > 0 and store.info(first_id(store, page)).page == 1


def first_id(store: ImageStore, page: str) -> str:
    return f"{page}/zoom-1"


def test_small_images_get_the_checkpoints_own_minimum_budget(llm):
    tiny = draw_text_image(["x"], size=(32, 32))
    content = [{"type": "image", "image": tiny}, {"type": "text", "text": "Read."}]
    with_image = llm.invoke([{"role": "user", "content": content}], max_tokens=1).usage_metadata["input_tokens"]
    text_only = llm.invoke([{"role": "user", "content": content[1:]}], max_tokens=1).usage_metadata["input_tokens"]
    assert with_image - text_only >= 64


def test_budgets_given_to_make_tools_reach_every_tool(llm):
    tools = make_tools(llm, ImageStore(), max_image_tokens=128, max_tokens=64)
    assert {t.max_image_tokens for t in tools} == {128} and {t.max_tokens for t in tools} == {64}
    assert len(tools) == 7 and tools[4].name == "locate_in_image"
