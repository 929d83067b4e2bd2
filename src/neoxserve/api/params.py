"""A validated request + the service's defaults -> SamplingParams, with the output-length and context checks."""
from __future__ import annotations

from typing import TypeVar

from ..engine.protocol import ModelInfo
from ..engine.sampling_params import SamplingParams
from ..platform.records import Service
from .errors import out_of_range
from .validation import CompletionRequest

T = TypeVar("T", int, float)

CONTEXT_LENGTH_EXCEEDED = "context_length_exceeded"


def _pick(requested: T | None, service_default: T | None, fallback: T) -> T:
    if requested is not None:
        return requested
    return fallback if service_default is None else service_default


def max_new_tokens(req: CompletionRequest, service_max: int, prompt_tokens: int, model: ModelInfo,
                   default: int | None = None) -> int:
    """The request's maximum output (at most the service's), or `default` (else the service's limit) cut to what
    the context leaves (the engine's own rule, `ModelInfo.output_room`); 336003 when the prompt leaves no room."""
    room = model.output_room(prompt_tokens)
    context = model.max_context
    name, asked = req.max_tokens_name, req.max_output_tokens
    prompt_field = "messages" if req.messages else "prompt"
    if room < 1:
        raise out_of_range(f"prompt is too long: {prompt_tokens} tokens, the model context is {context} tokens",
                           param=prompt_field, reason=CONTEXT_LENGTH_EXCEEDED)
    if asked is None:
        return min(service_max if default is None else min(default, service_max), room)
    if asked > service_max:
        raise out_of_range(f"{name} is {asked}, this service allows at most {service_max}", param=name)
    if asked > room:
        raise out_of_range(f"prompt is too long: {prompt_tokens} prompt tokens + {asked} {name} exceed the model "
                           f"context of {context} tokens", param=prompt_field, reason=CONTEXT_LENGTH_EXCEEDED)
    return asked


def sampling_params(req: CompletionRequest, service: Service, max_tokens: int,
                    grammar: str | None = None) -> SamplingParams:
    """The engine adds the model's stop tokens itself (engine/worker/core.py): they are not the API's to pass.
    `grammar`: the compiled grammar of the request's structured output (api/structured.py), if it asked for one.
    Greedy decoding: top_p 0 (it keeps no candidate but the most likely one) or temperature 0 (OpenAI's)."""
    base = SamplingParams()
    top_p = _pick(req.top_p, service.top_p, base.top_p)
    temperature = _pick(req.temperature, service.temperature, base.temperature)
    greedy = top_p == 0.0 or temperature == 0.0
    return SamplingParams(
        temperature=temperature,
        top_k=_pick(req.top_k, service.top_k, base.top_k),
        top_p=top_p,
        penalty_score=_pick(req.penalty_score, service.penalty_score, base.penalty_score),
        max_new_tokens=max_tokens,
        stop=req.stop,
        seed=req.seed,
        greedy=greedy,
        n=req.n,
        presence_penalty=req.presence_penalty,
        frequency_penalty=req.frequency_penalty,
        logprobs=req.logprobs,
        prompt_logprobs=req.logprobs if req.echo else None,
        grammar=grammar,
    )
