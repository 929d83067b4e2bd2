"""Run one official-SDK (or LangChain) scenario against a live server, in a fresh interpreter.

The qianfan SDK reads its configuration once, at import, so each scenario runs as its own process with the
environment already set. Usage: python sdk_scenarios.py <scenario>; env TEST_ENDPOINT names the api_name.
Prints one line `RESULT <json>`.
"""
from __future__ import annotations

import asyncio
import json
import os
import sys

ENDPOINT = os.environ.get("TEST_ENDPOINT", "demo")
PROMPT = "Introduce the city Beijing"
KW = {"max_output_tokens": 12, "seed": 7}


def body(resp) -> dict:
    return dict(resp.body)


def sync_calls() -> dict:
    import qianfan

    c = qianfan.Completion()
    full = body(c.do(endpoint=ENDPOINT, prompt=PROMPT, **KW))
    chunks = [body(r) for r in c.do(endpoint=ENDPOINT, prompt=PROMPT, stream=True, **KW)]
    return {"full": full, "chunks": chunks}


async def async_calls() -> dict:
    import qianfan

    c = qianfan.Completion()
    full = body(await c.ado(endpoint=ENDPOINT, prompt=PROMPT, **KW))
    chunks = [body(r) async for r in await c.ado(endpoint=ENDPOINT, prompt=PROMPT, stream=True, **KW)]
    return {"full": full, "chunks": chunks}


def one_call() -> dict:
    import qianfan

    return {"full": body(qianfan.Completion().do(endpoint=ENDPOINT, prompt=PROMPT, **KW))}


def stream_call() -> dict:
    import qianfan

    return {"chunks": [body(r) for r in qianfan.Completion().do(endpoint=ENDPOINT, prompt=PROMPT, stream=True,
                                                                **KW)]}


async def concurrent_calls() -> dict:
    import qianfan

    c = qianfan.Completion()
    n = int(os.environ.get("TEST_CONCURRENCY", "3"))
    results = await asyncio.gather(*(c.ado(endpoint=ENDPOINT, prompt=PROMPT, **KW) for _ in range(n)))
    return {"fulls": [body(r) for r in results]}


def sdk_error() -> dict:
    import qianfan
    from qianfan.errors import APIError

    try:
        qianfan.Completion().do(endpoint=ENDPOINT, prompt=PROMPT, **KW)
    except APIError as e:
        return {"error_code": e.error_code, "error_msg": e.error_msg}
    return {"error_code": None}


def bearer_token() -> dict:
    """GET /v1/BCE-BEARER/token as the SDK's v2 mode makes it (QIANFAN_IAM_BASE_URL, IAM keys), parsed as the SDK
    parses it when it refreshes its bearer token."""
    from qianfan.errors import RequestError
    from qianfan.resources.console.iam import IAM
    from qianfan.resources.requestor.openapi_requestor import QfAPIV2Requestor

    try:
        body = dict(IAM.create_bearer_token(expire_in_seconds=int(os.environ.get("TEST_EXPIRE", "600"))).body)
    except RequestError as e:
        return {"status": e.status_code, "error": str(e)}
    return {"body": body, "refreshed": QfAPIV2Requestor()._refresh_bearer_token()}


def langchain_calls() -> dict:
    from langchain_community.llms import QianfanLLMEndpoint

    llm = QianfanLLMEndpoint(endpoint=ENDPOINT, model_kwargs=KW)
    text = llm.invoke(PROMPT)
    pieces = list(llm.stream(PROMPT))
    return {"invoke": text, "stream": pieces}


def v2_calls() -> dict:
    """qianfan.ChatCompletion(version=2), whole and streamed, with whatever credentials the environment holds (IAM
    keys: the SDK fetches a bearer token from QIANFAN_IAM_BASE_URL; or a fixed QIANFAN_BEARER_TOKEN)."""
    import qianfan

    chat = qianfan.ChatCompletion(version=2)
    messages = [{"role": "user", "content": PROMPT}]
    v2_kw = {"max_completion_tokens": 12, "seed": 7}
    full = body(chat.do(model=ENDPOINT, messages=messages, **v2_kw))
    chunks = [body(r) for r in chat.do(model=ENDPOINT, messages=messages, stream=True, **v2_kw)]
    return {"full": full, "chunks": chunks}


def private_calls() -> dict:
    """QIANFAN_ENABLE_PRIVATE=true (an access code, or IAM keys as QIANFAN_AK/SK): completions and chat, whole and
    streamed, with endpoint= (the private mode never asks the console for models)."""
    import qianfan

    completion, chat = qianfan.Completion(), qianfan.ChatCompletion()
    messages = [{"role": "user", "content": PROMPT}]
    return {"full": body(completion.do(endpoint=ENDPOINT, prompt=PROMPT, **KW)),
            "chunks": [body(r) for r in completion.do(endpoint=ENDPOINT, prompt=PROMPT, stream=True, **KW)],
            "chat": body(chat.do(endpoint=ENDPOINT, messages=messages, **KW)),
            "chat_chunks": [body(r) for r in chat.do(endpoint=ENDPOINT, messages=messages, stream=True, **KW)]}


def by_model() -> dict:
    """Completion(model=...) and ChatCompletion(model=...) with no endpoint: the SDK finds the service by its
    model name in the console's service list (IAM keys, QIANFAN_CONSOLE_API_BASE_URL)."""
    import qianfan

    model = os.environ["TEST_MODEL"]
    messages = [{"role": "user", "content": PROMPT}]
    return {"full": body(qianfan.Completion(model=model).do(prompt=PROMPT, **KW)),
            "chunks": [body(r) for r in qianfan.Completion().do(model=model, prompt=PROMPT, stream=True, **KW)],
            "chat": body(qianfan.ChatCompletion().do(model=model, messages=messages, **KW))}


def count_tokens() -> dict:
    from qianfan import Tokenizer

    text = os.environ["TEST_TEXT"]
    return {"count": Tokenizer.count_tokens(text, mode="remote", model=os.environ["TEST_MODEL"])}


def console_calls() -> dict:
    """The SDK's console resources, IAM-signed against QIANFAN_CONSOLE_API_BASE_URL."""
    from qianfan.resources.console.service import Service

    service_id = os.environ["TEST_SERVICE_ID"]
    return {"list": Service.list().body, "get": Service.get(id=service_id).body,
            "v2_list": Service.V2.service_list().body, "v2_detail": Service.V2.service_detail(service_id).body,
            "v2_metric": Service.V2.service_metric(start_time=os.environ["TEST_START"],
                                                   end_time=os.environ["TEST_END"]).body}


SCENARIOS = {"sync": sync_calls, "async": lambda: asyncio.run(async_calls()), "one": one_call,
             "stream": stream_call, "concurrent": lambda: asyncio.run(concurrent_calls()), "error": sdk_error,
             "langchain": langchain_calls, "bearer": bearer_token, "v2": v2_calls,
             "private": private_calls, "by_model": by_model, "count_tokens": count_tokens, "console": console_calls}

if __name__ == "__main__":
    result = SCENARIOS[sys.argv[1]]()
    print("RESULT " + json.dumps(result, ensure_ascii=False), flush=True)
