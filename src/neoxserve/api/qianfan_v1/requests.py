"""v1 request bodies -> a validated CompletionRequest (docs/api.md#request-body).

Wrong or missing types are 336001 (fixed message); values out of range are 336003 with a message naming the
field and the rule: also text that is not valid Unicode (a lone surrogate such as "\ud800", which JSON escapes can
express and UTF-8 cannot) and integers too long to read (api/body.py). The field readers are api/fields.py.
Unknown fields (extra_parameters, ...) are accepted and ignored, whatever they hold.
"""
from __future__ import annotations

from .. import fields
from ..completion_request import CompletionRequest


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
