"""Token counting through the real app and platform (SQLite) with a fake engine (one token per character):
Qianfan's tokenizer/erniebot route and vLLM's /tokenize and /detokenize, their answers, their accounting (a call,
no tokens; QPS/RPM apply) and every refusal with its code and message."""
from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from neoxserve.api.app import create_app
from neoxserve.config import Settings
from neoxserve.platform import Limits, Platform

from fakes import FakeEngine

NOW = 60 * 29_166_667 + 1.0   # one second into a minute: no window moves during a test
ERNIEBOT = "/rpc/2.0/ai_custom/v1/wenxinworkshop/tokenizer/erniebot"


class S:
    def __init__(self, tmp_path, engine: FakeEngine | None = None):
        settings = Settings(data_dir=tmp_path)
        self.platform = Platform.open(settings, clock=lambda: NOW)
        self.keys = self.platform.bootstrap("svc", "StableLM-Alpha-7B")
        self.platform.publish("private", "other-model")        # exists, but "default" may not call it
        self.key = self.platform.create_api_key("default").key
        self.client = TestClient(create_app(settings, engine or FakeEngine(), self.platform))
        self.token = self.client.get("/oauth/2.0/token", params={
            "grant_type": "client_credentials", "client_id": self.keys.api_key,
            "client_secret": self.keys.secret_key}).json()["access_token"]

    def erniebot(self, body: dict):
        return self.client.post(ERNIEBOT, params={"access_token": self.token}, json=body)

    def vllm(self, path: str, body: dict, auth: dict | None = None):
        headers = {"Authorization": f"Bearer {self.key}"} if auth is None else auth
        return self.client.post(path, json=body, headers=headers)


@pytest.fixture
def s(tmp_path):
    made = S(tmp_path)
    yield made
    made.platform.close()


def v1_error(r, code: int, message: str) -> None:
    body = r.json()
    assert r.status_code == 200 and (body["error_code"], body["error_msg"]) == (code, message), body


def openai_error(r, status: int, message: str, type_: str, param=None, code=None) -> None:
    assert r.status_code == status and r.json() == {"error": {"message": message, "type": type_, "param": param,
                                                              "code": code}}, r.text


def test_erniebot_counts_with_the_models_tokenizer_by_api_name_or_model_name(s):
    for model in ("svc", "StableLM-Alpha-7B"):
        body = s.erniebot({"prompt": "hello 你好", "model": model}).json()
        assert body["object"] == "tokenizer" and body["id"].startswith("as-")
        assert body["usage"] == {"prompt_tokens": 8, "total_tokens": 8}
    [row] = s.platform.usage(app="default")
    assert (row.api_name, row.succeeded, row.failed, row.prompt_tokens, row.completion_tokens) == ("svc", 2, 0, 0, 0)


def test_erniebot_refusals(s):
    v1_error(s.erniebot({"prompt": "hi", "model": "ernie-3.5-8k"}), 336005, "API name not exist")
    v1_error(s.erniebot({"prompt": "hi", "model": "private"}), 336004,
             f"app 'default' (id {s.keys.app_id}) has no permission to call service 'private'")
    v1_error(s.erniebot({"prompt": "hi", "model": "other-model"}), 336004,
             f"app 'default' (id {s.keys.app_id}) has no permission to call service 'private'")
    v1_error(s.erniebot({"prompt": "hi"}), 336001, "Invalid Argument")
    v1_error(s.erniebot({"model": "svc"}), 336001, "Invalid Argument")
    v1_error(s.erniebot({"prompt": "", "model": "svc"}), 336003, "prompt is empty")
    v1_error(s.client.post(ERNIEBOT, params={"access_token": s.token}, content=b"{"), 336002, "Invalid JSON")
    v1_error(s.client.post(ERNIEBOT, json={"prompt": "hi", "model": "svc"}), 100, "Invalid parameter")
    v1_error(s.client.get(ERNIEBOT), 336101, "Invalid HTTP Method")
    failed = {r.api_name: r.failed for r in s.platform.usage(app="default")}
    assert failed == {"private": 2, "svc": 2}   # known app and service: failed calls; the rest recorded nothing


def test_counting_is_subject_to_qps_and_rpm_and_uses_no_tokens(s):
    s.platform.set_limits("default", Limits(rpm=2, tpm=5))
    r = s.erniebot({"prompt": "a prompt far longer than five tokens", "model": "svc"})
    assert r.json()["usage"]["total_tokens"] == 36
    assert r.headers["X-Ratelimit-Remaining-Requests"] == "1" and r.headers["X-Ratelimit-Remaining-Tokens"] == "5"
    assert s.vllm("/tokenize", {"prompt": "hi"}).status_code == 200
    v1_error(s.erniebot({"prompt": "hi", "model": "svc"}), 336501, "Rate limit reached for RPM")
    r = s.vllm("/tokenize", {"prompt": "hi"})
    assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limit_exceeded" and "Retry-After" in r.headers
    s.platform.set_limits("default", Limits(qps=1))
    s2 = s.vllm("/detokenize", {"tokens": [104]})
    assert s2.status_code == 429 and s2.json()["error"]["type"] == "requests"   # this second's one call was used


def test_tokenize_prompt_and_messages(s):
    body = s.vllm("/tokenize", {"prompt": "hi!", "model": "svc", "add_special_tokens": True}).json()
    assert body == {"count": 3, "max_model_len": 64, "tokens": [104, 105, 33], "token_strs": None}
    body = s.vllm("/tokenize", {"prompt": "ab", "return_token_strs": True}).json()
    assert body["token_strs"] == ["a", "b"]
    body = s.vllm("/tokenize", {"model": "StableLM-Alpha-7B", "messages": [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]}).json()
    assert "".join(map(chr, body["tokens"])) == "<S>Be brief.<U>hi<A>" and body["count"] == len(body["tokens"])
    assert s.vllm("/detokenize", {"model": "svc", "tokens": body["tokens"]}).json() == {
        "prompt": "<S>Be brief.<U>hi<A>"}
    code = s.platform.create_access_code("default").code
    assert s.vllm("/tokenize", {"prompt": "x"}, {"Authorization": f"ACCESSCODE {code}"}).json()["count"] == 1
    [row] = s.platform.usage(app="default")
    assert (row.succeeded, row.prompt_tokens, row.completion_tokens) == (5, 0, 0)


def test_tokenize_and_detokenize_refusals(s):
    bad = "invalid_request_error"
    openai_error(s.vllm("/tokenize", {"prompt": "hi", "model": "nope"}), 404,
                 "the model 'nope' does not exist (no service is published as it)", bad, "model", "model_not_found")
    openai_error(s.vllm("/tokenize", {"prompt": "hi", "model": "private"}), 403,
                 f"app 'default' (id {s.keys.app_id}) has no permission to call service 'private'",
                 "permission_error", None, "model_not_permitted")
    openai_error(s.vllm("/tokenize", {}), 400, "send either prompt or messages", bad, "prompt")
    openai_error(s.vllm("/tokenize", {"prompt": "a", "messages": []}), 400, "send either prompt or messages", bad,
                 "prompt")
    openai_error(s.vllm("/tokenize", {"prompt": 5}), 400, "prompt must be a string", bad, "prompt")
    openai_error(s.vllm("/tokenize", {"prompt": "a", "return_token_strs": "yes"}), 400,
                 "return_token_strs must be a boolean", bad, "return_token_strs")
    openai_error(s.vllm("/tokenize", {"messages": [{"role": "tool", "content": "x"}]}), 400,
                 "messages[0] is a tool call or result: this model does not call tools", bad, "messages")
    openai_error(s.vllm("/detokenize", {"tokens": "abc"}), 400, "tokens must be a list of token ids", bad, "tokens")
    openai_error(s.vllm("/detokenize", {"tokens": [1, 1.5]}), 400, "tokens[1] must be an integer token id", bad,
                 "tokens[1]")
    openai_error(s.vllm("/detokenize", {"tokens": [-1]}), 400,
                 "tokens[0] is -1: token ids of this model are 0 to 1114111", bad, "tokens")
    openai_error(s.vllm("/tokenize", {"prompt": "a"}, {}), 401,
                 "the Authorization header must be 'Bearer <API key>' or 'ACCESSCODE <code>'", bad, None,
                 "invalid_api_key")
    openai_error(s.vllm("/detokenize", {"tokens": [1]}, {"Authorization": "ACCESSCODE nope"}), 401,
                 "the access code is unknown, revoked or malformed", bad, None, "invalid_api_key")
    r = s.client.get("/tokenize")
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"


def test_messages_need_a_chat_model(tmp_path):
    engine = FakeEngine()
    engine.model_info = type(engine.model_info)(name="fake", path="", max_context=64, is_chat=False)
    s = S(tmp_path, engine)
    try:
        openai_error(s.vllm("/tokenize", {"messages": [{"role": "user", "content": "hi"}]}), 400,
                     "messages need a chat model; the model of svc is a completion model: send prompt",
                     "invalid_request_error", "messages")
    finally:
        s.platform.close()


def test_no_model_and_no_service(s):
    s.platform.disallow("default", "svc")
    openai_error(s.vllm("/tokenize", {"prompt": "a"}), 404,
                 "model is absent and this app (default) may call no service", "invalid_request_error", "model",
                 "model_not_found")
