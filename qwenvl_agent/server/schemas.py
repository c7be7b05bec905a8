"""The server's requests and responses as pydantic models: FastAPI validates request bodies with them and
``/openapi.json`` describes every route with them, so clients can generate code from it. Checks that depend
on this server's settings (``max_tokens`` cap, images, tool names) stay in the handlers."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Request(BaseModel):
    # Strict: "5" is not a number and 1.0 is not an integer, as in OpenAI's API. Other fields a client of
    # OpenAI's API sends (n, user, logprobs, …) are ignored.
    model_config = ConfigDict(strict=True, extra="ignore")


class TextPart(_Request):
    type: Literal["text"]
    text: str


class ImageURL(_Request):
    url: str = Field(min_length=1, description="A data URL; an http(s) URL or a path where this server allows them.")
    detail: str | None = None


class ImagePart(_Request):
    type: Literal["image_url"]
    image_url: ImageURL | str


ContentPart = Annotated[TextPart | ImagePart, Field(discriminator="type")]


class FunctionCall(_Request):
    name: str = Field(min_length=1)
    arguments: str | dict[str, Any] = "{}"


class ToolCall(_Request):
    id: str | None = None
    type: Literal["function"] = "function"
    function: FunctionCall


class Message(_Request):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    name: str | None = None


class FunctionDefinition(_Request):
    name: str = Field(min_length=1)
    description: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)


class Tool(_Request):
    type: Literal["function"] = "function"
    function: FunctionDefinition


class ToolChoiceFunction(_Request):
    name: str


class ToolChoiceObject(_Request):
    type: Literal["function"] = "function"
    function: ToolChoiceFunction


class JSONSchemaFormat(_Request):
    name: str | None = None
    schema_: dict[str, Any] = Field(alias="schema")
    strict: bool | None = None


class ResponseFormat(_Request):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaFormat | None = None


class StreamOptions(_Request):
    include_usage: bool = False


class ChatCompletionRequest(_Request):
    messages: list[Message] = Field(min_length=1)
    model: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    seed: int | None = None
    stop: str | Annotated[list[str], Field(max_length=4)] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    tools: list[Tool] | None = None
    tool_choice: str | ToolChoiceObject | None = Field(None, description="auto, none, required, or a tool")
    response_format: ResponseFormat | None = None


class FilePart(_Request):
    data: str | None = None
    url: str | None = None


class AgentRequest(_Request):
    model_config = ConfigDict(strict=True, extra="forbid")

    question: str | None = Field(None, min_length=1, pattern=r"\S", description="The question; or send it spoken, as audio.")
    audio: str | None = Field(None, min_length=1, description=(
        "The question spoken: a recording (wav, mp3, ogg/opus, webm, m4a) as a data URL or base64 text. It is "
        "transcribed first; the Transcript event says what was heard."))
    language: str | None = Field(None, max_length=16, description="The spoken question's language (en, zh, …); detected when absent.")
    files: list[str | FilePart] = Field(default_factory=list, description="Images or PDFs: data URLs or base64 text.")
    images: list[str | FilePart] = Field(
        default_factory=list, description="The same as files (its older name); given together, images come first.")
    thread_id: str | None = Field(None, max_length=128, description="A conversation id this server issued to this API key.")

    @model_validator(mode="after")
    def _one_question(self):
        if (self.question is None) == (self.audio is None):
            raise ValueError("give the question either as text (question) or spoken (audio), not both or neither")
        return self


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    error: ErrorDetail


class Health(BaseModel):
    status: Literal["ok", "loading", "error"]
    model: str
    model_loaded: bool
    busy: bool
    waiting: int
    error: str | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"]
    data: list[ModelCard]


class ResponseFunction(BaseModel):
    name: str
    arguments: str


class ResponseToolCall(BaseModel):
    id: str
    type: Literal["function"]
    function: ResponseFunction


class ResponseMessage(BaseModel):
    role: Literal["assistant"]
    content: str | None
    tool_calls: list[ResponseToolCall] | None = None


class Choice(BaseModel):
    index: int
    message: ResponseMessage
    finish_reason: str


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[Choice]
    usage: Usage


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for a route's errors, each in the OpenAI error shape."""
    described = {
        400: "A request this server will not run (the message names the field)",
        401: "A valid API key is required",
        404: "No such conversation for this API key",
        413: "The request body is larger than this server's limit",
        415: "The body is not declared as application/json",
        503: "The model is loading, could not load, or is busy (see Retry-After)",
    }
    responses: dict[int | str, dict[str, Any]] = {s: {"model": ErrorResponse, "description": described[s]} for s in statuses}
    responses["default"] = {"model": ErrorResponse, "description": "Any other error, in the OpenAI error shape"}
    return responses


# One server-sent event (OpenAPI 3.1 has the schema of an event stream describe each event): its data is one
# JSON object (a chunk, or an agent event), and the last event's data is [DONE].
SSE = {"text/event-stream": {"schema": {
    "type": "object",
    "properties": {"data": {"type": "string", "description": "A JSON object; the last event: [DONE]"},
                   "event": {"type": "string"}, "id": {"type": "string"}, "retry": {"type": "integer"}},
    "required": ["data"],
}}}
