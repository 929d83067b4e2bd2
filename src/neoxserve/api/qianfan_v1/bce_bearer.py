"""`GET /v1/BCE-BEARER/token?expireInSeconds=N`: a bearer token for an app's IAM signature, as Baidu's IAM answers
the qianfan SDK in v2 mode (`QIANFAN_IAM_BASE_URL`). The platform verifies and issues; this only shapes the answer:
success as JSON, errors in BCE's shape with the code and message also in X-Bce-Error-* headers."""
from __future__ import annotations

import uuid
from typing import Any

from fastapi import Request
from fastapi.responses import Response

from ...platform.errors import BceError
from ..errors import bce_error_response, compact
from ..platform_calls import platform_call


async def bearer_token(platform: Any, request: Request) -> tuple[Response, str]:
    """The response and the outcome for metrics ("ok" or the BCE error code)."""
    request_id = str(uuid.uuid4())
    try:
        body = await platform_call(platform.bearer_token_request, request.method, request.url.path,
                                   request.query_params, request.headers)
    except BceError as e:
        return bce_error_response(e, request_id), e.code
    return Response(compact(body), media_type="application/json", headers={"X-Bce-Request-Id": request_id}), "ok"
