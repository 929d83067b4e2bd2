"""RestartPolicy and RestartHistory: the backoff doubles within the window, the limit is final, old restarts leave
the window (a fake clock: no sleeping)."""
from __future__ import annotations

from neoxserve.commands.engine_config import restart_policy
from neoxserve.config import Settings
from neoxserve.engine.restart_policy import RestartHistory, RestartPolicy


def _policy(limit=4, window=100.0, backoff=0.5, backoff_max=3.0) -> RestartPolicy:
    return RestartPolicy(engine_restart_limit=limit, engine_restart_window_seconds=window,
                         engine_restart_backoff_seconds=backoff, engine_restart_backoff_max_seconds=backoff_max)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_backoff_doubles_up_to_the_cap_and_the_limit_is_final():
    clock = Clock()
    history = RestartHistory(_policy(limit=4), clock)
    waits = []
    while (wait := history.next_backoff()) is not None:
        waits.append(wait)
        clock.now += wait
        history.restarted()
        clock.now += 1.0   # the restarted engine lives a second
    assert waits == [0.5, 1.0, 2.0, 3.0]
    assert history.recent == 4


def test_restarts_leave_the_window_and_the_backoff_shrinks_again():
    clock = Clock()
    history = RestartHistory(_policy(limit=2, window=100.0), clock)
    assert history.next_backoff() == 0.5
    history.restarted()
    clock.now += 60
    assert history.next_backoff() == 1.0
    history.restarted()
    clock.now += 39.9
    assert history.next_backoff() is None            # two restarts within the last 100 s
    clock.now += 0.1                                 # the first is 100 s old now
    assert history.next_backoff() == 1.0 and history.recent == 1
    clock.now += 60
    assert history.next_backoff() == 0.5 and history.recent == 0


def test_limit_zero_never_restarts():
    policy = _policy(limit=0)
    assert RestartHistory(policy, Clock()).next_backoff() is None
    assert policy.exhausted() == "restarts are off (engine_restart_limit = 0)"


def test_descriptions():
    policy = _policy(limit=5, window=600.0)
    assert policy.describe(2) == "restart 2 of at most 5 within 600 s"
    assert policy.exhausted() == "the restart limit is reached (5 restarts within 600 s)"


def test_the_settings_defaults_and_names():
    assert restart_policy(Settings()) == _policy(limit=5, window=600.0, backoff=1.0, backoff_max=30.0)
    custom = Settings(engine_restart_limit=2, engine_restart_window_seconds=60, engine_restart_backoff_seconds=0.1,
                      engine_restart_backoff_max_seconds=0.2)
    assert restart_policy(custom) == _policy(limit=2, window=60.0, backoff=0.1, backoff_max=0.2)
    assert Settings().engine_failure_action == "exit"
