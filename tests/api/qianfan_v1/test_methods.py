"""HTTP methods over real HTTP (a raw socket, so each method token goes on the wire as written): 336101 for every
method but POST on the model routes, HEAD on the probes, and what the HTTP server itself does with request lines it
cannot parse."""
from __future__ import annotations

import httpx
import pytest

import rawhttp

# every method uvicorn's HTTP parser (llhttp, through httptools) accepts besides POST, WebDAV and other extensions
# included
PARSED_METHODS = ["GET", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "PROPFIND", "PROPPATCH", "MKCOL", "COPY",
                  "MOVE", "LOCK", "UNLOCK", "SEARCH", "REPORT", "MKACTIVITY", "CHECKOUT", "MERGE", "M-SEARCH",
                  "NOTIFY", "SUBSCRIBE", "UNSUBSCRIBE", "PURGE", "MKCALENDAR", "LINK", "UNLINK", "SOURCE", "QUERY",
                  "BIND", "REBIND", "UNBIND", "ACL"]
INVALID_METHOD = {"error_code": 336101, "error_msg": "Invalid HTTP Method"}


@pytest.fixture(scope="module")
def token(server):
    return server.token()


def model_targets(server, token):
    query = f"?access_token={token}"
    return [server.completions_url()[len(server.base_url):] + query, server.chat_url()[len(server.base_url):] + query]


def without_id(body: dict) -> dict:
    assert body.pop("id").startswith("as-")
    return body


@pytest.mark.parametrize("method", PARSED_METHODS)
def test_every_other_method_on_the_model_routes_336101(server, token, method):
    for target in model_targets(server, token):
        r = rawhttp.request(server.port, method, target, body=b'{"prompt": "hi"}')
        assert (r.status, r.headers["content-type"]) == (200, "application/json"), (method, r.body)
        assert without_id(r.json()) == INVALID_METHOD


def test_head_on_the_model_routes_gets_the_headers_of_336101(server, token):
    for target in model_targets(server, token):
        r = rawhttp.request(server.port, "HEAD", target)
        assert (r.status, r.headers["content-type"], r.body) == (200, "application/json", b"")
        get = rawhttp.request(server.port, "GET", target)
        assert r.headers["content-length"] == get.headers["content-length"]


def test_connect_gets_336101_with_http_405(server, token):
    """A 2xx answer to CONNECT means "tunnel established": HTTP clients would switch to tunnelling and never read
    the body. So CONNECT gets the same body with 405."""
    for target in model_targets(server, token):
        r = rawhttp.request(server.port, "CONNECT", target)
        assert (r.status, r.headers["allow"]) == (405, "POST")
        assert without_id(r.json()) == INVALID_METHOD


@pytest.mark.parametrize("method", ["PROPFIND", "TRACE", "DELETE", "HEAD"])
def test_unknown_routes_answer_3_for_any_method(server, token, method):
    r = rawhttp.request(server.port, method, f"/rpc/2.0/whatever?access_token={token}")
    assert r.status == 200
    if method != "HEAD":
        assert without_id(r.json()) == {"error_code": 3, "error_msg": "Unsupported openapi method"}


@pytest.mark.parametrize("path", ["/health", "/ready", "/metrics"])
def test_head_on_the_probes(server, path):
    get = httpx.get(server.base_url + path)
    head = httpx.head(server.base_url + path)
    assert (head.status_code, head.content) == (200, b"")
    assert head.headers["content-type"] == get.headers["content-type"]
    assert int(head.headers["content-length"]) > 0


@pytest.mark.parametrize("path", ["/health", "/ready", "/metrics"])
def test_probes_refuse_other_methods_with_405(server, path):
    r = httpx.post(server.base_url + path)
    assert (r.status_code, r.headers["allow"]) == (405, "GET, HEAD")
    assert r.json() == {"error": "invalid_request",
                        "error_description": f"method POST is not allowed on {path}; use GET, HEAD"}


@pytest.mark.parametrize("method,target", [
    ("FOOBAR", "/rpc/2.0/ai_custom/v1/wenxinworkshop/completions/demo"),   # not a method the parser knows
    ("post", "/rpc/2.0/ai_custom/v1/wenxinworkshop/completions/demo"),     # methods are case-sensitive
    ("CONNECT", "127.0.0.1:80"),                                          # authority form, as proxies get it
])
def test_request_lines_the_http_server_cannot_parse_get_400(server, method, target):
    """These never reach the application: uvicorn's parser answers 400 and closes, as for any malformed request
    line (docs/api.md, "Methods")."""
    r = rawhttp.request(server.port, method, target)
    assert (r.status, r.body) == (400, b"Invalid HTTP request received.")
    assert httpx.get(server.base_url + "/health").status_code == 200
