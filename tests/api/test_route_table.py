"""The route table (api/route_table.py) is what the app serves: every entry routed with its methods, no other route
outside the web console's, and the body limit's metrics label of a path is the label of the route serving it."""
from __future__ import annotations

import pytest

from neoxserve.api import route_table as routes
from neoxserve.api.app import create_app
from neoxserve.config import Settings

from app_routes import flat_routes
from fakes import FakeEngine


@pytest.fixture(scope="module")
def app():
    return create_app(Settings(), FakeEngine(), None)


def _served(app) -> dict[str, set[str]]:
    """path -> its methods ("*": a route of every method)."""
    served: dict[str, set[str]] = {}
    for route in flat_routes(app):
        served.setdefault(route.path, set()).update(getattr(route, "methods", None) or {"*"})
    return served


def test_every_entry_is_served_with_its_methods(app):
    served = _served(app)
    for entry in routes.ROUTES:
        assert set(entry.methods or {"*"}) <= served[entry.path], entry


def test_the_app_serves_no_path_outside_the_table_but_the_consoles(app):
    table = {entry.path for entry in routes.ROUTES}
    others = {path for path in _served(app) if path not in table}
    assert others and all(routes.family_of(path) is routes.Family.CONSOLE for path in others), others


@pytest.mark.parametrize(("path", "label"), [
    ("/rpc/2.0/ai_custom/v1/wenxinworkshop/completions/svc", "completions"),
    ("/rpc/2.0/ai_custom/v1/wenxinworkshop/chat/svc", "chat"),
    ("/rpc/2.0/ai_custom/v1/wenxinworkshop/chat/svc/more", "other"),   # not a model route: error 3, "other"
    ("/rpc/2.0/ai_custom/v1/wenxinworkshop/tokenizer/erniebot", "tokenizer"),
    ("/oauth/2.0/token", "oauth"), ("/v1/BCE-BEARER/token", "bearer_token"),
    ("/v1/chat/completions", "openai_chat"), ("/v1/models/svc", "openai_models"), ("/v2/chat/completions", "v2_chat"),
    ("/wenxinworkshop/service/get", "console_api"), ("/health", "other"), ("/no/such/path", "other"),
])
def test_a_path_is_labelled_as_its_route(path, label):
    assert routes.label_of(path) == label
