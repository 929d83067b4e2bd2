"""OpenAI and Qianfan v2 request bodies -> a validated CompletionRequest (docs/api.md, "OpenAI routes" and
"Qianfan v2").

The v2 body is OpenAI's chat body with Qianfan's ranges (temperature in (0, 1], `penalty_score`, Qianfan's chat
turns); the OpenAI bodies have OpenAI's ranges (temperature in [0, 2], 0 meaning greedy). Both name the service
in `model`. A field of the wrong type or out of range is a 400 naming the field (api/http_errors.py). Fields that
change nothing here (`user`, `name`, `logit_bias` when empty, ...) are accepted and ignored; fields asking for
what this server cannot do (tools, several prompts in one request) are refused by name rather than ignored.
The output formats (`response_format`, `structured_outputs`) are api/structured.py's.
"""
from __future__ import annotations

from collections.abc import Mapping

from ...engine.sampling_params import MAX_LOGPROBS
from .. import fields, structured
from ..errors import out_of_range
from ..fields import Body
from ..completion_request import CompletionRequest

MAX_N = 16                  # samples per request (each holds its own KV blocks past the shared prompt)
MAX_TOP_LOGPROBS = MAX_LOGPROBS   # chat `top_logprobs` (OpenAI's limit is the engine's, 20)
MAX_COMPLETION_LOGPROBS = 5  # completions `logprobs` (OpenAI's limit)
OPENAI_TEMPERATURE = (0.0, 2.0)
OPENAI_COMPLETIONS_DEFAULT_MAX_TOKENS = 16   # OpenAI's documented default for /v1/completions

SYSTEM_ROLES = ("system", "developer")       # `developer` is OpenAI's newer name for the system message


def model_name(body: Body) -> str:
    """The `model` field: the api_name of a published service."""
    name = fields.string(body, "model")
    if not name:
        raise out_of_range("model is missing: it names a published service (GET /v1/models lists them)",
                           param="model")
    return name


def _content(value: object, where: str) -> str:
    """A message's content: a string, or OpenAI's list of content parts of which only text parts are taken."""
    if isinstance(value, str):
        return fields.text(where, value)
    if isinstance(value, list):
        texts = []
        for i, part in enumerate(value):
            if not isinstance(part, Mapping) or not isinstance(part.get("type"), str):
                raise fields.bad_type(f"{where}[{i}]", "a content part object with a type")
            if part["type"] != "text":
                raise out_of_range(f"{where}[{i}] is a {part['type']!r} part: this model reads text only",
                                   param="messages")
            text = part.get("text")
            if not isinstance(text, str):
                raise fields.bad_type(f"{where}[{i}].text", "a string")
            texts.append(fields.text(f"{where}[{i}].text", text))
        return "".join(texts)
    raise fields.bad_type(where, "a string or a list of content parts")


def chat_messages(body: Body, qianfan_turns: bool) -> tuple[str | None, list[dict[str, str]]]:
    """(system, messages) of a chat body. System (or developer) messages may only come first and are joined with
    newlines. With `qianfan_turns` (v2) the rest follow Qianfan's rule (fields.alternating_turns); else any order
    of user and assistant messages, at least one."""
    value = body.get("messages")
    if value is None:
        raise fields.bad_type("messages", "present")
    if not isinstance(value, list):
        raise fields.bad_type("messages", "a list")
    system: list[str] = []
    messages: list[dict[str, str]] = []
    for i, m in enumerate(value):
        if not isinstance(m, Mapping) or not isinstance(m.get("role"), str):
            raise fields.bad_type(f"messages[{i}]", "an object with a string role")
        role = fields.text(f"messages[{i}].role", m["role"])
        if m.get("tool_calls") or role in ("tool", "function"):
            raise out_of_range(f"messages[{i}] is a tool call or result: this model does not call tools",
                               param="messages")
        content = _content(m.get("content"), f"messages[{i}].content")
        if role in SYSTEM_ROLES:
            if messages:
                raise out_of_range(f"messages[{i}] is a {role} message after the conversation started: "
                                   "system messages must come first", param="messages")
            system.append(content)
        elif role in ("user", "assistant"):
            messages.append({"role": role, "content": content})
        else:
            raise out_of_range(f"messages[{i}].role is {role!r}: expected system, user or assistant",
                               param="messages")
    if qianfan_turns:
        fields.alternating_turns(messages, offset=len(system))
    elif not messages:
        raise out_of_range("messages holds no user or assistant message", param="messages")
    return ("\n".join(system) if system else None), messages


def _stream(body: Body, req: CompletionRequest) -> None:
    req.stream = bool(fields.boolean(body, "stream"))
    options = body.get("stream_options")
    if options is None:
        return
    if not isinstance(options, Mapping):
        raise fields.bad_type("stream_options", "an object")
    if not req.stream:
        raise out_of_range("stream_options is only allowed when stream is true", param="stream_options")
    req.include_usage = bool(fields.boolean(options, "include_usage"))


def _penalties(body: Body, req: CompletionRequest) -> None:
    for name in ("presence_penalty", "frequency_penalty"):
        setattr(req, name, fields.sampling_number(body, name) or 0.0)


def _max_tokens(body: Body, req: CompletionRequest, names: tuple[str, ...]) -> None:
    """The first of `names` that is set (max_completion_tokens before the older max_tokens)."""
    for name in names:
        value = fields.sampling_integer(body, "max_output_tokens", name)
        if value is not None:
            req.max_output_tokens, req.max_tokens_name = value, name
            return


def _n(body: Body, req: CompletionRequest) -> None:
    n = fields.integer(body, "n")
    fields.in_range("n", n, 1, MAX_N)
    req.n = n or 1


def _refuse_tools(body: Body) -> None:
    if body.get("tools") or body.get("functions"):
        raise out_of_range("tools are not supported: this model does not call functions", param="tools")


def _openai_common(body: Body, req: CompletionRequest) -> None:
    """The OpenAI sampling fields both OpenAI routes take, and the output format (vLLM's extras included)."""
    req.structured, req.structured_param = structured.parse(body, vllm_extras=True)
    _stream(body, req)
    req.temperature = fields.number(body, "temperature")
    fields.in_range("temperature", req.temperature, *OPENAI_TEMPERATURE)
    req.top_p = fields.sampling_number(body, "top_p")
    _n(body, req)
    req.stop = fields.stop(body, allow_string=True)
    req.seed = fields.seed(body)
    _penalties(body, req)
    req.user_id = fields.string(body, "user")
    if body.get("logit_bias"):
        raise out_of_range("logit_bias is not supported", param="logit_bias")


def openai_chat(body: Body) -> CompletionRequest:
    """POST /v1/chat/completions."""
    req = CompletionRequest()
    req.system, req.messages = chat_messages(body, qianfan_turns=False)
    _openai_common(body, req)
    _max_tokens(body, req, ("max_completion_tokens", "max_tokens"))
    _refuse_tools(body)
    if fields.boolean(body, "logprobs"):
        top = fields.integer(body, "top_logprobs")
        fields.in_range("top_logprobs", top, 0, MAX_TOP_LOGPROBS)
        req.logprobs = top or 0
    elif body.get("top_logprobs") is not None:
        raise out_of_range("top_logprobs needs logprobs: true", param="top_logprobs")
    return req


def openai_completion(body: Body) -> CompletionRequest:
    """POST /v1/completions. One prompt per request: a string, or a list holding one string."""
    req = CompletionRequest()
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        raise out_of_range(f"prompt holds {len(prompt)} prompts: send one prompt per request", param="prompt")
    req.prompt = fields.prompt(prompt, "a string (prompts given as token ids are not supported)")
    _openai_common(body, req)
    _max_tokens(body, req, ("max_tokens",))
    k = fields.integer(body, "logprobs")
    fields.in_range("logprobs", k, 0, MAX_COMPLETION_LOGPROBS)
    req.logprobs = k
    req.echo = bool(fields.boolean(body, "echo"))
    best_of = fields.integer(body, "best_of")
    if best_of is not None and best_of != req.n:
        raise out_of_range(f"best_of is {best_of}: only best_of equal to n ({req.n}) is supported", param="best_of")
    if fields.string(body, "suffix"):
        raise out_of_range("suffix is not supported", param="suffix")
    return req


def qianfan_v2_chat(body: Body) -> CompletionRequest:
    """POST /v2/chat/completions: OpenAI's chat body with Qianfan's ranges and chat turns."""
    req = CompletionRequest()
    req.system, req.messages = chat_messages(body, qianfan_turns=True)
    _stream(body, req)
    req.temperature = fields.sampling_number(body, "temperature")
    req.top_p = fields.sampling_number(body, "top_p")
    req.penalty_score = fields.sampling_number(body, "penalty_score")
    _max_tokens(body, req, ("max_completion_tokens",))
    req.stop = fields.stop(body)
    req.seed = fields.seed(body)
    _penalties(body, req)
    req.user_id = fields.string(body, "user")
    _refuse_tools(body)
    req.structured, req.structured_param = structured.parse(body, vllm_extras=False)
    return req
