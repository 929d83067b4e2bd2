"""The official qianfan SDK (every auth mode) and LangChain's QianfanLLMEndpoint against the live server.

The SDK reads its configuration at import, so each scenario runs in a fresh interpreter (sdk_scenarios.py).
"""
from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import time
from pathlib import Path

import httpx

from neoxserve.platform import Limits

SCRIPT = Path(__file__).with_name("sdk_scenarios.py")


def run(server, scenario: str, timeout: float = 120, **env: str) -> dict:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("QIANFAN_")}
    full_env.update({"QIANFAN_BASE_URL": server.base_url, "QIANFAN_CONSOLE_API_BASE_URL": server.base_url,
                     "TEST_ENDPOINT": server.api_name, **env})
    p = subprocess.run([sys.executable, str(SCRIPT), scenario], env=full_env, capture_output=True, text=True,
                       timeout=timeout)
    lines = [line for line in p.stdout.splitlines() if line.startswith("RESULT ")]
    assert p.returncode == 0 and lines, f"{scenario} failed:\n{p.stdout}\n{p.stderr[-3000:]}"
    return json.loads(lines[-1][len("RESULT "):])


def aksk(server) -> dict:
    return {"QIANFAN_AK": server.keys["api_key"], "QIANFAN_SK": server.keys["secret_key"]}


def check_full(full: dict) -> None:
    assert re.match(r"^as-[a-z0-9]{10}$", full["id"]) and full["object"] == "completion"
    assert 1 <= full["usage"]["completion_tokens"] <= 12
    assert full["usage"]["total_tokens"] == full["usage"]["prompt_tokens"] + full["usage"]["completion_tokens"]


def check_stream(chunks: list[dict], full: dict) -> None:
    """Same seed, same tokens: the chunks concatenate to the non-stream result, with the same totals."""
    assert chunks[-1]["is_end"] is True and all(not c["is_end"] for c in chunks[:-1])
    assert "".join(c["result"] for c in chunks) == full["result"]
    assert chunks[-1]["usage"]["total_tokens"] == full["usage"]["total_tokens"]


def test_sdk_aksk_sync(server):
    out = run(server, "sync", **aksk(server))
    check_full(out["full"])
    check_stream(out["chunks"], out["full"])


def test_sdk_aksk_async(server):
    out = run(server, "async", **aksk(server))
    check_full(out["full"])
    check_stream(out["chunks"], out["full"])


def test_sdk_fixed_access_token(server):
    out = run(server, "sync", QIANFAN_ACCESS_TOKEN=server.token())
    check_full(out["full"])
    check_stream(out["chunks"], out["full"])


def test_sdk_iam_signature(server):
    out = run(server, "async", QIANFAN_ACCESS_KEY=server.keys["access_key"],
              QIANFAN_SECRET_KEY=server.keys["secret_access_key"])
    check_full(out["full"])
    check_stream(out["chunks"], out["full"])


def test_sdk_bad_iam_secret_gets_14(server):
    out = run(server, "error", QIANFAN_ACCESS_KEY=server.keys["access_key"], QIANFAN_SECRET_KEY="0" * 32)
    assert out["error_code"] == 14
    assert out["error_msg"].startswith("IAM Certification failed")   # the SDK appends its own hint


def _expired_token_env(server) -> dict:
    platform = server.platform()
    keys = platform.create_app(f"refresh-{secrets.token_hex(3)}", services=[server.api_name])
    short = server.platform(token_ttl_seconds=1).issue_token("client_credentials", keys.api_key, keys.secret_key)
    time.sleep(1.1)
    return {"QIANFAN_AK": keys.api_key, "QIANFAN_SK": keys.secret_key,
            "QIANFAN_ACCESS_TOKEN": short["access_token"], "QIANFAN_ACCESS_TOKEN_REFRESH_MIN_INTERVAL": "0"}


def test_sdk_refreshes_an_expired_token(server):
    env = _expired_token_env(server)
    before = _count(server, "111")
    check_full(run(server, "one", **env)["full"])
    assert _count(server, "111") == before + 1    # it did get 111, then refreshed and succeeded


def test_sdk_stream_refreshes_an_expired_token(server):
    env = _expired_token_env(server)
    before = _count(server, "111")
    chunks = run(server, "stream", **env)["chunks"]
    assert chunks[-1]["is_end"] is True
    assert _count(server, "111") == before + 1


def test_sdk_retries_qps_limit(server):
    keys = server.platform().create_app(f"qps-{secrets.token_hex(3)}", services=[server.api_name],
                                        limits=Limits(qps=1))
    before = _count(server, "18")
    out = run(server, "concurrent", QIANFAN_AK=keys.api_key, QIANFAN_SK=keys.secret_key, TEST_CONCURRENCY="3",
              QIANFAN_LLM_API_RETRY_COUNT="6")
    assert len(out["fulls"]) == 3
    for full in out["fulls"]:
        check_full(full)
    assert _count(server, "18") > before    # some were refused with 18 and retried by the SDK


def test_sdk_retries_rpm_limit(server):
    """The SDK retries 336501: the app's one request of the minute is used, the SDK's call is refused, the
    operator raises the limit, and the SDK's next retry succeeds (no minute has to pass)."""
    platform = server.platform()
    keys = platform.create_app(f"rpm-{secrets.token_hex(3)}", services=[server.api_name], limits=Limits(rpm=1))
    if time.time() % 60 > 40:                     # leave the rest of the test inside one minute
        time.sleep(61 - time.time() % 60)
    first = httpx.post(server.completions_url(), params={"access_token": server.token(keys.api_key, keys.secret_key)},
                       json={"prompt": "hi", "max_output_tokens": 1}, timeout=60)
    assert first.headers["x-ratelimit-remaining-requests"] == "0"
    before = _count(server, "336501")
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("QIANFAN_")}
    full_env.update({"QIANFAN_BASE_URL": server.base_url, "TEST_ENDPOINT": server.api_name,
                     "QIANFAN_AK": keys.api_key, "QIANFAN_SK": keys.secret_key, "QIANFAN_LLM_API_RETRY_COUNT": "5"})
    sdk = subprocess.Popen([sys.executable, str(SCRIPT), "one"], env=full_env, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while _count(server, "336501") == before and time.monotonic() < deadline and sdk.poll() is None:
        time.sleep(0.05)
    assert _count(server, "336501") > before, "the SDK was never refused with 336501"
    platform.set_limits(keys.name, Limits(rpm=100))
    out, err = sdk.communicate(timeout=120)
    assert sdk.returncode == 0, err[-3000:]
    check_full(json.loads([line for line in out.splitlines() if line.startswith("RESULT ")][-1][7:])["full"])
    [row] = platform.usage(app=keys.name)
    assert (row.succeeded, row.failed) == (2, row.calls - 2) and row.failed >= 1
    platform.close()


def test_sdk_fetches_a_bearer_token_with_iam_keys(server):
    """The SDK's own bearer token call (v2 mode) against the server: it verifies the signature, the SDK parses
    the answer, and the token authenticates as the app."""
    iam = {"QIANFAN_IAM_BASE_URL": server.base_url, "QIANFAN_ACCESS_KEY": server.keys["access_key"],
           "QIANFAN_SECRET_KEY": server.keys["secret_access_key"]}
    out = run(server, "bearer", TEST_EXPIRE="900", **iam)
    body = out["body"]
    assert set(body) == {"userId", "token", "status", "createTime", "expireTime"}
    assert re.fullmatch(r"bce-v3/ALTAK-[A-Za-z0-9]{20}/[0-9a-f]{40}", body["token"])
    assert out["refreshed"]["expire_at"] - out["refreshed"]["refresh_at"] == 43200   # the SDK default lifetime
    assert body["expireTime"].endswith("Z")
    with server.platform() as platform:
        assert platform.authenticate_bearer(body["token"]).name == "default"
        assert platform.authenticate_bearer(out["refreshed"]["token"]).name == "default"
    refused = run(server, "bearer", **{**iam, "QIANFAN_SECRET_KEY": "0" * 32})
    assert refused["status"] == 401 and "AccessDenied" in refused["error"]


def test_bearer_token_errors_over_http(server):
    r = httpx.get(server.base_url + "/v1/BCE-BEARER/token", params={"expireInSeconds": "900"})
    assert r.status_code == 401 and r.headers["content-type"] == "application/json"
    body = r.json()
    assert (body["code"], body["message"]) == ("AccessDenied", "IAM Certification failed")
    assert r.headers["x-bce-error-code"] == "AccessDenied" and r.headers["x-bce-request-id"] == body["requestId"]


def test_langchain_invoke_and_stream(server):
    out = run(server, "langchain", **aksk(server))
    assert isinstance(out["invoke"], str)
    assert "".join(out["stream"]) == out["invoke"]    # same seed through model_kwargs


def _count(server, code: str) -> float:
    text = httpx.get(server.base_url + "/metrics").text
    return sum(float(m.group(1)) for m in re.finditer(
        rf'^neoxserve_http_requests_total\{{error_code="{code}",route="\w+"\}} ([0-9.]+)$', text, re.M))
