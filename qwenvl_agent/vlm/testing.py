"""A tiny random Qwen3-VL checkpoint, so tests drive the real transformers path without the real weights.

``make_tiny_checkpoint(path)`` writes a folder that loads exactly like ``Qwen/Qwen3-VL-2B-Instruct``
(``Qwen3VLForConditionalGeneration`` + ``AutoProcessor``): a tiny config that still has a vision tower,
deepstack and interleaved mrope; a byte-level BPE tokenizer trained on the spot with Qwen's special
tokens; a chat template in the Qwen3-VL format written for this project; and the processor configs.

``scripted_replies(runtime, texts)`` makes the next generations spell out given texts, token by token,
through the real decode loop — for tests (and the benchmark) that need a model reply with a known shape
(tool calls, JSON) or length.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path

SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
# Qwen marks these as added but not special: they survive skip_special_tokens, so tool calls can be parsed.
PLAIN_ADDED_TOKENS = ["<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>", "<think>", "</think>"]

# A chat template in the Qwen3-VL format and with its rules, written for this project. Like the published
# Instruct template it renders a system message only in first place (its text parts only), then the user,
# assistant and tool roles, and silently drops anything else; tools go into the system turn, images become
# vision placeholders, assistant tool calls <tool_call> JSON blocks, and consecutive tool results are folded
# into one user turn. The Thinking variant renders later system messages in place and opens the reply with
# "<think>\n" itself, as the published Thinking template does.
_TEMPLATE = r"""
{%- macro render(content, text_only=false) -%}
  {%- if content is string -%}{{- content -}}
  {%- elif content is iterable -%}
    {%- for item in content -%}
      {%- if item is string -%}{{- item -}}
      {%- elif item.type == 'image' or 'image' in item or 'image_url' in item -%}{%- if not text_only -%}{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}{%- endif -%}
      {%- elif item.type == 'video' or 'video' in item -%}{%- if not text_only -%}{{- '<|vision_start|><|video_pad|><|vision_end|>' -}}{%- endif -%}
      {%- elif 'text' in item -%}{{- item.text -}}
      {%- endif -%}
    {%- endfor -%}
  {%- endif -%}
{%- endmacro -%}
{%- set has_system = messages and messages[0].role == 'system' -%}
{%- if tools -%}
  {{- '<|im_start|>system\n' -}}
  {%- if has_system -%}{{- render(messages[0].content, true) + '\n\n' -}}{%- endif -%}
  {{- '# Tools\n\nYou may call one or more functions to assist with the user query.\n\n' -}}
  {{- 'You are provided with function signatures within <tools></tools> XML tags:\n<tools>' -}}
  {%- for tool in tools -%}{{- '\n' + (tool | tojson) -}}{%- endfor -%}
  {{- '\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n' -}}
  {{- '<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n' -}}
{%- elif has_system -%}
  {{- '<|im_start|>system\n' + render(messages[0].content, true) + '<|im_end|>\n' -}}
{%- endif -%}
{%- for message in messages -%}
  {%- if loop.first and has_system -%}
  {%- elif message.role == 'user' -%}
    {{- '<|im_start|>user\n' + render(message.content) + '<|im_end|>\n' -}}
  {%- elif message.role == 'assistant' -%}
    {{- '<|im_start|>assistant\n' + render(message.content) -}}
    {%- for call in message.tool_calls or [] -%}
      {%- set fn = call.function if call.function is defined else call -%}
      {%- if message.content or not loop.first -%}{{- '\n' -}}{%- endif -%}
      {{- '<tool_call>\n{"name": "' + fn.name + '", "arguments": ' -}}
      {%- if fn.arguments is string -%}{{- fn.arguments -}}{%- else -%}{{- fn.arguments | tojson -}}{%- endif -%}
      {{- '}\n</tool_call>' -}}
    {%- endfor -%}
    {{- '<|im_end|>\n' -}}
  {%- elif message.role == 'tool' -%}
    {%- if loop.first or messages[loop.index0 - 1].role != 'tool' -%}{{- '<|im_start|>user' -}}{%- endif -%}
    {{- '\n<tool_response>\n' + render(message.content) + '\n</tool_response>' -}}
    {%- if loop.last or messages[loop.index0 + 1].role != 'tool' -%}{{- '<|im_end|>\n' -}}{%- endif -%}
  {%- elif message.role == 'system' and THINKING -%}
    {{- '<|im_start|>system\n' + render(message.content, true) + '<|im_end|>\n' -}}
  {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\n' -}}{%- if THINKING -%}{{- '<think>\n' -}}{%- endif -%}{%- endif -%}
""".strip()
CHAT_TEMPLATE = _TEMPLATE.replace("THINKING", "false")
THINKING_CHAT_TEMPLATE = _TEMPLATE.replace("THINKING", "true")

# Text the tokenizer learns its merges from: English and Chinese prose, numbers, JSON tool calls.
_CORPUS = [
    "The invoice total is 1,234.56 and the date is 2026-03-14. Invoice code 044031900111, number 12345678.",
    "Which quarter has the highest sales, and by how much did it grow? Q1 0.8M, Q2 0.9M, Q3 1.2M, Q4 1.0M.",
    "A park with trees, a lake, people walking on a path, a bench and a blue sky with clouds.",
    '{"name": "ocr_image", "arguments": {"image_id": "img-1", "region": null}}',
    '{"chart_type": "bar", "title": "Sales", "categories": ["Q1", "Q2"], "series": [{"name": "sales", "values": [1, 2]}]}',
    "发票代码 发票号码 开票日期 购买方 销售方 金额 税额 价税合计 第三季度销售额最高，比第二季度增长了百分之三十三。",
    "公园里有树木、湖泊和行人。图表显示每个季度的销售额。",
    "Describe this image. Read all the text. What does the chart show? Answer in one sentence.",
] * 4


def _train_tokenizer(vocab_size: int):
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_CORPUS, trainer=trainer)
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in PLAIN_ADDED_TOKENS])
    return tokenizer


def _build_tokenizer(vocab_size: int):
    # Qwen's own tokenizer class, as the published checkpoint names it (transformers 4.57 insists on it).
    from transformers import Qwen2TokenizerFast

    return Qwen2TokenizerFast(
        tokenizer_object=_train_tokenizer(vocab_size),
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        model_max_length=32768,
        clean_up_tokenization_spaces=False,
    )


def _build_config(tokenizer):
    from transformers import Qwen3VLConfig

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    text_config = {
        "vocab_size": len(tokenizer),
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "head_dim": 16,
        "hidden_act": "silu",
        "max_position_embeddings": 32768,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": True,
        # Wider than the usual 0.02 so greedy decoding of random weights gives varied text, not one token.
        "initializer_range": 0.2,
        # sum(mrope_section) must equal head_dim / 2, as in the real model (24 + 20 + 20 = 128 / 2). Written in
        # the published checkpoint's style (rope_theta + rope_scaling), which every transformers version reads.
        "rope_theta": 5_000_000.0,
        "rope_scaling": {"rope_type": "default", "mrope_section": [4, 2, 2], "mrope_interleaved": True},
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"],
    }
    vision_config = {
        "depth": 2,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_heads": 2,
        "patch_size": 16,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "out_hidden_size": 32,
        "num_position_embeddings": 64,
        "deepstack_visual_indexes": [0, 1],
        "hidden_act": "gelu_pytorch_tanh",
        "initializer_range": 0.2,
    }
    return Qwen3VLConfig(
        text_config=text_config,
        vision_config=vision_config,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
        initializer_range=0.2,
    )


def _build_processor(tokenizer, chat_template: str = CHAT_TEMPLATE):
    from transformers import Qwen2VLImageProcessor, Qwen3VLProcessor, Qwen3VLVideoProcessor

    common = {
        "patch_size": 16,
        "temporal_patch_size": 2,
        "merge_size": 2,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
    }
    # The shipped default budget of Qwen3-VL-2B-Instruct: 64 to 16,384 visual tokens per image.
    image_processor = Qwen2VLImageProcessor(size={"shortest_edge": 65_536, "longest_edge": 16_777_216}, **common)
    video_processor = Qwen3VLVideoProcessor(size={"shortest_edge": 4096, "longest_edge": 25_165_824}, **common)
    return Qwen3VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=chat_template,
    )


def make_tiny_checkpoint(path: str | Path, *, vocab_size: int = 640, seed: int = 0, thinking: bool = False) -> Path:
    """Write a tiny random Qwen3-VL checkpoint to ``path`` and return the folder.

    It loads with ``ChatQwenVL(model=path)`` through the same code as the real model and generates in
    milliseconds. Its replies are random text: use ``scripted_replies`` where a test needs a known reply.
    ``thinking=True`` gives it the Thinking model's chat template (the reply opens inside ``<think>``).
    """
    import torch
    from transformers import GenerationConfig, Qwen3VLForConditionalGeneration

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = _build_tokenizer(vocab_size)
    config = _build_config(tokenizer)
    torch.manual_seed(seed)
    model = Qwen3VLForConditionalGeneration(config).to(torch.bfloat16)
    model.generation_config = GenerationConfig(
        bos_token_id=config.text_config.bos_token_id,
        eos_token_id=[tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.convert_tokens_to_ids("<|endoftext|>")],
        pad_token_id=config.text_config.pad_token_id,
        do_sample=True,
        temperature=0.7,
        top_p=0.8,
        top_k=20,
    )
    model.save_pretrained(path)
    _build_processor(tokenizer, THINKING_CHAT_TEMPLATE if thinking else CHAT_TEMPLATE).save_pretrained(path)
    (path / "README.md").write_text("Tiny random Qwen3-VL checkpoint made by qwenvl_agent.vlm.testing.\n")
    return path


class _ScriptedLogits:
    """A logits processor that forces the reply to spell out a given token sequence, then the end token.
    ``upcoming`` tells the decode loop what it will force, so a grammar's jump-forward can agree with it."""

    def __init__(self, token_ids: list[int], eos_id: int, prompt_length: int):
        self.token_ids = token_ids
        self.eos_id = eos_id
        self.prompt_length = prompt_length

    def upcoming(self, step: int, count: int) -> list[int]:
        """The tokens forced at reply positions ``step`` to ``step + count - 1``."""
        return [self.token_ids[i] if i < len(self.token_ids) else self.eos_id for i in range(step, step + count)]

    def __call__(self, input_ids, scores):
        import torch

        target = self.upcoming(input_ids.shape[1] - self.prompt_length, 1)[0]
        forced = torch.full_like(scores, float("-inf"))
        forced[:, target] = 0.0
        return forced


@contextlib.contextmanager
def scripted_replies(runtime, texts: Sequence[str]) -> Iterator[list[str]]:
    """Within the block, the next ``len(texts)`` generations of ``runtime`` reply with these texts.

    The real processor, prefill and decode loop still run; only the choice of each next token is forced
    (through ``runtime.logits_hook``). A scripted token wins over a grammar (``GenerationSettings.grammar``):
    where the grammar would refuse it, the grammar steps aside for the rest of that reply, so tests can
    script invalid calls on purpose. Yields the list of texts not yet used, so a test can check every
    reply was consumed.
    """
    pending = list(texts)
    tokenizer = runtime.processor.tokenizer
    eos_id = tokenizer.convert_tokens_to_ids("<|im_end|>")

    def hook(prompt_length: int):
        if not pending:
            return None
        ids = tokenizer.encode(pending.pop(0), add_special_tokens=False)
        return _ScriptedLogits(ids, eos_id, prompt_length)

    with runtime.logits_hook(hook):
        yield pending


def tool_call_text(name: str, arguments: dict, prefix: str = "") -> str:
    """The text Qwen3-VL writes to call a tool, for scripting replies in tests."""
    return f'{prefix}<tool_call>\n{json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False)}\n</tool_call>'
