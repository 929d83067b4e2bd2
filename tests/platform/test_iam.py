"""IAM signatures made by the real SDK's signer (qianfan -> bce-python-sdk) must verify; any tampering must not."""
from __future__ import annotations

import time
from urllib.parse import urlparse

import pytest

from neoxserve.platform import PlatformError
from hypothesis import given
from hypothesis import strategies as st

from neoxserve.platform.iam import _enc, parse_authorization

qianfan_requestor = pytest.importorskip("qianfan.resources.requestor.openapi_requestor")
from qianfan.resources.typing import QfRequest  # noqa: E402

URL = "http://127.0.0.1:8360/rpc/2.0/ai_custom/v1/wenxinworkshop/completions/demo"


def sdk_signed(ak: str, sk: str, url: str = URL, query: dict | None = None) -> QfRequest:
    """Sign exactly as the SDK does before sending a model call in IAM mode."""
    req = QfRequest(method="POST", url=url, query=dict(query or {}),
                    headers={"Request_id": "sdk-req-123"}, json_body={"prompt": "hi"})
    qianfan_requestor.QfAPIRequestor._sign(req, ak, sk)
    return req


def received(req: QfRequest):
    """What the server sees: method, decoded path, query pairs, headers."""
    return req.method, urlparse(req.url).path, list(req.query.items()), dict(req.headers)


@pytest.fixture
def signed(served, clock):
    p, keys, _ = served
    clock.t = time.time()  # the SDK stamps the real time
    return p, keys, sdk_signed(keys.access_key, keys.secret_access_key, query={"foo": "a b/c", "x": ""})


def assert_iam_failed(excinfo, detail: str):
    assert (excinfo.value.code, excinfo.value.message) == (14, "IAM Certification failed")
    assert detail in excinfo.value.detail


def test_sdk_signature_verifies(signed):
    p, keys, req = signed
    assert req.headers["Authorization"].startswith(f"bce-auth-v1/{keys.access_key}/")
    assert set(parse_authorization(req.headers["Authorization"]).signed_headers) == {
        "content-type", "host", "x-bce-date", "request_id"}
    assert p.authenticate_iam(*received(req)).name == "alice"


def test_header_names_are_case_insensitive_and_query_may_be_a_mapping(signed):
    p, _, req = signed
    method, path, query, headers = received(req)
    assert p.authenticate_iam(method, path, dict(query), {k.upper(): v for k, v in headers.items()}).name == "alice"


def test_authorization_query_parameter_is_ignored(signed):
    p, _, req = signed
    method, path, query, headers = received(req)
    assert p.authenticate_iam(method, path, [*query, ("authorization", "x")], headers).name == "alice"


@pytest.mark.parametrize("tamper", ["method", "path", "query_value", "query_added", "header_value", "host",
                                    "signature"])
def test_tampering_is_rejected(signed, tamper):
    p, _, req = signed
    method, path, query, headers = received(req)
    if tamper == "method":
        method = "GET"
    elif tamper == "path":
        path = path.replace("/demo", "/other")
    elif tamper == "query_value":
        query = [("foo", "a b/d"), ("x", "")]
    elif tamper == "query_added":
        query = [*query, ("access_token", "1")]
    elif tamper == "header_value":
        headers["Request_id"] = "sdk-req-124"
    elif tamper == "host":
        headers["Host"] = "evil.example:8360"
    elif tamper == "signature":
        auth = headers["Authorization"]
        headers["Authorization"] = auth[:-1] + ("0" if auth[-1] != "0" else "1")
    with pytest.raises(PlatformError) as e:
        p.authenticate_iam(method, path, query, headers)
    assert_iam_failed(e, "signature mismatch")


def test_dropped_signed_header_is_rejected(signed):
    p, _, req = signed
    method, path, query, headers = received(req)
    del headers["Request_id"]  # e.g. nginx without underscores_in_headers
    with pytest.raises(PlatformError) as e:
        p.authenticate_iam(method, path, query, headers)
    assert_iam_failed(e, "signature mismatch")


def test_wrong_secret_is_rejected(served, clock):
    p, keys, _ = served
    clock.t = time.time()
    req = sdk_signed(keys.access_key, "0" * 32)
    with pytest.raises(PlatformError) as e:
        p.authenticate_iam(*received(req))
    assert_iam_failed(e, "signature mismatch")


def test_unknown_access_key_is_rejected(served, clock):
    p, keys, _ = served
    clock.t = time.time()
    req = sdk_signed("f" * 32, keys.secret_access_key)
    with pytest.raises(PlatformError) as e:
        p.authenticate_iam(*received(req))
    assert_iam_failed(e, "unknown access key")


def test_rotated_keys_stop_working(signed):
    p, _, req = signed
    p.rotate_app("alice")
    with pytest.raises(PlatformError) as e:
        p.authenticate_iam(*received(req))
    assert_iam_failed(e, "unknown access key")


def test_timestamp_window(signed, clock):
    p, _, req = signed
    signed_at = clock.t
    # SDK expiry is 300 s (plus 300 s allowed skew) after the timestamp, which is rounded down to the second.
    clock.t = signed_at + 598
    assert p.authenticate_iam(*received(req)).name == "alice"
    clock.t = signed_at + 601
    with pytest.raises(PlatformError) as e:
        p.authenticate_iam(*received(req))
    assert_iam_failed(e, "signature has expired")
    clock.t = signed_at - 299
    assert p.authenticate_iam(*received(req)).name == "alice"
    clock.t = signed_at - 302
    with pytest.raises(PlatformError) as e:
        p.authenticate_iam(*received(req))
    assert_iam_failed(e, "in the future")


@pytest.mark.parametrize("authorization, detail", [
    (None, "no Authorization header"),
    ("Bearer abc", "Authorization is not bce-auth-v1"),
    ("bce-auth-v1/ak/2024-01-01T00:00:00Z/300/host", "Authorization is not bce-auth-v1"),
    ("bce-auth-v1/ak/yesterday/300/host/abc", "bad timestamp"),
    ("bce-auth-v1/ak/2024-01-01T00:00:00Z/-5/host/abc", "bad expiration"),
    ("bce-auth-v1//2024-01-01T00:00:00Z/300/host/abc", "empty access key"),
])
def test_malformed_authorization(served, authorization, detail):
    p, _, _ = served
    headers = {"Host": "x"} if authorization is None else {"Host": "x", "Authorization": authorization}
    with pytest.raises(PlatformError) as e:
        p.authenticate_iam("POST", "/p", [], headers)
    assert_iam_failed(e, detail)


def test_non_ascii_values_and_empty_header_list(served, clock):
    """The SDK's signer percent-encodes UTF-8 bytes; with no header list it signs host/content-* and x-bce-*."""
    from baidubce.auth import bce_v1_signer
    from baidubce.auth.bce_credentials import BceCredentials

    p, keys, _ = served
    clock.t = time.time()
    headers = {b"host": b"127.0.0.1:8360", b"content-type": b"application/json", b"x-bce-meta": "值 1".encode()}
    auth = bce_v1_signer.sign(BceCredentials(keys.access_key, keys.secret_access_key), b"POST", b"/a/b",
                              headers, {b"q": "中文 &=".encode()}, timestamp=clock.t, expiration_in_seconds=60)
    received_headers = {k.decode(): v.decode() for k, v in headers.items()} | {"Authorization": auth.decode()}
    assert p.authenticate_iam("POST", "/a/b", [("q", "中文 &=")], received_headers).name == "alice"
    received_headers["x-bce-meta"] = "值 2"
    with pytest.raises(PlatformError) as e:
        p.authenticate_iam("POST", "/a/b", [("q", "中文 &=")], received_headers)
    assert_iam_failed(e, "signature mismatch")


@given(st.text(max_size=40))
def test_percent_encoding_matches_the_sdk(text):
    from baidubce.utils import normalize_string

    assert _enc(text) == normalize_string(text.encode()).decode()
    assert _enc(text, keep_slash=True) == normalize_string(text.encode(), encoding_slash=False).decode()
