"""From a prompt to the model's inputs: the chat template, the processor (text and images within the pixel
budget), padding of images the processor would refuse, and the shim for the installed transformers."""

from __future__ import annotations

from typing import Any

from .errors import ImageInputError, PromptTooLongError
from .images import pixel_budget
from .reuse import find_image_spans, image_key

# Longest prompt accepted, in tokens: far past any document question, short of minutes of prefill per call.
MAX_PROMPT_TOKENS = 32_768
# Images are padded to at least this side and at most this aspect ratio (the processor refuses above 200:1).
MIN_SIDE = 32
MAX_ASPECT = 150


def build_inputs(runtime, prompt, settings):
    """Render the chat template and run the processor (text + images, within the pixel budget); return the
    model inputs and where each image sits in them, with the key that identifies it to the caches."""
    processor = runtime.processor
    text = processor.apply_chat_template(
        prompt.messages, tools=prompt.tools or None, tokenize=False, add_generation_prompt=True
    )
    text += prompt.assistant_prefix
    kwargs: dict[str, Any] = {}
    keys: list[Any] = []
    if prompt.images:
        budget = pixel_budget(settings.max_image_tokens, settings.min_image_tokens)
        kwargs = {"images": [fit_for_model(image) for image in prompt.images], **_budget_arguments(budget)}
        keys = [(image_key(image), budget["min_pixels"], budget["max_pixels"]) for image in kwargs["images"]]
    try:
        inputs = processor(text=[text], return_tensors="pt", **kwargs)
    except ValueError as exc:
        raise ImageInputError(f"The images could not be prepared for the model: {exc}") from exc
    for unused in ("token_type_ids", "mm_token_type_ids"):
        inputs.pop(unused, None)
    if inputs["input_ids"].shape[1] > MAX_PROMPT_TOKENS:
        raise PromptTooLongError(
            f"The prompt is {inputs['input_ids'].shape[1]:,} tokens, more than the {MAX_PROMPT_TOKENS:,} this runtime "
            "reads in one call. Send less text, fewer images or a smaller image budget."
        )
    image_token_id = runtime.model.config.image_token_id
    spans = find_image_spans(inputs["input_ids"][0].tolist(), image_token_id, keys)
    return inputs.to(runtime.engine.device), spans


def fit_for_model(image):
    """The image padded (white) to at least ``MIN_SIDE`` pixels a side and at most ``MAX_ASPECT``:1: a 1x1 px
    or a 10000x10 px image is read rather than refused by the processor."""
    from PIL import Image

    width, height = image.size
    new_width = max(width, MIN_SIDE, -(-height // MAX_ASPECT))
    new_height = max(height, MIN_SIDE, -(-width // MAX_ASPECT))
    if (new_width, new_height) == (width, height):
        return image
    padded = Image.new("RGB", (new_width, new_height), "white")
    padded.paste(image, (0, 0))
    return padded


def _budget_arguments(budget: dict[str, int]) -> dict[str, Any]:
    """The pixel budget as the installed processor takes it: transformers 5 reads a per-call ``size`` (and
    deprecates ``min_pixels``/``max_pixels``), 4.57 reads only ``min_pixels``/``max_pixels``."""
    import transformers

    if int(transformers.__version__.split(".")[0]) >= 5:
        return {"images_kwargs": {"size": {"shortest_edge": budget["min_pixels"], "longest_edge": budget["max_pixels"]}}}
    return dict(budget)
