"""The OpenAI routes and Qianfan v2's chat route through the real app and the real platform (SQLite) with a fake
engine: answer and frame shapes, every refusal's status and message, rate limits with Retry-After, and one app's
usage across v1, v2 and the OpenAI routes."""
from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from neoxserve.api.app import create_app
from neoxserve.config import Settings
from neoxserve.engine.errors import EngineOverloaded
from neoxserve.platform import Limits, Platform

from fakes import FakeEngine, fake_logprob

NOW = 60 * 29_166_667 + 1.0   # one second into a minute: no window moves during a test
CHAT = [{"role": "user", "content": "hi"}]
TEXT = "Hello world. 你好！ end"


class Setup:
    def __init__(self, tmp_path, engine: FakeEngine, limits: Limits):
        self.engine = engine
        settings = Settings(data_dir=tmp_path)
        self.platform = Platform.open(settings, clock=lambda: NOW)
        self.keys = self.platform.bootstrap("svc", "fake")
        self.platform.set_limits("default", limits)
        self.platform.publish("private", "fake")               # exists, but "default" may not call it
        self.key = self.platform.create_api_key("default").key
        self.client = TestClient(create_app(settings, engine, self.platform))

    def post(self, path: str, body: dict, key: str | None = None, headers: dict | None = None):
        return self.client.post(path, json=body, headers={"Authorization": f"Bearer {key or self.key}",
                                                          **(headers or {})})

    def chat(self, **body):
        return self.post("/v1/chat/completions", {"model": "svc", "messages": CHAT, **body})

    def completion(self, **body):
        return self.post("/v1/completions", {"model": "svc", "prompt": "hi", **body})

    def v2(self, **body):
        return self.post("/v2/chat/completions", {"model": "svc", "messages": CHAT, **body})


@pytest.fixture
def setup(tmp_path):
    made = []

    def make(engine=None, limits=None):
        made.append(Setup(tmp_path / str(len(made)), engine or FakeEngine(), limits or Limits()))
        return made[-1]

    yield make
    for s in made:
        s.platform.close()


def events(r) -> list:
    """The SSE frames of a stream: every one `data: <json>` then a blank line, the last `data: [DONE]`."""
    assert r.headers["content-type"].startswith("text/event-stream")
    blocks = r.text.split("\n\n")
    assert blocks[-1] == "" and blocks[-2] == "data: [DONE]"
    assert all(b.startswith("data: ") and "\n" not in b for b in blocks[:-1])
    return [json.loads(b[len("data: "):]) for b in blocks[:-2]]


def openai_error(r, status: int, message: str, type_: str, param=None, code=None):
    assert r.status_code == status and r.json() == {"error": {"message": message, "type": type_, "param": param,
                                                              "code": code}}


def test_models_lists_the_services_the_app_may_call(setup):
    s = setup()
    auth = {"Authorization": f"Bearer {s.key}"}
    body = s.client.get("/v1/models", headers=auth).json()
    assert body["object"] == "list" and [m["id"] for m in body["data"]] == ["svc"]
    assert s.client.get("/v1/models/svc", headers=auth).json()["id"] == "svc"
    openai_error(s.client.get("/v1/models/private", headers=auth), 404,
                 "the model 'private' does not exist or this key's app may not call it", "invalid_request_error",
                 "model", "model_not_found")
    openai_error(s.client.get("/v1/models"), 401,
                 "the Authorization header must be 'Bearer <API key>' or 'ACCESSCODE <code>'", "invalid_request_error",
                 None, "invalid_api_key")
    openai_error(s.client.get("/v1/models", headers={"Authorization": "Bearer sk-123"}), 401,
                 "the bearer token is malformed: expected an API key (bce-v3/ALTAK-...)", "invalid_request_error",
                 None, "invalid_api_key")


def test_chat_answer(setup):
    s = setup()
    body = s.chat(max_tokens=5).json()
    assert body["id"].startswith("chatcmpl-") and body["object"] == "chat.completion" and body["model"] == "svc"
    assert body["choices"] == [{"index": 0, "message": {"role": "assistant", "content": "Hello"}, "logprobs": None,
                                "finish_reason": "length"}]
    prompt = len(s.engine.calls[-1][1])
    assert body["usage"] == {"prompt_tokens": prompt, "completion_tokens": 5, "total_tokens": prompt + 5}


def test_chat_template_system_and_content_parts(setup):
    s = setup()
    s.chat(messages=[{"role": "system", "content": "Be brief."},
                     {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
                     {"role": "assistant", "content": "c"}, {"role": "user", "content": "d"}])
    assert "".join(map(chr, s.engine.calls[-1][1])) == "<S>Be brief.<U>ab<A>c<U>d<A>"


def test_completion_default_max_tokens_and_echo(setup):
    s = setup()
    body = s.completion(echo=True).json()
    assert s.engine.calls[-1][2].max_new_tokens == 16            # OpenAI's default for /v1/completions
    assert body["object"] == "text_completion" and body["id"].startswith("cmpl-")
    assert body["choices"][0]["text"] == "hi" + TEXT[:16]
    assert s.completion(prompt=["hi"], max_tokens=3).json()["choices"][0]["text"] == TEXT[:3]


def test_sampling_fields_reach_the_engine(setup):
    s = setup()
    s.chat(temperature=0, top_p=0.5, seed=3, stop="x", max_completion_tokens=4, max_tokens=9)
    params = s.engine.calls[-1][2]
    assert params.greedy and params.top_p == 0.5 and params.seed == 3 and params.stop == ("x",)
    assert params.max_new_tokens == 4                            # max_completion_tokens wins over max_tokens
    s.chat(temperature=1.7)
    assert s.engine.calls[-1][2].temperature == 1.7 and not s.engine.calls[-1][2].greedy


def test_chat_stream_with_usage(setup):
    s = setup()
    frames = events(s.chat(max_tokens=3, stream=True, stream_options={"include_usage": True}))
    assert frames[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert [f["choices"][0]["delta"].get("content") for f in frames[1:-1]] == ["H", "e", "l"]
    assert [f["choices"][0]["finish_reason"] for f in frames[:-1]] == [None, None, None, "length"]
    assert all(f["usage"] is None and f["object"] == "chat.completion.chunk" for f in frames[:-1])
    assert frames[-1]["choices"] == [] and frames[-1]["usage"]["completion_tokens"] == 3
    assert len({f["id"] for f in frames}) == 1


def test_completion_stream_without_usage(setup):
    s = setup()
    frames = events(s.completion(max_tokens=2, stream=True, echo=True))
    assert [f["choices"][0]["text"] for f in frames] == ["hiH", "e"]
    assert all("usage" not in f for f in frames)


def test_error_after_output_ends_the_stream_with_an_error_frame(setup):
    s = setup(FakeEngine(fail_after=2))
    frames = events(s.chat(stream=True))
    assert frames[-1] == {"error": {"message": "Internal error", "type": "server_error", "param": None,
                                    "code": None}}
    frames = events(s.v2(stream=True))
    assert frames[-1]["error"] == {"code": "internal_error", "message": "Internal error", "type": "server_error"}


@pytest.mark.parametrize(("body", "message", "param"), [
    ({"messages": []}, "messages holds no user or assistant message", "messages"),
    ({"messages": "hi"}, "messages must be a list", "messages"),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "system", "content": "b"}]},
     "messages[1] is a system message after the conversation started: system messages must come first",
     "messages"),
    ({"messages": [{"role": "tool", "content": "a"}]},
     "messages[0] is a tool call or result: this model does not call tools", "messages"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
     "messages[0].content[0] is a 'image_url' part: this model reads text only", "messages"),
    ({"temperature": 2.5}, "temperature is 2.5, it must be in [0, 2]", "temperature"),
    ({"temperature": "hot"}, "temperature must be a number", "temperature"),
    ({"top_p": 1.5}, "top_p is 1.5, it must be in [0, 1.0]", "top_p"),
    ({"n": 0}, "n is 0, it must be in [1, 16]", "n"),
    ({"presence_penalty": 3}, "presence_penalty is 3, it must be in [-2.0, 2.0]", "presence_penalty"),
    ({"top_logprobs": 21, "logprobs": True}, "top_logprobs is 21, it must be in [0, 20]", "top_logprobs"),
    ({"max_tokens": 0}, "max_tokens is 0, it must be a positive integer", "max_tokens"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop has 5 entries, at most 4 are allowed", "stop"),
    ({"stream_options": {"include_usage": True}}, "stream_options is only allowed when stream is true",
     "stream_options"),
    ({"top_logprobs": 2}, "top_logprobs needs logprobs: true", "top_logprobs"),
    ({"tools": [{"type": "function"}]}, "tools are not supported: this model does not call functions", "tools"),
    ({"response_format": {"type": "xml"}},
     "response_format type 'xml' is not supported: text, json_object or json_schema", "response_format"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "objectx"}}}},
     "response_format cannot be followed: Invalid type: objectx", "response_format"),
    ({"structured_outputs": {"regex": "[a-"}, "max_tokens": 4},
     "structured_outputs cannot be followed: at 1(8): invalid regex \"[a-\" (in regex): regex parse error:\n"
     "    [a-\n    ^\nerror: unclosed character class\n   1 | start: /[a-/\n              ^", "structured_outputs"),
    ({"structured_outputs": {"regex": "a", "choice": ["b"]}},
     "structured_outputs must give exactly one of json, regex, choice, grammar, json_object (it gives regex, "
     "choice)", "structured_outputs"),
    ({"structured_outputs": {"json": {}, "whitespace_pattern": " "}},
     "structured_outputs.whitespace_pattern is not supported: give one of json, regex, choice, grammar, "
     "json_object", "structured_outputs"),
    ({"structured_outputs": {"choice": []}}, "structured_outputs.choice must be a non-empty list of non-empty "
     "strings", "structured_outputs.choice"),
    ({"structured_outputs": {"json": {}}, "response_format": {"type": "json_object"}},
     "response_format and structured_outputs both ask for a format: give one", "structured_outputs"),
    ({"seed": -1}, "seed is -1, it must be in [0, 2^63)", "seed"),
])
def test_chat_refusals_name_the_field(setup, body, message, param):
    s = setup()
    openai_error(s.chat(**body), 400, message, "invalid_request_error", param)
    assert s.engine.calls == []


@pytest.mark.parametrize(("body", "message", "param"), [
    ({"prompt": ["a", "b"]}, "prompt holds 2 prompts: send one prompt per request", "prompt"),
    ({"prompt": [1, 2]}, "prompt must be a string (prompts given as token ids are not supported)", "prompt"),
    ({"prompt": ""}, "prompt is empty", "prompt"),
    ({"logprobs": 6}, "logprobs is 6, it must be in [0, 5]", "logprobs"),
    ({"best_of": 3}, "best_of is 3: only best_of equal to n (1) is supported", "best_of"),
    ({"suffix": "x"}, "suffix is not supported", "suffix"),
    ({"max_tokens": 5000}, f"max_tokens is 5000, this service allows at most "
                           f"{Settings().default_max_output_tokens}", "max_tokens"),
])
def test_completion_refusals_name_the_field(setup, body, message, param):
    s = setup()
    openai_error(s.completion(**body), 400, message, "invalid_request_error", param)


def test_context_length_exceeded(setup):
    s = setup()
    openai_error(s.completion(prompt="x" * 100), 400, "prompt is too long: 100 characters, more than a context of "
                 "64 tokens can hold (63 characters at most with this model's tokenizer)", "invalid_request_error",
                 "prompt", "context_length_exceeded")
    openai_error(s.completion(prompt="x" * 40, max_tokens=30), 400, "prompt is too long: 40 prompt tokens + 30 "
                 "max_tokens exceed the model context of 64 tokens", "invalid_request_error", "prompt",
                 "context_length_exceeded")


def test_model_permission_and_auth_errors(setup):
    s = setup()
    openai_error(s.chat(model="nope"), 404, "the model 'nope' does not exist (no service is published as it)",
                 "invalid_request_error", "model", "model_not_found")
    openai_error(s.chat(model="private"), 403, "this app (default) may not call the model 'private'",
                 "permission_error", "model", "model_not_permitted")
    openai_error(s.chat(model=None), 400, "model is missing: it names a published service (GET /v1/models lists "
                 "them)", "invalid_request_error", "model")
    unknown = "bce-v3/ALTAK-" + "a" * 20 + "/" + "0" * 40
    openai_error(s.post("/v1/chat/completions", {"model": "svc", "messages": CHAT}, key=unknown), 401,
                 "the API key or bearer token is unknown or revoked", "invalid_request_error", None,
                 "invalid_api_key")
    r = s.client.post("/v1/completions", content=b"{", headers={"Authorization": f"Bearer {s.key}"})
    openai_error(r, 400, "the body is not valid JSON", "invalid_request_error")


def test_n_samples_share_the_prompt_and_add_their_output(setup):
    s = setup()
    body = s.chat(n=2, max_tokens=3, seed=4).json()
    assert [(c["index"], c["message"]["content"]) for c in body["choices"]] == [
        (0, s.engine.sample_text(0)[:3]), (1, s.engine.sample_text(1)[:3])]
    params = s.engine.calls[-1][2]
    assert params.n == 2 and params.seed == 4
    assert body["usage"]["completion_tokens"] == 6 and body["usage"]["prompt_tokens"] == len(s.engine.calls[-1][1])
    frames = events(s.completion(n=2, max_tokens=2, stream=True))
    texts = {0: "", 1: ""}
    for f in frames:
        texts[f["choices"][0]["index"]] += f["choices"][0]["text"]
    assert texts == {0: s.engine.sample_text(0)[:2], 1: s.engine.sample_text(1)[:2]}


def test_n_reserves_every_samples_output_of_the_tpm_budget(setup):
    s = setup(limits=Limits(tpm=30))
    r = s.completion(prompt="hi", n=2, max_tokens=15)               # 2 + 2 x 15 > 30
    assert r.status_code == 429 and "retry-after" not in r.headers
    assert s.completion(prompt="hi", n=2, max_tokens=14).status_code == 200


def test_penalties_reach_the_engine(setup):
    s = setup()
    assert s.chat(presence_penalty=0.5, frequency_penalty=-1).status_code == 200
    params = s.engine.calls[-1][2]
    assert (params.presence_penalty, params.frequency_penalty) == (0.5, -1.0)
    assert s.v2(presence_penalty=2, penalty_score=1.5).status_code == 200
    assert s.engine.calls[-1][2].presence_penalty == 2.0


def test_chat_logprobs(setup):
    s = setup()
    body = s.chat(max_tokens=3, logprobs=True, top_logprobs=2).json()
    assert s.engine.calls[-1][2].logprobs == 2 and s.engine.calls[-1][2].prompt_logprobs is None
    content = body["choices"][0]["logprobs"]["content"]
    expected = [fake_logprob(ord(c), i, 2) for i, c in enumerate(TEXT[:3])]
    assert [(e["token"], e["logprob"], e["bytes"]) for e in content] == [
        (chr(e.token_id), e.logprob, list(chr(e.token_id).encode())) for e in expected]
    assert [[(t["token"], t["logprob"]) for t in e["top_logprobs"]] for e in content] == [
        [(chr(t), lp) for t, lp in e.top] for e in expected]
    frames = events(s.chat(max_tokens=2, logprobs=True, stream=True))
    assert frames[0]["choices"][0]["logprobs"] is None                     # the role frame
    assert [f["choices"][0]["logprobs"]["content"][0]["token"] for f in frames[1:]] == ["H", "e"]
    assert s.chat(max_tokens=2).json()["choices"][0]["logprobs"] is None


def test_completion_logprobs_with_echo(setup):
    s = setup()
    body = s.completion(prompt="hi", max_tokens=2, logprobs=1, echo=True).json()
    params = s.engine.calls[-1][2]
    assert (params.logprobs, params.prompt_logprobs) == (1, 1)
    lp = body["choices"][0]["logprobs"]
    assert lp["tokens"] == ["h", "i", "H", "e"] and lp["text_offset"] == [0, 1, 2, 3]
    assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
    second = fake_logprob(ord("i"), 1, 1)
    assert lp["token_logprobs"][1] == second.logprob
    assert lp["top_logprobs"][1] == {"i": second.logprob}                 # the chosen one is the most likely
    assert lp["token_logprobs"][2:] == [fake_logprob(ord(c), i, 1).logprob for i, c in enumerate("He")]
    frames = events(s.completion(prompt="hi", max_tokens=2, logprobs=0, stream=True))
    assert [f["choices"][0]["logprobs"]["tokens"] for f in frames] == [["H"], ["e"]]
    assert [f["choices"][0]["logprobs"]["text_offset"] for f in frames] == [[0], [1]]


def test_overload_is_503_with_retry_after(setup):
    s = setup(FakeEngine(fail=EngineOverloaded()))
    for r in (s.chat(), s.completion(stream=True)):
        assert r.status_code == 503 and r.json()["error"]["type"] == "server_error"
        assert r.headers["retry-after"] == "1"
    r = s.v2()
    assert r.status_code == 503 and r.json()["error"]["code"] == "server_high_load"
    assert r.headers["retry-after"] == "1"


def test_rpm_refusal_is_429_with_retry_after(setup):
    s = setup(limits=Limits(rpm=2))
    assert s.chat(max_tokens=1).headers["x-ratelimit-remaining-requests"] == "1"
    assert s.v2(max_completion_tokens=1).headers["x-ratelimit-remaining-requests"] == "0"
    r = s.completion(max_tokens=1)
    openai_error(r, 429, "Rate limit reached for RPM", "requests", None, "rate_limit_exceeded")
    assert r.headers["retry-after"] == "59" and r.headers["x-ratelimit-limit-requests"] == "2"
    r = s.v2()
    assert r.status_code == 429 and r.headers["retry-after"] == "59"
    assert r.json() == {"error": {"code": "rpm_rate_limit_exceeded", "message": "Rate limit reached for RPM",
                                  "type": "rate_limit_exceeded"}, "id": r.json()["id"]}


def test_tpm_refusal_is_429(setup):
    s = setup(limits=Limits(tpm=40))
    r = s.completion(max_tokens=30, prompt="hi")
    assert r.status_code == 200 and r.headers["x-ratelimit-limit-tokens"] == "40"
    r = s.v2(max_completion_tokens=20)                   # 24 used + 11 + 20 reserved > 40
    assert r.status_code == 429 and r.json()["error"]["code"] == "tpm_rate_limit_exceeded"
    assert r.headers["retry-after"] == "59"
    r = s.chat(max_tokens=50)
    openai_error(r, 429, "Rate limit reached for TPM", "tokens", None, "rate_limit_exceeded")
    assert "retry-after" not in r.headers        # more than the limit allows in any minute: waiting cannot help


def test_v2_answer_and_stream(setup):
    s = setup()
    body = s.v2(max_completion_tokens=3, penalty_score=1.2).json()
    assert body["id"].startswith("as-") and body["object"] == "chat.completion"
    assert body["choices"] == [{"index": 0, "message": {"role": "assistant", "content": "Hel"}, "logprobs": None,
                                "finish_reason": "length", "flag": 0, "ban_round": -1}]
    assert s.engine.calls[-1][2].penalty_score == 1.2
    frames = events(s.v2(max_completion_tokens=2, stream=True, stream_options={"include_usage": True}))
    assert "".join(f["choices"][0]["delta"].get("content", "") for f in frames[:-1]) == "He"
    assert frames[-1]["usage"]["completion_tokens"] == 2


@pytest.mark.parametrize(("body", "message"), [
    ({"temperature": 1.5}, "temperature is 1.5, it must be in (0, 1.0]"),
    ({"penalty_score": 0.5}, "penalty_score is 0.5, it must be in [1.0, 2.0]"),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]},
     "messages has 2 entries: the count must be odd (alternating user and assistant, ending with user)"),
    ({"messages": [{"role": "system", "content": "s"}, {"role": "assistant", "content": "b"}]},
     "messages[1].role is 'assistant', expected 'user' (roles alternate user, assistant, ..., ending with user)"),
])
def test_v2_refusals(setup, body, message):
    s = setup()
    r = s.v2(**body)
    assert r.status_code == 400
    assert r.json() == {"error": {"code": "invalid_argument", "message": message, "type": "invalid_request_error"},
                        "id": r.json()["id"]}


def test_v2_appid_header_must_name_the_keys_app(setup):
    s = setup()
    app_id = s.platform.get_app("default").id
    assert s.post("/v2/chat/completions", {"model": "svc", "messages": CHAT},
                  headers={"appid": str(app_id)}).status_code == 200
    r = s.post("/v2/chat/completions", {"model": "svc", "messages": CHAT}, headers={"appid": "999"})
    assert r.status_code == 401 and r.json()["error"] == {
        "code": "invalid_iam_token", "type": "access_denied",
        "message": f"the appid header is '999', but the credential belongs to the app with id {app_id}"}


def test_one_apps_usage_counts_calls_from_every_route(setup):
    s = setup()
    token = s.client.get("/oauth/2.0/token", params={"grant_type": "client_credentials",
                                                      "client_id": s.keys.api_key,
                                                      "client_secret": s.keys.secret_key}).json()["access_token"]
    v1 = s.client.post("/rpc/2.0/ai_custom/v1/wenxinworkshop/completions/svc", params={"access_token": token},
                       json={"prompt": "hi", "max_output_tokens": 2})
    assert v1.json()["result"] == "He"
    assert s.v2(max_completion_tokens=3).status_code == 200
    assert s.chat(max_tokens=4).status_code == 200
    assert s.completion(max_tokens=5, stream=True).status_code == 200
    assert s.chat(temperature=9).status_code == 400          # a failed call of the app, after the service is known
    [row] = s.platform.usage(app="default")
    assert (row.succeeded, row.failed, row.completion_tokens) == (4, 1, 2 + 3 + 4 + 5)


def test_a_body_over_the_limit_is_413_in_the_routes_shape(tmp_path):
    settings = Settings(data_dir=tmp_path, max_body_bytes=200)
    with Platform.open(settings, clock=lambda: NOW) as platform:
        platform.bootstrap("svc", "fake")
        client = TestClient(create_app(settings, FakeEngine(), platform))
        big = {"model": "svc", "messages": [{"role": "user", "content": "x" * 300}]}
        message = "request body is larger than 200 bytes, the limit set by max_body_bytes"
        openai_error(client.post("/v1/chat/completions", json=big), 413, message, "invalid_request_error", None,
                     "request_too_large")
        r = client.post("/v2/chat/completions", json=big)
        assert r.status_code == 413 and r.headers["connection"] == "close"
        assert r.json()["error"] == {"code": "request_too_large", "message": message,
                                     "type": "invalid_request_error"}
