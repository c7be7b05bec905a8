"""The model sees the image it is asked about: a crop, a zoom, a line of a page or an image drawn on after
an earlier call is encoded from its own pixels, never served the features (or the prompt prefix) of the
image it came from. Each test records what the vision tower was actually given and compares it with the
processor's output for the image the caller meant."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch
from documents import draw_invoice
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import HumanMessage
from PIL import Image, ImageDraw

from qwenvl_agent.tools import ImageStore, make_tools
from qwenvl_agent.vlm import ChatQwenVL
from qwenvl_agent.vlm.generation import _budget_arguments, fit_for_model
from qwenvl_agent.vlm.images import pixel_budget
from qwenvl_agent.vlm.testing import scripted_replies

ONE_IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"


def noise(seed: int, size=(256, 192)) -> Image.Image:
    """A random picture, so that any two crops of it differ."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


def ask(picture: Image.Image, text: str = "What is it?") -> list[HumanMessage]:
    return [HumanMessage(content=[{"type": "image", "image": picture}, {"type": "text", "text": text}])]


def run(tool, **args):
    return tool.invoke({"name": tool.name, "args": args, "id": "call-1", "type": "tool_call"})


@contextlib.contextmanager
def vision_inputs(runtime):
    """Every pass of the vision tower within the block, as ``(pixel rows, grid)`` the tower received."""
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    if runtime.engine_name == "torch":
        def record(module, args, kwargs):
            seen.append((args[0].detach().clone(), kwargs["grid_thw"].detach().clone()))

        handle = runtime.model.model.visual.register_forward_pre_hook(record, with_kwargs=True)
        try:
            yield seen
        finally:
            handle.remove()
        return
    engine = runtime.engine
    encode = engine._encode  # the OpenVINO engine's one call into its vision model

    def recording(pixels, grid):
        seen.append((torch.as_tensor(pixels).clone(), torch.as_tensor(grid).clone()))
        return encode(pixels, grid)

    engine._encode = recording
    try:
        yield seen
    finally:
        engine._encode = encode


def processed(runtime, picture: Image.Image, max_image_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """What the processor makes of ``picture`` alone at this budget: its pixel rows and grid."""
    budget = _budget_arguments(pixel_budget(max_image_tokens))
    inputs = runtime.processor(text=[ONE_IMAGE], images=[fit_for_model(picture)], return_tensors="pt", **budget)
    return inputs["pixel_values"], inputs["image_grid_thw"]


def assert_encoded(seen, runtime, pictures, max_image_tokens: int) -> None:
    """The vision tower ran once per picture, in order, on exactly the pixels the processor makes of it."""
    assert len(seen) == len(pictures), f"{len(seen)} vision passes for {len(pictures)} new images"
    for number, ((pixels, grid), picture) in enumerate(zip(seen, pictures, strict=True), start=1):
        want_pixels, want_grid = processed(runtime, picture, max_image_tokens)
        assert grid.tolist() == want_grid.tolist(), f"image {number}: the tower got another image's grid"
        assert torch.equal(pixels, want_pixels.to(pixels.dtype)), f"image {number}: the tower got other pixels"


class _Recorder(BaseCallbackHandler):
    """The images each chat-model call was given (ChatQwenVL gets the store's image objects themselves)."""

    def __init__(self):
        self.images: list[list[Image.Image]] = []

    def on_chat_model_start(self, serialized, messages, **kwargs):
        blocks = [b for m in messages[0] if isinstance(m.content, list) for b in m.content if isinstance(b, dict)]
        self.images.append([b["image"] for b in blocks if b.get("type") == "image"])


@pytest.fixture
def llm(tiny_model, engine):
    return ChatQwenVL(model=tiny_model, engine=engine)


def test_a_zoom_is_encoded_from_its_own_pixels(llm):
    store = ImageStore()
    store.add(noise(1601), name="photo.png")
    tools = {t.name: t for t in make_tools(llm, store, ocr_engine="vlm")}
    describe = tools["describe_image"]
    with scripted_replies(llm.runtime, ["A picture.", "A part of it."]) as left:
        assert run(describe, image_id="img-1").status == "success"
        zoom = run(tools["zoom_image"], image_id="img-1", box=[0, 0, 500, 500])
        assert "img-1/zoom-1" in zoom.content
        with vision_inputs(llm.runtime) as seen:
            message = run(describe, image_id="img-1/zoom-1")
    assert message.status == "success", message.content
    assert left == []
    crop = store.get("img-1/zoom-1")
    assert crop.size != store.get("img-1").size  # the quarter, enlarged
    assert_encoded(seen, llm.runtime, [crop], describe.max_image_tokens)


def test_an_ocr_region_is_encoded_from_its_own_pixels(llm):
    store = ImageStore()
    store.add(noise(1602), name="scan.png")
    ocr = make_tools(llm, store, ocr_engine="vlm")[0]
    with scripted_replies(llm.runtime, ["The whole page.", "The top left."]) as left:
        assert run(ocr, image_id="img-1").status == "success"
        with vision_inputs(llm.runtime) as seen:
            message = run(ocr, image_id="img-1", region=[0, 0, 500, 500])
    assert message.status == "success", message.content
    assert left == [] and message.artifact["image_ids"] == ["img-1", "img-1/region-1"]
    assert_encoded(seen, llm.runtime, [store.get("img-1/region-1")], ocr.max_image_tokens)


def test_each_hybrid_ocr_line_crop_is_encoded_from_its_own_pixels(llm):
    store = ImageStore()
    store.add(draw_invoice(), name="invoice.png")
    tools = {t.name: t for t in make_tools(llm, store, ocr_engine="hybrid")}
    ocr = tools["ocr_image"]
    ocr.hybrid_threshold = 1.01  # every line is uncertain: each goes to the model as a crop of the page
    recorder = _Recorder()
    with scripted_replies(llm.runtime, ["An invoice.", "1: INVOICE"]) as left:
        assert run(tools["describe_image"], image_id="img-1").status == "success"  # the page, seen whole first
        llm.callbacks = [recorder]
        with vision_inputs(llm.runtime) as seen:
            message = run(ocr, image_id="img-1")
    assert message.status == "success", message.content
    assert left == []
    (crops,) = recorder.images
    assert len(crops) > 1 and all(crop.height < store.get("img-1").height / 2 for crop in crops)  # lines, not the page
    assert len({crop.tobytes() + bytes(str(crop.size), "ascii") for crop in crops}) == len(crops)  # all differ
    assert_encoded(seen, llm.runtime, crops, 256)


def test_the_same_image_at_two_budgets_is_encoded_twice(llm):
    picture = noise(1604)
    passes = []
    for tokens in (16, 64):
        with vision_inputs(llm.runtime) as seen:
            llm.invoke(ask(picture), max_image_tokens=tokens, max_tokens=2)
        assert_encoded(seen, llm.runtime, [picture], tokens)
        passes.append(seen[0][1].tolist())
    assert passes[0] != passes[1]


def test_a_crop_after_its_parent_is_encoded_without_a_shape_mismatch(llm):
    """As a user would: ask about an image, then about ``image.crop(...)`` of it."""
    picture = noise(1605)
    llm.invoke(ask(picture), max_tokens=2)
    crop = picture.crop((0, 0, 100, 80))
    with vision_inputs(llm.runtime) as seen:
        llm.invoke(ask(crop), max_tokens=2)
    assert_encoded(seen, llm.runtime, [crop], llm.max_image_tokens)


def test_an_image_drawn_on_after_a_call_is_encoded_again(llm):
    picture = noise(1606)
    llm.invoke(ask(picture), max_tokens=2)
    ImageDraw.Draw(picture).rectangle((10, 10, 120, 90), fill="white")
    with vision_inputs(llm.runtime) as seen:
        llm.invoke(ask(picture), max_tokens=2)
    assert_encoded(seen, llm.runtime, [picture], llm.max_image_tokens)
