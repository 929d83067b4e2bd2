"""Whether a request fits the model's context: the one owner of the API's "prompt is too long" refusal (336003,
`context_length_exceeded` on the routes that answer with HTTP statuses). The engine's own rule is
`ModelInfo.output_room`; these checks refuse what it would refuse, before the engine is asked.

Two checks, at two moments: before tokenizing, the prompt's length in characters against what the context can
possibly hold (`check_prompt_chars`: no token stands for more than `tokenizer.max_chars_per_token` characters, so
a prompt of more than that times `ModelInfo.max_prompt_tokens` characters has more tokens than the context leaves
room for, whatever its text); after, the prompt's tokens and the output asked for (`max_new_tokens`).
"""
from __future__ import annotations

from ..engine.protocol import ModelInfo
from .errors import ApiError, out_of_range
from .completion_request import CompletionRequest

CONTEXT_LENGTH_EXCEEDED = "context_length_exceeded"


def prompt_too_long(req: CompletionRequest, why: str) -> ApiError:
    """The refusal of a request whose prompt (or messages) leaves no room for its output; `why` says by how much."""
    return out_of_range(f"prompt is too long: {why}", param="messages" if req.messages else "prompt",
                        reason=CONTEXT_LENGTH_EXCEEDED)


def max_prompt_chars(max_chars_per_token: float | None, model: ModelInfo) -> int | None:
    """The most characters a prompt that fits the context (`model.max_prompt_tokens` tokens at most) can have."""
    if max_chars_per_token is None:
        return None
    return int(max_chars_per_token * model.max_prompt_tokens)


def check_prompt_chars(req: CompletionRequest, max_chars: int | None, model: ModelInfo) -> None:
    """Refuse a prompt of more than `max_chars` (`max_prompt_chars`) characters without tokenizing it."""
    chars = req.input_chars()
    if max_chars is not None and chars > max_chars:
        raise prompt_too_long(req, f"{chars} characters, more than a context of {model.max_context} tokens can "
                                   f"hold ({max_chars} characters at most with this model's tokenizer)")


def max_new_tokens(req: CompletionRequest, service_max: int, prompt_tokens: int, model: ModelInfo,
                   default: int | None = None) -> int:
    """The request's maximum output (at most the service's), or `default` (else the service's limit) cut to what
    the context leaves (the engine's own rule, `ModelInfo.output_room`); 336003 when the prompt leaves no room."""
    room = model.output_room(prompt_tokens)
    context = model.max_context
    name, asked = req.max_tokens_name, req.max_output_tokens
    if room < 1:
        raise prompt_too_long(req, f"{prompt_tokens} tokens, the model context is {context} tokens")
    if asked is None:
        return min(service_max if default is None else min(default, service_max), room)
    if asked > service_max:
        raise out_of_range(f"{name} is {asked}, this service allows at most {service_max}", param=name)
    if asked > room:
        raise prompt_too_long(req, f"{prompt_tokens} prompt tokens + {asked} {name} exceed the model context of "
                                   f"{context} tokens")
    return asked
