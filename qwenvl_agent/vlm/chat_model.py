"""``ChatQwenVL``: Qwen3-VL running locally on the CPU as a LangChain chat model.

Images in every LangChain content form, streaming, async, tool calling (Qwen's ``<tool_call>`` format),
structured output. Constructing it is instant; the weights load on first use and are shared by every
instance that names the same model, revision and dtype. Around it: ``chat_fields`` (what the fields allow
and which decide a reply), ``chat_stream`` (LangChain's entry points, all the one stream of chunks),
``structured`` (structured output by JSON), ``messages``, ``tool_choice``, ``call_options`` (a call's prompt
and settings) and ``chunks`` (a generation as LangChain chunks).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from langchain_core.language_models import LangSmithParams
from langchain_core.language_models.base import LanguageModelInput
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGenerationChunk
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import (
    BaseModel, ConfigDict, Field, PrivateAttr, SecretStr, ValidationInfo, field_validator, model_validator,
)

from .call_options import call_request
from .chat_fields import apply_limits, check_choice, identifying_params, ls_params, refuse_unknown_arguments
from .chat_stream import StreamedChatModel
from .chunks import reply_chunks
from .generation import DEFAULT_MAX_IMAGE_TOKENS, GenerationSettings, Prompt
from .runtime import DEFAULT_MODEL, VLMRuntime, load_runtime
from .structured import check_method, json_structured_output
from .tool_choice import forced_call_prefix, normalise_tool_choice, offered_tools

__all__ = ["ChatQwenVL", "forced_call_prefix", "normalise_tool_choice", "offered_tools"]


class ChatQwenVL(StreamedChatModel):
    """Qwen3-VL (default ``Qwen/Qwen3-VL-2B-Instruct``) on the CPU, as a LangChain chat model.

    Setup:
        Install the package; the OpenVINO extra adds the fast CPU engine. The weights download on first
        use (about 4.3 GB), or ahead of time with ``qwenvl download``.

        .. code-block:: bash

            pip install "qwenvl-agent[openvino]"
            qwenvl download

    Key init args — the model:
        model: str
            Hub id or local folder of a Qwen3-VL checkpoint (or of its OpenVINO IR).
        revision: str | None
            Hub revision (branch, tag or commit) of ``model``; None: the default branch.
        engine: str
            "torch", "openvino" (int8/int4 weights, exported once) or "auto" (OpenVINO where installed, else torch).
        weights: str
            OpenVINO weights: "int8" (closest to the original) or "int4" (fastest).
        dtype: str
            "auto" (bfloat16 on CPUs with AMX-BF16/AVX512-BF16, else float32), "bfloat16" or "float32".
        num_threads: int | None
            Threads the engine computes with; None: all physical cores.

    Key init args — the reply:
        max_tokens: int
            Tokens written at most (default 512; also accepted as ``max_new_tokens``).
        temperature: float | None
            None or 0: greedy decoding (the default, best for tools); above 0: sampling.
        top_p: float | None
            Nucleus sampling: the smallest set of tokens whose probabilities add up to this.
        top_k: int | None
            Sample among this many most likely tokens.
        sampling: str
            "greedy" (unless ``temperature`` is set), or "model": the checkpoint's own generation
            settings (Qwen3-VL-2B-Instruct: temperature 0.7, top_p 0.8, top_k 20).
        repetition_penalty: float | None
            As in transformers: above 1 makes tokens already written less likely.
        seed: int | None
            Seed of the sampler, for replies that can be reproduced.
        repetition_guard: bool
            Stop a reply that keeps repeating a short cycle of tokens (finish_reason "repetition").
        stop: list[str] | None
            Stop sequences (also accepted as ``stop_sequences``); a call's own ``stop`` replaces them.
        timeout: float | None
            Time limit of a whole call in seconds: waiting for the model, preparing images, reading the
            prompt and writing the reply. A call that cannot start in time raises ``GenerationTimeout``;
            one that started returns the reply so far with finish_reason "timeout".
        streaming: bool
            Accepted for compatibility; ``invoke`` is the merged stream either way.
        constrain: bool
            Constrain decoding with a grammar (default True): with tools bound, every call names one of them with
            arguments that follow its schema (and, given ``allowed_ids``, only ids that exist); with a
            ``response_format`` the whole reply is JSON of that schema. False: the model writes freely and what it
            writes is read leniently.
        prompt_lookup_num_tokens: int
            Greedy replies only: up to this many draft tokens a forward pass (default 10), taken from where the
            reply's last tokens appeared earlier in the prompt or the reply; the model checks them in the pass it
            makes anyway, so a reply that quotes its input comes several tokens a pass. The reply is the same with
            any value; 0 turns it off. (The OpenVINO engine drafts on its paged model, not the stateful one.)
            Per call, ``draft_text="..."`` gives a text the reply is likely to repeat that is not in the prompt
            (``ocr_image`` passes RapidOCR's reading when the model reads a page): drafts are looked up in it
            first. The model never sees it; the reply is the same with it, without it or with a wrong one.

    Key init args — images:
        max_image_tokens: int
            Visual tokens per image at most (default 1024, one per 32x32 pixels); larger images are scaled down.
        min_image_tokens: int | None
            Visual tokens per image at least; None: the checkpoint's own (64). Smaller images are scaled up.
        allow_remote_images: bool
            Fetch http(s) image URLs (with a deadline and a size cap). Turn off for untrusted input.
        allow_private_urls: bool
            Also fetch from loopback, private and other non-public addresses; turn off where requests come from
            others (``qwenvl serve`` does), so an image URL cannot reach into the network around the machine.
        allow_local_files: bool | str
            Read image paths and file:// URLs: anywhere (True), nowhere (False), or only inside this folder.

    Key init args — the loaded model (shared by every ChatQwenVL of it):
        max_waiting: int | None
            Callers that may wait behind a running generation before ``BusyError`` (default 3). Like the
            cache sizes below, it belongs to the loaded copy: when given, it applies to that copy.
        cache_images: bool
            Reuse the vision tower's output for an image seen before (at the same image budget).
        reuse_prefix: bool
            Reuse the KV cache of the longest prefix shared with a recent prompt (torch engine).
        vision_cache_mb: float | None
            Memory for cached image features (default 512 MB).
        prefix_cache_mb: float | None
            Memory for the KV caches of recent prompts (default 1024 MB).

    Key init args — accepted for compatibility:
        max_retries: int | None
            A local model has nothing to retry.
        api_key: SecretStr | None
            A local model needs no key.

    Every reply setting can also be given per call (``llm.invoke(messages, max_tokens=64)``). An unknown
    argument is an error that names it (``ChatQwenVL(engin="openvino")``: "did you mean 'engine'?").

    Instantiate:
        .. code-block:: python

            from qwenvl_agent import ChatQwenVL

            llm = ChatQwenVL(max_tokens=256)  # instant: the weights load on first use
            llm = ChatQwenVL(model="/models/Qwen3-VL-2B-Instruct", engine="torch", dtype="float32")

    Invoke:
        .. code-block:: python

            reply = llm.invoke([("system", "Answer in one sentence."), ("human", "What is an invoice?")])
            reply.content, reply.usage_metadata, reply.response_metadata["finish_reason"]

    Stream:
        .. code-block:: python

            for chunk in llm.stream("Describe a typical invoice."):
                print(chunk.content, end="", flush=True)

    Async:
        Generation runs in a worker thread; the event loop stays free. Cancelling the task (or closing
        the stream) stops the generation within a token or so and frees the model.

        .. code-block:: python

            reply = await llm.ainvoke("What is a receipt?")
            async for chunk in llm.astream("What is a receipt?"):
                print(chunk.content, end="")

    Images:
        Standard ``image`` blocks (``url``: file, data or http(s); or ``base64``), OpenAI ``image_url``
        blocks, or ``{"type": "image", "image": <PIL image or path>}``, in any turn, several per message.
        An image that cannot be read raises ``ImageInputError`` saying why.

        .. code-block:: python

            from qwenvl_agent.samples import sample

            _, invoice = sample("invoice")  # a PIL image, drawn on the spot
            message = {"role": "user", "content": [
                {"type": "image", "image": invoice},  # or {"type": "image", "url": "file:///data/invoice.png"}
                {"type": "text", "text": "What is the invoice total?"},
            ]}
            reply = llm.invoke([message], max_image_tokens=512)

    Tool calling:
        Qwen's ``<tool_call>`` blocks become ``AIMessage.tool_calls`` (read leniently; what cannot be read
        becomes ``invalid_tool_calls``). ``tool_choice``: "auto", "none", "any"/"required"/True, or a
        tool name; a forced choice makes the reply start with the call.

        .. code-block:: python

            from pydantic import BaseModel, Field

            class GetWeather(BaseModel):
                '''Get the current weather in a city.'''

                city: str = Field(description="The city, e.g. Oslo")

            reply = llm.bind_tools([GetWeather]).invoke("What is the weather in Oslo?")
            reply.tool_calls  # [{"name": "GetWeather", "args": {"city": "Oslo"}, "id": "call_…", ...}]

        Calls are constrained by a grammar of the bound tools (``constrain=True``): a call names one of them
        and its arguments validate against the tool's schema. Per call, ``allowed_ids`` narrows id arguments
        to the ids that exist (the agent passes its store's ids at every step):

        .. code-block:: python

            llm.bind_tools(tools, tool_choice="any").invoke(messages, allowed_ids={"image_id": ["img-1", "img-2"]})

    Structured output:
        .. code-block:: python

            class Invoice(BaseModel):
                number: str
                total: float

            found = llm.with_structured_output(Invoice).invoke([message])  # an Invoice, from the image above
            found = llm.with_structured_output(Invoice, method="json_schema").invoke([message])  # the reply is the JSON
            llm.with_structured_output(Invoice, method="json_schema", include_raw=True).invoke([message])
            # {"raw": AIMessage, "parsed": Invoice | None, "parsing_error": Exception | None}

        ``method``: "function_calling" (a forced call of a tool named for the schema), "json_schema" (the whole
        reply constrained to the schema) or "json_mode" (any JSON object, parsed with the schema). The same per
        call: ``llm.invoke(messages, response_format=Invoice)`` (or OpenAI's ``{"type": "json_schema", ...}``).

    Engines:
        "auto" runs OpenVINO where it is installed and falls back to torch, with a warning, if it fails;
        a named engine that cannot run is an ``EngineError``.

        .. code-block:: python

            fast = ChatQwenVL(engine="openvino", weights="int4")  # exported once into a cache folder
            exact = ChatQwenVL(engine="torch", dtype="bfloat16")
            ChatQwenVL().runtime.engine_name  # "openvino" or "torch": the engine "auto" settled on
    """

    model: str = DEFAULT_MODEL
    revision: str | None = None
    engine: str = "auto"
    weights: str = "int8"
    dtype: str = "auto"
    num_threads: int | None = None
    max_tokens: int = Field(default=512, alias="max_new_tokens")
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    sampling: str = "greedy"
    repetition_penalty: float | None = None
    seed: int | None = None
    repetition_guard: bool = False
    constrain: bool = True
    prompt_lookup_num_tokens: int = Field(default=10, ge=0)
    stop: list[str] | None = Field(default=None, alias="stop_sequences")
    timeout: float | None = None
    streaming: bool = False
    max_image_tokens: int = DEFAULT_MAX_IMAGE_TOKENS
    min_image_tokens: int | None = None
    allow_remote_images: bool = True
    allow_private_urls: bool = True
    allow_local_files: bool | str = True
    max_waiting: int | None = None
    cache_images: bool = True
    reuse_prefix: bool = True
    vision_cache_mb: float | None = None
    prefix_cache_mb: float | None = None
    max_retries: int | None = None
    api_key: SecretStr | None = None

    model_config = ConfigDict(populate_by_name=True, protected_namespaces=())
    # The limits this instance last applied to each loaded model it used.
    _limits_applied: weakref.WeakKeyDictionary = PrivateAttr(default_factory=weakref.WeakKeyDictionary)

    @model_validator(mode="before")
    @classmethod
    def _refuse_unknown_arguments(cls, values: Any) -> Any:
        """A typo (or an argument of another version) must not quietly run something else."""
        return refuse_unknown_arguments(cls.model_fields, values)

    @field_validator("engine", "weights", "dtype")
    @classmethod
    def _known_choice(cls, value: str, info: ValidationInfo) -> str:
        return check_choice(info.field_name, value)

    @property
    def _llm_type(self) -> str:
        return "qwen3-vl"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        """Every setting that can change a reply: LangChain's cache keys its answers by these."""
        return identifying_params(self)

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        return ls_params(self, stop, kwargs)

    @property
    def runtime(self) -> VLMRuntime:
        """The loaded model (loaded now if this is its first use in the process)."""
        return self._runtime_for(self.model)

    def _runtime_for(self, model: str) -> VLMRuntime:
        runtime = load_runtime(
            model, self.revision, self.dtype, engine=self.engine, weights=self.weights, num_threads=self.num_threads
        )
        apply_limits(self, runtime, self._limits_applied)  # once per shared copy, again only when they change
        return runtime

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: dict[str, Any] | str | bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Offer tools to the model. ``tool_choice``: None/"auto", "none", "any"/"required"/True, a tool name,
        or OpenAI's and Anthropic's dict forms; anything else is a ``ValueError`` naming it."""
        formatted = [convert_to_openai_tool(tool) for tool in tools]
        choice = normalise_tool_choice(tool_choice, [t["function"]["name"] for t in formatted])
        return super().bind(tools=formatted, tool_choice=choice, **kwargs)

    def warm_prefix(self, messages: list[BaseMessage], tools: Sequence[Any] = ()) -> Any:
        """Have the KV state of ``messages`` with ``tools`` offered (an agent's system prompt and tools) ready, so
        a later call whose prompt starts with them prefills only the rest: see ``VLMRuntime.warm_prefix``. Loads
        the model. None when this model does not reuse prefixes (``reuse_prefix=False``). With ``constrain`` and
        tools, the grammar's view of the tokenizer is built now too, not in the first constrained reply."""
        if self.constrain and tools:
            self.runtime.prepare_grammars()
        if not self.reuse_prefix:
            return None
        options = {"tools": [convert_to_openai_tool(tool) for tool in tools]} if tools else {}
        prompt, _ = self._request(list(messages), None, options)
        return self.runtime.warm_prefix(prompt.messages, prompt.tools)

    def with_structured_output(
        self,
        schema: dict[str, Any] | type | None = None,
        *,
        include_raw: bool = False,
        method: str = "function_calling",
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, dict[str, Any] | BaseModel]:
        """Replies as ``schema`` (a pydantic model, a TypedDict or a JSON schema). ``method``: "function_calling"
        (a forced tool call), "json_schema" (the reply is JSON of the schema, constrained by its grammar) or
        "json_mode" (any JSON object). ``include_raw``: ``{"raw", "parsed", "parsing_error"}``, a reply that does
        not parse gives ``parsed`` None and the error instead of raising. ``strict`` is accepted: a constrained
        reply always follows the schema."""
        if check_method(method) == "function_calling":
            return super().with_structured_output(schema, include_raw=include_raw, **kwargs)
        return json_structured_output(self, schema, include_raw=include_raw, method=method, kwargs=kwargs)

    def _chunks(
        self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]
    ) -> Iterator[ChatGenerationChunk]:
        """Generate, one chunk per piece of the reply (answer text, reasoning or a tool call), then a last chunk
        with the usage and the finish reason."""
        model = kwargs.get("model", self.model)
        runtime = self._runtime_for(model)
        prompt, settings = self._request(messages, stop, kwargs)
        yield from reply_chunks(runtime, prompt, settings, model)

    def _request(
        self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]
    ) -> tuple[Prompt, GenerationSettings]:
        """The prompt and settings of one call: this model's fields, overridden by the call's keyword arguments."""
        model = kwargs.get("model", self.model)
        return call_request(self, messages, stop, kwargs, lambda: self._runtime_for(model).model.generation_config)
