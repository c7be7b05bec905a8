"""Where the model runs: here on the CPU (``ChatQwenVL``), or on an OpenAI-compatible server (vLLM,
llama.cpp's server, Ollama, ``qwenvl serve``) through LangChain's ``ChatOpenAI``."""

from __future__ import annotations

import os
from typing import Any

from langchain_core.language_models import BaseChatModel

BACKENDS = ("local", "openai")


def chat_model(
    backend: str = "local",
    *,
    model: str | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
    **local: Any,
) -> BaseChatModel:
    """A chat model for ``backend``. ``local``: ``ChatQwenVL(model=…, **local)``. ``openai``: ``ChatOpenAI`` at
    ``base_url`` (or ``$OPENAI_BASE_URL``) with ``api_key`` (or ``$OPENAI_API_KEY``), greedy by default."""
    if backend == "local":
        from qwenvl_agent.vlm import DEFAULT_MODEL, ChatQwenVL

        return ChatQwenVL(model=model or DEFAULT_MODEL, **local)
    if backend != "openai":
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}.")
    try:
        from langchain_openai import ChatOpenAI
    except ImportError as exc:
        raise ValueError("The openai backend needs langchain-openai: pip install 'qwenvl-agent[server]'.") from exc
    base_url = base_url or os.environ.get("OPENAI_BASE_URL")
    if not base_url:
        raise ValueError("The openai backend needs the server's address: --base-url http://host:port/v1.")
    if not model:
        raise ValueError("The openai backend needs the model name the server knows: --model NAME.")
    return ChatOpenAI(
        model=model,
        base_url=base_url,
        api_key=api_key or os.environ.get("OPENAI_API_KEY") or "not-needed",
        temperature=local.get("temperature", 0),
        max_tokens=local.get("max_tokens"),
    )


def planner_model(
    model: BaseChatModel | str | None,
    backend: str = "local",
    base_url: str | None = None,
    api_key: str | None = None,
) -> BaseChatModel:
    """The chat model an agent was given: the object itself, or one built by :func:`chat_model` from a model
    name (or the default model) and the backend options."""
    if isinstance(model, BaseChatModel):
        if backend != "local" or base_url or api_key:
            raise ValueError(
                "Pass either a chat model object or the backend options (backend, base_url, api_key) with a "
                "model name, not both."
            )
        return model
    if model is not None and not isinstance(model, str):
        raise ValueError(f"model must be a LangChain chat model or a model name; got {type(model).__name__}.")
    return chat_model(backend, model=model, base_url=base_url, api_key=api_key)
