"""Point-in-time user history: what the user had engaged with strictly before each event.

Only the past is visible, so the feature a model trains on is exactly what serving can know
at request time. Events at the same timestamp do not see each other (no leakage from a tie).
"""
from __future__ import annotations

from typing import Iterable, List, Sequence, Tuple

from hyperrec.schemas import features

# (timestamp, item_id, event, payload); payload is carried through untouched.
Event = Tuple[int, str, str, object]


def with_history(events: Iterable[Event], history_length: int) -> List[Tuple[Event, List[str]]]:
    """Pairs each event of ONE user with the last `history_length` engaged item ids before it.

    Events are ordered by (timestamp, item_id, event) so that the result does not depend on
    input order. History is most recent LAST and holds only ids of events with a strictly
    smaller timestamp; only POSITIVE_EVENTS (engagement) enter it, impressions do not.
    """
    ordered = sorted(events, key=lambda e: (e[0], e[1], e[2]))
    result: List[Tuple[Event, List[str]]] = []
    engaged: List[str] = []  # item ids of engaged events with timestamp < current group
    i = 0
    while i < len(ordered):
        # All events sharing a timestamp see the same history.
        j = i
        while j < len(ordered) and ordered[j][0] == ordered[i][0]:
            j += 1
        visible = engaged[-history_length:] if history_length > 0 else []
        for event in ordered[i:j]:
            result.append((event, list(visible)))
        engaged.extend(e[1] for e in ordered[i:j] if e[2] in features.POSITIVE_EVENTS)
        i = j
    return result


def last_engaged(events: Sequence[Event], history_length: int) -> List[str]:
    """The history a request made after all `events` would see (used to serve a user)."""
    ordered = sorted(events, key=lambda e: (e[0], e[1], e[2]))
    engaged = [e[1] for e in ordered if e[2] in features.POSITIVE_EVENTS]
    return engaged[-history_length:] if history_length > 0 else []
