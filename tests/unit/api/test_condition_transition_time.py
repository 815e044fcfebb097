"""A condition's lastTransitionTime moves only when its status flips."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from wattplane.api.conditions import Condition, get_condition, set_condition

T0 = datetime(2025, 1, 1, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)


def _ready(status: str, reason: str = "R", message: str = "") -> Condition:
    return Condition(type="Ready", status=status, reason=reason, message=message)


def test_a_new_condition_is_stamped_now() -> None:
    out = set_condition([], _ready("True"), now=T0)
    assert len(out) == 1
    assert out[0].last_transition_time == T0


def test_same_status_keeps_the_old_time_but_takes_the_new_reason_and_message() -> None:
    first = set_condition([], _ready("True", "Planned", "one"), now=T0)
    second = set_condition(first, _ready("True", "DryRun", "two"), now=T1)
    assert len(second) == 1
    assert second[0].last_transition_time == T0
    assert (second[0].reason, second[0].message) == ("DryRun", "two")


def test_a_status_flip_moves_the_time() -> None:
    first = set_condition([], _ready("True"), now=T0)
    flipped = set_condition(first, _ready("False"), now=T1)
    assert flipped[0].status == "False"
    assert flipped[0].last_transition_time == T1


def test_a_caller_supplied_time_is_ignored_when_the_status_is_unchanged() -> None:
    first = set_condition([], _ready("True"), now=T0)
    new = _ready("True").model_copy(update={"last_transition_time": T1 + timedelta(days=1)})
    assert set_condition(first, new, now=T1)[0].last_transition_time == T0


def test_an_unchanged_condition_without_a_time_gets_one() -> None:
    assert set_condition([_ready("True")], _ready("True"), now=T1)[0].last_transition_time == T1


def test_other_conditions_are_untouched_and_order_is_kept() -> None:
    degraded = Condition(type="Degraded", status="False", last_transition_time=T0)
    fresh = Condition(type="SignalFresh", status="True", last_transition_time=T0)
    start = set_condition([degraded, fresh], _ready("True"), now=T0)
    out = set_condition(start, _ready("False"), now=T1)
    assert [c.type for c in out] == ["Degraded", "SignalFresh", "Ready"]
    assert out[0] == degraded and out[1] == fresh


def test_the_input_list_is_not_mutated() -> None:
    start = set_condition([], _ready("True"), now=T0)
    snapshot = [c.model_copy() for c in start]
    set_condition(start, _ready("False"), now=T1)
    assert start == snapshot


def test_get_condition() -> None:
    conds = set_condition([], _ready("True"), now=T0)
    got = get_condition(conds, "Ready")
    assert got is not None and got.status == "True"
    assert get_condition(conds, "Degraded") is None


def test_wire_form_is_metav1_condition() -> None:
    wire = set_condition([], _ready("True", "Planned"), now=T0)[0].to_wire()
    assert wire == {
        "type": "Ready",
        "status": "True",
        "reason": "Planned",
        "message": "",
        "lastTransitionTime": "2025-01-01T00:00:00Z",
    }
