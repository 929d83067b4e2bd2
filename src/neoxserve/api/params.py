"""A validated request + the service's defaults -> SamplingParams, with the output-length and context checks."""
from __future__ import annotations

from typing import TypeVar

from ..engine.protocol import ModelInfo
from ..engine.sampling_params import SamplingParams
from ..platform.records import Service
from .errors import out_of_range
from .validation import CompletionRequest

T = TypeVar("T", int, float)


def _pick(requested: T | None, service_default: T | None, fallback: T) -> T:
    if requested is not None:
        return requested
    return fallback if service_default is None else service_default


def max_new_tokens(req: CompletionRequest, service_max: int, prompt_tokens: int, model: ModelInfo) -> int:
    """The request's max_output_tokens (at most the service's), or the service's limit cut to what the context
    leaves (the engine's own rule, `ModelInfo.output_room`); 336003 when the prompt leaves no room."""
    room = model.output_room(prompt_tokens)
    context = model.max_context
    if room < 1:
        raise out_of_range(f"prompt is too long: {prompt_tokens} tokens, the model context is {context} tokens")
    if req.max_output_tokens is None:
        return min(service_max, room)
    if req.max_output_tokens > service_max:
        raise out_of_range(f"max_output_tokens is {req.max_output_tokens}, "
                           f"this service allows at most {service_max}")
    if req.max_output_tokens > room:
        raise out_of_range(f"prompt is too long: {prompt_tokens} prompt tokens + {req.max_output_tokens} "
                           f"max_output_tokens exceed the model context of {context} tokens")
    return req.max_output_tokens


def sampling_params(req: CompletionRequest, service: Service, max_tokens: int) -> SamplingParams:
    """The engine adds the model's stop tokens itself (engine/core.py): they are not the API's to pass."""
    base = SamplingParams()
    top_p = _pick(req.top_p, service.top_p, base.top_p)
    return SamplingParams(
        temperature=_pick(req.temperature, service.temperature, base.temperature),
        top_k=_pick(req.top_k, service.top_k, base.top_k),
        top_p=top_p,
        penalty_score=_pick(req.penalty_score, service.penalty_score, base.penalty_score),
        max_new_tokens=max_tokens,
        stop=req.stop,
        seed=req.seed,
        greedy=top_p == 0.0,  # top_p 0 keeps no candidate but the most likely one
    )
