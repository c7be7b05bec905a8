"""Engines: choosing one, OpenVINO's export cache, and clear errors when an engine cannot run."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from qwenvl_agent.vlm import (
    ChatQwenVL,
    EngineError,
    EngineFallbackWarning,
    WrongModelError,
    load_runtime,
    openvino_export,
)
from qwenvl_agent.vlm import runtime as runtime_module
from qwenvl_agent.vlm.openvino_export import export_folder, openvino_available

needs_openvino = pytest.mark.skipif(not openvino_available(), reason="OpenVINO is not installed")


def test_unknown_constructor_arguments_are_an_error_that_names_them():
    with pytest.raises(ValueError) as info:
        ChatQwenVL(engin="openvino", max_token=5)
    message = str(info.value)
    assert "'engin' (did you mean 'engine'?)" in message
    assert "'max_token' (did you mean 'max_tokens'?)" in message
    ChatQwenVL(engine="torch", weights="int4", max_new_tokens=5, stop_sequences=["x"])  # fields and aliases pass


def test_engine_and_weights_are_validated(tiny_model):
    with pytest.raises(ValueError, match="engine must be one of auto, torch, openvino"):
        load_runtime(tiny_model, engine="tensorrt")
    with pytest.raises(ValueError, match="weights must be one of int8, int4"):
        load_runtime(tiny_model, engine="openvino", weights="int2")


def test_openvino_requested_but_not_installed_names_the_fix(tmp_path, monkeypatch):
    from qwenvl_agent.vlm.testing import make_tiny_checkpoint

    model = str(make_tiny_checkpoint(tmp_path / "model"))  # not loaded by another test
    monkeypatch.setattr(openvino_export, "openvino_available", lambda: False)
    with pytest.raises(EngineError, match=r"pip install 'qwenvl-agent\[openvino\]'"):
        load_runtime(model, engine="openvino")


def test_auto_falls_back_to_torch_with_a_one_line_warning(tiny_model, monkeypatch, caplog):
    def broken_export(*args, **kwargs):
        raise EngineError("Exporting failed: the exporter crashed.\nTraceback (most recent call last): …")

    monkeypatch.setattr(runtime_module, "openvino_available", lambda: True)
    monkeypatch.setattr(runtime_module, "_load_openvino", broken_export)
    with caplog.at_level(logging.WARNING, logger="qwenvl_agent.vlm.runtime"), pytest.warns(EngineFallbackWarning, match="using torch"):
        runtime = load_runtime(tiny_model, engine="auto", weights="int4")
    assert runtime.engine_name == "torch"
    assert runtime is load_runtime(tiny_model, engine="torch")  # the same copy of the weights, not a second one
    logged = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name.startswith("qwenvl_agent")]
    assert len(logged) == 1 and "\n" not in logged[0] and "using torch" in logged[0]
    assert "Exporting failed" in logged[0]


def test_auto_does_not_hide_a_broken_export_when_openvino_is_asked_for(tiny_model, monkeypatch):
    def broken_export(*args, **kwargs):
        raise EngineError("Exporting failed.")

    monkeypatch.setattr(runtime_module, "_load_openvino", broken_export)
    with pytest.raises(EngineError, match="Exporting failed"):
        load_runtime(tiny_model, engine="openvino", weights="int4", num_threads=1)


def fake_ir(folder: Path, model_type: str) -> Path:
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": model_type}))
    (folder / "openvino_language_model.xml").write_text("<net/>")
    return folder


def test_a_published_irs_weights_are_read_from_its_compression_record(tmp_path):
    from qwenvl_agent.vlm.runtime import _ir_weights

    folder = fake_ir(tmp_path / "qwen-int4-ov", "qwen3_vl")
    (folder / "openvino_language_model.xml").write_text(
        '<net>\n<rt_info><nncf><weight_compression><backup_mode value="int8_asym" /><mode value="int4_asym" />'
        "</weight_compression></nncf></rt_info>\n</net>"
    )
    assert _ir_weights(folder, requested="int8") == "int4"
    assert _ir_weights(fake_ir(tmp_path / "plain", "qwen3_vl"), requested="int8") == "int8"  # nothing recorded


def test_an_ir_of_another_model_is_refused_by_name(tmp_path):
    folder = fake_ir(tmp_path / "llava-ov", "llava")
    with pytest.raises(EngineError, match="of a 'llava' model, not Qwen3-VL"):
        load_runtime(str(folder), engine="openvino")


@pytest.mark.parametrize("openvino_installed", [True, False])
def test_auto_names_an_ir_of_another_model_instead_of_falling_back(tmp_path, monkeypatch, openvino_installed):
    folder = fake_ir(tmp_path / "llava-ov", "llava")
    monkeypatch.setattr(runtime_module, "openvino_available", lambda: openvino_installed)
    monkeypatch.setattr(openvino_export, "require_openvino", lambda: None)
    with warnings.catch_warnings():
        warnings.simplefilter("error", EngineFallbackWarning)
        with pytest.raises(WrongModelError, match="of a 'llava' model, not Qwen3-VL"):
            load_runtime(str(folder), engine="auto")


def test_engine_weights_and_dtype_typos_are_refused_when_the_model_is_made():
    for wrong in ({"engine": "tensorrt"}, {"weights": "int2"}, {"dtype": "float8"}):
        with pytest.raises(ValueError, match=list(wrong)[0]):
            ChatQwenVL(**wrong)
    with pytest.raises(ValueError, match="weights"):
        load_runtime("/nowhere", engine="torch", weights="int2")


def test_the_torch_engine_on_an_ir_folder_says_to_use_openvino(tmp_path):
    folder = fake_ir(tmp_path / "qwen-ov", "qwen3_vl")
    with pytest.raises(EngineError, match="engine='openvino'"):
        load_runtime(str(folder), engine="torch")


def test_an_exporter_that_refuses_this_transformers_is_reported_with_the_fix(monkeypatch):
    import transformers

    monkeypatch.setattr(transformers, "__version__", "5.24.0")
    with pytest.raises(EngineError) as info:
        openvino_export._check_exporter_version()
    assert "5.24.0" in str(info.value) and "qwenvl-agent[openvino]" in str(info.value)


def test_the_export_folder_changes_when_the_checkpoint_does(tmp_path):
    from qwenvl_agent.vlm.testing import make_tiny_checkpoint

    source = make_tiny_checkpoint(tmp_path / "model")
    before = export_folder(source, "int8")
    assert before != export_folder(source, "int4")
    (source / "config.json").write_text((source / "config.json").read_text() + "\n")
    assert export_folder(source, "int8") != before


@needs_openvino
def test_openvino_exports_once_then_loads_from_the_cache(tiny_model):
    runtime = load_runtime(tiny_model, engine="openvino", weights="int8")
    assert runtime.engine_name == "openvino" and runtime.dtype == "int8" and runtime.label == "OpenVINO int8"
    ir = export_folder(Path(tiny_model), "int8")
    assert runtime.path == ir and (ir / "openvino_language_model.xml").is_file()
    assert any((ir / "compiled").iterdir()), "OpenVINO's compiled-model cache is beside the IR"
    stamp = (ir / "openvino_language_model.bin").stat().st_mtime_ns
    assert openvino_export.ensure_exported(Path(tiny_model), "int8") == ir
    assert (ir / "openvino_language_model.bin").stat().st_mtime_ns == stamp


@needs_openvino
def test_an_openvino_runtime_tells_its_weights_from_its_precision(tiny_model):
    runtime = load_runtime(tiny_model, engine="openvino", weights="int8", dtype="float32")
    assert runtime.weights == "int8" and runtime.precision == "float32"
    assert runtime.dtype == "int8"  # as it always was: the weights


@needs_openvino
def test_a_folder_holding_an_ir_loads_directly(tiny_model):
    ir = openvino_export.ensure_exported(Path(tiny_model), "int8")
    runtime = load_runtime(str(ir), engine="auto")
    assert runtime.engine_name == "openvino" and runtime.path == ir
    reply = ChatQwenVL(model=str(ir), max_tokens=3).invoke("hi")
    assert reply.usage_metadata["output_tokens"] <= 3


@needs_openvino
def test_download_exports_ahead_of_time_with_int4_weights(tiny_model):
    command = [sys.executable, "-m", "qwenvl_agent.cli", "download", tiny_model, "--engine", "openvino", "--weights", "int4"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    ir = export_folder(Path(tiny_model), "int4")
    assert str(ir) in done.stdout and (ir / "qwenvl-export.json").is_file()
    assert "OpenVINO export" in done.stderr  # the progress bar
    assert load_runtime(tiny_model, engine="openvino", weights="int4").dtype == "int4"


def _stop_after_first_check():
    """A stop signal that is clear when the engine starts and set from then on: the caller stopped while the
    images and the prompt were being read."""
    asked = []

    def should_stop() -> bool:
        asked.append(1)
        return len(asked) > 1

    return should_stop


@needs_openvino
@pytest.mark.parametrize("with_image", [True, False], ids=["vision pass", "prefill"])
def test_openvino_stops_while_reading_the_images_and_the_prompt(tiny_model, with_image):
    import numpy as np
    import torch
    from langchain_core.messages import HumanMessage
    from PIL import Image

    from qwenvl_agent.vlm.generation import GenerationSettings, Prompt, StepTimes, Stopped, build_inputs

    runtime = load_runtime(tiny_model, engine="openvino", weights="int8")
    picture = Image.fromarray(np.random.default_rng(5).integers(0, 255, (96, 96, 3), dtype=np.uint8))
    content = ([{"type": "image"}] if with_image else []) + [{"type": "text", "text": "Describe it. " * 50}]
    prompt = Prompt(messages=[{"role": "user", "content": content}], images=[picture] if with_image else [])
    settings = GenerationSettings(max_new_tokens=5, reuse_prefix=False)
    inputs, spans = build_inputs(runtime, prompt, settings)
    streamed = []

    class Streamer:
        def put(self, value):
            streamed.append(value)

        def end(self):
            pass

    kwargs = {"max_new_tokens": 5, "do_sample": False, "streamer": Streamer()}
    times = StepTimes()
    with runtime.gate.hold(), torch.inference_mode(), pytest.raises(Stopped):
        runtime.engine.generate(inputs, spans, settings, kwargs, times, _stop_after_first_check())
    assert times.images_encoded == 0 and times.prefill_tokens == 0 and len(streamed) == 0
    # The cancelled requests serve the next call as if nothing had happened.
    llm = ChatQwenVL(model=tiny_model, engine="openvino", max_tokens=4, reuse_prefix=False, cache_images=False)
    message = [{"type": "image", "image": picture}, {"type": "text", "text": "What is it?"}]
    first = llm.invoke([HumanMessage(content=message)]).content
    with runtime.gate.hold(), torch.inference_mode(), pytest.raises(Stopped):
        runtime.engine.generate(inputs, spans, settings, kwargs, StepTimes(), _stop_after_first_check())
    assert llm.invoke([HumanMessage(content=message)]).content == first


@needs_openvino
def test_openvino_cancels_a_running_prefill(tiny_model):
    import time

    import torch

    from qwenvl_agent.vlm.generation import GenerationSettings, Prompt, StepTimes, Stopped, build_inputs

    runtime = load_runtime(tiny_model, engine="openvino", weights="int8")
    settings = GenerationSettings(max_new_tokens=1, reuse_prefix=False)
    short, short_spans = build_inputs(runtime, Prompt([{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]), settings)
    greedy = {"max_new_tokens": 3, "do_sample": False}
    with runtime.gate.hold(), torch.inference_mode():
        before = runtime.engine.generate(short, short_spans, settings, greedy, StepTimes())
    long_prompt = Prompt([{"role": "user", "content": [{"type": "text", "text": "a b " * 4000}]}])  # 8,000 tokens: seconds
    inputs, spans = build_inputs(runtime, long_prompt, settings)
    asked: list[float] = []

    def stop_once_reading():  # asked before the engine starts, before the inference starts, then while it runs
        asked.append(time.monotonic())
        return len(asked) > 2

    with runtime.gate.hold(), torch.inference_mode():
        with pytest.raises(Stopped):
            runtime.engine.generate(inputs, spans, settings, {"max_new_tokens": 1, "do_sample": False}, StepTimes(), stop_once_reading)
        stopped_after = time.monotonic() - asked[2]
        after = runtime.engine.generate(short, short_spans, settings, greedy, StepTimes())
    assert stopped_after < 0.5, f"the prefill ran on for {stopped_after:.1f} s after the stop"
    assert torch.equal(before, after), "the cancelled request serves the next call as before"


@needs_openvino
def test_openvino_auto_runs_the_language_model_in_float32_and_the_vision_tower_as_the_cpu_prefers(tiny_model):
    import openvino as ov

    def precisions(runtime):
        model = runtime.engine.model
        language = model.language_model.request.get_compiled_model().get_property("INFERENCE_PRECISION_HINT")
        vision = model.vision_embeddings_merger.request.get_property("INFERENCE_PRECISION_HINT")
        return str(language), str(vision)

    cpu_default = str(ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT"))
    auto = load_runtime(tiny_model, engine="openvino", weights="int8")
    assert precisions(auto) == (str(ov.Type.f32), cpu_default)
    asked = load_runtime(tiny_model, engine="openvino", weights="int8", dtype="float32")
    assert asked is not auto and precisions(asked) == (str(ov.Type.f32), str(ov.Type.f32))
    reply = ChatQwenVL(model=tiny_model, engine="openvino", weights="int8", max_tokens=4).invoke("hi")
    assert reply.usage_metadata["output_tokens"] <= 4


@needs_openvino
def test_the_openvino_vision_tower_runs_simplified_and_encodes_as_the_exported_one(tiny_model):
    import numpy as np
    import openvino as ov

    runtime = load_runtime(tiny_model, engine="openvino", weights="int8", dtype="float32")
    model = runtime.engine.model
    rng = np.random.default_rng(0)

    def exported(name):  # the part as exported, compiled as the engine compiles it
        part = getattr(model, name)
        return ov.Core().compile_model(runtime.path / f"openvino_{name}_model.xml", "CPU", part.ov_config)

    def close(got, expected):
        assert len(got) == len(expected)
        for mine, theirs in zip(got, expected):
            np.testing.assert_allclose(mine, theirs, rtol=1e-4, atol=1e-5)

    # The patch embedding: one matrix product, no convolution, the same embeddings.
    embeddings = model.vision_embeddings
    vision = model.config.vision_config
    width = vision.in_channels * vision.temporal_patch_size * vision.patch_size**2
    patches = rng.standard_normal((64, width)).astype(np.float32)
    layers = [op.get_rt_info()["layerType"].astype(str) for op in embeddings.request.get_runtime_model().get_ops()]
    assert "FullyConnected" in layers and "Convolution" not in layers
    close(list(embeddings.request({"hidden_states": patches}).values()), list(exported("vision_embeddings")({"hidden_states": patches}).values()))

    # The attention: no mask, which one image does not need; the features of an all-zero mask.
    merger = model.vision_embeddings_merger
    assert "attention_mask" not in merger.input_names  # the engine no longer builds or passes one
    reference = exported("vision_embeddings_merger")
    count = 64
    inputs = {
        "hidden_states": rng.standard_normal((count, reference.input("hidden_states").get_partial_shape()[1].get_length())).astype(np.float32),
        "rotary_pos_emb": rng.standard_normal((count, reference.input("rotary_pos_emb").get_partial_shape()[1].get_length())).astype(np.float32),
    }
    one_image = np.zeros((1, count, count), np.float32)  # what optimum-intel builds for one image
    two_images = np.full((1, count, count), -np.inf, np.float32)
    two_images[:, : count // 2, : count // 2] = two_images[:, count // 2 :, count // 2 :] = 0
    got = list(merger.request(inputs).values())
    assert len(got) == 2  # the merged features and the deepstack ones
    close(got, list(reference({**inputs, "attention_mask": one_image}).values()))
    for mine, masked in zip(got, reference({**inputs, "attention_mask": two_images}).values()):
        assert not np.allclose(mine, masked, rtol=1e-4, atol=1e-5)  # a mask that matters would show
