"""Random Whisper checkpoints of the real architecture, converted for faster-whisper, so tests and the bench
drive the real recognition path (CTranslate2's Whisper, faster-whisper's decoding) without the real weights.

``make_random_whisper(folder, size)`` builds ``WhisperForConditionalGeneration`` with random weights, a
byte-level tokenizer with Whisper's exact special-token layout (end of text, start of transcript, the 100
language tokens, task tokens, no-timestamps and the 1501 timestamp tokens, at the multilingual ids), writes it
the way the hub's checkpoints are written, and converts it with CTranslate2's own converter, as the
``Systran/faster-whisper-*`` folders were made. What it transcribes is noise; everything around it is real.
Needs torch and transformers (both in the project's dependencies).

``make_random_piper_voice(folder, language)`` does the same for speech out: a small random VITS (the architecture
of Piper's voices) exported to ONNX with Piper's inputs, and its ``.onnx.json``, for ``speak(..., voice=path)``.
"""

from __future__ import annotations

import json
import string
import warnings
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


# Random weights give nearly flat next-token distributions, which faster-whisper rightly distrusts: every window
# fails its log-probability threshold and is decoded again by sampling at rising temperatures, so the same audio
# gave different noise from run to run (and from process to process). Three scales make the random decoder as
# sure of itself as a trained one, so its greedy pass is accepted and a transcript is a function of the audio:
# the last norm sharpens the logits, larger position embeddings keep it from repeating one word, and a louder
# cross-attention keeps what it writes depending on what it hears.
_CONFIDENCE = 60.0
_POSITIONS = 10.0
_HEARING = 5.0


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
    with torch.no_grad():  # see _CONFIDENCE
        model.model.decoder.layer_norm.weight.mul_(_CONFIDENCE)
        model.model.decoder.embed_positions.weight.mul_(_POSITIONS)
        for layer in model.model.decoder.layers:
            layer.encoder_attn.out_proj.weight.mul_(_HEARING)
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


# ----- Piper ---------------------------------------------------------------------------------------------------

# The espeak-ng voice and the file-name locale of each language a random Piper voice can be made for.
PIPER_LANGUAGES = {"en": ("en-us", "en_US"), "zh": ("cmn", "zh_CN")}


def make_random_piper_voice(folder: str | Path, language: str = "en", *, sample_rate: int = 22050, seed: int = 0) -> Path:
    """Write a small random Piper voice for ``language`` ("en" or "zh") into ``folder``: a VITS of the real
    architecture (transformers' ``VitsModel``: text encoder, stochastic duration predictor, flow, HiFi-GAN) with
    random weights, exported to ONNX with the signature Piper's runtime feeds (``input`` phoneme ids [1, n],
    ``input_lengths`` [1], ``scales`` [noise, length, noise_w]; audio [1, 1, samples] out), and its ``.onnx.json``
    beside it (sample rate, espeak-ng voice, Piper's phoneme id map, inference scales, one speaker), the way
    ``rhasspy/piper-voices`` ships them. Return the .onnx path, which ``speak(..., voice=path)`` loads.
    What it says is noise; the phonemes, the durations (every phoneme at least one 256-sample frame) and the
    audio around them are real. Needs torch, transformers, onnx (for the export) and piper-tts."""
    import torch
    from piper.phoneme_ids import DEFAULT_PHONEME_ID_MAP
    from transformers import VitsConfig, VitsModel

    if language not in PIPER_LANGUAGES:
        raise ValueError(f"language must be one of {', '.join(PIPER_LANGUAGES)}; got {language!r}.")
    espeak_voice, locale = PIPER_LANGUAGES[language]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    onnx_path = folder / f"{locale}-random-x_low.onnx"
    num_symbols = max(max(ids) for ids in DEFAULT_PHONEME_ID_MAP.values()) + 1
    config = VitsConfig(
        vocab_size=num_symbols, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, ffn_dim=64, flow_size=32,
        duration_predictor_filter_channels=32, duration_predictor_num_flows=2, prior_encoder_num_flows=2,
        prior_encoder_num_wavenet_layers=2, posterior_encoder_num_wavenet_layers=2, upsample_initial_channel=64,
        upsample_rates=[8, 8, 2, 2], resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1, 3]],
        sampling_rate=sample_rate, num_speakers=1,
    )
    torch.manual_seed(seed)
    model = VitsModel(config).eval()
    ids = torch.tensor([[1, 0, 20, 0, 14, 0, 2]], dtype=torch.long)
    example = (ids, torch.tensor([ids.shape[1]]), torch.tensor([0.667, 1.0, 0.8]))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on the data-dependent output length
        torch.onnx.export(
            _piper_signature(model), example, str(onnx_path), input_names=["input", "input_lengths", "scales"],
            output_names=["output"], opset_version=15, dynamo=False,
            dynamic_axes={"input": {0: "batch", 1: "phonemes"}, "input_lengths": {0: "batch"}, "output": {0: "batch", 2: "time"}},
        )
    Path(f"{onnx_path}.json").write_text(json.dumps({
        "audio": {"sample_rate": sample_rate, "quality": "x_low"},
        "espeak": {"voice": espeak_voice},
        "language": {"code": locale},
        "inference": {"noise_scale": 0.667, "length_scale": 1.0, "noise_w": 0.8},
        "phoneme_type": "espeak",
        "phoneme_map": {},
        "phoneme_id_map": DEFAULT_PHONEME_ID_MAP,
        "num_symbols": num_symbols,
        "num_speakers": 1,
        "speaker_id_map": {},
        "piper_version": "1.0.0",
    }, ensure_ascii=False, indent=2))
    return onnx_path


def _piper_signature(vits):
    """``vits`` behind Piper's ONNX inputs: the scales become the model's noise and speed."""
    import torch

    class PiperSignature(torch.nn.Module):
        def __init__(self, vits):
            super().__init__()
            self.vits = vits

        def forward(self, input, input_lengths, scales):  # noqa: A002 - Piper's input name
            positions = torch.arange(input.shape[1]).unsqueeze(0)
            attention_mask = (positions < input_lengths.unsqueeze(1)).to(torch.long)
            # VitsModel reads its noise and speed from these attributes (transformers 4.57 and 5.x alike).
            self.vits.noise_scale = scales[0]
            self.vits.speaking_rate = 1.0 / scales[1]
            self.vits.noise_scale_duration = scales[2]
            out = self.vits(input_ids=input, attention_mask=attention_mask)
            return out.waveform.unsqueeze(1)

    return PiperSignature(vits)
