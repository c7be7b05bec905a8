"""Shared fixtures: the tiny random Qwen3-VL checkpoint and test documents drawn on the spot."""

from __future__ import annotations

import os
import shutil
import tempfile

os.environ["HF_HUB_OFFLINE"] = "1"  # tests never touch the network
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# OpenVINO exports and compiled models of the tests' checkpoints go to a folder of this session's own.
os.environ["QWENVL_CACHE"] = tempfile.mkdtemp(prefix="qwenvl-test-cache-")

import pytest  # noqa: E402
from documents import draw_bar_chart, draw_invoice  # noqa: E402
from PIL import Image  # noqa: E402

from qwenvl_agent.vlm.openvino_export import openvino_available  # noqa: E402
from qwenvl_agent.vlm.testing import make_tiny_checkpoint  # noqa: E402

ENGINES = [
    "torch",
    pytest.param(
        "openvino",
        marks=pytest.mark.skipif(not openvino_available(), reason="OpenVINO is not installed (pip install '.[openvino]')"),
    ),
]


@pytest.fixture(scope="session", autouse=True)
def _remove_the_cache_folder():
    yield
    shutil.rmtree(os.environ["QWENVL_CACHE"], ignore_errors=True)


@pytest.fixture(params=ENGINES)
def engine(request) -> str:
    """Each engine that is installed: tests that take this fixture run once per engine."""
    return request.param


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    """Path of a tiny random Qwen3-VL checkpoint, built once per test session."""
    return str(make_tiny_checkpoint(tmp_path_factory.mktemp("tiny-qwen3-vl")))


@pytest.fixture(scope="session")
def tiny_runtime(tiny_model):
    from qwenvl_agent.vlm import load_runtime

    return load_runtime(tiny_model)


@pytest.fixture
def invoice_image() -> Image.Image:
    return draw_invoice()


@pytest.fixture
def chart_image() -> Image.Image:
    return draw_bar_chart()
