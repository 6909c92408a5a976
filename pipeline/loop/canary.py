"""Canary against stable: engaged rate per requested label, from the request log and the
feedback span, and the decision (promote, roll back, keep collecting).

- Requests: every logged `recommend`/`recommend_excluding` predict, one per instance: the
  user, the label the request named (serving/routing.py sends users to `stable`/`canary` by
  a hash of their id), the version that answered, the request time (the request's
  `timestamp` input, else the log's time) and the item ids the response returned.
- Feedback: the interactions that arrived after the requests, as a span of the data contract
  (`SPAN_DIR/interactions.csv`: user_id, item_id, timestamp, event; data/README.md).
- Outcome: a request is *engaged* when its user has an engaged event (click, add_to_cart,
  purchase) on one of its recommended items within `horizon_hours` after the request. Users
  are split by hash, not by time, so requests close to the end of the feedback span (less
  time to engage) weigh on both labels alike.
- Rates carry Wilson score intervals; canary - stable carries Newcombe's hybrid score
  interval (built from the two Wilson intervals). The rule is CanaryConfig's (config.py).

Named outcomes besides the three decisions: `no_canary_traffic` (no request named the
canary label), `no_feedback` (no feedback row between the first request and the last
request + horizon), `feedback_malformed` (no interactions.csv, a required column missing,
not CSV/UTF-8, or rows of which none parses).
"""
from __future__ import annotations

import collections
import csv
import dataclasses
import math
import os
from typing import Any, Dict, Iterable, List, Sequence, Tuple

from hyperrec.components.config import CanaryConfig
from hyperrec.components.example_gen import contract_rows
from hyperrec.data import contract
from hyperrec.schemas import features

INTERACTIONS_FILE = "interactions.csv"
PROMOTE, ROLL_BACK, KEEP_COLLECTING = "promote", "roll_back", "keep_collecting"
NO_CANARY_TRAFFIC, NO_FEEDBACK, FEEDBACK_MALFORMED = (
    "no_canary_traffic", "no_feedback", "feedback_malformed")
_RECOMMEND_OUTPUT = features.ITEM_IDS


class FeedbackMalformed(ValueError):
    """The feedback span cannot be read as the data contract's interactions."""


@dataclasses.dataclass(frozen=True)
class Request:
    user_id: str
    label: str  # "" when the request named no label
    version: int
    timestamp: int
    item_ids: Tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Feedback:
    rows: Dict[str, List[Tuple[int, str]]]  # user -> [(timestamp, item) of engaged events]
    timestamps: List[int]  # every parsed row's time, sorted
    rows_read: int
    rows_skipped: int


# ---- reading --------------------------------------------------------------------------------

def _strings(tensor) -> List[Any]:
    import tensorflow as tf
    return tf.make_ndarray(tensor).tolist()


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def requests_of(records: Iterable[bytes]) -> List[Request]:
    """The recommend requests of serialized PredictionLogs; other logs are not requests of a
    recommendation and are skipped."""
    from tensorflow_serving.apis import prediction_log_pb2
    found = []
    for record in records:
        log = prediction_log_pb2.PredictionLog.FromString(record)
        if log.WhichOneof("log_type") != "predict_log":
            continue
        request, response = log.predict_log.request, log.predict_log.response
        if _RECOMMEND_OUTPUT not in response.outputs or features.USER_ID not in request.inputs:
            continue
        users = _strings(request.inputs[features.USER_ID])
        items = _strings(response.outputs[_RECOMMEND_OUTPUT])
        times = (_strings(request.inputs[features.TIMESTAMP])
                 if features.TIMESTAMP in request.inputs else [0] * len(users))
        version = log.log_metadata.model_spec.version.value or request.model_spec.version.value
        for user, row, timestamp in zip(users, items, times):
            found.append(Request(
                user_id=_text(user), label=request.model_spec.version_label,
                version=int(version),
                timestamp=int(timestamp) or int(log.log_metadata.timestamp_secs),
                item_ids=tuple(_text(item) for item in row if item)))
    return found


def read_feedback(path: str) -> Feedback:
    """A span folder (its interactions.csv) or the CSV itself. Rows with an empty id, a
    timestamp not in the contract's form or an unknown event are skipped and counted."""
    csv_path = os.path.join(path, INTERACTIONS_FILE) if os.path.isdir(path) else path
    if not os.path.isfile(csv_path):
        raise FeedbackMalformed(f"no {INTERACTIONS_FILE} in the feedback span {path}")
    required = features.INTERACTION_COLUMNS
    engaged = set(features.POSITIVE_EVENTS)
    rows: Dict[str, List[Tuple[int, str]]] = collections.defaultdict(list)
    timestamps, read, skipped = [], 0, 0
    try:
        with open(csv_path, encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in required if c not in (reader.fieldnames or ())]
            if missing:
                raise FeedbackMalformed(f"{csv_path}: missing required column(s) {missing}")
            for row in reader:
                read += 1
                user, item, event = (row.get(c) or "" for c in ("user_id", "item_id", "event"))
                try:
                    timestamp = contract_rows.parse_contract_timestamp(
                        row.get("timestamp") or "")
                except ValueError:
                    timestamp = None
                if not user or not item or timestamp is None or event not in features.EVENTS:
                    skipped += 1
                    continue
                timestamps.append(timestamp)
                if event in engaged:
                    rows[user].append((timestamp, item))
    except (UnicodeDecodeError, csv.Error) as err:
        raise FeedbackMalformed(f"{csv_path}: not the contract's CSV ({err})") from err
    if read and skipped == read:
        raise FeedbackMalformed(f"{csv_path}: none of its {read} row(s) is a valid "
                                "interaction (ids, timestamp form, event)")
    return Feedback(dict(rows), sorted(timestamps), read, skipped)


# ---- statistics -----------------------------------------------------------------------------

def wilson(engaged: int, n: int, confidence: float) -> Tuple[float, float]:
    """The Wilson score interval of a proportion (scipy's)."""
    from scipy import stats
    interval = stats.binomtest(engaged, n).proportion_ci(confidence, method="wilson")
    return float(interval.low), float(interval.high)


def newcombe(a: Tuple[int, int], b: Tuple[int, int], confidence: float) -> Tuple[float, float]:
    """Newcombe's hybrid score interval of p_a - p_b from (engaged, n) pairs (his method 10:
    each side from the two Wilson intervals)."""
    pa, pb = a[0] / a[1], b[0] / b[1]
    la, ua = wilson(*a, confidence)
    lb, ub = wilson(*b, confidence)
    d = pa - pb
    return (d - math.sqrt((pa - la) ** 2 + (ub - pb) ** 2),
            d + math.sqrt((ua - pa) ** 2 + (pb - lb) ** 2))


def is_engaged(request: Request, feedback: Feedback, horizon_s: float) -> bool:
    recommended = set(request.item_ids)
    return any(request.timestamp <= t < request.timestamp + horizon_s and item in recommended
               for t, item in feedback.rows.get(request.user_id, ()))


# ---- the decision ---------------------------------------------------------------------------

def _label_block(requests: Sequence[Request], feedback: Feedback, horizon_s: float,
                 confidence: float) -> Dict[str, Any]:
    n = len(requests)
    engaged = sum(is_engaged(r, feedback, horizon_s) for r in requests)
    return {"requests": n, "engaged": engaged, "rate": engaged / n if n else None,
            "interval": list(wilson(engaged, n, confidence)) if n else None,
            "versions": {str(v): c for v, c in sorted(collections.Counter(
                r.version for r in requests).items())}}


def evaluate(requests: Sequence[Request], feedback_path: str,
             config: CanaryConfig = CanaryConfig()) -> Dict[str, Any]:
    """The canary block of a monitoring summary: per label rates and intervals, the
    difference and the decision with its reason."""
    horizon_s = config.horizon_hours * 3600.0
    by_label = collections.defaultdict(list)
    for request in requests:
        by_label[request.label].append(request)
    stable, canary = by_label.get(config.stable_label, []), by_label.get(config.canary_label, [])
    result: Dict[str, Any] = {
        "stable_label": config.stable_label, "canary_label": config.canary_label,
        "feedback": feedback_path, "horizon_hours": config.horizon_hours,
        "min_requests_per_label": config.min_requests_per_label, "margin": config.margin,
        "confidence": config.confidence, "difference": None, "labels": {},
        "other_requests": len(requests) - len(stable) - len(canary)}

    def decide(decision: str, reason: str) -> Dict[str, Any]:
        result.update(decision=decision, reason=reason)
        return result

    try:
        feedback = read_feedback(feedback_path)
    except FeedbackMalformed as err:
        return decide(FEEDBACK_MALFORMED, str(err))
    result.update(feedback_rows=feedback.rows_read, feedback_rows_skipped=feedback.rows_skipped)
    for label, group in ((config.stable_label, stable), (config.canary_label, canary)):
        result["labels"][label] = _label_block(group, feedback, horizon_s, config.confidence)
    if not canary:
        return decide(NO_CANARY_TRAFFIC, f"no request named the {config.canary_label!r} label "
                      f"({len(requests)} recommend request(s) in the window)")
    first = min(r.timestamp for r in stable + canary)
    last = max(r.timestamp for r in stable + canary) + horizon_s
    in_window = sum(first <= t < last for t in feedback.timestamps)
    result["feedback_rows_in_window"] = in_window
    if not in_window:
        return decide(NO_FEEDBACK, f"no feedback row between the first request "
                      f"({contract.iso_utc(first)}) and the last one + "
                      f"{config.horizon_hours:g} h ({contract.iso_utc(last)}); the span has "
                      f"{feedback.rows_read} row(s)")
    short = [label for label, group in ((config.stable_label, stable),
                                        (config.canary_label, canary))
             if len(group) < config.min_requests_per_label]
    if short:
        return decide(KEEP_COLLECTING, f"fewer than {config.min_requests_per_label} requests "
                      f"on {', '.join(short)}")
    a = (result["labels"][config.canary_label]["engaged"], len(canary))
    b = (result["labels"][config.stable_label]["engaged"], len(stable))
    low, high = newcombe(a, b, config.confidence)
    result["difference"] = {"value": a[0] / a[1] - b[0] / b[1], "interval": [low, high]}
    level = f"{config.confidence:.0%}"
    if high < 0:
        return decide(ROLL_BACK, f"canary is worse than stable: the {level} interval of the "
                      f"difference [{low:+.4f}, {high:+.4f}] lies below 0")
    if low > -config.margin:
        return decide(PROMOTE, f"canary is not worse than stable by more than "
                      f"{config.margin:g}: the {level} interval of the difference "
                      f"[{low:+.4f}, {high:+.4f}] lies above {-config.margin:+g}")
    return decide(KEEP_COLLECTING, f"inconclusive: the {level} interval of the difference "
                  f"[{low:+.4f}, {high:+.4f}] reaches below {-config.margin:+g} and above 0")


COMMANDS = {PROMOTE: "hyperrec promote --config models.config",
            ROLL_BACK: "hyperrec rollback --config models.config"}


def text_lines(block: Dict[str, Any]) -> List[str]:
    """The canary block as lines for a terminal."""
    lines = [f"  canary: {block['decision']} - {block['reason']}"]
    for label, stats in block["labels"].items():
        if stats["requests"]:
            low, high = stats["interval"]
            lines.append(f"    {label:8s} {stats['requests']:6d} requests  engaged "
                         f"{stats['engaged']:6d}  rate {stats['rate']:.4f} "
                         f"[{low:.4f}, {high:.4f}]  versions {stats['versions']}")
        else:
            lines.append(f"    {label:8s} no requests")
    if block["difference"]:
        low, high = block["difference"]["interval"]
        lines.append(f"    canary - stable {block['difference']['value']:+.4f} "
                     f"[{low:+.4f}, {high:+.4f}]")
    if block["decision"] in COMMANDS:
        lines.append(f"    next: {COMMANDS[block['decision']]}")
    return lines
