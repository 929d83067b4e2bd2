"""The Qianfan console API the SDK calls (v1 service/list and service/detail, v2 /v2/service actions), IAM-signed
as the SDK's ConsoleAPIRequestor signs, through the real app and platform (SQLite) with a fake engine: shapes,
what each app sees, usage metrics, and every refusal with its code and message."""
from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient
from qianfan.resources.auth.iam import iam_sign
from qianfan.resources.typing import QfRequest

from neoxserve.api.app import create_app
from neoxserve.config import Settings
from neoxserve.platform import Outcome, Platform

from fakes import FakeEngine

BASE = "http://testserver"


class S:
    def __init__(self, tmp_path, engine: FakeEngine | None = None):
        settings = Settings(data_dir=tmp_path)
        self.platform = Platform.open(settings)   # the real clock: the SDK signs with the current time
        self.keys = self.platform.bootstrap("svc", "StableLM-Alpha-7B")
        self.platform.publish("other", "other-model", temperature=0.5)   # "default" may not call it
        self.platform.publish("svc2", "StableLM-Tuned-Alpha-7B", allow=["default"])
        self.client = TestClient(create_app(settings, engine or FakeEngine(), self.platform))

    def post(self, path: str, body: dict | None, query: dict | None = None, secret: str | None = None,
             raw: bytes | None = None):
        req = QfRequest(method="POST", url=path, query=dict(query or {}),
                        headers={"Content-Type": "application/json", "Host": "testserver",
                                 "request-source": "qianfan_py_sdk_v0.4.12.3"})
        iam_sign(self.keys.access_key, secret or self.keys.secret_access_key, req)
        content = raw if raw is not None else json.dumps(body).encode()
        return self.client.post(path, params=req.query, content=content, headers=req.headers)


@pytest.fixture
def s(tmp_path):
    made = S(tmp_path)
    yield made
    made.platform.close()


def around_now() -> dict[str, str]:
    """startTime and endTime a day before and after now, in the API's format."""
    def iso(t: float) -> str:
        return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"startTime": iso(time.time() - 86400), "endTime": iso(time.time() + 86400)}


def v1_error(r, code: int, message: str) -> None:
    body = r.json()
    assert r.status_code == 200 and (body["error_code"], body["error_msg"]) == (code, message), body
    assert len(body["log_id"]) == 32


def bce_error(r, status: int, code: str, message: str) -> None:
    body = r.json()
    assert r.status_code == status and (body["code"], body["message"]) == (code, message), body
    assert r.headers["X-Bce-Error-Code"] == code


def test_v1_service_list_names_services_by_model(s):
    body = s.post("/wenxinworkshop/service/list", {}).json()
    assert set(body) == {"log_id", "result"} and body["result"]["custom"] == []
    listed = [(e["name"], e["apiType"], e["url"], e["serviceId"]) for e in body["result"]["common"]]
    assert listed == [
        ("StableLM-Alpha-7B", "chat", BASE + "/rpc/2.0/ai_custom/v1/wenxinworkshop/chat/svc", "svc"),
        ("StableLM-Alpha-7B", "completions", BASE + "/rpc/2.0/ai_custom/v1/wenxinworkshop/completions/svc", "svc"),
        ("StableLM-Tuned-Alpha-7B", "chat", BASE + "/rpc/2.0/ai_custom/v1/wenxinworkshop/chat/svc2", "svc2"),
        ("StableLM-Tuned-Alpha-7B", "completions", BASE + "/rpc/2.0/ai_custom/v1/wenxinworkshop/completions/svc2",
         "svc2")]
    filtered = s.post("/wenxinworkshop/service/list", {"apiTypefilter": ["completions"]}).json()["result"]["common"]
    assert [e["apiType"] for e in filtered] == ["completions", "completions"]


def test_a_completion_model_is_listed_once(tmp_path):
    engine = FakeEngine()
    engine.model_info = type(engine.model_info)(name="fake", path="", max_context=64, is_chat=False)
    s = S(tmp_path, engine)
    try:
        common = s.post("/wenxinworkshop/service/list", {}).json()["result"]["common"]
        assert [(e["serviceId"], e["apiType"]) for e in common] == [("svc", "completions"), ("svc2", "completions")]
    finally:
        s.platform.close()


def test_v1_service_detail(s):
    for path in ("/wenxinworkshop/service/detail", "/wenxinworkshop/service/get"):
        result = s.post(path, {"serviceId": "svc"}).json()["result"]
        assert (result["serviceId"], result["name"], result["uri"], result["apiTypes"]) == (
            "svc", "StableLM-Alpha-7B", "svc", ["chat", "completions"])
        assert result["defaults"]["temperature"] is None and result["createTime"].endswith("Z")
    v1_error(s.post("/wenxinworkshop/service/detail", {"serviceId": "nope"}), 336005, "API name not exist")
    v1_error(s.post("/wenxinworkshop/service/detail", {"serviceId": "other"}), 336004,
             f"app 'default' (id {s.keys.app_id}) has no permission to call service 'other'")
    v1_error(s.post("/wenxinworkshop/service/detail", {}), 336001, "Invalid Argument")
    v1_error(s.post("/wenxinworkshop/service/detail", {"serviceId": 5}), 336001, "Invalid Argument")
    v1_error(s.post("/wenxinworkshop/service/detail", None, raw=b"[1]"), 336001, "Invalid Argument")
    v1_error(s.post("/wenxinworkshop/service/detail", None, raw=b"{"), 336002, "Invalid JSON")


def test_v1_refusals_of_the_signature_and_paths(s):
    v1_error(s.post("/wenxinworkshop/service/list", {}, secret="0" * 32), 14, "IAM Certification failed")
    v1_error(s.client.post("/wenxinworkshop/service/list", json={}), 14, "IAM Certification failed")
    code = s.platform.create_access_code("default").code    # the console API takes IAM signatures only
    v1_error(s.client.post("/wenxinworkshop/service/list", json={}, headers={"Authorization": f"ACCESSCODE {code}"}),
             14, "IAM Certification failed")
    v1_error(s.client.post("/wenxinworkshop/service/apply", json={}), 3, "Unsupported openapi method")
    v1_error(s.client.get("/wenxinworkshop/service/list"), 336101, "Invalid HTTP Method")


def test_v2_describe_services(s):
    body = s.post("/v2/service", {}, {"Action": "DescribeServices"}).json()
    assert set(body) == {"requestId", "result"}
    result = body["result"]
    assert (result["isTruncated"], result["nextMarker"], result["maxKeys"]) == (False, "", 10)
    [svc, _] = result["serviceList"]
    assert (svc["serviceId"], svc["name"], svc["serviceTypes"], svc["runStatus"]) == (
        "svc", "StableLM-Alpha-7B", ["chat", "completions"], "Serving")
    assert svc["urls"]["chat"] == BASE + "/rpc/2.0/ai_custom/v1/wenxinworkshop/chat/svc"
    page = s.post("/v2/service", {"maxKeys": 1}, {"Action": "DescribeServices"}).json()["result"]
    assert [e["serviceId"] for e in page["serviceList"]] == ["svc"] and page["isTruncated"] and \
        page["nextMarker"] == "svc"
    rest = s.post("/v2/service", {"maxKeys": 1, "marker": "svc"}, {"Action": "DescribeServices"}).json()["result"]
    assert [e["serviceId"] for e in rest["serviceList"]] == ["svc2"] and not rest["isTruncated"]
    named = s.post("/v2/service", {"name": "tuned"}, {"Action": "DescribeServices"}).json()["result"]
    assert [e["serviceId"] for e in named["serviceList"]] == ["svc2"]
    detail = s.post("/v2/service", {"serviceId": "svc2"}, {"Action": "DescribeService"}).json()["result"]
    assert detail["name"] == "StableLM-Tuned-Alpha-7B" and "temperature" in detail["defaults"]


def test_v2_describe_service_metric(s):
    app, svc = s.platform.get_app("default"), s.platform.get_service("svc")
    s.platform.settle(s.platform.admit(app, svc, 10), Outcome.SUCCEEDED, 3, 4)
    s.platform.record_failure(app, svc)
    times = around_now()
    result = s.post("/v2/service", times, {"Action": "DescribeServiceMetric"}).json()["result"]
    figures = {"callTotal": 2, "succeedCallTotal": 1, "failureCallTotal": 1, "inputTokensTotal": 3,
               "outputTokensTotal": 4, "tokensTotal": 7}
    day = s.platform.today()
    assert result == {"appId": app.id, **times, "serviceList": [
        {"serviceId": "svc", "name": "StableLM-Alpha-7B", "interval": "day", "total": figures,
         "items": [{"date": day, **figures}]}]}
    only = s.post("/v2/service", {**times, "serviceId": ["svc2"]}, {"Action": "DescribeServiceMetric"})
    assert only.json()["result"]["serviceList"] == []
    before = {"startTime": "2025-01-01T00:00:00Z", "endTime": "2025-01-02T00:00:00Z"}
    assert s.post("/v2/service", before, {"Action": "DescribeServiceMetric"}).json()["result"]["serviceList"] == []
    assert s.post("/v2/service", {**times, "appId": app.id}, {"Action": "DescribeServiceMetric"}).status_code == 200


def test_v2_refusals(s):
    act = {"Action": "DescribeService"}
    bce_error(s.post("/v2/service", {}, act, secret="0" * 32), 401, "AccessDenied", "IAM Certification failed")
    bce_error(s.post("/v2/service", {}, {"Action": "CreateService"}), 400, "InvalidAction",
              "Action is 'CreateService': this server answers DescribeServices, DescribeService, "
              "DescribeServiceMetric")
    bce_error(s.post("/v2/service", {}, {}), 400, "InvalidAction", "Action is 'None': this server answers "
              "DescribeServices, DescribeService, DescribeServiceMetric")
    bce_error(s.post("/v2/service", None, act, raw=b"{"), 400, "MalformedJSON", "the body is not valid JSON")
    bce_error(s.post("/v2/service", None, act, raw=b"[]"), 400, "InvalidParameter", "the body must be a JSON object")
    bce_error(s.post("/v2/service", {}, act), 400, "InvalidParameter",
              "serviceId must be a service's id (its api_name), a string")
    bce_error(s.post("/v2/service", {"serviceId": "nope"}, act), 404, "ResourceNotFound",
              "no service with serviceId 'nope'")
    bce_error(s.post("/v2/service", {"serviceId": "other"}, act), 403, "AccessDenied",
              f"app 'default' (id {s.keys.app_id}) has no permission to call service 'other'")
    lst = {"Action": "DescribeServices"}
    bce_error(s.post("/v2/service", {"maxKeys": 0}, lst), 400, "InvalidParameter", "maxKeys must be a positive integer")
    bce_error(s.post("/v2/service", {"name": 1}, lst), 400, "InvalidParameter", "name must be a string")
    bce_error(s.post("/v2/service", {"serviceType": "chat"}, lst), 400, "InvalidParameter",
              "serviceType must be a list of strings")
    bce_error(s.post("/v2/service", {"marker": 1}, lst), 400, "InvalidParameter",
              "marker must be a string (a serviceId)")
    bce_error(s.post("/v2/service", {"pageReverse": "no"}, lst), 400, "InvalidParameter",
              "pageReverse must be a boolean")
    met = {"Action": "DescribeServiceMetric"}
    bce_error(s.post("/v2/service", {"endTime": "2025-06-16T00:00:00Z"}, met), 400, "InvalidParameter",
              "startTime is 'None': it must be a UTC time such as 2024-05-01T08:00:00Z")
    times = {"startTime": "2025-06-16T00:00:00Z", "endTime": "2025-06-15T00:00:00Z"}
    bce_error(s.post("/v2/service", times, met), 400, "InvalidParameter", "endTime is before startTime")
    times = around_now()
    bce_error(s.post("/v2/service", {**times, "appId": 999}, met), 403, "AccessDenied",
              f"appId '999' is not the app whose IAM keys signed the request (id {s.keys.app_id})")
    bce_error(s.post("/v2/service", {**times, "serviceId": "svc"}, met), 400, "InvalidParameter",
              "serviceId must be a list of serviceIds")
    r = s.client.get("/v2/service")
    assert r.status_code == 405 and r.json()["code"] == "MethodNotAllowed"
