"""Token counting: Qianfan's `POST /rpc/2.0/ai_custom/v1/wenxinworkshop/tokenizer/erniebot` (what the qianfan SDK's
`Tokenizer.count_tokens(mode="remote")` calls) and vLLM's `POST /tokenize` and `POST /detokenize` (docs/api.md,
"Token counting").

Each is a call of the app to a service, like a model call: the app must be allowed to call it (336004), and the
call is admitted against the app's limits (QPS, RPM, daily and total count it; it reserves and uses no tokens, so
TPM is untouched) and recorded in its usage as one call with no tokens. The tokenizer is the engine client's, the
one the model routes count prompts with, run in the inputs pool (off the event loop). Errors: the v1 route answers
in its business-error shape at HTTP 200; /tokenize and /detokenize in the OpenAI shape with a status.
"""
from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Request
from fastapi.responses import Response

from ..platform import App
from ..platform.errors import API_NAME_NOT_EXIST, MESSAGES
from ..platform.records import Service
from . import fields
from .body import parse_json
from .call_ledger import CallLedger
from .errors import ApiError, compact, error_response, new_id, out_of_range
from .fields import Body
from .http_errors import openai_error_response
from .model_call import ModelCallRunner, engine_error
from .openai_v2.requests import chat_messages
from .platform_calls import authenticate, authenticate_bearer, platform_call, platform_check
from .route_table import DETOKENIZE, TOKENIZE, V1_TOKENIZER


class TokenCounts:
    def __init__(self, runner: ModelCallRunner) -> None:
        self.runner = runner

    async def _counted(self, route: str, request: Request, app_of: Callable[[], Awaitable[App]],
                       work: Callable[[App, Body], Awaitable[tuple[Service, Callable[[], Callable[[], Any]]]]],
                       answer: Callable[[str, Any], dict[str, Any]],
                       refusal: Callable[[ApiError, str], Response]) -> Response:
        """One counted call: authenticate (`app_of`), read the body, let `work` pick the service; check the
        permission, then the rest of the body (work's second result, which returns the tokenizer work), admit, run
        the work in the inputs pool, answer. Recorded once in the app's usage however it ends."""
        runner = self.runner
        started, rid = time.monotonic(), new_id()
        ledger = CallLedger(runner.platform)
        headers: dict[str, str] = {}
        try:
            app = await app_of()
            raw = await request.body()
            body = fields.json_object(await runner.inputs.run(len(raw), lambda: parse_json(raw)))
            service, parse = await work(app, body)
            ledger.identified(app, service)
            platform_check(runner.platform.check_permission, app, service)
            tokenize = parse()
            admission = await platform_call(runner.platform.admit, app, service, 0)
            ledger.admitted(admission, 0)
            headers = admission.rate_limit_headers()
            result = await runner.inputs.run(len(raw), tokenize)
            await ledger.succeeded(0)
            runner.metrics.observe(route, 0, time.monotonic() - started)
            return Response(compact(answer(rid, result)), media_type="application/json", headers=headers)
        except Exception as e:
            error = engine_error(e, rid)
            await ledger.failed()
            runner.metrics.observe(route, error.code, time.monotonic() - started)
            error.headers = {**headers, **error.headers}
            return refusal(error, rid)

    async def _service(self, app: App, name: str) -> Service:
        try:
            return await platform_call(self.runner.platform.find_service, app, name)
        except ApiError as e:
            e.detail, e.param = f"the model {fields.echo(name)!r} does not exist (no service is published as it)", \
                "model"
            raise

    async def erniebot(self, request: Request) -> Response:
        """Qianfan's token count: `{"prompt", "model"}` -> `usage.prompt_tokens` = `usage.total_tokens`."""
        tokenizer = self.runner.engine.tokenizer

        async def work(app: App, body: Body) -> tuple[Service, Callable[[], Callable[[], int]]]:
            model = fields.string(body, "model")
            if not model:
                raise fields.bad_type("model", "present: the api_name or model name of a service")
            service = await self._service(app, model)

            def parse() -> Callable[[], int]:
                prompt = fields.prompt(body.get("prompt"))
                return lambda: len(tokenizer.encode(prompt))
            return service, parse

        def answer(rid: str, count: int) -> dict[str, Any]:
            return {"id": rid, "object": "tokenizer", "created": int(time.time()),
                    "usage": {"prompt_tokens": count, "total_tokens": count}}

        def refusal(error: ApiError, rid: str) -> Response:
            return error_response(error, rid, error.headers)

        return await self._counted(V1_TOKENIZER.label, request, lambda: authenticate(self.runner.platform, request),
                                   work, answer, refusal)

    async def _named_service(self, app: App, body: Body) -> Service:
        """vLLM's optional `model`: a service's api_name or model name; absent, the app's first service."""
        model = fields.string(body, "model")
        if model:
            return await self._service(app, model)
        if not app.services:
            raise ApiError(API_NAME_NOT_EXIST, MESSAGES[API_NAME_NOT_EXIST], param="model",
                           detail=f"model is absent and this app ({app.name}) may call no service")
        return await self._service(app, app.services[0])

    async def tokenize(self, request: Request) -> Response:
        """vLLM's `POST /tokenize`: `{"prompt"}` or `{"messages"}` (the chat template, as /v1/chat/completions
        renders them) -> `{"count", "max_model_len", "tokens", "token_strs"}`."""
        engine = self.runner.engine
        tokenizer = engine.tokenizer

        async def work(app: App, body: Body) -> tuple[Service, Callable[[], Callable[[], dict[str, Any]]]]:
            service = await self._named_service(app, body)
            return service, lambda: parse(service, body)

        def parse(service: Service, body: Body) -> Callable[[], dict[str, Any]]:
            strs = bool(fields.boolean(body, "return_token_strs"))
            for name in ("add_special_tokens", "add_generation_prompt"):
                fields.boolean(body, name)   # accepted: GPT-NeoX adds no special tokens; the template ends asking
            has_prompt, has_messages = body.get("prompt") is not None, body.get("messages") is not None
            if has_prompt == has_messages:
                raise out_of_range("send either prompt or messages", param="prompt")
            if has_messages:
                if not engine.model_info.is_chat:
                    raise out_of_range(f"messages need a chat model; the model of {service.api_name} is a "
                                       "completion model: send prompt", param="messages")
                system, messages = chat_messages(body, qianfan_turns=False)

                def encode() -> list[int]:
                    return tokenizer.encode_chat(messages, system)
            else:
                prompt = fields.string(body, "prompt") or ""

                def encode() -> list[int]:
                    return tokenizer.encode(prompt)

            def run() -> dict[str, Any]:
                ids = encode()
                return {"count": len(ids), "max_model_len": engine.model_info.max_context, "tokens": ids,
                        "token_strs": [tokenizer.id_to_token(i) for i in ids] if strs else None}
            return run

        return await self._counted(TOKENIZE.label, request,
                                   lambda: authenticate_bearer(self.runner.platform, request), work,
                                   lambda rid, result: result, lambda error, rid: openai_error_response(error))

    async def detokenize(self, request: Request) -> Response:
        """vLLM's `POST /detokenize`: `{"tokens": [ids]}` -> `{"prompt": text}`."""
        tokenizer = self.runner.engine.tokenizer

        async def work(app: App, body: Body) -> tuple[Service, Callable[[], Callable[[], dict[str, Any]]]]:
            service = await self._named_service(app, body)
            return service, lambda: parse(body)

        def parse(body: Body) -> Callable[[], dict[str, Any]]:
            tokens = body.get("tokens")
            if not isinstance(tokens, list):
                raise fields.bad_type("tokens", "a list of token ids")
            size = tokenizer.vocab_size
            for i, t in enumerate(tokens):
                if isinstance(t, bool) or not isinstance(t, int):
                    raise fields.bad_type(f"tokens[{i}]", "an integer token id")
                if not 0 <= t < size:
                    raise out_of_range(f"tokens[{i}] is {t}: token ids of this model are 0 to {size - 1}",
                                       param="tokens")
            ids = list(tokens)
            return lambda: {"prompt": tokenizer.decode(ids, skip_special_tokens=False)}

        return await self._counted(DETOKENIZE.label, request,
                                   lambda: authenticate_bearer(self.runner.platform, request), work,
                                   lambda rid, result: result, lambda error, rid: openai_error_response(error))
