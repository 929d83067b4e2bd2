"""v1 request bodies -> a validated CompletionRequest (docs/api.md#request-body).

Wrong or missing types are 336001 (fixed message); values out of range are 336003 with a message naming the
field and the rule: also text that is not valid Unicode (a lone surrogate such as "\ud800", which JSON escapes can
express and UTF-8 cannot) and integers too long to read (api/body.py). The field readers are api/fields.py.
Unknown fields (extra_parameters, ...) are accepted and ignored, whatever they hold.

CompletionRequest is what every route hands the shared model call (api/model_call.py): the v2 and OpenAI parsers
build one too.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..engine.grammar import GrammarSpec
from . import fields


@dataclass
class CompletionRequest:
    prompt: str = ""                               # completion route
    messages: list[dict[str, str]] = field(default_factory=list)  # chat route
    system: str | None = None
    stream: bool = False
    temperature: float | None = None               # 0 = greedy (the OpenAI routes allow it)
    top_k: int | None = None
    top_p: float | None = None
    penalty_score: float | None = None
    stop: tuple[str, ...] = ()
    max_output_tokens: int | None = None
    max_tokens_name: str = "max_output_tokens"     # the field the client set it with, for error messages
    seed: int | None = None
    user_id: str | None = None
    # the OpenAI and Qianfan v2 routes (api/openai_requests.py); the defaults are the v1 routes' behaviour
    n: int = 1                                     # samples of the prompt (OpenAI choices)
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logprobs: int | None = None                    # None = off; k = the chosen token's logprob + the k most likely
    echo: bool = False                             # completions: the answer's text starts with the prompt
    include_usage: bool = False                    # stream_options.include_usage: a last frame with the usage
    structured: GrammarSpec | None = None          # response_format / structured_outputs (api/structured.py)
    structured_param: str = "response_format"      # the field that asked for it, for error messages

    def input_text(self) -> str:
        """Everything the caller wrote, for moderation."""
        parts = [self.prompt] if self.prompt else []
        if self.system:
            parts.append(self.system)
        parts.extend(m["content"] for m in self.messages)
        return "\n".join(parts)

    def input_chars(self) -> int:
        """Characters of text the caller wrote (prompt, or system and message contents)."""
        return len(self.prompt) + len(self.system or "") + sum(len(m["content"]) for m in self.messages)


def _messages(body: fields.Body) -> list[dict[str, str]]:
    value = body.get("messages")
    if value is None:
        raise fields.bad_type("messages", "present")
    if not isinstance(value, list):
        raise fields.bad_type("messages", "a list")
    messages = []
    for i, m in enumerate(value):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise fields.bad_type(f"messages[{i}]", "an object with string role and content")
        messages.append({"role": fields.text(f"messages[{i}].role", m["role"]),
                         "content": fields.text(f"messages[{i}].content", m["content"])})
    fields.alternating_turns(messages)
    return messages


def parse_request(value: object, chat: bool) -> CompletionRequest:
    body = fields.json_object(value)
    req = CompletionRequest()
    if chat:
        req.messages = _messages(body)
        req.system = fields.string(body, "system")
    else:
        req.prompt = fields.prompt(body.get("prompt"))

    req.stream = bool(fields.boolean(body, "stream"))
    req.temperature = fields.sampling_number(body, "temperature")
    req.top_k = fields.sampling_integer(body, "top_k")
    req.top_p = fields.sampling_number(body, "top_p")
    req.penalty_score = fields.sampling_number(body, "penalty_score")
    req.stop = fields.stop(body)
    req.max_output_tokens = fields.sampling_integer(body, "max_output_tokens")
    req.seed = fields.seed(body)
    req.user_id = fields.string(body, "user_id")
    return req
