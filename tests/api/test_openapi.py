"""The OpenAPI document at /openapi.json, and schemathesis fuzzing the live server against it.

The fuzzing asserts, for every documented operation: no 5xx, no hang (a timeout per call), every answer of a
documented status and content type, every JSON answer valid against its documented schema (so every business error
carries a code listed for its route), every documented header present where required and of its documented type,
and every stream made of valid frames. Model calls use a real access token of an app with RPM and TPM limits (so
answers carry the X-Ratelimit-* headers) and a service whose max_output_tokens is 4, so most generated bodies reach
validation, the tokenizer and the engine; bearer-token requests are signed with the app's IAM keys.
"""
from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings, strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (content_type_conformance, response_headers_conformance,
                                               response_schema_conformance, status_code_conformance)

from neoxserve.api.qianfan_v1 import openapi
from neoxserve.api.openai_v2 import openapi as openai_openapi
from neoxserve.api.app import create_app
from neoxserve.config import Settings
from neoxserve.platform import Limits

from app_routes import flat_routes
from fakes import FakeEngine

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance]
FUZZ_SERVICE = "fuzz"
BEARER_ROUTE = "/v1/BCE-BEARER/token"
COMPLETIONS = "/rpc/2.0/ai_custom/v1/wenxinworkshop/completions/{api_name}"
RATE_HEADERS = ["X-Ratelimit-Limit-Requests", "X-Ratelimit-Remaining-Requests", "X-Ratelimit-Limit-Tokens",
                "X-Ratelimit-Remaining-Tokens"]
# examples per operation and generation mode: the two model calls get most (they have the most to get wrong)
EXAMPLES = {("model", GenerationMode.POSITIVE): 60, ("model", GenerationMode.NEGATIVE): 40,
            ("openai", GenerationMode.POSITIVE): 20, ("openai", GenerationMode.NEGATIVE): 12,
            ("other", GenerationMode.POSITIVE): 8, ("other", GenerationMode.NEGATIVE): 4}
OPENAI_PATHS = ("/v1/models", "/v1/completions", "/v1/chat/completions", "/v2/chat/completions")


@pytest.fixture(scope="module")
def document(server) -> dict:
    r = httpx.get(server.base_url + "/openapi.json")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    return r.json()


@dataclass(frozen=True)
class FuzzApp:
    token: str
    api_key: str                 # a bearer key, for the OpenAI and v2 routes
    access_key: str
    secret_access_key: str


@pytest.fixture(scope="module")
def fuzz_app(server) -> FuzzApp:
    platform = server.platform()
    try:
        platform.publish(FUZZ_SERVICE, "demo", max_output_tokens=4)
        keys = platform.create_app(f"fuzz-{secrets.token_hex(3)}", services=[FUZZ_SERVICE],
                                   limits=Limits(rpm=100_000, tpm=100_000_000))
        api_key = platform.create_api_key(keys.name).key
    finally:
        platform.close()
    return FuzzApp(server.token(keys.api_key, keys.secret_key), api_key, keys.access_key, keys.secret_access_key)


def test_document_describes_every_route_and_method(document):
    app = create_app(Settings(), FakeEngine(), None)
    served = {(route.path.replace("{rest:path}", "{rest}"), method.lower())
              for route in flat_routes(app) if getattr(route, "include_in_schema", False) for method in route.methods}
    documented = {(path, method) for path, item in document["paths"].items() for method in item}
    assert served == documented
    for path in ("/rpc/2.0/ai_custom/v1/wenxinworkshop/completions/{api_name}",
                 "/rpc/2.0/ai_custom/v1/wenxinworkshop/chat/{api_name}", "/rpc/{rest}"):
        assert set(document["paths"][path]) == {m.lower() for m in openapi.METHODS}
    for path in ("/health", "/ready", "/metrics", "/openapi.json"):
        assert set(document["paths"][path]) == {"get", "head"}
    assert set(document["paths"]["/oauth/2.0/token"]) == {"get", "post"}
    assert set(document["paths"][BEARER_ROUTE]) == {"get"}
    assert document == app.openapi()


def test_document_lists_each_routes_codes_and_shapes(document):
    schemas = document["components"]["schemas"]
    call = document["paths"][COMPLETIONS]["post"]
    ok = call["responses"]["200"]["content"]
    assert [s["$ref"] for s in ok["application/json"]["schema"]["anyOf"]] == [
        "#/components/schemas/Completion", "#/components/schemas/ModelCallError"]
    assert "text/event-stream" in ok
    body = call["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/CompletionBody"}
    assert {p["name"] for p in call["parameters"]} == {"api_name", "access_token", "Authorization", "Request_id"}
    assert schemas["ModelCallError"]["properties"]["error_code"]["enum"] == openapi.MODEL_CALL_CODES
    assert sorted(openapi.MODEL_CALL_CODES) == [3, 14, 17, 18, 19, 100, 110, 111, 336000, 336001, 336002, 336003,
                                                336004, 336005, 336100, 336501, 336502]
    headers = call["responses"]["200"]["headers"]
    assert list(headers) == ["X-Baidu-Request-Id", *RATE_HEADERS]
    assert headers["X-Baidu-Request-Id"]["required"] is True
    assert all(headers[h]["schema"] == {"type": "integer", "minimum": 0} and "required" not in headers[h]
               for h in RATE_HEADERS)
    assert schemas["WrongMethodError"]["properties"]["error_code"]["enum"] == [3, 336101, 336003]
    assert schemas["UnknownRouteError"]["properties"]["error_code"]["enum"] == [3, 336003]
    assert set(schemas["ModelCallError"]["required"]) == {"id", "error_code", "error_msg"}
    assert schemas["CompletionBody"]["additionalProperties"] is True      # unknown fields are accepted
    assert schemas["CompletionChunk"]["required"] == ["id", "object", "created", "result", "is_safe", "usage",
                                                      "sentence_id", "is_end"]
    token = document["paths"]["/oauth/2.0/token"]["post"]["responses"]
    assert sorted(token) == ["200", "400", "401", "413"]
    assert "413" not in call["responses"] and "422" not in json.dumps(document["paths"])
    assert "HTTPValidationError" not in schemas
    ready = document["paths"]["/ready"]["get"]["responses"]
    assert {code: r["content"]["application/json"]["schema"]["$ref"] for code, r in ready.items() if code != "413"} \
        == {"200": "#/components/schemas/Readiness", "503": "#/components/schemas/Readiness"}
    assert schemas["Readiness"]["required"] == ["status", "model_loaded", "engine_alive", "engine"]
    assert schemas["Readiness"]["additionalProperties"] is False
    assert schemas["EngineState"]["enum"] == ["ready", "restarting", "loading", "failed", "stopped"]
    assert token["413"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/OAuthError"}


def test_document_lists_the_bearer_token_routes_bce_shapes(document):
    schemas = document["components"]["schemas"]
    get = document["paths"][BEARER_ROUTE]["get"]
    assert {p["name"]: p["required"] for p in get["parameters"]} == {"expireInSeconds": False, "Authorization": True}
    answers = get["responses"]
    assert sorted(answers) == ["200", "400", "401", "413"]
    assert answers["200"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/BearerToken"}
    assert schemas["BearerToken"]["required"] == ["userId", "token", "status", "createTime", "expireTime"]
    for status, code in (("400", "InvalidParameterValue"), ("401", "AccessDenied"), ("413", "EntityTooLarge")):
        ref = answers[status]["content"]["application/json"]["schema"]["$ref"]
        error = schemas[ref.rsplit("/", 1)[1]]
        assert (error["properties"]["code"]["const"], error["required"]) == (code, ["requestId", "code", "message"])
        assert error["additionalProperties"] is False
        assert {h for h, d in answers[status]["headers"].items() if d.get("required")} == {
            "X-Baidu-Request-Id", "X-Bce-Request-Id", "X-Bce-Error-Code", "X-Bce-Error-Message"}


def test_document_lists_the_openai_and_v2_routes(document):
    paths = document["paths"]
    assert set(paths["/v1/models"]) == set(paths["/v1/models/{model}"]) == {"get"}
    schema_of = {"/v1/completions": ("OpenAICompletionBody", "CompletionAnswer", "OpenAIError"),
                 "/v1/chat/completions": ("OpenAIChatBody", "ChatAnswer", "OpenAIError"),
                 "/v2/chat/completions": ("V2ChatBody", "ChatAnswer", "V2Error")}
    for path, (body, answer, error) in schema_of.items():
        assert set(paths[path]) == {"post"}
        post = paths[path]["post"]
        assert post["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/" + body)
        answers = post["responses"]
        assert sorted(answers) == ["200", "400", "401", "403", "404", "413", "429", "500", "503"]
        assert answers["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/" + answer)
        assert "text/event-stream" in answers["200"]["content"]
        for status in ("400", "401", "413", "429", "503"):
            assert answers[status]["content"]["application/json"]["schema"]["$ref"].endswith("/" + error)
        assert {"Retry-After", *RATE_HEADERS} <= set(answers["429"]["headers"])
    assert "appid" in {p["name"] for p in paths["/v2/chat/completions"]["post"]["parameters"]}


def test_every_answer_documents_the_request_id_header(document):
    for path, item in document["paths"].items():
        for method, operation in item.items():
            for status, answer in operation["responses"].items():
                assert answer["headers"]["X-Baidu-Request-Id"]["required"] is True, (path, method, status)


def test_documented_ranges_are_the_validation_rules():
    """The body models only describe; SAMPLING_RULES decides. Their bounds must agree at every edge."""
    from neoxserve.platform.records import SAMPLING_RULES

    checked = set()
    for body, renamed in ((openapi.CompletionBody, {}), (openai_openapi.V2ChatBody, {"max_output_tokens":
                                                                                      "max_completion_tokens"})):
        fields = body.model_json_schema()["properties"]
        for name, rule in SAMPLING_RULES.items():
            integer, ok = rule.integer, rule.ok
            if renamed.get(name, name) not in fields:
                continue
            checked.add(name)
            schema = next(s for s in fields[renamed.get(name, name)]["anyOf"] if s["type"] != "null")
            assert schema["type"] == ("integer" if integer else "number")
            for bound, inside in (("minimum", True), ("exclusiveMinimum", False), ("maximum", True),
                                  ("exclusiveMaximum", False)):
                if bound in schema:
                    edge = schema[bound]
                    assert ok(edge) is inside, (name, bound)
                    step = 1 if integer else 1e-9
                    assert ok(edge + step if "inimum" in bound else edge - step), (name, bound)
    assert checked == set(SAMPLING_RULES)


def _kind(operation) -> str:
    if operation.method.upper() == "POST" and "{api_name}" in operation.path:
        return "model"
    return "openai" if operation.path.startswith(OPENAI_PATHS) else "other"


def _check_openai_stream(text: str, chunk: type, cut_short: bool) -> None:
    """Frames exactly `data: <JSON>` and a blank line, the last `data: [DONE]`; an error frame only before it.
    schemathesis stops reading a stream after 20 events (`cut_short`): then only the frames read are checked."""
    frames = text.split("\n\n")
    if cut_short:
        frames = [*frames[:-1], "data: [DONE]", ""]   # the frames it read in full
    assert frames[-1] == "" and frames[-2] == "data: [DONE]", text[-200:]
    for i, f in enumerate(frames[:-2]):
        assert f.startswith("data: {") and "\n" not in f, f
        body = json.loads(f[len("data: "):])
        if "error" in body:
            assert i == len(frames) - 3
        else:
            chunk.model_validate(body)


def _check_stream(text: str) -> None:
    """Frames exactly `data: <JSON>` and a blank line; a failure after frames adds one bare JSON line."""
    frames, _, error_line = text.rpartition("\n\n")
    bodies = []
    for f in frames.split("\n\n"):
        assert f.startswith("data: {") and "\n" not in f, f
        bodies.append(openapi.CompletionChunk.model_validate_json(f[len("data: "):]))
    assert [b.sentence_id for b in bodies] == list(range(len(bodies)))
    if error_line:
        assert json.loads(error_line)["error_code"] in openapi.MODEL_CALL_CODES
    else:
        assert bodies[-1].is_end


def _sign_bearer_request(case, app: FuzzApp, port: int) -> None:
    """An IAM signature of the request `case` will send, as the qianfan SDK signs it (bce-python-sdk's signer)."""
    from baidubce.auth import bce_v1_signer
    from baidubce.auth.bce_credentials import BceCredentials

    query = {str(k).encode(): str(v).encode() for k, v in (case.query or {}).items()}
    auth = bce_v1_signer.sign(BceCredentials(app.access_key, app.secret_access_key), b"GET", case.path.encode(),
                              {b"host": f"127.0.0.1:{port}".encode()}, query, timestamp=time.time(),
                              expiration_in_seconds=1800)
    case.headers = {**(case.headers or {}), "Authorization": auth.decode()}


def fuzz(operation, mode: GenerationMode, server, app: FuzzApp, calls: dict[str, int]):
    """A hypothesis test of one operation: call it, validate the answer against the document."""

    @settings(max_examples=EXAMPLES[_kind(operation), mode], deadline=None,
              database=None, suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode), authenticated=st.sampled_from([True, True, False]))
    def run(case, authenticated):
        if operation.path.startswith("/rpc/") and authenticated:
            case.query = {**(case.query or {}), "access_token": app.token}
            if "api_name" in (case.path_parameters or {}):
                case.path_parameters["api_name"] = FUZZ_SERVICE
        if operation.path == BEARER_ROUTE and authenticated:
            _sign_bearer_request(case, app, server.port)
        if operation.path.startswith(OPENAI_PATHS) and authenticated:
            case.headers = {**(case.headers or {}), "Authorization": f"Bearer {app.api_key}"}
            case.headers.pop("appid", None)
            if isinstance(case.body, dict) and "model" in case.body:
                case.body["model"] = FUZZ_SERVICE
            if "model" in (case.path_parameters or {}):
                case.path_parameters["model"] = FUZZ_SERVICE
        response = case.call(base_url=server.base_url, timeout=30)
        label = f"{operation.label} {response.status_code}"
        calls[label] = calls.get(label, 0) + 1
        case.validate_response(response, checks=CHECKS)
        if response.headers.get("content-type", [""])[0].startswith("text/event-stream"):
            if operation.path.startswith(OPENAI_PATHS):
                _check_openai_stream(response.text, openai_openapi.CompletionAnswer
                                     if operation.path == "/v1/completions" else openai_openapi.ChatChunk,
                                     response.stream_cut_short)
            else:
                _check_stream(response.text)

    return run


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["positive", "negative"])
def test_fuzz_every_operation_with_schemathesis(server, document, fuzz_app, mode):
    schema = schemathesis.openapi.from_dict(document)
    calls: dict[str, int] = {}
    started = time.monotonic()
    for result in schema.get_all_operations():
        operation = result.ok()
        if mode is GenerationMode.NEGATIVE and (operation.path == "/rpc/{rest}" or not operation.path.startswith(
                ("/rpc/", "/oauth/", "/v1/", "/v2/")) or operation.path.startswith("/v1/models")):
            # the probes and /v1/models take no input to get wrong (a header, a path string); a /rpc/{rest}
            # parameter breaking its pattern may hold "..", which HTTP clients resolve away from /rpc/
            continue
        fuzz(operation, mode, server, fuzz_app, calls)()
    print(f"{mode.value}: {sum(calls.values())} calls in {time.monotonic() - started:.0f} s: {calls}")
    assert sum(calls.values()) >= (300 if mode is GenerationMode.POSITIVE else 100)
    if mode is GenerationMode.POSITIVE:   # signed requests got their token
        assert calls.get(f"GET {BEARER_ROUTE} 200", 0) >= 1, calls
    assert httpx.get(server.base_url + "/ready").status_code == 200
