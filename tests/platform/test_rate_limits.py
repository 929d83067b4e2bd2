"""RPM and TPM limits, settlement (what counts as served), and the rate headers, on both stores."""
from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time

import pytest

from neoxserve.platform import Limits, Outcome, Platform, PlatformError, QuotaError

MINUTE = 60 * 29_166_667          # 1_750_000_020: the start of a minute, 23:07 in Asia/Shanghai
RPM_MSG, TPM_MSG = "Rate limit reached for RPM", "Rate limit reached for TPM"


def limited(served, **limits):
    p, _, service = served
    return p, p.set_limits("alice", Limits(**limits)), service


def refused(p, app, service, reserve=0) -> QuotaError:
    with pytest.raises(QuotaError) as e:
        p.admit(app, service, reserve)
    return e.value


def test_rpm_counts_requests_in_the_current_minute(served, clock):
    p, app, service = limited(served, rpm=3)
    clock.t = MINUTE + 15.5
    for _ in range(3):
        p.admit(app, service)
    e = refused(p, app, service)
    assert (e.code, e.message, e.retry_after) == (336501, RPM_MSG, 45)
    clock.t = MINUTE + 59.99
    assert refused(p, app, service).retry_after == 1
    clock.t = MINUTE + 60
    assert p.admit(app, service).minute_requests == 1


def test_tpm_reserves_at_admission_and_settles_to_real_usage(served, clock):
    p, app, service = limited(served, tpm=100)
    clock.t = MINUTE + 30
    first = p.admit(app, service, 60)
    assert (first.minute_tokens, first.remaining_tokens) == (60, 40)
    e = refused(p, app, service, 50)
    assert (e.code, e.message, e.retry_after) == (336502, TPM_MSG, 30)
    p.settle(first, Outcome.SUCCEEDED, 12, 18)             # used 30 of the 60 reserved
    assert p.counters("alice").minute_tokens == 30
    second = p.admit(app, service, 50)
    assert (second.minute_tokens, second.remaining_tokens) == (80, 20)
    assert refused(p, app, service, 21).code == 336502
    p.settle(second, Outcome.NOT_SERVED)                    # the whole reservation comes back
    assert p.counters("alice").minute_tokens == 30
    assert p.admit(app, service, 70).remaining_tokens == 0  # exactly the limit is allowed


def test_a_request_larger_than_the_tpm_limit_is_never_admitted(served):
    p, app, service = limited(served, tpm=100)
    e = refused(p, app, service, 101)
    assert (e.code, e.message, e.retry_after) == (336502, TPM_MSG, None)
    assert "needs 101 tokens" in e.detail
    assert p.counters("alice").minute_requests == 0          # refused: nothing counted


def test_settling_in_a_later_minute_leaves_the_new_minute_alone(served, clock):
    p, app, service = limited(served, tpm=100)
    clock.t = MINUTE + 59
    old = p.admit(app, service, 90)
    clock.t = MINUTE + 61
    new = p.admit(app, service, 90)
    p.settle(old, Outcome.NOT_SERVED)
    p.settle(new, Outcome.SUCCEEDED, 40, 10)
    assert p.counters("alice").minute_tokens == 50


@pytest.mark.parametrize("outcome,total,day,failed,tokens", [
    (Outcome.SUCCEEDED, 1, 1, 0, (5, 7)),
    (Outcome.FAILED, 1, 1, 1, (5, 7)),
    (Outcome.NOT_SERVED, 0, 0, 1, (0, 0)),
])
def test_what_each_outcome_consumes(served, clock, outcome, total, day, failed, tokens):
    p, app, service = limited(served, qps=10, rpm=10, tpm=1000, daily=5, total=5)
    clock.t = MINUTE + 1
    p.settle(p.admit(app, service, 100), outcome, 5, 7)
    c = p.counters("alice")
    assert (c.total_count, c.day_count) == (total, day)
    assert c.minute_requests == 1                            # attempts count toward RPM (and QPS) whatever the end
    assert c.minute_tokens == sum(tokens)
    [row] = p.usage()
    assert (row.calls, row.succeeded, row.failed, row.prompt_tokens, row.completion_tokens) == (
        1, 1 - failed, failed, *tokens)


def test_not_served_gives_back_total_but_not_a_day_that_has_passed(served, clock):
    p, app, service = limited(served, daily=1, total=2)
    clock.t = 1_750_003_199.0                                 # 23:59:59 in Shanghai
    late = p.admit(app, service)
    assert refused(p, app, service).retry_after == 1          # 17 until midnight
    clock.t = 1_750_003_201.0
    p.admit(app, service)                                     # the new day's only request
    p.settle(late, Outcome.NOT_SERVED)
    c = p.counters("alice")
    assert (c.day_count, c.total_count) == (1, 1)
    assert refused(p, app, service).code == 17                # the new day's count was not touched
    assert p.usage()[0].day == "2025-06-15" and p.usage()[0].failed == 1


def test_settling_twice_is_a_bug(served):
    p, app, service = served[0], served[0].get_app("alice"), served[2]
    admission = p.admit(app, service)
    p.settle(admission, Outcome.SUCCEEDED, 1, 1)
    with pytest.raises(RuntimeError, match="settled twice"):
        p.settle(admission, Outcome.NOT_SERVED)


def test_retry_after_of_each_limit(served, clock):
    p, app, service = limited(served, qps=1, daily=1000, total=1000)
    clock.t = MINUTE + 10.25
    p.admit(app, service)
    assert (refused(p, app, service).code, refused(p, app, service).retry_after) == (18, 1)
    p.set_limits("alice", Limits(total=1))
    e = refused(p, app, service)
    assert (e.code, e.retry_after) == (19, None)


@pytest.mark.parametrize("limits,headers", [
    (Limits(), {}),
    (Limits(daily=10, total=10), {}),
    (Limits(qps=2), {"X-Ratelimit-Limit-Requests": "120", "X-Ratelimit-Remaining-Requests": "119"}),
    (Limits(qps=2, rpm=100), {"X-Ratelimit-Limit-Requests": "100", "X-Ratelimit-Remaining-Requests": "99"}),
    (Limits(qps=1, rpm=100), {"X-Ratelimit-Limit-Requests": "60", "X-Ratelimit-Remaining-Requests": "59"}),
    (Limits(tpm=500), {"X-Ratelimit-Limit-Tokens": "500", "X-Ratelimit-Remaining-Tokens": "460"}),
    (Limits(rpm=5, tpm=500), {"X-Ratelimit-Limit-Requests": "5", "X-Ratelimit-Remaining-Requests": "4",
                              "X-Ratelimit-Limit-Tokens": "500", "X-Ratelimit-Remaining-Tokens": "460"}),
])
def test_rate_limit_headers(served, limits, headers):
    p, app, service = limited(served, **limits.to_dict())
    assert p.admit(app, service, 40).rate_limit_headers() == headers


def _threads(n: int, work) -> list:
    barrier = threading.Barrier(n)
    results: list = []
    lock = threading.Lock()

    def run(i):
        barrier.wait()
        out = work(i)
        with lock:
            results.append(out)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def _code(p, app, service, reserve=0) -> int:
    try:
        p.admit(app, service, reserve)
        return 0
    except PlatformError as e:
        return e.code


def test_rpm_50_threads_exactly_7_admitted(served):
    p, app, service = limited(served, rpm=7)
    assert sorted(_threads(50, lambda i: _code(p, app, service))) == [0] * 7 + [336501] * 43
    assert p.counters("alice").minute_requests == 7


def test_tpm_50_threads_exactly_10_reservations(served):
    p, app, service = limited(served, tpm=1000)
    assert sorted(_threads(50, lambda i: _code(p, app, service, 100))) == [0] * 10 + [336502] * 40
    assert p.counters("alice").minute_tokens == 1000


def test_total_50_threads_with_refunds_serves_exactly_the_limit(served):
    """Every third admission fails before output and is given back: exactly 10 requests are served in the end,
    however the 50 threads interleave."""
    p, app, service = limited(served, total=10)
    admissions = iter(range(10**6))
    lock = threading.Lock()

    def work(i):
        served_here = 0
        for _ in range(40):
            try:
                admission = p.admit(app, service)
            except QuotaError as e:
                assert e.code == 19
                return served_here
            with lock:
                n = next(admissions)
            if n % 3 == 0:
                p.settle(admission, Outcome.NOT_SERVED)
            else:
                p.settle(admission, Outcome.SUCCEEDED, 1, 1)
                served_here += 1
        return served_here

    assert sum(_threads(50, work)) == 10
    assert p.counters("alice").total_count == 10
    [row] = p.usage()
    assert row.succeeded == 10 and row.failed >= 5


WORKER = textwrap.dedent("""
    import sys, time
    from neoxserve.config import Settings
    from neoxserve.platform import Outcome, Platform, QuotaError
    p = Platform.open(Settings.load(None, data_dir=sys.argv[1], store_url=sys.argv[3]))
    app, service = p.get_app("alice"), p.get_service("demo")
    start = float(sys.argv[2])
    while time.time() < start:
        time.sleep(0.001)
    served, minutes = 0, set()
    for i in range(200):  # until the total limit refuses: whoever gives a request back tries again
        try:
            admission = p.admit(app, service, 10)
        except QuotaError as e:
            assert e.code == 19, e
            break
        minutes.add(admission.minute)
        if i % 2:
            p.settle(admission, Outcome.NOT_SERVED)
        else:
            p.settle(admission, Outcome.SUCCEEDED, 4, 6)
            served += 1
    print(served, ",".join(map(str, minutes)) or "-")
""")


def test_processes_share_total_and_tpm_exactly(backend, settings):
    """4 processes admitting until the total limit refuses, every other admission failing before output: the
    limit of 25 is served exactly, and the minute's TPM holds exactly the settled usage (the failures gave their
    reservations back)."""
    with Platform.open(settings) as p:
        p.publish("demo", "demo-model")
        p.create_app("alice", services=["demo"], limits=Limits(total=25, tpm=100_000))
    start = time.time() + 1.0
    if int(start // 60) != int((start + 30) // 60):   # start where 30 s of the same minute remain
        start = (int(start // 60) + 1) * 60 + 0.5
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(settings.data_dir), str(start),
                               settings.store_url], stdout=subprocess.PIPE, text=True) for _ in range(4)]
    outs = [proc.communicate(timeout=120)[0] for proc in procs]
    assert all(proc.returncode == 0 for proc in procs), outs
    assert sum(int(o.split()[0]) for o in outs) == 25
    minutes = {m for o in outs for m in o.split()[1].split(",")} - {"-"}
    with Platform.open(settings) as p:
        c = p.counters("alice")
        assert c.total_count == 25
        [row] = p.usage()
        assert (row.succeeded, row.prompt_tokens, row.completion_tokens) == (25, 100, 150)
        assert row.failed >= 4
        if len(minutes) == 1 and c.minute_requests:     # still the minute they ran in
            assert c.minute_tokens == 250


def test_refusals_carry_the_rate_headers(served, clock):
    p, app, service = limited(served, rpm=2, tpm=100)
    clock.t = MINUTE + 5
    p.admit(app, service, 30)
    p.admit(app, service, 30)
    assert refused(p, app, service, 10).headers == {
        "X-Ratelimit-Limit-Requests": "2", "X-Ratelimit-Remaining-Requests": "0",
        "X-Ratelimit-Limit-Tokens": "100", "X-Ratelimit-Remaining-Tokens": "40"}
    p.set_limits("alice", Limits(rpm=5, tpm=100))
    assert refused(p, app, service, 50).headers["X-Ratelimit-Remaining-Requests"] == "3"
    p.set_limits("alice", Limits(total=1))
    assert refused(p, app, service).headers == {}
