"""The messages between the HTTP process (engine/client.py) and the engine process (engine/process.py).

Plain, picklable dataclasses over two one-way pipes; nothing here imports torch, so the HTTP process can speak
the protocol without loading the model's libraries.

    client -> engine   ClientMessage = AddRequest | AbortRequest | Shutdown
    engine -> client   EngineMessage = Ready | Failed (once, after loading) | Output (then at most one per loop
                       iteration)

The message classes are the message kinds: each side dispatches with `match` over the closed union (mypy checks
that every kind is handled) and raises ProtocolError for anything else.

An Output carries the acks of the adds read in that iteration (accepted, or refused with an AckError), every
Delta the step produced (one message per step, not per token), and the latest stats snapshot or None (pushed at
most every STATS_INTERVAL seconds while busy, and whenever the engine goes idle).
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field

from neoxserve.engine.outputs import Delta
from neoxserve.engine.sampling_params import SamplingParams
from neoxserve.engine.stats import StatsSnapshot

STATS_INTERVAL = 0.25


class AckError(enum.Enum):
    """Why the engine refused a request at once (the client raises the matching engine/errors.py exception)."""

    OVERLOADED = "overloaded"   # the bounded waiting queue is full: EngineOverloaded
    REJECTED = "rejected"       # the request can never run: RequestRejected
    INTERNAL = "internal"       # the engine failed while admitting it (a bug, logged there): EngineInternalError


class ProtocolError(Exception):
    """A message that is not part of this protocol: a bug on the other side, never skipped silently."""


@dataclass(frozen=True)
class ModelInfo:
    """What the engine tells the HTTP process about the loaded model."""

    name: str          # the model's name: "demo", or its directory's name
    path: str          # model directory (the HTTP process loads its tokenizer from there)
    max_context: int   # max_position_embeddings: prompt + max_new_tokens must fit
    is_chat: bool      # the tokenizer has the tuned model's chat tokens
    device: str = ""   # where the weights are, resolved (e.g. "cpu", "cuda:0"; the console shows it)
    dtype: str = ""    # the weights' dtype, resolved (e.g. "float32", "bfloat16")
    kernels: str = ""  # the native CPU kernels' variant (e.g. "avx512_vnni"), "none" for PyTorch's own

    def output_room(self, prompt_tokens: int) -> int:
        """How many tokens the context leaves for output after a prompt of `prompt_tokens`: the one context rule
        (prompt + max_new_tokens <= max_context), used by the engine's admission and the API's validation."""
        return self.max_context - prompt_tokens

    @property
    def max_prompt_tokens(self) -> int:
        """The longest prompt `output_room` leaves a token of output for: the API builds no ids past it."""
        return self.max_context - 1


# ---- client -> engine ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class AddRequest:
    request_id: str
    prompt_token_ids: list[int]
    params: SamplingParams


@dataclass(frozen=True)
class AbortRequest:
    request_id: str


@dataclass(frozen=True)
class Shutdown:
    """Stop after this loop iteration (in-flight requests are dropped: the client fails them)."""


ClientMessage = AddRequest | AbortRequest | Shutdown


# ---- engine -> client ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Ready:
    model_info: ModelInfo


@dataclass(frozen=True)
class Failed:
    """The engine could not start (e.g. a CheckpointError): its error text."""

    error: str


@dataclass(frozen=True)
class Ack:
    request_id: str
    error: AckError | None = None   # None: accepted
    message: str = ""               # why it was refused (RequestRejected's text reaches the client)


@dataclass(frozen=True)
class Output:
    acks: list[Ack] = field(default_factory=list)
    deltas: list[Delta] = field(default_factory=list)
    stats: StatsSnapshot | None = None


EngineMessage = Ready | Failed | Output
