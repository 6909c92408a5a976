"""Point-in-time history on hand-built cases: ties, first events, the N cap, impressions."""
from hyperrec.data.history import last_engaged, with_history


def _ev(ts, item, event="click"):
    return (ts, item, event, f"{item}@{ts}")


def _as_dict(result):
    return {payload: past for (_, _, _, payload), past in result}


def test_first_event_of_a_user_has_empty_history():
    result = _as_dict(with_history([_ev(10, "a")], history_length=3))
    assert result == {"a@10": []}


def test_history_is_strictly_before_and_most_recent_last():
    result = _as_dict(with_history([_ev(30, "c"), _ev(10, "a"), _ev(20, "b")], 5))
    assert result == {"a@10": [], "b@20": ["a"], "c@30": ["a", "b"]}


def test_events_with_the_same_timestamp_do_not_see_each_other():
    result = _as_dict(with_history([_ev(10, "a"), _ev(20, "b"), _ev(20, "c"), _ev(30, "d")], 5))
    assert result["b@20"] == ["a"]
    assert result["c@20"] == ["a"]
    # After the tie both are visible, in (timestamp, item) order.
    assert result["d@30"] == ["a", "b", "c"]


def test_history_is_capped_at_n_most_recent():
    events = [_ev(t, f"i{t}") for t in range(1, 8)]
    result = _as_dict(with_history(events, history_length=3))
    assert result["i7@7"] == ["i4", "i5", "i6"]
    assert result["i2@2"] == ["i1"]


def test_impressions_do_not_enter_history_but_get_one():
    result = _as_dict(with_history(
        [_ev(10, "a", "impression"), _ev(20, "b", "purchase"), _ev(30, "c", "impression")], 5))
    assert result == {"a@10": [], "b@20": [], "c@30": ["b"]}


def test_input_order_does_not_matter():
    events = [_ev(3, "c"), _ev(1, "a"), _ev(2, "b"), _ev(2, "z")]
    assert _as_dict(with_history(events, 2)) == _as_dict(with_history(events[::-1], 2))


def test_zero_length_history():
    assert _as_dict(with_history([_ev(1, "a"), _ev(2, "b")], 0)) == {"a@1": [], "b@2": []}


def test_last_engaged_is_what_a_request_after_all_events_sees():
    events = [_ev(1, "a"), _ev(2, "b", "impression"), _ev(3, "c"), _ev(4, "d")]
    assert last_engaged(events, 2) == ["c", "d"]
