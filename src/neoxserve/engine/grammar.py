"""Structured outputs' grammars: what a request asks for (GrammarSpec) -> llguidance's grammar text, validated
against the model's tokenizer. No torch here: the HTTP process compiles and refuses grammars with this module
(api/model_call.py, in a worker thread with a time limit); the engine builds each sequence's matcher from the
grammar text it receives (engine/worker/structured.py). docs/engine.md, "Structured outputs", says why llguidance.
"""
from __future__ import annotations

import json
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import llguidance

if TYPE_CHECKING:
    from llguidance._lib import JsonCompileOptions   # (the stub's own: no runtime name)

GrammarKind = Literal["json_object", "json_schema", "regex", "choice", "grammar"]

# JSON is written compactly with the separators of Python's json.dumps: free whitespace lets a model pad forever
# (a weak model does), and one spelling per answer keeps answers and their token counts predictable.
JSON_OPTIONS: JsonCompileOptions = {"whitespace_flexible": False, "item_separator": ", ",
                                                "key_separator": ": "}
ANY_JSON_OBJECT = '{"type": "object"}'
MAX_CACHED = 256


class GrammarError(ValueError):
    """The library rejects the grammar: the message says why."""


@dataclass(frozen=True)
class GrammarSpec:
    """`text` is the JSON schema (as JSON), the regex, the choices (a JSON list of strings) or the grammar (Lark
    or GBNF, as llguidance takes it); empty for json_object."""

    kind: GrammarKind
    text: str = ""


def to_llguidance(spec: GrammarSpec) -> str:
    """llguidance's grammar text for `spec` (not yet checked against a tokenizer). GrammarError if it is not
    even well-formed."""
    try:
        if spec.kind == "json_object":
            return llguidance.LLMatcher.grammar_from_json_schema(ANY_JSON_OBJECT, overrides=JSON_OPTIONS)
        if spec.kind == "json_schema":
            return llguidance.LLMatcher.grammar_from_json_schema(spec.text, overrides=JSON_OPTIONS)
        if spec.kind == "regex":
            return llguidance.LLMatcher.grammar_from_regex(spec.text)
        if spec.kind == "choice":
            choices = json.loads(spec.text)
            return llguidance.LLMatcher.grammar_from_lark("start: " + " | ".join(json.dumps(c) for c in choices))
        return llguidance.grammar_from("grammar", spec.text)
    except ValueError as e:   # not JSON, or a GBNF grammar the converter cannot read
        raise GrammarError(str(e)) from e


def load_tokenizer(model_dir: str | Path, vocab_size: int | None = None,
                   eos_tokens: tuple[int, ...] = ()) -> llguidance.LLTokenizer:
    """The model's tokenizer as llguidance reads it; `vocab_size` is the mask width (the ids the sampler may
    pick), `eos_tokens` the tokens that end a sequence (allowed once the grammar may end)."""
    path = str(Path(model_dir) / "tokenizer.json")
    return llguidance.LLTokenizer(path, n_vocab=vocab_size, eos_token=list(eos_tokens) or None)


class GrammarCompiler:
    """Compiles and validates grammars against a tokenizer, caching the outcome (grammar text or error) by the
    spec. Thread-safe: the HTTP process calls it from worker threads."""

    def __init__(self, tokenizer: llguidance.LLTokenizer) -> None:
        self.tokenizer = tokenizer
        self._cache: OrderedDict[GrammarSpec, str | GrammarError] = OrderedDict()
        self._lock = threading.Lock()

    def compile(self, spec: GrammarSpec) -> str:
        """The validated llguidance grammar text; GrammarError naming the problem."""
        with self._lock:
            hit = self._cache.get(spec)
            if hit is not None:
                self._cache.move_to_end(spec)
        if hit is None:
            hit = self._compile(spec)
            with self._lock:
                self._cache[spec] = hit
                while len(self._cache) > MAX_CACHED:
                    self._cache.popitem(last=False)
        if isinstance(hit, GrammarError):
            raise hit
        return hit

    def _compile(self, spec: GrammarSpec) -> str | GrammarError:
        try:
            grammar = to_llguidance(spec)
        except GrammarError as e:
            return e
        is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar, self.tokenizer)
        if is_error:
            return GrammarError(messages[0] if messages else "the grammar is invalid")
        return grammar
