"""Shared fixtures: the tiny random Qwen3-VL checkpoint and test documents drawn on the spot."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # tests never touch the network
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
from documents import draw_bar_chart, draw_invoice  # noqa: E402
from PIL import Image  # noqa: E402

from qwenvl_agent.vlm.testing import make_tiny_checkpoint  # noqa: E402


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
