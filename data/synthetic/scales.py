"""Dataset sizes and the fixed timeline of each scale, in one place.

A scale is everything that decides how big the generated world is and when it happens. The
timeline never depends on today's date: the same (scale, seed) describes the same weeks in
2024 forever, which is what makes the output byte-identical across machines and years.

The timeline is cut into `n_spans` consecutive, equal, half-open windows
`[start + (k-1) * span_days, start + k * span_days)`, one per `span-{k}/` folder. The
preference/catalogue shift happens exactly at the start of span `shift_span`, so a model
trained on the spans before it and evaluated on the spans after it sees the drift.
"""
from __future__ import annotations

import dataclasses
import datetime
from typing import Dict, List, Tuple

from hyperrec.data.contract import Timeline


@dataclasses.dataclass(frozen=True)
class DatagenScale:
    """Sizes and timing of one generated dataset (the lead may tune the numbers here)."""

    name: str
    n_users: int
    n_items: int
    n_spans: int
    span_days: int = 7  # weekly windows, matching the pipeline's eval_days of 7
    start_date: str = "2024-01-01"  # the first second of span 1, UTC midnight
    shift_span: int = 0  # the shift happens at the start of this span (1-based)
    sessions_per_week: float = 1.0  # mean sessions of an active user per week
    min_impressions: int = 5  # impressions per session are uniform in [min, max]
    max_impressions: int = 10
    # How the catalogue grows; the four fractions add up to 1.
    initial_item_fraction: float = 0.50  # already in the catalogue before the timeline starts
    steady_item_fraction: float = 0.25  # arrive evenly over the first 80% of the timeline
    late_item_fraction: float = 0.15  # arrive in the last 20%: the cold-start items
    shift_batch_fraction: float = 0.10  # one category's new batch, right after the shift
    late_users_fraction: float = 0.25  # users whose first visit is inside the timeline

    def __post_init__(self) -> None:
        fractions = (self.initial_item_fraction, self.steady_item_fraction,
                     self.late_item_fraction, self.shift_batch_fraction)
        if abs(sum(fractions) - 1.0) > 1e-9:
            raise ValueError(f"item arrival fractions of scale {self.name!r} must sum to 1")
        if not 1 < self.shift_span <= self.n_spans:
            raise ValueError(f"shift_span of scale {self.name!r} must be in 2..n_spans")

    # ---- the timeline, in integer seconds since the epoch (UTC) ----------------------------
    @property
    def start_ts(self) -> int:
        day = datetime.date.fromisoformat(self.start_date)
        midnight = datetime.datetime(day.year, day.month, day.day, tzinfo=datetime.timezone.utc)
        return int(midnight.timestamp())

    @property
    def timeline(self) -> Timeline:
        return Timeline(self.start_ts, self.span_days, self.n_spans)

    @property
    def span_seconds(self) -> int:
        return self.timeline.span_seconds

    @property
    def end_ts(self) -> int:
        """The first second after the timeline (exclusive end of the last span)."""
        return self.timeline.end

    @property
    def shift_ts(self) -> int:
        return self.span_window(self.shift_span)[0]

    def span_window(self, span: int) -> Tuple[int, int]:
        """[start, end) of span `span` (1-based), in epoch seconds."""
        return self.timeline.window(span)

    def span_windows(self) -> List[Tuple[int, int]]:
        return list(self.timeline.windows())


def _scale(name: str, **sizes) -> DatagenScale:
    n_spans = sizes["n_spans"]
    # The shift sits on the span boundary nearest to 75% of the timeline.
    sizes.setdefault("shift_span", int(n_spans * 0.75 + 0.5) + 1)
    return DatagenScale(name=name, **sizes)


SCALES: Dict[str, DatagenScale] = {
    # Fast tests: a few thousand rows, generates in about a second.
    "tiny": _scale("tiny", n_users=120, n_items=100, n_spans=4, sessions_per_week=2.0),
    # Component tests and quick experiments: about 30k rows.
    "small": _scale("small", n_users=600, n_items=300, n_spans=8, sessions_per_week=0.95),
    # The demo: about 100k rows over eight weeks.
    "default": _scale("default", n_users=2000, n_items=800, n_spans=8, sessions_per_week=0.95),
}


def get_scale(name: str) -> DatagenScale:
    if name not in SCALES:
        raise ValueError(f"unknown datagen scale {name!r}; choose from {sorted(SCALES)}")
    return SCALES[name]
