"""The official `openai` client, LangChain's ChatOpenAI and OpenAI, and the qianfan SDK in v2 mode against the
live server (real engine on the demo model, real SQLite platform)."""
from __future__ import annotations

import asyncio
import re
import secrets
import time

import httpx
import openai
import pytest
from langchain_openai import ChatOpenAI, OpenAI

from neoxserve.platform import Limits

from test_clients import run

PROMPT = "Introduce the city Beijing"
MESSAGES = [{"role": "user", "content": PROMPT}]


@pytest.fixture(scope="module")
def key(server) -> str:
    with server.platform() as platform:
        return platform.create_api_key("default").key


def client(server, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key=key, max_retries=0, timeout=120)


def test_completions_seed_reproducible_and_stream_matches(server, key):
    c = client(server, key)
    first = c.completions.create(model="demo", prompt=PROMPT, max_tokens=8, seed=7)
    again = c.completions.create(model="demo", prompt=PROMPT, max_tokens=8, seed=7)
    assert first.choices[0].text == again.choices[0].text
    assert first.choices[0].finish_reason in ("length", "stop") and first.usage is not None
    assert 1 <= first.usage.completion_tokens <= 8
    assert first.usage.total_tokens == first.usage.prompt_tokens + first.usage.completion_tokens
    chunks = list(c.completions.create(model="demo", prompt=PROMPT, max_tokens=8, seed=7, stream=True))
    assert "".join(ch.choices[0].text for ch in chunks) == first.choices[0].text
    assert chunks[-1].choices[0].finish_reason == first.choices[0].finish_reason


def test_chat_stream_with_usage_matches_the_whole_answer(server, key):
    c = client(server, key)
    whole = c.chat.completions.create(model="demo", messages=MESSAGES, max_tokens=10, seed=11)
    assert whole.choices[0].message.role == "assistant" and whole.id.startswith("chatcmpl-")
    chunks = list(c.chat.completions.create(model="demo", messages=MESSAGES, max_tokens=10, seed=11, stream=True,
                                            stream_options={"include_usage": True}))
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == \
        whole.choices[0].message.content
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage


def test_stop_ends_the_text_before_the_stop_string(server, key):
    c = client(server, key)
    text = c.completions.create(model="demo", prompt=PROMPT, max_tokens=24, seed=5).choices[0].text
    stop = next(text[i:i + 2] for i in range(2, len(text) - 1) if text[i:i + 2].strip())
    stopped = c.completions.create(model="demo", prompt=PROMPT, max_tokens=24, seed=5, stop=[stop])
    assert stopped.choices[0].text == text[:text.index(stop)]
    assert stopped.choices[0].finish_reason == "stop"


def test_n_2_and_logprobs(server, key):
    """Two samples of one prompt; sample 0 with seed s is the n=1 answer with seed s. Logprobs are the model's
    log-probabilities: at most 0, the top alternatives in order, the chosen token among them when greedy."""
    c = client(server, key)
    one = c.chat.completions.create(model="demo", messages=MESSAGES, max_tokens=6, seed=21)
    two = c.chat.completions.create(model="demo", messages=MESSAGES, max_tokens=6, seed=21, n=2, logprobs=True,
                                    top_logprobs=3)
    assert [ch.index for ch in two.choices] == [0, 1]
    assert two.choices[0].message.content == one.choices[0].message.content
    assert two.usage.prompt_tokens == one.usage.prompt_tokens
    assert two.usage.completion_tokens == sum(len(ch.logprobs.content) for ch in two.choices)
    for choice in two.choices:
        if choice.finish_reason == "length":      # no stop token (its entry has no text in the content)
            raw = b"".join(bytes(e.bytes) for e in choice.logprobs.content)
            assert raw.decode("utf-8", errors="replace") == choice.message.content
        for e in choice.logprobs.content:
            tops = [t.logprob for t in e.top_logprobs]
            assert len(tops) == 3 and tops == sorted(tops, reverse=True) and e.logprob <= tops[0] <= 0
    greedy = c.completions.create(model="demo", prompt=PROMPT, max_tokens=5, temperature=0, logprobs=2, echo=True)
    lp = greedy.choices[0].logprobs
    assert lp.token_logprobs[0] is None and len(lp.tokens) == greedy.usage.total_tokens
    for token, logprob, top in zip(lp.tokens[-5:], lp.token_logprobs[-5:], lp.top_logprobs[-5:], strict=True):
        assert top[token] == logprob == max(top.values())               # greedy: the chosen is the most likely


def test_async_client(server, key):
    async def calls():
        c = openai.AsyncOpenAI(base_url=server.base_url + "/v1", api_key=key, max_retries=0, timeout=120)
        whole = await c.chat.completions.create(model="demo", messages=MESSAGES, max_tokens=6, seed=3)
        stream = await c.chat.completions.create(model="demo", messages=MESSAGES, max_tokens=6, seed=3,
                                                 stream=True)
        pieces = [ch.choices[0].delta.content or "" async for ch in stream]
        models = await c.models.list()
        await c.close()
        return whole, pieces, models

    whole, pieces, models = asyncio.run(calls())
    assert "".join(pieces) == whole.choices[0].message.content
    assert [m.id for m in models.data] == ["demo"]


def test_the_clients_exceptions(server, key):
    with pytest.raises(openai.AuthenticationError) as e:
        client(server, "bce-v3/ALTAK-" + "x" * 20 + "/" + "0" * 40).models.list()
    assert e.value.status_code == 401
    with pytest.raises(openai.NotFoundError) as e:
        client(server, key).chat.completions.create(model="no-such-model", messages=MESSAGES)
    assert e.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError) as e:
        client(server, key).chat.completions.create(model="demo", messages=MESSAGES, temperature=3)
    assert e.value.body["message"] == "temperature is 3, it must be in [0, 2]"
    with server.platform() as platform:
        app = platform.create_app(f"rpm-{secrets.token_hex(3)}", services=["demo"], limits=Limits(rpm=1))
        limited = client(server, platform.create_api_key(app.name).key)
    limited.completions.create(model="demo", prompt=PROMPT, max_tokens=1)
    with pytest.raises(openai.RateLimitError) as e:
        limited.completions.create(model="demo", prompt=PROMPT, max_tokens=1)
    assert 0 <= int(e.value.response.headers["retry-after"]) <= 60
    assert e.value.response.headers["x-ratelimit-remaining-requests"] == "0"


def test_langchain_chat_openai_and_openai(server, key):
    chat = ChatOpenAI(base_url=server.base_url + "/v1", api_key=key, model="demo", max_tokens=8, seed=9,
                      max_retries=0)
    answer = chat.invoke(PROMPT)
    assert isinstance(answer.content, str)
    assert "".join(str(chunk.content) for chunk in chat.stream(PROMPT)) == answer.content
    llm = OpenAI(base_url=server.base_url + "/v1", api_key=key, model="demo", max_tokens=8, seed=9, max_retries=0)
    text = llm.invoke(PROMPT)
    assert isinstance(text, str)
    assert "".join(llm.stream(PROMPT)) == text


def _check_v2(out: dict) -> None:
    full, chunks = out["full"], out["chunks"]
    assert re.match(r"^as-[a-z0-9]{10}$", full["id"]) and full["object"] == "chat.completion"
    assert full["choices"][0]["flag"] == 0 and 1 <= full["usage"]["completion_tokens"] <= 12
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == full["choices"][0]["message"]["content"]          # same seed, same tokens


def test_qianfan_sdk_v2_with_iam_keys(server):
    """The SDK fetches a bearer token from the server's IAM endpoint, then calls /v2/chat/completions with it."""
    _check_v2(run(server, "v2", QIANFAN_IAM_BASE_URL=server.base_url,
                  QIANFAN_ACCESS_KEY=server.keys["access_key"],
                  QIANFAN_SECRET_KEY=server.keys["secret_access_key"]))


def test_qianfan_sdk_v2_with_a_fixed_bearer_key(server, key):
    _check_v2(run(server, "v2", QIANFAN_BEARER_TOKEN=key))


def test_rpm_7_across_the_new_routes_with_50_simultaneous_requests(server):
    """One app's RPM budget is shared by the OpenAI and v2 routes: of 50 simultaneous requests spread over the
    three, exactly 7 are served and 43 refused with 429 and Retry-After."""
    with server.platform() as platform:
        app = platform.create_app(f"rpm7-{secrets.token_hex(3)}", services=["demo"], limits=Limits(rpm=7))
        key = platform.create_api_key(app.name).key
    calls = [("/v1/completions", {"model": "demo", "prompt": "hi", "max_tokens": 1}),
             ("/v1/chat/completions", {"model": "demo", "messages": MESSAGES, "max_tokens": 1}),
             ("/v2/chat/completions", {"model": "demo", "messages": MESSAGES, "max_completion_tokens": 1})]

    async def burst():
        limits = httpx.Limits(max_connections=60, max_keepalive_connections=60)
        async with httpx.AsyncClient(limits=limits, timeout=120, headers={"Authorization": f"Bearer {key}"}) as c:
            await asyncio.gather(*(c.get(server.base_url + "/health") for _ in range(50)))
            return await asyncio.gather(*(c.post(server.base_url + calls[i % 3][0], json=calls[i % 3][1])
                                          for i in range(50)))

    if time.time() % 60 > 40:      # the whole burst inside one minute
        time.sleep(61 - time.time() % 60)
    responses = asyncio.run(burst())
    assert sorted(r.status_code for r in responses) == [200] * 7 + [429] * 43
    refused = [r for r in responses if r.status_code == 429]
    assert all(0 < int(r.headers["retry-after"]) <= 60 for r in refused)
    assert all(r.json()["error"]["message"] == "Rate limit reached for RPM" for r in refused)
    with server.platform() as platform:
        [row] = platform.usage(app=app.name)
    assert (row.succeeded, row.failed) == (7, 43)
