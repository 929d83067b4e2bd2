"""SamplingRule: the bounds come from the rule's own message, so what errors say and what is checked agree."""
from __future__ import annotations

import pytest

from neoxserve.platform.records import SAMPLING_RULES, SamplingRule


def test_an_interval_rule_checks_the_bounds_its_message_states():
    rule = SamplingRule("in (0, 1.0]")
    assert (rule.integer, rule.low, rule.high, rule.low_open, rule.high_open) == (False, 0, 1, True, False)
    assert [rule.ok(v) for v in (0, 1e-9, 1, 1 + 1e-9, -1)] == [False, True, True, False, False]
    closed = SAMPLING_RULES["penalty_score"]
    assert [closed.ok(v) for v in (1, 2, 0.999, 2.001)] == [True, True, False, False]


def test_a_positive_integer_rule_has_no_upper_bound():
    rule = SAMPLING_RULES["top_k"]
    assert (rule.integer, rule.low, rule.high) == (True, 1, None)
    assert [rule.ok(v) for v in (0, 1, 10**9)] == [False, True, True]


@pytest.mark.parametrize("message", ["between 0 and 1", "in [0, 1", "a positive number", "in [a, 1]"])
def test_a_rule_whose_message_states_no_bounds_is_refused(message):
    with pytest.raises(ValueError, match="a sampling rule is an interval or 'a positive integer'"):
        SamplingRule(message)
