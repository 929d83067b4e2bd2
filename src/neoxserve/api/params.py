"""A validated request + the service's defaults -> SamplingParams (the output length: api/context_fit.py)."""
from __future__ import annotations

from typing import TypeVar

from ..engine.sampling_params import SamplingParams
from ..platform.records import Service
from .completion_request import CompletionRequest

T = TypeVar("T", int, float)


def _pick(requested: T | None, service_default: T | None, fallback: T) -> T:
    if requested is not None:
        return requested
    return fallback if service_default is None else service_default


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
