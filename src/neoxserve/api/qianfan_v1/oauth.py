"""`/oauth/2.0/token`: API Key + Secret Key -> access token (docs/api.md#access-tokens).

Parameters come from the query string first; a form body may supply missing ones. A JSON body is ignored:
the SDK sends `{}` and the doc's sample sends `""`.
"""
from __future__ import annotations

from urllib.parse import parse_qsl

from fastapi import Request
from fastapi.responses import Response

from ...platform import Platform
from ...platform.errors import OAuthError
from ..errors import compact, oauth_error_response
from ..platform_calls import platform_call

FIELDS = ("grant_type", "client_id", "client_secret")


async def token_parameters(request: Request) -> dict[str, str]:
    params = {k: request.query_params[k] for k in FIELDS if request.query_params.get(k)}
    content_type = request.headers.get("content-type", "")
    if request.method == "POST" and content_type.startswith("application/x-www-form-urlencoded"):
        body = (await request.body()).decode("utf-8", "replace")
        for k, v in parse_qsl(body):
            if k in FIELDS and v and k not in params:
                params[k] = v
    return params


async def issue_token(platform: Platform, request: Request) -> tuple[Response, str]:
    """The response and the outcome for metrics ("ok" or the OAuth error)."""
    params = await token_parameters(request)
    try:
        # the platform checks the parameters: missing ones, the grant type, then the keys
        result = await platform_call(platform.issue_token, *(params.get(k) for k in FIELDS))
    except OAuthError as e:
        return oauth_error_response(e), e.error
    return Response(compact(result), media_type="application/json"), "ok"
