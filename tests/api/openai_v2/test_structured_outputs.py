"""Structured outputs through the official `openai` client and raw v2 calls against the live server (the random
demo model: whatever its noise, every answer must parse and validate)."""
from __future__ import annotations

import json
import re

import httpx
import jsonschema
import openai
import pytest

SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 10}, "rank": {"type": "integer", "minimum": 0,
                                                                          "maximum": 99},
                   "size": {"type": "string", "enum": ["small", "big"]}},
    "required": ["city", "rank", "size"],
    "additionalProperties": False,
}
FORMAT = {"type": "json_schema", "json_schema": {"name": "city", "schema": SCHEMA, "strict": True}}
MESSAGES = [{"role": "user", "content": "Describe Beijing as JSON"}]


@pytest.fixture(scope="module")
def key(server) -> str:
    with server.platform() as platform:
        return platform.create_api_key("default").key


@pytest.fixture(scope="module")
def c(server, key) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key=key, max_retries=0, timeout=120)


def test_json_schema_answers_validate_stream_and_not_n2_with_stop(c):
    whole = c.chat.completions.create(model="demo", messages=MESSAGES, max_tokens=64, n=2, seed=3, stop=["\n"],
                                      response_format=FORMAT)
    assert [ch.index for ch in whole.choices] == [0, 1]
    for ch in whole.choices:
        assert ch.finish_reason == "stop"
        jsonschema.validate(json.loads(ch.message.content), SCHEMA)
    chunks = list(c.chat.completions.create(model="demo", messages=MESSAGES, max_tokens=64, n=2, seed=3,
                                            stop=["\n"], response_format=FORMAT, stream=True))
    texts = ["", ""]
    for chunk in chunks:
        for ch in chunk.choices:
            texts[ch.index] += ch.delta.content or ""
    assert texts == [ch.message.content for ch in whole.choices]   # the same seeds, the same answers


def test_regex_and_choice_through_structured_outputs(c):
    out = c.completions.create(model="demo", prompt="A date:", max_tokens=16, seed=1,
                               extra_body={"structured_outputs": {"regex": r"20[0-9]{2}-[01][0-9]-[0-3][0-9]"}})
    assert re.fullmatch(r"20[0-9]{2}-[01][0-9]-[0-3][0-9]", out.choices[0].text)
    assert out.choices[0].finish_reason == "stop"
    streamed = "".join(ch.choices[0].text for ch in c.completions.create(
        model="demo", prompt="A date:", max_tokens=16, seed=1, stream=True,
        extra_body={"structured_outputs": {"regex": r"20[0-9]{2}-[01][0-9]-[0-3][0-9]"}}))
    assert streamed == out.choices[0].text
    label = c.chat.completions.create(model="demo", messages=MESSAGES, max_tokens=8,
                                      extra_body={"structured_outputs": {"choice": ["positive", "negative"]}})
    assert label.choices[0].message.content in ("positive", "negative")


def test_json_object_and_length_cut_off(c):
    out = c.chat.completions.create(model="demo", messages=MESSAGES, max_tokens=64, seed=2,
                                    response_format={"type": "json_object"})
    if out.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(out.choices[0].message.content), dict)
    long = {"type": "object", "properties": {"s": {"type": "string", "minLength": 40}}, "required": ["s"]}
    cut = c.chat.completions.create(model="demo", messages=MESSAGES, max_tokens=3, seed=2, response_format={
        "type": "json_schema", "json_schema": {"name": "long", "schema": long}})
    assert cut.choices[0].finish_reason == "length"
    assert '{"s": "'.startswith(cut.choices[0].message.content)   # a prefix of the only possible start
    assert cut.usage.completion_tokens == 3


def test_bad_schema_exact_error(server, key):
    body = {"model": "demo", "messages": MESSAGES, "max_tokens": 8,
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "objectx"}}}}
    r = httpx.post(server.base_url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"},
                   timeout=60)
    assert r.status_code == 400
    assert r.json() == {"error": {"message": "response_format cannot be followed: Invalid type: objectx",
                                  "type": "invalid_request_error", "param": "response_format", "code": None}}
    with pytest.raises(openai.BadRequestError, match="Invalid type: objectx"):
        openai.OpenAI(base_url=server.base_url + "/v1", api_key=key, max_retries=0).chat.completions.create(
            model="demo", messages=MESSAGES, response_format=body["response_format"])


def test_qianfan_v2_response_format(server, key):
    url, auth = server.base_url + "/v2/chat/completions", {"Authorization": f"Bearer {key}"}
    body = {"model": "demo", "messages": MESSAGES, "max_completion_tokens": 64, "seed": 4, "response_format": FORMAT}
    r = httpx.post(url, json=body, headers=auth, timeout=120)
    assert r.status_code == 200, r.text
    jsonschema.validate(json.loads(r.json()["choices"][0]["message"]["content"]), SCHEMA)
    bad = {**body, "response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "objectx"}}}}
    r = httpx.post(url, json=bad, headers=auth, timeout=60)
    assert r.status_code == 400
    assert r.json()["error"] == {"code": "invalid_argument", "message": "response_format cannot be followed: "
                                 "Invalid type: objectx", "type": "invalid_request_error"}
    # vLLM's extras are the OpenAI routes' only: v2 ignores unknown fields, as it always has
    r = httpx.post(url, json={**body, "response_format": {"type": "text"},
                              "structured_outputs": {"regex": "[a-"}, "max_completion_tokens": 2},
                   headers=auth, timeout=60)
    assert r.status_code == 200, r.text
