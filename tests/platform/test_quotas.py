"""Quotas: exact under concurrency (threads on both stores, processes on SQLite), persisted, rejections free."""
from __future__ import annotations

import subprocess
import sys
import textwrap
import threading

import pytest

from neoxserve.platform import Limits, Platform, PlatformError

MESSAGES = {17: "Open api daily request limit reached", 18: "Open api qps request limit reached",
            19: "Open api total request limit reached"}


def limited(served, **limits):
    p, _, service = served
    app = p.set_limits("alice", Limits(**limits))
    return p, app, service


def outcome(p, app, service):
    try:
        p.admit(app, service)
        return 0
    except PlatformError as e:
        assert e.message == MESSAGES[e.code]
        return e.code


def test_limits_are_exposed_only_when_set(served):
    p, _, _ = served
    app = p.get_app("alice")
    assert app.limits == Limits() and app.limits.requests_per_minute is None
    app = p.set_limits("alice", Limits(qps=5, daily=100))
    assert app.limits == Limits(qps=5, daily=100, total=None) and app.limits.requests_per_minute == 300


def test_qps_50_threads_exactly_5_admitted(served):
    p, app, service = limited(served, qps=5)
    barrier = threading.Barrier(50)
    results = []

    def worker():
        barrier.wait()
        results.append(outcome(p, app, service))

    threads = [threading.Thread(target=worker) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [0] * 5 + [18] * 45
    assert p.counters("alice").total_count == 5  # rejections do not count


def test_qps_window_is_the_current_second(served, clock):
    p, app, service = limited(served, qps=2)
    clock.t = 1_750_000_000.1
    assert [outcome(p, app, service) for _ in range(3)] == [0, 0, 18]
    clock.t = 1_750_000_000.99
    assert outcome(p, app, service) == 18
    clock.t = 1_750_000_001.0
    assert [outcome(p, app, service) for _ in range(3)] == [0, 0, 18]


def test_daily_limit_resets_at_midnight_in_the_quota_timezone(served, clock):
    p, app, service = limited(served, daily=3)
    clock.t = 1_750_003_199.0  # 2025-06-15 23:59:59 in Asia/Shanghai (15:59:59 UTC)
    results = []
    for _ in range(4):
        clock.advance(0.001)
        results.append(outcome(p, app, service))
    assert results == [0, 0, 0, 17]
    clock.t = 1_750_003_200.0  # midnight in Shanghai, still 16:00 UTC on the 15th
    assert [outcome(p, app, service) for _ in range(4)] == [0, 0, 0, 17]
    counters = p.counters("alice")
    assert (counters.day, counters.day_count, counters.total_count) == ("2025-06-16", 3, 6)


def test_total_limit_and_order_of_checks(served, clock):
    p, app, service = limited(served, qps=10, daily=10, total=3)
    assert [outcome(p, app, service) for _ in range(4)] == [0, 0, 0, 19]
    clock.advance(86400)
    assert outcome(p, app, service) == 19
    # daily before QPS: 17 is not worth retrying, 18 is
    p.set_limits("alice", Limits(qps=1, daily=1))
    assert outcome(p, app, service) == 0 and outcome(p, app, service) == 17


def test_rejected_requests_do_not_count(served, clock):
    p, app, service = limited(served, qps=1, total=5)
    for _ in range(4):
        assert [outcome(p, app, service) for _ in range(3)] == [0, 18, 18]
        clock.advance(1)
    assert [outcome(p, app, service) for _ in range(3)] == [0, 19, 19]  # total is checked before QPS
    assert p.counters("alice").total_count == 5
    p.set_limits("alice", Limits(total=6))  # raising the limit lets exactly one more through
    assert [outcome(p, app, service) for _ in range(2)] == [0, 19]
    assert p.counters("alice").total_count == 6


def test_counts_survive_restart(served, settings, clock):
    p, app, service = limited(served, daily=4, total=5)
    assert [outcome(p, app, service) for _ in range(3)] == [0, 0, 0]
    p.close()
    with Platform.open(settings, clock=clock) as again:
        app = again.get_app("alice")
        assert [outcome(again, app, service) for _ in range(2)] == [0, 17]
        clock.advance(86400)
        assert [outcome(again, app, service) for _ in range(2)] == [0, 19]


def test_unlimited_app_is_always_admitted_and_counted(served):
    p, _, service = served
    app = p.get_app("alice")
    for _ in range(20):
        admission = p.admit(app, service)
    assert admission.limits == Limits() and admission.total_count == 20 and admission.day_count == 20


def test_deleted_app_is_not_admitted(served):
    p, _, service = served
    app = p.get_app("alice")
    p.delete_app("alice")
    with pytest.raises(PlatformError) as e:
        p.admit(app, service)
    assert (e.value.code, e.value.message) == (110, "Access token invalid or no longer valid")


WORKER = textwrap.dedent("""
    import sys, time
    from neoxserve.config import Settings
    from neoxserve.platform import Platform, PlatformError
    p = Platform.open(Settings.load(None, data_dir=sys.argv[1], store_url=sys.argv[4]))
    app, service = p.get_app("alice"), p.get_service("demo")
    ok = rejected = 0
    start = float(sys.argv[2])
    while time.time() < start:
        time.sleep(0.001)
    for _ in range(int(sys.argv[3])):
        try:
            p.admit(app, service); ok += 1
        except PlatformError as e:
            assert e.code in (17, 19), e
            rejected += 1
    print(ok, rejected)
""")


@pytest.mark.parametrize("limit", ["daily", "total"])
def test_processes_share_quotas_exactly(backend, settings, limit):
    import time

    with Platform.open(settings) as p:
        p.publish("demo", "demo-model")
        p.create_app("alice", services=["demo"], limits=Limits(**{limit: 37}))
    start = time.time() + 1.0
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(settings.data_dir), str(start), "25",
                              settings.store_url],
                              stdout=subprocess.PIPE, text=True) for _ in range(4)]
    outs = [proc.communicate(timeout=60)[0] for proc in procs]
    assert all(proc.returncode == 0 for proc in procs), outs
    ok = sum(int(o.split()[0]) for o in outs)
    rejected = sum(int(o.split()[1]) for o in outs)
    assert (ok, rejected) == (37, 63)
    with Platform.open(settings) as p:
        counters = p.counters("alice")
        assert counters.total_count == 37


def test_admission_carries_the_limits_it_applied(served):
    p, app, service = limited(served, qps=7, total=1000)
    admission = p.admit(app, service)
    assert admission.limits == Limits(qps=7, daily=None, total=1000) and admission.limits.requests_per_minute == 420
    assert (admission.second_count, admission.day_count, admission.total_count) == (1, 1, 1)
    p.set_limits("alice", Limits(daily=3))
    assert p.admit(app, service).limits == Limits(daily=3)  # a change applies to the very next admission
