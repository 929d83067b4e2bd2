"""The Qianfan console API the qianfan SDK calls, IAM-signed with an app's IAM keys (no console session), on what
that app may call (docs/api.md, "Console API for the SDK"):

- v1: `POST /wenxinworkshop/service/list` (the SDK's `Service.list`, which `Completion(model=...)` and
  `ChatCompletion(model=...)` read to find a model's endpoint: `result.common[].name / url / apiType`),
  `POST /wenxinworkshop/service/detail` (`Service.get`; `/wenxinworkshop/service/get` too). Errors are Qianfan
  console errors: `{"log_id", "error_code", "error_msg"}` at HTTP 200 (the SDK raises APIError on `error_code`).
- v2: `POST /v2/service?Action=DescribeServices | DescribeService | DescribeServiceMetric` (`Service.V2.
  service_list`, `service_detail`, `service_metric`): `{"requestId", "result"}`; errors in BCE's shape with an HTTP
  status, `{"requestId", "code", "message"}`.

A service is named by its model (`services publish NAME --model MODEL`): that is the `name` the SDK matches a
`model=` against. Its id (`serviceId`) is its api_name. A chat model's services are listed twice in v1 (apiType
`chat` and `completions`, both routes serve them), a completion model's once.
"""
from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from fastapi import Request
from fastapi.responses import Response

from ...engine.client import EngineClient
from ...platform import App, Platform
from ...platform.errors import BceError, PlatformError
from ...platform.records import SERVICE_DEFAULT_FIELDS, Service
from ..body import parse_json
from ..errors import INVALID_ARGUMENT, ApiError, bce_error_response, compact, console_v1_error
from ..metrics import Metrics
from ..platform_calls import platform_call
from ..route_table import CONSOLE_V1_LIST, CONSOLE_V2_SERVICE, V1_CHAT, V1_COMPLETION

MODEL_ROUTES = {"chat": V1_CHAT, "completions": V1_COMPLETION}   # by the apiType the SDK reads
V2_ACTIONS = ("DescribeServices", "DescribeService", "DescribeServiceMetric")
MAX_KEYS, DEFAULT_KEYS = 100, 10
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"   # the SDK's Consts.DateTimeFormat


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime(TIME_FORMAT)


class ConsoleApi:
    def __init__(self, platform: Platform, engine: EngineClient, metrics: Metrics) -> None:
        self.platform = platform
        self.engine = engine
        self.metrics = metrics

    # ----- what both versions show -----

    def kinds(self) -> list[str]:
        """The model routes a service answers on: chat and completions for a chat model."""
        return ["chat", "completions"] if self.engine.model_info.is_chat else ["completions"]

    def _callable(self, app: App) -> list[Service]:
        return [s for s in self.platform.list_services() if s.api_name in app.services]

    def _service(self, app: App, service_id: object) -> Service:
        """The app's service of id `service_id` (an api_name): 336005 unknown, 336004 not the app's."""
        if not isinstance(service_id, str) or not service_id:
            raise ApiError(INVALID_ARGUMENT, detail="serviceId must be a service's id (its api_name), a string")
        service = self.platform.get_service(service_id)
        self.platform.check_permission(app, service)
        return service

    @staticmethod
    def _url(base: str, kind: str, service: Service) -> str:
        return base + MODEL_ROUTES[kind].path.format(api_name=service.api_name)

    def _v1_entry(self, base: str, service: Service, kind: str) -> dict[str, Any]:
        return {"serviceId": service.api_name, "name": service.model, "apiName": service.api_name,
                "url": self._url(base, kind, service), "apiType": kind, "chargeStatus": "OPENED",
                "versionList": [{"trainType": service.model, "serviceStatus": "Done"}]}

    def _v2_entry(self, base: str, service: Service) -> dict[str, Any]:
        kinds = self.kinds()
        return {"serviceId": service.api_name, "name": service.model, "modelName": service.model,
                "urlSuffix": service.api_name, "serviceType": kinds[0], "serviceTypes": kinds,
                "urls": {kind: self._url(base, kind, service) for kind in kinds}, "runStatus": "Serving",
                "createTime": _iso(service.created_at)}

    @staticmethod
    def _defaults(service: Service) -> dict[str, Any]:
        return {name: getattr(service, name) for name in SERVICE_DEFAULT_FIELDS}

    # ----- v1 -----

    async def v1(self, request: Request) -> Response:
        started, log_id = time.monotonic(), uuid.uuid4().hex
        try:
            app = await platform_call(self.platform.authenticate_iam, request.method, request.url.path,
                                      request.query_params, request.headers)
            body = await self._body(request)
            base = str(request.base_url).rstrip("/")
            if request.url.path == CONSOLE_V1_LIST.path:
                result: dict[str, Any] = await platform_call(self._v1_list, app, body, base)
            else:
                result = await platform_call(self._v1_detail, app, body, base)
            outcome: int | str = 0
            response = Response(compact({"log_id": log_id, "result": result}), media_type="application/json")
        except ApiError as e:
            outcome = e.code
            response = console_v1_error(e.code, e.message, log_id)
        self.metrics.observe(CONSOLE_V1_LIST.label, outcome, time.monotonic() - started)
        return response

    @staticmethod
    async def _body(request: Request) -> dict[str, Any]:
        raw = await request.body()
        value = parse_json(raw) if raw.strip() else {}
        if not isinstance(value, dict):
            raise ApiError(INVALID_ARGUMENT, detail="the body must be a JSON object")
        return value

    def _v1_list(self, app: App, body: dict[str, Any], base: str) -> dict[str, Any]:
        wanted = body.get("apiTypefilter")
        if wanted is not None and not (isinstance(wanted, list) and all(isinstance(t, str) for t in wanted)):
            raise ApiError(INVALID_ARGUMENT, detail="apiTypefilter must be a list of service types")
        entries = [self._v1_entry(base, s, kind) for s in self._callable(app) for kind in self.kinds()
                   if wanted is None or kind in wanted]
        return {"common": entries, "custom": []}

    def _v1_detail(self, app: App, body: dict[str, Any], base: str) -> dict[str, Any]:
        try:
            service = self._service(app, body.get("serviceId"))
        except PlatformError as e:
            raise ApiError(e.code, e.message) from e
        kinds = self.kinds()
        return {**self._v1_entry(base, service, kinds[0]), "uri": service.api_name, "apiTypes": kinds,
                "urls": {kind: self._url(base, kind, service) for kind in kinds},
                "createTime": _iso(service.created_at), "defaults": self._defaults(service)}

    # ----- v2 -----

    async def v2(self, request: Request) -> Response:
        started, request_id = time.monotonic(), str(uuid.uuid4())
        try:
            try:
                app = await platform_call(self.platform.authenticate_iam, request.method, request.url.path,
                                          request.query_params, request.headers)
            except ApiError as e:
                raise BceError(401, "AccessDenied", e.message) from None
            action = request.query_params.get("Action")
            if action not in V2_ACTIONS:
                raise BceError(400, "InvalidAction", f"Action is {str(action)[:40]!r}: this server answers "
                                                     f"{', '.join(V2_ACTIONS)}")
            try:
                body = await self._body(request)
            except ApiError as e:
                raise BceError(400, "MalformedJSON" if e.code != INVALID_ARGUMENT else "InvalidParameter",
                               e.detail) from None
            base = str(request.base_url).rstrip("/")
            handlers: dict[str, Callable[[App, dict[str, Any], str], dict[str, Any]]] = {
                "DescribeServices": self._v2_list, "DescribeService": self._v2_detail,
                "DescribeServiceMetric": self._v2_metric}
            result = await asyncio_call(handlers[action], app, body, base)
            outcome: int | str = 0
            response = Response(compact({"requestId": request_id, "result": result}), media_type="application/json")
        except BceError as e:
            outcome = e.code
            response = bce_error_response(e, request_id)
        self.metrics.observe(CONSOLE_V2_SERVICE.label, outcome, time.monotonic() - started)
        return response

    def _v2_list(self, app: App, body: dict[str, Any], base: str) -> dict[str, Any]:
        name, types, marker = body.get("name"), body.get("serviceType"), body.get("marker")
        max_keys, reverse = body.get("maxKeys", DEFAULT_KEYS), body.get("pageReverse", False)
        if name is not None and not isinstance(name, str):
            raise BceError(400, "InvalidParameter", "name must be a string")
        if types is not None and not (isinstance(types, list) and all(isinstance(t, str) for t in types)):
            raise BceError(400, "InvalidParameter", "serviceType must be a list of strings")
        if marker is not None and not isinstance(marker, str):
            raise BceError(400, "InvalidParameter", "marker must be a string (a serviceId)")
        if isinstance(max_keys, bool) or not isinstance(max_keys, int) or max_keys < 1:
            raise BceError(400, "InvalidParameter", "maxKeys must be a positive integer")
        if not isinstance(reverse, bool):
            raise BceError(400, "InvalidParameter", "pageReverse must be a boolean")
        services = [s for s in self._callable(app)
                    if (not name or name.lower() in s.model.lower() or name.lower() in s.api_name.lower())
                    and (types is None or set(types) & set(self.kinds()))]
        services.sort(key=lambda s: s.api_name, reverse=reverse)
        if marker:
            services = [s for s in services if (s.api_name < marker if reverse else s.api_name > marker)]
        page = services[:min(max_keys, MAX_KEYS)]
        truncated = len(services) > len(page)
        return {"marker": marker or "", "maxKeys": min(max_keys, MAX_KEYS), "isTruncated": truncated,
                "nextMarker": page[-1].api_name if truncated else "",
                "serviceList": [self._v2_entry(base, s) for s in page]}

    def _v2_service(self, app: App, service_id: object) -> Service:
        try:
            return self._service(app, service_id)
        except ApiError as e:
            raise BceError(400, "InvalidParameter", e.detail) from None
        except PlatformError as e:
            if e.code == 336004:
                raise BceError(403, "AccessDenied", e.message) from None
            raise BceError(404, "ResourceNotFound", f"no service with serviceId {str(service_id)[:64]!r}") from None

    def _v2_detail(self, app: App, body: dict[str, Any], base: str) -> dict[str, Any]:
        service = self._v2_service(app, body.get("serviceId"))
        return {**self._v2_entry(base, service), "defaults": self._defaults(service)}

    def _time(self, body: dict[str, Any], name: str) -> float:
        value = body.get(name)
        try:
            if not isinstance(value, str):
                raise ValueError
            return datetime.strptime(value, TIME_FORMAT).replace(tzinfo=UTC).timestamp()
        except ValueError:
            raise BceError(400, "InvalidParameter",
                           f"{name} is {str(value)[:40]!r}: it must be a UTC time such as 2024-05-01T08:00:00Z") \
                from None

    def _v2_metric(self, app: App, body: dict[str, Any], base: str) -> dict[str, Any]:
        start, end = self._time(body, "startTime"), self._time(body, "endTime")
        if end < start:
            raise BceError(400, "InvalidParameter", "endTime is before startTime")
        app_id, ids = body.get("appId"), body.get("serviceId")
        if app_id is not None and str(app_id) != str(app.id):
            raise BceError(403, "AccessDenied", f"appId {str(app_id)[:20]!r} is not the app whose IAM keys signed "
                                                f"the request (id {app.id})")
        if ids is not None and not (isinstance(ids, list) and all(isinstance(i, str) for i in ids)):
            raise BceError(400, "InvalidParameter", "serviceId must be a list of serviceIds")
        rows = self.platform.usage(app=app.name, since=self.platform.today(start), until=self.platform.today(end))
        by_service: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            if ids is None or row.api_name in ids:
                by_service.setdefault(row.api_name, []).append({"date": row.day, **_figures(
                    row.calls, row.succeeded, row.failed, row.prompt_tokens, row.completion_tokens)})
        services = []
        for api_name, items in sorted(by_service.items()):
            service = self.platform.store.get_service(api_name)
            total = _figures(*(sum(i[k] for i in items) for k in (
                "callTotal", "succeedCallTotal", "failureCallTotal", "inputTokensTotal", "outputTokensTotal")))
            services.append({"serviceId": api_name, "name": service.model if service else "", "interval": "day",
                             "total": total, "items": items})
        return {"appId": app.id, "startTime": _iso(start), "endTime": _iso(end), "serviceList": services}


def _figures(calls: int, succeeded: int, failed: int, prompt: int, completion: int) -> dict[str, int]:
    """Qianfan's console call statistics."""
    return {"callTotal": calls, "succeedCallTotal": succeeded, "failureCallTotal": failed,
            "inputTokensTotal": prompt, "outputTokensTotal": completion, "tokensTotal": prompt + completion}


async def asyncio_call(fn: Callable[..., Any], *args: Any) -> Any:
    """`fn(*args)` in a worker thread (the store blocks), letting BceError through."""
    return await asyncio.to_thread(fn, *args)
