"""What a generation is given (``Prompt``, ``GenerationSettings``) and what it reports (``StepTimes``,
``GenerationStats``). Importable from ``generation`` too."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .constrain import Grammar

DEFAULT_MAX_IMAGE_TOKENS = 1024


@dataclass
class Prompt:
    """What to send: chat-template messages with ``{"type": "image"}`` placeholders, and the images."""

    messages: list[dict]
    images: list[Any] = field(default_factory=list)
    tools: list[dict] | None = None
    # Text the reply is made to start with (part of the prompt); used to force a tool call. Under a grammar
    # it is the reply's first text: the constraint is advanced over it before the first token.
    assistant_prefix: str = ""


@dataclass
class GenerationSettings:
    """How to generate. ``temperature`` None or 0 means greedy decoding."""

    max_new_tokens: int = 512
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    repetition_penalty: float | None = None
    seed: int | None = None
    # Stop when the reply keeps repeating a short cycle of tokens (small models loop on long OCR output).
    repetition_guard: bool = False
    stop: tuple[str, ...] = ()
    # Seconds for the whole call (waiting for the model, preparing images, prefill, decoding), or an
    # absolute ``time.monotonic()`` deadline set by the caller when its clock started earlier.
    time_limit: float | None = None
    deadline: float | None = None
    max_image_tokens: int = DEFAULT_MAX_IMAGE_TOKENS
    min_image_tokens: int | None = None
    # Reuse of earlier work (see reuse.py): the vision tower's output per image, the KV cache of a shared prefix.
    cache_images: bool = True
    reuse_prefix: bool = True
    # What the reply may be (``constrain.ToolCallGrammar`` or ``JsonSchemaGrammar``): every token is checked
    # against it, and as the budget runs out the reply is steered to close what is open, so it always parses.
    grammar: Grammar | None = None
    # Where the grammar admits only one continuation, feed those tokens in one forward pass (jump-forward)
    # instead of one pass each; the reply is the same either way.
    jump_forward: bool = True
    # Greedy replies: up to this many draft tokens a pass, taken from where the last tokens appeared earlier in
    # the prompt or reply (prompt lookup), checked by the model in the pass it makes anyway; the reply is the
    # same either way. 0: none. Engines that cannot take tokens back (the stateful OpenVINO model) draft none.
    prompt_lookup_num_tokens: int = 10
    # Greedy replies with drafts: a text the reply is likely to repeat without it being in the prompt (another OCR
    # engine's reading of the image being read). Drafts are looked up in it first; the model never sees it, and
    # the reply is the same with it, without it or with a wrong one (a wrong one only drafts in vain).
    draft_text: str | None = None


@dataclass
class StepTimes:
    """Where one generation's time went, and what the engine did, filled in by the engine."""

    vision_seconds: float = 0.0
    prefill_seconds: float = 0.0
    prefill_tokens: int = 0
    reused_tokens: int = 0
    images_encoded: int = 0
    images_cached: int = 0
    first_token_seconds: float | None = None
    # Forward passes of the model after the prompt, and the reply tokens among them fed by jump-forward.
    decode_steps: int = 0
    forced_tokens: int = 0
    # Prompt-lookup drafts the model read, and those the reply took (each taken one a pass saved).
    draft_tokens: int = 0
    accepted_draft_tokens: int = 0
    # The reply ended by itself: an end token, or the end of the grammar's value.
    ended: bool = False


@dataclass
class GenerationStats:
    """What a finished generation reports after its last piece of text. ``decode_steps``: forward passes of
    the model while decoding; ``forced_tokens``: reply tokens a grammar forced and jump-forward fed several
    to a pass (``output_tokens - decode_steps`` is about the passes it saved)."""

    input_tokens: int
    output_tokens: int
    finish_reason: str  # "stop" (end token or stop sequence), "length", "timeout", "repetition" or "cancelled"
    seconds: float
    times: StepTimes = field(default_factory=StepTimes)
    decode_steps: int = 0
    forced_tokens: int = 0
