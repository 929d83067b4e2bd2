"""What every route's body parser builds and every model route hands the model call (api/model_call.py): one
completion request, whichever protocol it came in (the parsers: api/qianfan_v1/requests.py,
api/openai_v2/requests.py)."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..engine.grammar import GrammarSpec


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
    # the OpenAI and Qianfan v2 routes (api/openai_v2/requests.py); the defaults are the v1 routes' behaviour
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
