"""The official qianfan SDK against the live server as a private deployment (docs/private-deployment.md): the private
mode with an access code and with IAM keys, a model found by its name through the console's service list, remote
token counting, and the SDK's console resources. Each scenario runs in a fresh interpreter (sdk_scenarios.py)."""
from __future__ import annotations

import secrets
import time
from datetime import UTC, datetime

import pytest

from neoxserve.model.tokenizer import Tokenizer

from test_clients import check_full, check_stream, run

MODEL = "StableLM-Alpha-7B"


@pytest.fixture(scope="module")
def app(server):
    """A new app allowed to call `demo` and a service published under the model name Qianfan's docs use."""
    platform = server.platform()
    name = f"private-{secrets.token_hex(3)}"
    api_name = f"stablelm{secrets.token_hex(2)}"
    platform.publish(api_name, MODEL)
    keys = platform.create_app(name, services=[server.api_name, api_name])
    code = platform.create_access_code(name)
    yield {"keys": keys, "code": code, "api_name": api_name, "platform": platform}
    platform.close()


def check_chat(full: dict, chunks: list[dict]) -> None:
    assert full["object"] == "chat.completion" and 1 <= full["usage"]["completion_tokens"] <= 12
    assert chunks[-1]["is_end"] is True and "".join(c["result"] for c in chunks) == full["result"]


def private_env(tmp_path, **env: str) -> dict[str, str]:
    """The private mode's settings. The SDK (0.4.12.3) reads the access code from QIANFAN_ACCESS_CODE (its config
    field ACCESS_CODE); the QIANFAN_PRIVATE_ACCESS_CODE its constants name is never read."""
    return {"QIANFAN_ENABLE_PRIVATE": "true", "QIANFAN_CACHE_DIR": str(tmp_path), **env}


def test_private_mode_with_an_access_code(server, app, tmp_path):
    out = run(server, "private", **private_env(tmp_path, QIANFAN_ACCESS_CODE=app["code"].code))
    check_full(out["full"])
    check_stream(out["chunks"], out["full"])
    check_chat(out["chat"], out["chat_chunks"])
    rows = [r for r in app["platform"].usage(app=app["keys"].name) if r.api_name == server.api_name]
    assert sum(r.succeeded for r in rows) >= 4


def test_private_mode_with_iam_keys(server, app, tmp_path):
    keys = app["keys"]
    out = run(server, "private", **private_env(tmp_path, QIANFAN_AK=keys.access_key,
                                               QIANFAN_SK=keys.secret_access_key))
    check_full(out["full"])
    check_stream(out["chunks"], out["full"])
    check_chat(out["chat"], out["chat_chunks"])


def test_private_mode_with_a_revoked_code_gets_14(server, app, tmp_path):
    code = app["platform"].create_access_code(app["keys"].name)
    app["platform"].revoke_access_code(code.id)
    out = run(server, "error", **private_env(tmp_path, QIANFAN_ACCESS_CODE=code.code))
    assert out["error_code"] == 14
    assert out["error_msg"].startswith("IAM Certification failed")   # the SDK appends its own hint


def test_completion_finds_the_service_by_its_model_name(server, app, tmp_path):
    keys = app["keys"]
    out = run(server, "by_model", QIANFAN_ACCESS_KEY=keys.access_key, QIANFAN_SECRET_KEY=keys.secret_access_key,
              QIANFAN_CACHE_DIR=str(tmp_path), TEST_MODEL=MODEL)
    check_full(out["full"])
    check_stream(out["chunks"], out["full"])
    assert out["chat"]["object"] == "chat.completion"
    [row] = [r for r in app["platform"].usage(app=keys.name) if r.api_name == app["api_name"]]
    assert row.succeeded >= 3                # the calls went to the service published as the model


def test_remote_token_count_is_the_models_tokenizer(server, app, tmp_path):
    text = "Introduce the city Beijing 北京 <|endoftext|>"
    expected = len(Tokenizer.from_dir(server.data_dir / "demo-random-model").encode(text))
    for model in (MODEL, app["api_name"]):
        out = run(server, "count_tokens", QIANFAN_AK=app["keys"].api_key, QIANFAN_SK=app["keys"].secret_key,
                  QIANFAN_CACHE_DIR=str(tmp_path), TEST_TEXT=text, TEST_MODEL=model)
        assert out["count"] == expected


def test_console_resources_show_what_the_console_shows(server, app, tmp_path):
    keys = app["keys"]
    iso = lambda t: datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")  # noqa: E731
    out = run(server, "console", QIANFAN_ACCESS_KEY=keys.access_key, QIANFAN_SECRET_KEY=keys.secret_access_key,
              QIANFAN_CACHE_DIR=str(tmp_path), TEST_SERVICE_ID=app["api_name"], TEST_START=iso(time.time() - 86400),
              TEST_END=iso(time.time() + 86400))
    platform = app["platform"]
    services = {s.api_name: s for s in platform.list_services()}
    listed = {(e["serviceId"], e["name"], e["apiType"]) for e in out["list"]["result"]["common"]}
    assert listed == {(a, services[a].model, kind) for a in (server.api_name, app["api_name"])
                      for kind in ("chat", "completions")}
    assert (out["get"]["result"]["name"], out["get"]["result"]["uri"]) == (MODEL, app["api_name"])
    assert {e["serviceId"] for e in out["v2_list"]["result"]["serviceList"]} == {server.api_name, app["api_name"]}
    assert out["v2_detail"]["result"]["name"] == MODEL
    # the app's calls so far (this module's tests, all today): the console calls are not model calls
    usage = {r.api_name: (r.calls, r.succeeded, r.failed, r.total_tokens) for r in platform.usage(app=keys.name)}
    metric = {e["serviceId"]: tuple(e["total"][k] for k in ("callTotal", "succeedCallTotal", "failureCallTotal",
                                                              "tokensTotal"))
              for e in out["v2_metric"]["result"]["serviceList"]}
    assert metric == usage and usage[app["api_name"]][0] > 0
