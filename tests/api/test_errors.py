"""Every error the server produces, through HTTP on the live server, asserting the exact JSON."""
from __future__ import annotations

import json
import re
import secrets
import time

import httpx
import pytest

from neoxserve.platform import Limits

OAUTH = "/oauth/2.0/token"


def business(r: httpx.Response) -> tuple[int, str]:
    """A business error: HTTP 200, one line of JSON with exactly id, error_code and error_msg."""
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert "\n" not in r.text
    body = r.json()
    assert list(body) == ["id", "error_code", "error_msg"] and re.match(r"^as-[a-z0-9]{10}$", body["id"])
    return body["error_code"], body["error_msg"]


@pytest.fixture(scope="module")
def token(server):
    return server.token()


@pytest.fixture(scope="module")
def platform(server):
    p = server.platform()
    yield p
    p.close()


def new_app(platform, name_prefix: str, services=("demo",), limits: Limits | None = None):
    return platform.create_app(f"{name_prefix}-{secrets.token_hex(3)}", services=services, limits=limits or Limits())


def token_for(server, keys) -> str:
    return server.token(keys.api_key, keys.secret_key)


def post(server, token, json=None, content=None, url=None):
    return httpx.post(url or server.completions_url(), params={"access_token": token} if token else None,
                      json=json, content=content, timeout=60)


# ---- OAuth -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("params,status,error,description", [
    ({"client_id": "nope", "client_secret": "x"}, 401, "invalid_client", "unknown client id"),
    ({"client_id": None, "client_secret": "wrong"}, 401, "invalid_client", "Client authentication failed"),
    ({"grant_type": "password"}, 400, "unsupported_grant_type", "The authorization grant type is not supported"),
    ({"client_secret": ""}, 400, "invalid_request", "missing required parameter: client_secret"),
    ({"grant_type": ""}, 400, "invalid_request", "missing required parameter: grant_type"),
])
def test_oauth_errors(server, params, status, error, description):
    query = {"grant_type": "client_credentials", "client_id": server.keys["api_key"],
             "client_secret": server.keys["secret_key"]}
    query.update({k: v for k, v in params.items() if v is not None})
    r = httpx.post(server.base_url + OAUTH, params={k: v for k, v in query.items() if v}, json={})
    assert r.status_code == status
    assert r.json() == {"error": error, "error_description": description}


# ---- authentication ----------------------------------------------------------------------------------------

def test_missing_and_malformed_token_100(server):
    assert business(post(server, None, json={"prompt": "hi"})) == (100, "Invalid parameter")
    assert business(post(server, "not-a-token", json={"prompt": "hi"})) == (100, "Invalid parameter")


def test_unknown_and_revoked_token_110(server, token, platform):
    forged = re.sub(r"^24\.[0-9a-f]{32}", "24." + secrets.token_hex(16), token)
    assert business(post(server, forged, json={"prompt": "hi"})) == (110, "Access token invalid or no longer valid")
    keys = new_app(platform, "revoked")
    old = token_for(server, keys)
    platform.rotate_app(keys.name)
    assert business(post(server, old, json={"prompt": "hi"})) == (110, "Access token invalid or no longer valid")


def test_expired_token_111(server):
    keys = server.platform().create_app(f"expiring-{secrets.token_hex(3)}", services=["demo"])
    short = server.platform(token_ttl_seconds=1).issue_token("client_credentials", keys.api_key, keys.secret_key)
    time.sleep(1.1)
    assert business(post(server, short["access_token"], json={"prompt": "hi"})) == (111, "Access token expired")


def test_bad_iam_signature_14(server):
    auth = f"bce-auth-v1/{server.keys['access_key']}/{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}/300//" \
           + "0" * 64
    r = httpx.post(server.completions_url(), json={"prompt": "hi"}, headers={"Authorization": auth})
    assert business(r) == (14, "IAM Certification failed")


# ---- service, permission, quotas ---------------------------------------------------------------------------

def test_unknown_api_name_336005(server, token):
    r = post(server, token, json={"prompt": "hi"}, url=server.completions_url("no_such_service"))
    assert business(r) == (336005, "API name not exist")


def test_no_permission_336004(server, platform):
    keys = new_app(platform, "noperm", services=())
    r = post(server, token_for(server, keys), json={"prompt": "hi"})
    assert business(r) == (336004, f"app '{keys.name}' (id {keys.app_id}) has no permission to call service 'demo'")


@pytest.mark.parametrize("limits,code,msg", [
    (Limits(daily=1), 17, "Open api daily request limit reached"),
    (Limits(total=1), 19, "Open api total request limit reached"),
])
def test_daily_and_total_quota(server, platform, limits, code, msg):
    keys = new_app(platform, "quota", limits=limits)
    t = token_for(server, keys)
    ok = post(server, t, json={"prompt": "hi", "max_output_tokens": 1})
    assert ok.json()["usage"]["completion_tokens"] == 1
    assert business(post(server, t, json={"prompt": "hi", "max_output_tokens": 1})) == (code, msg)


# ---- routes and methods ------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
def test_other_methods_on_model_routes_336101(server, token, method):
    for url in (server.completions_url(), server.chat_url()):
        r = httpx.request(method, url, params={"access_token": token})
        assert business(r) == (336101, "Invalid HTTP Method")


def test_unknown_route_3(server, token):
    for path in ("/rpc/2.0/ai_custom/v1/wenxinworkshop/embeddings/demo", "/rpc/2.0/whatever"):
        r = httpx.post(server.base_url + path, params={"access_token": token}, json={"prompt": "hi"})
        assert business(r) == (3, "Unsupported openapi method")


# ---- the body ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("content", [b"not json", b"", b"{\"prompt\": ", b"{'prompt': 'x'}"])
def test_body_not_json_336002(server, token, content):
    assert business(post(server, token, content=content)) == (336002, "Invalid JSON")


@pytest.mark.parametrize("body", [
    {}, {"prompt": None}, {"prompt": 3}, {"prompt": ["hi"]}, {"prompt": "hi", "stream": "yes"},
    {"prompt": "hi", "temperature": "0.5"}, {"prompt": "hi", "temperature": True}, {"prompt": "hi", "top_k": 2.5},
    {"prompt": "hi", "top_p": "1"}, {"prompt": "hi", "penalty_score": [1]}, {"prompt": "hi", "stop": "END"},
    {"prompt": "hi", "stop": [1]}, {"prompt": "hi", "max_output_tokens": "5"}, {"prompt": "hi", "seed": 1.5},
    {"prompt": "hi", "user_id": 5}, ["hi"], "hi",
])
def test_missing_or_wrong_type_336001(server, token, body):
    assert business(post(server, token, json=body)) == (336001, "Invalid Argument")


def test_chat_messages_wrong_type_336001(server, token):
    for body in ({}, {"messages": "hi"}, {"messages": [{"role": "user"}]}, {"messages": [["user", "hi"]]},
                 {"messages": [{"role": "user", "content": "hi"}], "system": 1}):
        assert business(post(server, token, json=body, url=server.chat_url())) == (336001, "Invalid Argument")


@pytest.mark.parametrize("extra,msg", [
    ({"prompt": ""}, "prompt is empty"),
    ({"temperature": 0}, "temperature is 0, it must be in (0, 1.0]"),
    ({"temperature": 1.5}, "temperature is 1.5, it must be in (0, 1.0]"),
    ({"top_k": 0}, "top_k is 0, it must be a positive integer"),
    ({"top_k": -3}, "top_k is -3, it must be a positive integer"),
    ({"top_p": 1.01}, "top_p is 1.01, it must be in [0, 1.0]"),
    ({"top_p": -0.1}, "top_p is -0.1, it must be in [0, 1.0]"),
    ({"penalty_score": 0.9}, "penalty_score is 0.9, it must be in [1.0, 2.0]"),
    ({"penalty_score": 2.5}, "penalty_score is 2.5, it must be in [1.0, 2.0]"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop has 5 entries, at most 4 are allowed"),
    ({"stop": ["ok", "x" * 21]}, "stop[1] is 21 characters long, at most 20 are allowed"),
    ({"stop": [""]}, "stop[0] is empty"),
    ({"max_output_tokens": 0}, "max_output_tokens is 0, it must be a positive integer"),
    ({"max_output_tokens": 257}, "max_output_tokens is 257, this service allows at most 256"),
    ({"seed": -1}, "seed is -1, it must be in [0, 2^63)"),
])
def test_out_of_range_336003(server, token, extra, msg):
    body = {"prompt": "hi", **extra}
    assert business(post(server, token, json=body)) == (336003, msg)


def test_prompt_longer_than_context_336003(server, token):
    from neoxserve.model.tokenizer import Tokenizer

    tok = Tokenizer.from_dir(server.data_dir / "demo-random-model")
    config = json.loads((server.data_dir / "demo-random-model" / "config.json").read_text())
    context = config["max_position_embeddings"]
    prompt = "Beijing " * (context + 10)
    n = len(tok.encode(prompt))
    assert n > context
    assert business(post(server, token, json={"prompt": prompt})) == (
        336003, f"prompt is too long: {n} tokens, the model context is {context} tokens")
    prompt = "Beijing " * (context - 100)
    n = len(tok.encode(prompt))
    assert n + 256 > context > n
    assert business(post(server, token, json={"prompt": prompt, "max_output_tokens": 256})) == (
        336003, f"prompt is too long: {n} prompt tokens + 256 max_output_tokens exceed the model context "
                f"of {context} tokens")


@pytest.mark.parametrize("messages,msg", [
    ([], "messages is empty"),
    ([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],
     "messages has 2 entries: the count must be odd (alternating user and assistant, ending with user)"),
    ([{"role": "assistant", "content": "a"}],
     "messages[0].role is 'assistant', expected 'user' (roles alternate user, assistant, ..., ending with user)"),
    ([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}, {"role": "user", "content": "c"}],
     "messages[1].role is 'user', expected 'assistant' (roles alternate user, assistant, ..., ending with user)"),
    ([{"role": "user", "content": ""}], "messages[0].content is empty"),
])
def test_chat_messages_out_of_range_336003(server, token, messages, msg):
    r = post(server, token, json={"messages": messages}, url=server.chat_url())
    assert business(r) == (336003, msg)


def test_accepted_extras(server, token):
    body = {"prompt": "hi", "stop": None, "user_id": "u1", "extra_parameters": {"request_source": "x"},
            "some_future_field": [1, 2], "max_output_tokens": 2, "top_p": 0, "top_k": 3.0}
    r = post(server, token, json=body).json()
    assert "error_code" not in r and r["usage"]["completion_tokens"] <= 2


def test_options_on_model_routes_336101(server, token):
    for url in (server.completions_url(), server.chat_url()):
        r = httpx.request("OPTIONS", url, params={"access_token": token})
        assert business(r) == (336101, "Invalid HTTP Method")


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_unknown_route_any_method_3(server, token, method):
    r = httpx.request(method, server.base_url + "/rpc/2.0/ai_custom/v1/wenxinworkshop/embeddings/demo",
                      params={"access_token": token})
    assert business(r) == (3, "Unsupported openapi method")


@pytest.mark.parametrize("content,msg", [
    (b'{"prompt": "hi", "temperature": NaN}', "temperature is nan, it must be in (0, 1.0]"),
    (b'{"prompt": "hi", "top_p": Infinity}', "top_p is inf, it must be in [0, 1.0]"),
    (b'{"prompt": "hi", "penalty_score": -Infinity}', "penalty_score is -inf, it must be in [1.0, 2.0]"),
])
def test_non_finite_numbers_336003(server, token, content, msg):
    assert business(post(server, token, content=content)) == (336003, msg)


def test_non_finite_integer_336001(server, token):
    assert business(post(server, token, content=b'{"prompt": "hi", "top_k": Infinity}')) == (
        336001, "Invalid Argument")


def test_body_not_utf8_336002(server, token):
    assert business(post(server, token, content=b'{"prompt": "\xff\xfe"}')) == (336002, "Invalid JSON")
