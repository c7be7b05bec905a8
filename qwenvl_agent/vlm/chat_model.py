"""``ChatQwenVL``: Qwen3-VL running locally on the CPU as a LangChain chat model.

Images in every LangChain content form, streaming, async, tool calling (Qwen's ``<tool_call>`` format),
structured output. Constructing it is instant; the weights load on first use and are shared by every
instance that names the same model, revision and dtype.
"""

from __future__ import annotations

import difflib
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import replace
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LangSmithParams
from langchain_core.language_models.chat_models import agenerate_from_stream, generate_from_stream
from langchain_core.messages import AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import ConfigDict, Field, PrivateAttr, SecretStr, field_validator, model_validator

from .bridge import WorkerRun
from .generation import DEFAULT_MAX_IMAGE_TOKENS, GenerationSettings, GenerationStats, Prompt
from .messages import to_qwen_messages
from .openvino_export import check_weights
from .runtime import DEFAULT_MODEL, ENGINES, VLMRuntime, load_runtime, resolve_dtype
from .tool_calls import CLOSE, OPEN, THINK_END, Reasoning, ReplySplitter

_FORCED = ("any", "required")
# The fields that decide what a reply says (not how fast it comes or what may be read to make it).
_REPLY_SETTINGS = (
    "model", "revision", "engine", "weights", "dtype", "max_tokens", "temperature", "top_p", "top_k", "sampling",
    "repetition_penalty", "seed", "repetition_guard", "stop", "max_image_tokens", "min_image_tokens",
)


class ChatQwenVL(BaseChatModel):
    """Qwen3-VL (default ``Qwen/Qwen3-VL-2B-Instruct``) on the CPU through transformers.

    Example:
        .. code-block:: python

            from qwenvl_agent import ChatQwenVL

            llm = ChatQwenVL()  # or ChatQwenVL(model="/models/Qwen3-VL-2B-Instruct")
            llm.invoke([{"role": "user", "content": [
                {"type": "image", "url": "file:///tmp/invoice.png"},
                {"type": "text", "text": "What is the invoice total?"},
            ]}])
    """

    model: str = DEFAULT_MODEL
    """Hub id or local folder of a Qwen3-VL checkpoint (or of its OpenVINO IR)."""
    revision: str | None = None
    engine: str = "auto"
    """"torch", "openvino" (int8/int4 weights, exported once) or "auto" (OpenVINO where installed, else torch)."""
    weights: str = "int8"
    """OpenVINO weights: "int8" (closest to the original) or "int4" (fastest)."""
    dtype: str = "auto"
    """"auto" (bfloat16 on CPUs with AMX-BF16/AVX512-BF16, else float32), "bfloat16" or "float32"."""
    max_tokens: int = Field(default=512, alias="max_new_tokens")
    temperature: float | None = None
    """None or 0: greedy decoding (the default, best for tools); above 0: sampling."""
    top_p: float | None = None
    top_k: int | None = None
    sampling: str = "greedy"
    """"greedy" (unless ``temperature`` is set), or "model": the checkpoint's own generation settings
    (Qwen3-VL-2B-Instruct: temperature 0.7, top_p 0.8, top_k 20)."""
    repetition_penalty: float | None = None
    seed: int | None = None
    """Seed of the sampler, for replies that can be reproduced."""
    repetition_guard: bool = False
    """Stop a reply that keeps repeating a short cycle of tokens (finish_reason "repetition")."""
    stop: list[str] | None = Field(default=None, alias="stop_sequences")
    max_image_tokens: int = DEFAULT_MAX_IMAGE_TOKENS
    """Visual tokens per image at most (one per 32x32 pixels); larger images are scaled down."""
    min_image_tokens: int | None = None
    timeout: float | None = None
    """Time limit of a whole call in seconds: waiting for the model, preparing images, reading the prompt and
    writing the reply. The reply so far is returned with finish_reason "timeout"."""
    allow_remote_images: bool = True
    """Fetch http(s) image URLs (with a deadline and a size cap). Turn off for untrusted input."""
    allow_private_urls: bool = True
    """Also fetch from loopback, private and other non-public addresses; turn off where requests come from
    others (qwenvl serve does), so an image URL cannot reach into the network around the machine."""
    allow_local_files: bool | str = True
    """Read image paths and file:// URLs: anywhere (True), nowhere (False), or only inside this folder."""
    num_threads: int | None = None
    max_waiting: int | None = None
    """Callers that may wait behind a running generation before ``BusyError`` (default 3). Like the cache
    sizes below, it belongs to the loaded model every ChatQwenVL of it shares: when given, it applies to
    that copy."""
    cache_images: bool = True
    """Reuse the vision tower's output for an image seen before (at the same image budget)."""
    reuse_prefix: bool = True
    """Reuse the KV cache of the longest prefix shared with a recent prompt (torch engine)."""
    vision_cache_mb: float | None = None
    """Memory for cached image features (default 512 MB)."""
    prefix_cache_mb: float | None = None
    """Memory for the KV caches of recent prompts (default 1024 MB)."""
    streaming: bool = False
    max_retries: int | None = None
    """Accepted for compatibility; a local model has nothing to retry."""
    api_key: SecretStr | None = None
    """Accepted for compatibility; a local model needs no key."""

    model_config = ConfigDict(populate_by_name=True, protected_namespaces=())
    # The limits this instance last applied to each loaded model it used.
    _limits_applied: weakref.WeakKeyDictionary = PrivateAttr(default_factory=weakref.WeakKeyDictionary)

    @model_validator(mode="before")
    @classmethod
    def _refuse_unknown_arguments(cls, values: Any) -> Any:
        """A typo (or an argument of another version) must not quietly run something else."""
        if isinstance(values, dict):
            known = set(cls.model_fields) | {f.alias for f in cls.model_fields.values() if f.alias}
            unknown = [name for name in values if name not in known]
            if unknown:
                hints = []
                for name in unknown:
                    close = difflib.get_close_matches(name, sorted(known), n=1)
                    hints.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
                raise ValueError(f"ChatQwenVL got unknown argument{'s' if len(hints) > 1 else ''}: {', '.join(hints)}.")
        return values

    @field_validator("engine")
    @classmethod
    def _known_engine(cls, engine: str) -> str:
        if str(engine).lower() not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)}; got {engine!r}.")
        return str(engine).lower()

    @field_validator("weights")
    @classmethod
    def _known_weights(cls, weights: str) -> str:
        return check_weights(weights)

    @field_validator("dtype")
    @classmethod
    def _known_dtype(cls, dtype: str) -> str:
        resolve_dtype(dtype)  # refuses what it does not know; "auto" stays "auto" until the model loads
        return dtype

    @property
    def _llm_type(self) -> str:
        return "qwen3-vl"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        """Every setting that can change a reply: LangChain's cache keys its answers by these."""
        params = {name: getattr(self, name) for name in _REPLY_SETTINGS}
        params["stop_sequences"] = params.pop("stop")  # LangChain puts a call's own ``stop`` under "stop"
        return params

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = LangSmithParams(
            ls_provider="qwenvl",
            ls_model_name=kwargs.get("model", self.model),
            ls_model_type="chat",
            ls_temperature=kwargs.get("temperature", self.temperature),
            ls_max_tokens=kwargs.get("max_tokens", self.max_tokens),
        )
        if stop or self.stop:
            params["ls_stop"] = stop or self.stop
        return params

    @property
    def runtime(self) -> VLMRuntime:
        """The loaded model (loaded now if this is its first use in the process)."""
        return self._runtime_for(self.model)

    def _runtime_for(self, model: str) -> VLMRuntime:
        runtime = load_runtime(
            model, self.revision, self.dtype, engine=self.engine, weights=self.weights, num_threads=self.num_threads
        )
        # This instance's limits go to the shared copy once, and again only when they change: applied on every
        # call, two instances that disagree would flip them back and forth (a smaller cache evicting each time).
        limits = {
            "max_waiting": self.max_waiting,
            "vision_cache_mb": self.vision_cache_mb,
            "prefix_cache_mb": self.prefix_cache_mb,
        }
        if self._limits_applied.get(runtime) != limits:
            runtime.with_limits(**limits, by=id(self))
            self._limits_applied[runtime] = limits
        return runtime

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable | BaseTool],
        *,
        tool_choice: dict | str | bool | None = None,
        **kwargs: Any,
    ) -> Runnable:
        """Offer tools to the model. ``tool_choice``: None/"auto", "none", "any"/"required", or a tool name."""
        formatted = [convert_to_openai_tool(tool) for tool in tools]
        choice = normalise_tool_choice(tool_choice, [t["function"]["name"] for t in formatted])
        return super().bind(tools=formatted, tool_choice=choice, **kwargs)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        for chunk in self._chunks(messages, stop, kwargs):
            if run_manager:
                run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        """The generation runs in a worker thread (``WorkerRun``); the event loop only awaits its chunks.
        Cancelling the task (or closing the stream) stops the generation within a token or so and frees the model."""
        run = WorkerRun(lambda: self._chunks(messages, stop, kwargs), name="qwenvl-astream")
        async for chunk in run.aiterate():
            if run_manager:
                await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        """The merged stream: ``invoke`` and ``stream`` give the same reply by construction."""
        return generate_from_stream(self._stream(messages, stop, run_manager, **kwargs))

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return await agenerate_from_stream(self._astream(messages, stop, run_manager, **kwargs))

    def _chunks(self, messages, stop, kwargs) -> Iterator[ChatGenerationChunk]:
        """Generate, one chunk per piece of the reply (answer text, reasoning or a tool call), then a last chunk
        with the usage and the finish reason."""
        model = kwargs.get("model", self.model)
        runtime = self._runtime_for(model)
        prompt, settings = self._request(messages, stop, kwargs)
        names = [tool["function"]["name"] for tool in prompt.tools or []]
        splitter = ReplySplitter(thinking=runtime.opens_thinking, tool_names=names)
        calls = 0

        def emit(parts: list[Any]) -> Iterator[ChatGenerationChunk]:
            nonlocal calls
            for part in parts:
                if isinstance(part, str):
                    yield ChatGenerationChunk(message=AIMessageChunk(content=part))
                elif isinstance(part, Reasoning):
                    yield ChatGenerationChunk(message=AIMessageChunk(content="", additional_kwargs={"reasoning_content": part.text}))
                else:
                    yield ChatGenerationChunk(message=AIMessageChunk(content="", tool_call_chunks=[part.as_chunk(calls)]))
                    calls += 1

        forced, stats = prompt.assistant_prefix, []
        if forced and runtime.opens_thinking:
            # A Thinking model reasons first; the forced call opens right after its reasoning.
            thought = Prompt(prompt.messages, prompt.images, prompt.tools, assistant_prefix="")
            for item in runtime.stream(thought, replace(settings, stop=(THINK_END,))):
                if isinstance(item, GenerationStats):
                    stats.append(item)
                else:
                    yield from emit(splitter.feed(item))
            prompt = replace(prompt, assistant_prefix=splitter.reasoning + THINK_END + "\n\n" + forced)
            yield from emit(splitter.feed(THINK_END + "\n\n"))
        yield from emit(splitter.feed(forced))
        for item in runtime.stream(prompt, settings):
            if isinstance(item, GenerationStats):
                stats.append(item)
            else:
                yield from emit(splitter.feed(item))
        yield from emit(splitter.finish())
        yield self._last_chunk(_combined(stats), model, has_calls=calls > 0)

    def _last_chunk(self, stats: GenerationStats, model: str, has_calls: bool) -> ChatGenerationChunk:
        reason = "tool_calls" if has_calls and stats.finish_reason == "stop" else stats.finish_reason
        times = stats.times
        message = AIMessageChunk(
            content="",
            chunk_position="last",
            usage_metadata={
                "input_tokens": stats.input_tokens,
                "output_tokens": stats.output_tokens,
                "total_tokens": stats.input_tokens + stats.output_tokens,
                "input_token_details": {"cache_read": times.reused_tokens},
            },
            response_metadata={
                "model_name": model,
                "model_provider": "qwenvl",
                "finish_reason": reason,
                "generation_seconds": round(stats.seconds, 3),
                "timings": {
                    "first_token_seconds": _rounded(times.first_token_seconds),
                    "vision_seconds": round(times.vision_seconds, 3),
                    "prefill_seconds": round(times.prefill_seconds, 3),
                    "prefill_tokens": times.prefill_tokens,
                    "reused_tokens": times.reused_tokens,
                    "images_encoded": times.images_encoded,
                    "images_cached": times.images_cached,
                },
            },
        )
        return ChatGenerationChunk(message=message, generation_info={"finish_reason": reason})

    def _request(self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]):
        """The prompt and settings of one call: instance fields, overridden by per-call keyword arguments."""
        timeout = kwargs.get("timeout", self.timeout)
        deadline = time.monotonic() + timeout if timeout else None  # the clock starts with the call
        qwen_messages, images = to_qwen_messages(
            messages,
            allow_remote=kwargs.get("allow_remote_images", self.allow_remote_images),
            allow_private=kwargs.get("allow_private_urls", self.allow_private_urls),
            local_files=kwargs.get("allow_local_files", self.allow_local_files),
        )
        tools, choice = offered_tools(kwargs.get("tools"), kwargs.get("tool_choice"))
        prefix = forced_call_prefix(choice, tools) if tools else ""
        stops = list(stop if stop is not None else self.stop or [])
        if prefix:
            stops.append(CLOSE)  # one forced call, then stop
        sampling = self._sampling(kwargs)
        settings = GenerationSettings(
            max_new_tokens=kwargs.get("max_tokens", self.max_tokens),
            stop=tuple(stops),
            deadline=deadline,
            max_image_tokens=kwargs.get("max_image_tokens", self.max_image_tokens),
            min_image_tokens=kwargs.get("min_image_tokens", self.min_image_tokens),
            cache_images=kwargs.get("cache_images", self.cache_images),
            reuse_prefix=kwargs.get("reuse_prefix", self.reuse_prefix),
            seed=kwargs.get("seed", self.seed),
            repetition_guard=kwargs.get("repetition_guard", self.repetition_guard),
            **sampling,
        )
        return Prompt(messages=qwen_messages, images=images, tools=tools, assistant_prefix=prefix), settings

    def _sampling(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Temperature, top_p, top_k and repetition penalty: given ones, else the checkpoint's own for
        ``sampling="model"``, else greedy."""
        given = {
            "temperature": kwargs.get("temperature", self.temperature),
            "top_p": kwargs.get("top_p", self.top_p),
            "top_k": kwargs.get("top_k", self.top_k),
            "repetition_penalty": kwargs.get("repetition_penalty", self.repetition_penalty),
        }
        sampling = kwargs.get("sampling", self.sampling)
        if sampling not in ("greedy", "model"):
            raise ValueError(f"sampling must be 'greedy' or 'model'; got {sampling!r}.")
        if sampling == "model":
            config = self._runtime_for(kwargs.get("model", self.model)).model.generation_config
            own = {name: getattr(config, name, None) for name in given}
            if not getattr(config, "do_sample", False):
                own["temperature"] = None
            given = {name: value if value is not None else own[name] for name, value in given.items()}
        return given


def _combined(stats: list[GenerationStats]) -> GenerationStats:
    """One report for a reply made in two generations (a Thinking model's reasoning, then its forced call)."""
    if len(stats) == 1:
        return stats[0]
    first, last = stats[0], stats[-1]
    return GenerationStats(
        input_tokens=first.input_tokens,
        output_tokens=sum(s.output_tokens for s in stats),
        finish_reason=last.finish_reason,
        seconds=sum(s.seconds for s in stats),
        times=first.times,
    )


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def offered_tools(tools: Sequence[Any] | None, choice: Any) -> tuple[list[dict[str, Any]] | None, str | None]:
    """The tools one call offers, in OpenAI's format, and its ``tool_choice`` normalised: the one way in for
    tools and a choice given to ``bind_tools``, to ``bind`` or per call. "none" offers no tools."""
    formatted = [convert_to_openai_tool(tool) for tool in tools or []]
    choice = normalise_tool_choice(choice, [t["function"]["name"] for t in formatted])
    return (formatted or None) if choice != "none" else None, choice


def normalise_tool_choice(choice: Any, names: list[str]) -> str | None:
    """None, "auto", "none", "any" or a tool name, from each form LangChain and OpenAI use: None/"auto",
    "none"/False, "any"/"required"/True, a tool name, ``{"type": "function", "function": {"name": …}}``,
    ``{"type": "tool", "name": …}`` or ``{"type": "any"}``. ``ValueError`` naming the value for anything else."""
    given = choice
    if isinstance(choice, dict):
        function = choice.get("function")
        choice = (function.get("name") if isinstance(function, dict) else None) or choice.get("name") or choice.get("type")
    if choice is None or choice == "auto":
        return choice
    if choice is True or choice in _FORCED:
        return "any"
    if choice is False or choice == "none":
        return "none"
    if isinstance(choice, str) and choice in names:
        return choice
    raise ValueError(f"tool_choice {given!r} is not 'auto', 'none', 'any', 'required' or one of the tools {names}.")


def forced_call_prefix(choice: str | None, tools: list[dict[str, Any]]) -> str:
    """The start of the assistant turn that makes the model call a tool (or the named tool)."""
    if choice is None or choice in ("auto", "none"):
        return ""
    if choice == "any" and len(tools) == 1:
        choice = tools[0]["function"]["name"]
    if choice == "any":
        return f'{OPEN}\n{{"name": "'
    return f'{OPEN}\n{{"name": "{choice}", "arguments": '

