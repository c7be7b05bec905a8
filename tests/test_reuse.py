"""Reuse of earlier work: the vision-feature cache and prompt-prefix reuse give the same greedy output as
computing everything again, never serve another image's or budget's result, and stay within memory."""

from __future__ import annotations

import resource

import numpy as np
import pytest
import torch
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from PIL import Image, ImageDraw

from qwenvl_agent.vlm import ChatQwenVL, load_runtime
from qwenvl_agent.vlm.positions import mrope_positions
from qwenvl_agent.vlm.reuse import ImageSpan, PrefixCache, PrefixEntry, VisionCache, find_image_spans, image_key

SWITCHES = {
    "no reuse": {"cache_images": False, "reuse_prefix": False},
    "vision cache": {"cache_images": True, "reuse_prefix": False},
    "prefix reuse": {"cache_images": False, "reuse_prefix": True},
    "both": {"cache_images": True, "reuse_prefix": True},
}


def noise(seed: int, size=(160, 128)) -> Image.Image:
    """A random picture: the tiny model's replies depend on it, so a wrong cached image shows."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


def image(picture: Image.Image) -> dict:
    return {"type": "image", "image": picture}


def user(*parts) -> HumanMessage:
    return HumanMessage(content=[p if isinstance(p, dict) else {"type": "text", "text": p} for p in parts])


A, B, C = noise(1), noise(2), noise(3, size=(96, 200))
TOOLS = [{"type": "function", "function": {"name": "ocr_image", "description": "Read the text of an image.",
          "parameters": {"type": "object", "properties": {"image_id": {"type": "string"}}, "required": ["image_id"]}}}]

SCENARIOS = {
    "the same image twice": [([user(image(A), "Read it.")], {}), ([user(image(A), "Describe it.")], {})],
    "two different images": [([user(image(A), "Read it.")], {}), ([user(image(B), "Read it.")], {})],
    "the same image at two budgets": [
        ([user(image(A), "Read it.")], {"max_image_tokens": 16}),
        ([user(image(A), "Read it.")], {"max_image_tokens": 64}),
        ([user(image(A), "Read it.")], {"max_image_tokens": 16}),
    ],
    "an image in the shared prefix and a new one after it": [
        ([user(image(A), "Remember this picture.")], {}),
        ([user(image(A), "Remember this picture."), AIMessage("I will."), user(image(B), "Is this the same?")], {}),
        ([user(image(A), "Remember this picture."), AIMessage("I will."), user(image(C), "Is this the same?")], {}),
    ],
    "multi-turn planner prompts with tool results": [
        ([SystemMessage("You answer with tools."), user("What is the total on img-1?")], {"tools": TOOLS}),
        (
            [
                SystemMessage("You answer with tools."),
                user("What is the total on img-1?"),
                AIMessage("", tool_calls=[{"name": "ocr_image", "args": {"image_id": "img-1"}, "id": "c1"}]),
                ToolMessage("Total: 1,500.00", tool_call_id="c1"),
            ],
            {"tools": TOOLS},
        ),
        (
            [
                SystemMessage("You answer with tools."),
                user("What is the total on img-1?"),
                AIMessage("", tool_calls=[{"name": "ocr_image", "args": {"image_id": "img-1"}, "id": "c1"}]),
                ToolMessage("Total: 1,500.00", tool_call_id="c1"),
                AIMessage("The total is 1,500.00."),
                user("And on img-2?"),
            ],
            {"tools": TOOLS},
        ),
    ],
    "several images in one message": [
        ([user(image(A), image(B), image(C), "Compare them.")], {}),
        ([user(image(A), image(B), image(C), "Which one is the brightest?")], {}),
        ([user(image(A), image(C), image(B), "Compare them.")], {}),
    ],
}


def run(llm: ChatQwenVL, calls, switches) -> tuple[list[str], list[dict]]:
    runtime = llm.runtime
    runtime.vision_cache.clear()
    runtime.prefix_cache.clear()
    texts, timings = [], []
    for messages, kwargs in calls:
        reply = llm.invoke(messages, **switches, **kwargs)
        texts.append(reply.content)
        timings.append(reply.response_metadata["timings"])
    return texts, timings


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_greedy_output_is_the_same_with_and_without_each_cache(tiny_model, engine, scenario):
    llm = ChatQwenVL(model=tiny_model, engine=engine, max_tokens=12)
    calls = SCENARIOS[scenario]
    expected, _ = run(llm, calls, SWITCHES["no reuse"])
    for name, switches in SWITCHES.items():
        texts, timings = run(llm, calls, switches)
        assert texts == expected, f"{scenario}: output changed with {name}"
        if name == "both" and scenario != "two different images":
            reused = sum(t["reused_tokens"] for t in timings) + sum(t["images_cached"] for t in timings)
            if engine == "torch" or any(t["images_encoded"] for t in timings):
                assert reused > 0, f"{scenario}: nothing was reused"


def test_different_images_give_different_replies_so_a_wrong_cache_hit_would_show(tiny_model, engine):
    llm = ChatQwenVL(model=tiny_model, engine=engine, max_tokens=12, cache_images=False, reuse_prefix=False)
    replies = {llm.invoke([user(image(p), "Read it.")]).content for p in (A, B, C)}
    assert len(replies) == 3


def test_a_second_question_about_an_image_skips_the_vision_tower(tiny_model, engine):
    llm = ChatQwenVL(model=tiny_model, engine=engine, max_tokens=4, reuse_prefix=False)
    llm.runtime.vision_cache.clear()
    picture = noise(7)
    first = llm.invoke([user(image(picture), "Read it.")]).response_metadata["timings"]
    second = llm.invoke([user("Now look again:", image(picture), "Describe it.")]).response_metadata["timings"]
    assert (first["images_encoded"], first["images_cached"]) == (1, 0)
    assert (second["images_encoded"], second["images_cached"]) == (0, 1) and second["vision_seconds"] == 0
    other_budget = llm.invoke([user(image(picture), "Read it.")], max_image_tokens=8).response_metadata["timings"]
    assert other_budget["images_encoded"] == 1


def test_a_planner_step_after_the_first_prefills_only_its_new_tokens(tiny_model):
    llm = ChatQwenVL(model=tiny_model, engine="torch", max_tokens=8)
    llm.runtime.prefix_cache.clear()
    calls = SCENARIOS["multi-turn planner prompts with tool results"]
    replies = [llm.invoke(messages, **kwargs) for messages, kwargs in calls]
    first, later = replies[0], replies[1:]
    assert first.usage_metadata["input_token_details"]["cache_read"] == 0
    for reply in later:
        timings = reply.response_metadata["timings"]
        read = reply.usage_metadata["input_token_details"]["cache_read"]
        assert read >= first.usage_metadata["input_tokens"] - 2, "the system prompt and tools are read once"
        assert timings["prefill_tokens"] == reply.usage_metadata["input_tokens"] - read - 1


def test_switches_on_the_model_turn_reuse_off(tiny_model):
    llm = ChatQwenVL(model=tiny_model, engine="torch", max_tokens=4, cache_images=False, reuse_prefix=False)
    picture = noise(8)
    for _ in range(2):
        timings = llm.invoke([user(image(picture), "Read it.")]).response_metadata["timings"]
    assert timings["images_encoded"] == 1 and timings["reused_tokens"] == 0


def test_mrope_positions_match_the_models_own(tiny_model):
    runtime = load_runtime(tiny_model, engine="torch")
    processor, model = runtime.processor, runtime.model
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "and"}, {"type": "image"},
                                             {"type": "text", "text": "compare"}]}]
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    inputs = processor(text=[text], images=[A, C], return_tensors="pt")
    tokens = inputs["input_ids"][0].tolist()
    spans = find_image_spans(tokens, model.config.image_token_id, ["a", "c"])
    ours, delta = mrope_positions(len(tokens), spans, inputs["image_grid_thw"], model.config.vision_config.spatial_merge_size)
    import inspect

    if "mm_token_type_ids" in inspect.signature(model.model.get_rope_index).parameters:
        theirs, deltas = model.model.get_rope_index(inputs["input_ids"], inputs["mm_token_type_ids"], inputs["image_grid_thw"])
    else:
        theirs, deltas = model.model.get_rope_index(inputs["input_ids"], inputs["image_grid_thw"])
    assert torch.equal(ours, theirs[:, 0]) and delta == int(deltas[0])


def test_the_vision_cache_evicts_past_its_bound():
    cache = VisionCache(max_mb=1)
    block = torch.zeros(256, 256)  # 256 KB
    for key in range(10):
        cache.put(key, (block.clone(), (block.clone(),)))
    assert cache.bytes <= 2**20 and len(cache) == 2
    assert cache.lookup(9) is not None and cache.lookup(0) is None
    cache.put("huge", torch.zeros(1024, 1024))  # 4 MB: larger than the whole cache, so never kept
    assert cache.lookup("huge") is None and cache.bytes <= 2**20


def test_the_prefix_cache_keeps_the_longest_match_and_drops_what_a_new_entry_extends():
    cache = PrefixCache(max_mb=1, max_entries=3)
    image_a, image_b = ImageSpan(2, 5, "a"), ImageSpan(2, 5, "b")
    cache.add(PrefixEntry([1, 2, 9, 9, 9, 3], (image_a,), "kv-1", 10))
    entry, length = cache.match([1, 2, 9, 9, 9, 3, 4], [image_a], limit=6)
    assert entry.kv == "kv-1" and length == 6
    entry, length = cache.match([1, 2, 9, 9, 9, 3, 4], [image_b], limit=6)
    assert length == 2, "the same placeholder tokens with another image share nothing from the image on"
    cache.add(PrefixEntry([1, 2, 9, 9, 9, 3, 4, 5], (image_a,), "kv-2", 10))
    assert len(cache) == 1, "the new entry extends the old one"
    for n in range(5):
        cache.add(PrefixEntry([7, n], (), f"kv-{n}", 10))
    assert len(cache) == 3


def test_memory_stays_bounded_over_200_calls(tmp_path):
    from qwenvl_agent.vlm.testing import make_tiny_checkpoint

    model = str(make_tiny_checkpoint(tmp_path / "model"))  # a runtime of its own, so these bounds apply
    llm = ChatQwenVL(model=model, engine="torch", max_tokens=2, vision_cache_mb=0.05, prefix_cache_mb=0.1)
    runtime = llm.runtime
    vision_bound, prefix_bound = runtime.vision_cache.max_bytes, runtime.prefix_cache.max_bytes
    assert (vision_bound, prefix_bound) == (int(0.05 * 2**20), int(0.1 * 2**20))

    def rss_mb() -> float:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * resource.getpagesize() / 2**20

    for call in range(200):
        llm.invoke([user(image(noise(100 + call, size=(96, 96))), f"Question {call}?")])
        if call == 49:
            warm = rss_mb()
        assert runtime.vision_cache.bytes <= vision_bound and runtime.prefix_cache.bytes <= prefix_bound
    assert rss_mb() < warm * 1.05 + 20


def test_bounds_given_to_a_later_chat_model_apply_to_the_shared_copy(tiny_model):
    first = ChatQwenVL(model=tiny_model, engine="torch", max_tokens=2)
    runtime = first.runtime
    for seed in range(3):
        first.invoke([user(image(noise(300 + seed, size=(96, 96))), "What is it?")])
    assert len(runtime.vision_cache) >= 3
    before = (runtime.vision_cache.max_bytes, runtime.prefix_cache.max_bytes, runtime.gate.max_waiting)
    try:
        smaller = ChatQwenVL(model=tiny_model, engine="torch", vision_cache_mb=0, max_waiting=1)
        assert smaller.runtime is runtime  # one copy of the weights
        assert runtime.vision_cache.max_bytes == 0 and len(runtime.vision_cache) == 0 and runtime.gate.max_waiting == 1
        assert runtime.prefix_cache.max_bytes == before[1]  # what was not given stays
        ChatQwenVL(model=tiny_model, engine="torch").runtime  # nothing given: nothing changes
        assert runtime.vision_cache.max_bytes == 0
    finally:
        runtime.with_limits(max_waiting=before[2], vision_cache_mb=before[0] / 2**20, prefix_cache_mb=before[1] / 2**20)


def test_an_images_key_is_earned_by_its_own_pixels():
    picture = noise(9)
    key = image_key(picture)
    assert image_key(picture.copy()) == key and key != image_key(noise(10))  # the same pixels, the same key
    picture.info["qwenvl_key"] = "planted"
    assert image_key(picture) == key, "nothing kept on the image object is read"
    derived = [picture.crop((0, 0, 80, 64)), picture.resize((80, 64)), picture.convert("L"), picture.rotate(90)]
    assert len({key, *(image_key(image) for image in derived)}) == 1 + len(derived)
    ImageDraw.Draw(picture).point((0, 0), fill=(255, 255, 255) if picture.getpixel((0, 0)) != (255, 255, 255) else 0)
    assert image_key(picture) != key, "an image changed in place is a new image"
    rows, columns = Image.new("L", (2, 1)), Image.new("L", (1, 2))
    assert image_key(rows) != image_key(columns), "the same bytes in another shape"
    red, blue = Image.new("P", (4, 4)), Image.new("P", (4, 4))
    red.putpalette([255, 0, 0] * 256)
    blue.putpalette([0, 0, 255] * 256)
    assert image_key(red) != image_key(blue), "the same indices in another palette"
