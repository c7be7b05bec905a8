"""Random Whisper checkpoints of the real architecture, converted for faster-whisper, so tests and the bench
drive the real recognition path (CTranslate2's Whisper, faster-whisper's decoding) without the real weights.

``make_random_whisper(folder, size)`` builds ``WhisperForConditionalGeneration`` with random weights, a
byte-level tokenizer with Whisper's exact special-token layout (end of text, start of transcript, the 100
language tokens, task tokens, no-timestamps and the 1501 timestamp tokens, at the multilingual ids), writes it
the way the hub's checkpoints are written, and converts it with CTranslate2's own converter, as the
``Systran/faster-whisper-*`` folders were made. What it transcribes is noise; everything around it is real.
Needs torch and transformers (both in the project's dependencies).
"""

from __future__ import annotations

import json
import string
from pathlib import Path

# The vocabulary of multilingual Whisper: 50257 text tokens, then the special tokens.
_TEXT_TOKENS = 50257

# Whisper's language tokens in the order of their ids.
_LANGUAGES = """
en zh de es ru ko fr ja pt tr pl ca nl ar sv it id hi fi vi he uk el ms cs ro da hu ta no th ur hr bg lt la mi ml
cy sk te fa lv bn sr az sl kn et mk br eu is hy ne mn bs kk sq sw gl mr pa si km sn yo so af oc ka be tg sd gu am
yi lo uz fo ht ps tk nn mt sa lb my bo tl mg as tt haw ln ha ba jw su yue
"""

# (d_model, layers, heads, ffn) of OpenAI's checkpoints, and a tiny one for tests.
SIZES = {
    "tiny-random": (64, 2, 2, 128),
    "tiny": (384, 4, 6, 1536),
    "base": (512, 6, 8, 2048),
    "small": (768, 12, 12, 3072),
}


def make_random_whisper(folder: str | Path, size: str = "tiny-random", *, quantization: str = "int8", seed: int = 0) -> Path:
    """Write a random Whisper of ``size`` (see ``SIZES``) converted to CTranslate2 into ``folder/ct2``; return
    that folder, which ``transcribe(..., model=folder)`` loads like a downloaded one."""
    import torch
    from ctranslate2.converters import TransformersConverter
    from transformers import GenerationConfig, WhisperConfig, WhisperForConditionalGeneration

    if size not in SIZES:
        raise ValueError(f"size must be one of {', '.join(SIZES)}; got {size!r}.")
    folder = Path(folder)
    checkpoint = folder / "hf"
    checkpoint.mkdir(parents=True, exist_ok=True)
    tokenizer = _tokenizer()
    tokenizer.save(str(checkpoint / "tokenizer.json"))
    ids = tokenizer.get_vocab()
    end = ids["<|endoftext|>"]
    d_model, layers, heads, ffn = SIZES[size]
    config = WhisperConfig(
        vocab_size=tokenizer.get_vocab_size(), num_mel_bins=80, d_model=d_model,
        encoder_layers=layers, decoder_layers=layers, encoder_attention_heads=heads, decoder_attention_heads=heads,
        encoder_ffn_dim=ffn, decoder_ffn_dim=ffn, max_source_positions=1500, max_target_positions=448,
        pad_token_id=end, bos_token_id=end, eos_token_id=end, decoder_start_token_id=ids["<|startoftranscript|>"],
    )
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(config)
    model.generation_config = GenerationConfig(
        decoder_start_token_id=config.decoder_start_token_id, bos_token_id=end, eos_token_id=end, pad_token_id=end,
        begin_suppress_tokens=[ids["Ġ"], end], suppress_tokens=[], no_timestamps_token_id=ids["<|notimestamps|>"],
        lang_to_id={f"<|{code}|>": ids[f"<|{code}|>"] for code in _language_codes()},
        task_to_id={"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]},
        is_multilingual=True,
    )
    model.save_pretrained(checkpoint)
    (checkpoint / "preprocessor_config.json").write_text(json.dumps({
        "feature_extractor_type": "WhisperFeatureExtractor", "feature_size": 80, "sampling_rate": 16000,
        "hop_length": 160, "chunk_length": 30, "n_fft": 400, "n_samples": 480000, "nb_max_frames": 3000,
        "padding_side": "right", "padding_value": 0.0, "return_attention_mask": False,
    }))
    output = folder / "ct2"
    converter = TransformersConverter(str(checkpoint), copy_files=["tokenizer.json", "preprocessor_config.json"])
    converter.convert(str(output), quantization=quantization, force=True)
    return output


def _language_codes() -> list[str]:
    return _LANGUAGES.split()


def _tokenizer():
    """Byte-level BPE with Whisper's special tokens at their multilingual ids. The 256 byte symbols come first;
    the other text ids hold short lowercase words (so a random model's output decodes to readable noise)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {symbol: i for i, symbol in enumerate(alphabet)}
    for word in _words():
        if len(vocab) == _TEXT_TOKENS - 1:
            break
        vocab.setdefault(word, len(vocab))
    vocab[""] = len(vocab)  # multilingual Whisper's vocabulary holds an empty token: CTranslate2 tells them by it
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    specials = [
        "<|endoftext|>", "<|startoftranscript|>", *(f"<|{code}|>" for code in _language_codes()),
        "<|translate|>", "<|transcribe|>", "<|startoflm|>", "<|startofprev|>", "<|nospeech|>", "<|notimestamps|>",
        *(f"<|{i * 0.02:.2f}|>" for i in range(1501)),
    ]
    tokenizer.add_special_tokens([AddedToken(token, special=True, normalized=False) for token in specials])
    return tokenizer


def _words():
    """'Ġab', 'ab', 'Ġac', …: words of two, then three letters, with and without a leading space."""
    letters = string.ascii_lowercase
    for length in (2, 3, 4):
        for index in range(len(letters) ** length):
            word = ""
            for _ in range(length):
                index, rest = divmod(index, len(letters))
                word += letters[rest]
            yield "Ġ" + word
            yield word
