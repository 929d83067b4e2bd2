"""Published services, permissions and their errors (336004, 336005), on both stores."""
from __future__ import annotations

import pytest

from neoxserve.platform import AdminError, Conflict, NotFound, PlatformError, Service


def test_publish_get_list_unpublish(platform, clock):
    s = platform.publish("demo-7b.v1", "stablelm", temperature=0.7, top_p=0.9, top_k=40, penalty_score=1.1,
                         max_output_tokens=128)
    assert s == Service("demo-7b.v1", "stablelm", 0.7, 0.9, 40, 1.1, 128, clock.t)
    assert platform.get_service("demo-7b.v1") == s
    platform.publish("a_plain", "m")
    assert platform.get_service("a_plain") == Service("a_plain", "m", created_at=clock.t)
    assert [x.api_name for x in platform.list_services()] == ["a_plain", "demo-7b.v1"]
    platform.unpublish("demo-7b.v1")
    with pytest.raises(PlatformError) as e:
        platform.get_service("demo-7b.v1")
    assert (e.value.code, e.value.message) == (336005, "API name not exist")


@pytest.mark.parametrize("name", ["", "Demo", "-x", ".x", "a/b", "a b", "a" * 65, "é"])
def test_invalid_api_names(platform, name):
    with pytest.raises(AdminError, match="invalid api_name"):
        platform.publish(name, "m")


@pytest.mark.parametrize("field, value, rule", [
    ("temperature", 0.0, "in (0, 1.0]"), ("temperature", 1.5, "in (0, 1.0]"), ("top_p", -0.1, "in [0, 1.0]"),
    ("top_k", 0, "a positive integer"), ("penalty_score", 2.5, "in [1.0, 2.0]"),
    ("max_output_tokens", 0, "a positive integer"), ("temperature", float("nan"), "in (0, 1.0]"),
])
def test_invalid_defaults(platform, field, value, rule):
    with pytest.raises(AdminError) as e:
        platform.publish("demo", "m", **{field: value})
    assert str(e.value) == f"invalid {field} {value!r}: must be {rule}"
    assert platform.list_services() == []


def test_duplicate_and_unknown(platform):
    platform.publish("demo", "m")
    with pytest.raises(Conflict, match="a service named 'demo' is already published"):
        platform.publish("demo", "m")
    with pytest.raises(NotFound, match="no published service named 'nope'"):
        platform.unpublish("nope")
    with pytest.raises(NotFound, match="no app named 'ghost'"):
        platform.publish("other", "m", allow=["ghost"])
    assert platform.store.get_service("other") is None


def test_permissions(served):
    p, keys, demo = served
    other = p.publish("other", "m")
    alice = p.get_app("alice")
    p.check_permission(alice, demo)
    with pytest.raises(PlatformError) as e:
        p.check_permission(alice, other)
    assert (e.value.code, e.value.message) == (
        336004, f"app 'alice' (id {keys.app_id}) has no permission to call service 'other'")
    p.allow("alice", "other")
    p.check_permission(p.get_app("alice"), other)
    assert p.disallow("alice", "other")
    assert p.get_app("alice").services == ("demo",)
    with pytest.raises(NotFound, match="no published service named 'nope'"):
        p.allow("alice", "nope")


def test_publish_with_allow_and_unpublish_drops_permissions(served):
    p, _, _ = served
    p.create_app("bob")
    p.publish("other", "m", allow=["alice", "bob"])
    assert p.get_app("bob").services == ("other",)
    assert p.get_app("alice").services == ("demo", "other")
    p.unpublish("other")
    p.publish("other", "m")  # republishing does not bring old permissions back
    assert p.get_app("bob").services == ()
    assert p.get_app("alice").services == ("demo",)


def test_create_app_with_unknown_service_creates_nothing(platform):
    with pytest.raises(AdminError, match="no published service named 'nope'"):
        platform.create_app("alice", services=["nope"])
    assert platform.list_apps() == []
