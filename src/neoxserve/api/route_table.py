"""The route table: every path the API serves, with its methods, its metrics label and its route family, and the
rule for which family (so which error shape, api/route_family.py) any path answers in. Plain data.

The app routes from it (api/app.py), the body limit labels its refusals with it (api/limits.py), the OpenAPI
document and `serve`'s banner read its paths. The web console's own routes (under /console) are its package's
(api/console/); they are only the console family here.

| family     | paths                 | shape                                                        |
|------------|-----------------------|--------------------------------------------------------------|
| v1         | /rpc/...              | `{"id", "error_code", "error_msg"}` at HTTP 200               |
| console_v1 | /wenxinworkshop/...   | `{"log_id", "error_code", "error_msg"}` at HTTP 200           |
| bce        | /v1/BCE-BEARER/..., /v2/service | BCE's `{"requestId", "code", "message"}` with a status        |
| openai     | other /v1/..., /tokenize, /detokenize | `{"error": {"message", "type", "param", "code"}}` with a status |
| v2         | /v2/...               | `{"error": {"code", "message", "type"}, "id"}` with a status   |
| console    | /console...           | `{"error": {"code", "message"}}` with a status                |
| oauth      | /oauth/... and the rest   | `{"error", "error_description"}` with a status                |

(the rest: the probes, /metrics, /openapi.json and unknown paths)
"""
from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field

OTHER_LABEL = "other"   # the metrics label of what no route's handler counts under its own


class Family(enum.Enum):
    V1 = "v1"
    CONSOLE_V1 = "console_v1"
    BCE = "bce"
    OPENAI = "openai"
    V2 = "v2"
    CONSOLE = "console"
    OAUTH = "oauth"


@dataclass(frozen=True)
class RouteEntry:
    """One path of the API: `path` is a Starlette path template, `label` the metrics label its handler counts
    its calls under (and the body limit its refusals; OTHER_LABEL where the handler counts nothing)."""

    path: str
    methods: tuple[str, ...]
    label: str
    pattern: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # {name} is one path segment, {name:path} the rest of the path (Starlette's convertors)
        regex = re.sub(r"\\\{\w+:path\\\}", ".*", re.escape(self.path))
        object.__setattr__(self, "pattern", re.compile(re.sub(r"\\\{\w+\\\}", "[^/]+", regex) + "$"))

    @property
    def family(self) -> Family:
        return family_of(self.path)

    def matches(self, path: str) -> bool:
        return self.pattern.match(path) is not None


V1_PREFIX = "/rpc/2.0/ai_custom/v1/wenxinworkshop"   # Qianfan's v1 model routes
BCE_PREFIX = "/v1/BCE-BEARER/"
CONSOLE_V1_PREFIX = "/wenxinworkshop/"   # the Qianfan console API the SDK calls (api/qianfan_v1/console_api.py)
PROBE_METHODS = ("GET", "HEAD")

# Qianfan v1 and its authentication
OAUTH_TOKEN = RouteEntry("/oauth/2.0/token", ("GET", "POST"), "oauth")
BCE_BEARER_TOKEN = RouteEntry(BCE_PREFIX + "token", ("GET",), "bearer_token")
V1_COMPLETION = RouteEntry(V1_PREFIX + "/completions/{api_name}", ("POST",), "completions")
V1_CHAT = RouteEntry(V1_PREFIX + "/chat/{api_name}", ("POST",), "chat")
V1_TOKENIZER = RouteEntry(V1_PREFIX + "/tokenizer/erniebot", ("POST",), "tokenizer")
# token counting, as vLLM has it
TOKENIZE = RouteEntry("/tokenize", ("POST",), "tokenize")
DETOKENIZE = RouteEntry("/detokenize", ("POST",), "detokenize")
# the console API the SDK calls (api/qianfan_v1/console_api.py)
CONSOLE_V1_LIST = RouteEntry(CONSOLE_V1_PREFIX + "service/list", ("POST",), "console_api")
CONSOLE_V1_DETAIL = RouteEntry(CONSOLE_V1_PREFIX + "service/detail", ("POST",), "console_api")
CONSOLE_V1_GET = RouteEntry(CONSOLE_V1_PREFIX + "service/get", ("POST",), "console_api")
CONSOLE_V2_SERVICE = RouteEntry("/v2/service", ("POST",), "console_api")
# OpenAI and Qianfan v2
OPENAI_MODELS = RouteEntry("/v1/models", ("GET",), "openai_models")
OPENAI_MODEL = RouteEntry("/v1/models/{model}", ("GET",), "openai_models")
OPENAI_COMPLETION = RouteEntry("/v1/completions", ("POST",), "openai_completions")
OPENAI_CHAT = RouteEntry("/v1/chat/completions", ("POST",), "openai_chat")
V2_CHAT = RouteEntry("/v2/chat/completions", ("POST",), "v2_chat")
# any other path under /rpc/ (every method): error 3
V1_UNKNOWN = RouteEntry("/rpc/{rest:path}", (), OTHER_LABEL)
# probes and documents
HEALTH = RouteEntry("/health", PROBE_METHODS, OTHER_LABEL)
READY = RouteEntry("/ready", PROBE_METHODS, OTHER_LABEL)
METRICS = RouteEntry("/metrics", PROBE_METHODS, OTHER_LABEL)
OPENAPI = RouteEntry("/openapi.json", PROBE_METHODS, OTHER_LABEL)

# in the order the router tries them: the model routes before the /rpc/ catch-all
ROUTES = (OAUTH_TOKEN, BCE_BEARER_TOKEN, V1_COMPLETION, V1_CHAT, V1_TOKENIZER, TOKENIZE, DETOKENIZE, CONSOLE_V1_LIST,
          CONSOLE_V1_DETAIL, CONSOLE_V1_GET, CONSOLE_V2_SERVICE, OPENAI_MODELS, OPENAI_MODEL, OPENAI_COMPLETION,
          OPENAI_CHAT, V2_CHAT, V1_UNKNOWN, HEALTH, READY, METRICS, OPENAPI)

V2_CONSOLE_PATHS = (CONSOLE_V2_SERVICE.path,)      # the console API's v2 actions: BCE's error shape
VLLM_PATHS = (TOKENIZE.path, DETOKENIZE.path)     # OpenAI's error shape, as vLLM answers


def family_of(path: str) -> Family:
    if path.startswith("/rpc/"):
        return Family.V1
    if path.startswith(CONSOLE_V1_PREFIX):
        return Family.CONSOLE_V1
    if path.startswith(BCE_PREFIX) or path in V2_CONSOLE_PATHS:
        return Family.BCE
    if path.startswith("/v1/") or path in ("/v1", *VLLM_PATHS):
        return Family.OPENAI
    if path.startswith("/v2/") or path == "/v2":
        return Family.V2
    if path == "/console" or path.startswith("/console/"):
        return Family.CONSOLE
    return Family.OAUTH


def label_of(path: str) -> str:
    """The metrics label of the route serving `path` (what its handler counts under), else OTHER_LABEL."""
    for entry in ROUTES:
        if entry.matches(path):
            return entry.label
    return OTHER_LABEL
