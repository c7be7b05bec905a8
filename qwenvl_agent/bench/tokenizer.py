"""The benchmark's tokenizer: Qwen's own where one is at hand, so prompts have their real length in tokens.

Prefill time grows with the prompt's length in tokens, so a tokenizer that splits text into more pieces
than Qwen's would make every prompt look slower. In order of preference: the processor of the real
``Qwen/Qwen3-VL-2B-Instruct`` in the Hugging Face cache; Qwen's BPE ranks from a ``qwen.tiktoken`` file
(``$QWENVL_BENCH_TIKTOKEN``, or the one the ``qwen-agent`` package ships); else the tiny test tokenizer,
which the report names.
"""

from __future__ import annotations

import base64
import importlib.util
import os
from pathlib import Path

from qwenvl_agent.vlm.testing import PLAIN_ADDED_TOKENS, SPECIAL_TOKENS

# Qwen2's pre-tokenizer pattern: letters, single digits, punctuation runs, newlines, spaces.
QWEN_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# Ids 151657-151668 in Qwen's vocabulary, in order; the unnamed ones keep the others at their real ids.
_ADDED_IN_ORDER = [
    "<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
    "<|repo_name|>", "<|file_sep|>", "<tool_response>", "</tool_response>", "<think>", "</think>",
]


def find_tiktoken_file() -> Path | None:
    """A ``qwen.tiktoken`` file: ``$QWENVL_BENCH_TIKTOKEN``, or the one inside an installed qwen-agent."""
    if os.environ.get("QWENVL_BENCH_TIKTOKEN"):
        path = Path(os.environ["QWENVL_BENCH_TIKTOKEN"]).expanduser()
        return path if path.is_file() else None
    try:
        spec = importlib.util.find_spec("qwen_agent")
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "utils" / "qwen.tiktoken"
        if path.is_file():
            return path
    return None


def _byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable characters, which byte-level BPE vocabularies use."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    mapping, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            mapping[byte] = chr(byte)
        else:
            mapping[byte] = chr(256 + extra)
            extra += 1
    return mapping


def tokenizer_from_tiktoken(path: Path):
    """A transformers tokenizer with Qwen's BPE ranks from ``path`` and Qwen's special tokens at their ids."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import Qwen2TokenizerFast

    ranks: dict[bytes, int] = {}
    for line in path.read_bytes().splitlines():
        if line.strip():
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    to_text = _byte_to_unicode()

    def text(piece: bytes) -> str:
        return "".join(to_text[b] for b in piece)

    # In tiktoken a token's rank is the order of the merge that makes it; every split of it into two
    # known tokens is a merge of that rank.
    merges = []
    for token, rank in ranks.items():
        for cut in range(1, len(token)):
            left, right = token[:cut], token[cut:]
            if left in ranks and right in ranks:
                merges.append((rank, ranks[left], ranks[right], text(left), text(right)))
    merges.sort()
    model = models.BPE(vocab={text(token): rank for token, rank in ranks.items()}, merges=[(m[3], m[4]) for m in merges])
    tokenizer = Tokenizer(model)
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    plain = set(PLAIN_ADDED_TOKENS)
    tokenizer.add_tokens([AddedToken(t, special=t not in plain, normalized=False) for t in _ADDED_IN_ORDER])
    return Qwen2TokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=None,
        unk_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        model_max_length=262144,
        clean_up_tokenization_spaces=False,
    )
