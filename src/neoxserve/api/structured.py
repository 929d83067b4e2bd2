"""Structured outputs at the API: the request fields that ask for a format -> a GrammarSpec, and its compilation
(in a worker thread, with a time limit) into the grammar text the engine follows. docs/api.md, "Structured
outputs".

- `response_format` (OpenAI routes and Qianfan v2): `{"type": "text"}` (nothing), `{"type": "json_object"}`, or
  `{"type": "json_schema", "json_schema": {"name", "schema", "strict"}}`.
- `structured_outputs` (OpenAI routes, vLLM's extra): an object with exactly one of `json` (a schema, object or
  JSON text), `regex`, `choice` (a list of strings), `grammar` (Lark or GBNF), `json_object` (true).

A grammar the library rejects, or one that takes longer than `structured_output_compile_timeout` to compile, is
336003 naming the field and the problem (400 on the routes with HTTP statuses).
"""
from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor

from ..engine.grammar import GrammarCompiler, GrammarError, GrammarSpec, load_tokenizer
from ..engine.protocol import ModelInfo
from . import fields
from .errors import out_of_range
from .fields import Body

STRUCTURED_OUTPUTS_KEYS = ("json", "regex", "choice", "grammar", "json_object")


def _schema_text(value: object, name: str) -> str:
    """A JSON schema given as an object (or, for structured_outputs.json, as JSON text of one)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as e:
            raise out_of_range(f"{name} is not valid JSON: {e}", param=name.split(".")[0]) from e
    if not isinstance(value, Mapping):
        raise fields.bad_type(name, "a JSON schema object")
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def _response_format(value: object) -> GrammarSpec | None:
    if not isinstance(value, Mapping):
        raise fields.bad_type("response_format", "an object")
    kind = value.get("type", "text")
    if kind == "text":
        return None
    if kind == "json_object":
        return GrammarSpec("json_object")
    if kind == "json_schema":
        spec = value.get("json_schema")
        if not isinstance(spec, Mapping):
            raise fields.bad_type("response_format.json_schema", "an object with the schema")
        if spec.get("name") is not None and not isinstance(spec["name"], str):
            raise fields.bad_type("response_format.json_schema.name", "a string")
        if spec.get("strict") is not None and not isinstance(spec["strict"], bool):
            raise fields.bad_type("response_format.json_schema.strict", "a boolean")
        if spec.get("schema") is None:
            return GrammarSpec("json_object")
        return GrammarSpec("json_schema", _schema_text(spec["schema"], "response_format.json_schema.schema"))
    shown = fields.echo(kind) if isinstance(kind, str) else kind
    raise out_of_range(f"response_format type {shown!r} is not supported: text, json_object or json_schema",
                       param="response_format")


def _structured_outputs(value: object) -> GrammarSpec:
    name = "structured_outputs"
    if not isinstance(value, Mapping):
        raise fields.bad_type(name, "an object")
    for key in value:
        if key not in STRUCTURED_OUTPUTS_KEYS:
            raise out_of_range(f"{name}.{fields.echo(str(key))} is not supported: give one of "
                               f"{', '.join(STRUCTURED_OUTPUTS_KEYS)}", param=name)
    given = [k for k in STRUCTURED_OUTPUTS_KEYS if value.get(k) is not None and value.get(k) is not False]
    if len(given) != 1:
        raise out_of_range(f"{name} must give exactly one of {', '.join(STRUCTURED_OUTPUTS_KEYS)}"
                           + (f" (it gives {', '.join(given)})" if given else ""), param=name)
    key = given[0]
    item = value[key]
    where = f"{name}.{key}"
    if key == "json":
        return GrammarSpec("json_schema", _schema_text(item, where))
    if key == "json_object":
        if item is not True:
            raise fields.bad_type(where, "true")
        return GrammarSpec("json_object")
    if key == "choice":
        if not isinstance(item, list) or not item or not all(isinstance(c, str) and c for c in item):
            raise fields.bad_type(where, "a non-empty list of non-empty strings")
        return GrammarSpec("choice", json.dumps([fields.text(where, c) for c in item], ensure_ascii=False))
    if not isinstance(item, str) or not item:
        raise fields.bad_type(where, "a non-empty string")
    return GrammarSpec("regex" if key == "regex" else "grammar", fields.text(where, item))


def parse(body: Body, vllm_extras: bool) -> tuple[GrammarSpec | None, str]:
    """The format a body asks for and the field that asks for it; `vllm_extras` admits `structured_outputs`."""
    response_format = body.get("response_format")
    extra = body.get("structured_outputs") if vllm_extras else None
    if response_format is not None and extra is not None:
        spec = _response_format(response_format)
        if spec is not None:
            raise out_of_range("response_format and structured_outputs both ask for a format: give one",
                               param="structured_outputs")
    if extra is not None:
        return _structured_outputs(extra), "structured_outputs"
    if response_format is not None:
        return _response_format(response_format), "response_format"
    return None, "response_format"


class Grammars:
    """Compiles the grammars of requests off the event loop, in threads of its own (a slow grammar holds up
    neither the loop nor the prompts' tokenization), caching the outcome by the grammar's text
    (engine/grammar.py). The tokenizer is loaded with the first constrained request."""

    def __init__(self, model: ModelInfo, timeout: float) -> None:
        self.model = model
        self.timeout = timeout
        self._pool = ThreadPoolExecutor(2, thread_name_prefix="grammars")
        self._compiler: GrammarCompiler | None = None

    async def compile(self, spec: GrammarSpec, param: str) -> str:
        loop = asyncio.get_running_loop()
        if self._compiler is None:
            tokenizer = await loop.run_in_executor(self._pool, load_tokenizer, self.model.path)
            self._compiler = GrammarCompiler(tokenizer)
        try:
            # a compile that overruns goes on in its thread until llguidance's own limits stop it; its outcome
            # is then cached, and the refusal stands
            return await asyncio.wait_for(loop.run_in_executor(self._pool, self._compiler.compile, spec),
                                          self.timeout)
        except TimeoutError:
            raise out_of_range(f"{param}: the grammar took longer than {self.timeout:g} s to compile "
                               "(structured_output_compile_timeout)", param=param) from None
        except GrammarError as e:
            raise out_of_range(f"{param} cannot be followed: {e}".rstrip(), param=param) from None
