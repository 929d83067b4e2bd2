"""`GET /v1/BCE-BEARER/token?expireInSeconds=N`: a bearer token for an app's IAM signature, as Baidu's IAM answers
the qianfan SDK in v2 mode (`QIANFAN_IAM_BASE_URL`). The platform verifies and issues; this only shapes the answer:
success as JSON, errors in BCE's shape with the code and message also in X-Bce-Error-* headers."""
from __future__ import annotations

import uuid
from typing import Any

from fastapi import Request
from fastapi.responses import Response

from ..platform.errors import BceError
from .errors import compact
from .platform_calls import call


async def bearer_token(platform: Any, request: Request) -> tuple[Response, str]:
    """The response and the outcome for metrics ("ok" or the BCE error code)."""
    request_id = str(uuid.uuid4())
    try:
        body = await call(platform.bearer_token_request, request.method, request.url.path, request.query_params,
                          request.headers)
    except BceError as e:
        return Response(compact({"requestId": request_id, "code": e.code, "message": e.message}),
                        status_code=e.status, media_type="application/json",
                        headers={"X-Bce-Request-Id": request_id, "X-Bce-Error-Code": e.code,
                                 "X-Bce-Error-Message": e.message}), e.code
    return Response(compact(body), media_type="application/json", headers={"X-Bce-Request-Id": request_id}), "ok"
