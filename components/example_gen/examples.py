"""Parsed rows into tf.Examples: encoding, the joined interaction examples with user history,
heavy users' shares and caps, and the one byte-determined order every split is written in."""
from __future__ import annotations

import hashlib
from typing import Any, Dict, Iterable, Iterator, List, Tuple

import apache_beam as beam
import tensorflow as tf

from hyperrec.schemas import features
from hyperrec.data import history


def _feature(value: Any) -> tf.train.Feature:
    if isinstance(value, (list, tuple)):
        return tf.train.Feature(bytes_list=tf.train.BytesList(
            value=[v.encode("utf-8") for v in value]))
    if isinstance(value, bytes):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
    if isinstance(value, str):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value.encode("utf-8")]))
    if isinstance(value, float):
        return tf.train.Feature(float_list=tf.train.FloatList(value=[value]))
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))


def to_example(values: Dict[str, Any]) -> bytes:
    """Serialized with map keys sorted, so equal values give equal bytes on every worker
    (the write order, `order_key`, hashes them)."""
    return tf.train.Example(features=tf.train.Features(
        feature={k: _feature(v) for k, v in values.items()})).SerializeToString(
            deterministic=True)


def catalog_example(item: Dict[str, Any], cutoff: int) -> bytes:
    return to_example({**item, features.COLD_START: int(item[features.FIRST_SEEN] >= cutoff)})


def interaction_examples(joined: Tuple[str, Dict[str, List[Any]]], cutoff: int
                         ) -> Iterator[Tuple[str, Any]]:
    """Joins one item's events with the item; yields (split, example) or ('count', name)."""
    _, groups = joined
    item_rows, events = groups["item"], groups["events"]
    if not item_rows:
        for _ in events:
            yield "count", "interaction_unknown_item"
        return
    item = item_rows[0]
    for record, past in events:
        split = features.TRAIN_SPLIT if record["timestamp"] < cutoff else features.EVAL_SPLIT
        yield split, (record["user_id"], record["timestamp"], to_example({
            features.USER_ID: record["user_id"],
            features.TIMESTAMP: record["timestamp"],
            features.EVENT: record["event"],
            features.LABEL: int(record["event"] in features.POSITIVE_EVENTS),
            features.DEVICE: record["device"],
            features.HISTORY: list(past),
            **item,
            features.COLD_START: int(item[features.FIRST_SEEN] >= cutoff),
        }))


def heavy_users(counts: List[Tuple[str, int]], total: int, threshold: float
                ) -> Dict[str, Dict[str, Any]]:
    """Users above `threshold` of a split's `total` rows, each with the rows it may keep when
    capped: c with c / (others + |heavy| * c) <= threshold, where others are the rows of the
    users below the threshold (so a capped user ends at or under the threshold)."""
    heavy = {user: n for user, n in counts if total and n / total > threshold}
    others = total - sum(heavy.values())
    room = 1.0 - len(heavy) * threshold
    cap = int(threshold * others / room) if room > 0 else 0
    return {user: {"examples": n, "share": round(n / total, 4), "cap": min(n, cap)}
            for user, n in sorted(heavy.items())}


def cap_user_rows(grouped: Tuple[str, Iterable[Tuple[int, bytes]]],
                  heavy: Dict[str, Dict[str, Any]]) -> Iterator[Tuple[str, Any]]:
    """A heavy user's latest `cap` rows as ("keep", example); the rest ("count", name)."""
    user, rows = grouped
    ordered = sorted(rows)
    cap = heavy[user]["cap"]
    for _ in ordered[:len(ordered) - cap]:
        yield "count", "interaction_user_capped"
    for _, example in ordered[len(ordered) - cap:]:
        yield "keep", example


def user_history(grouped: Tuple[str, Iterable[Dict[str, Any]]], history_length: int
                 ) -> Iterator[Tuple[str, Tuple[Dict[str, Any], List[str]]]]:
    _, records = grouped
    events = [(r["timestamp"], r["item_id"], r["event"], r) for r in records]
    for (_, item_id, _, record), past in history.with_history(events, history_length):
        yield item_id, (record, past)


def user_shares(split: beam.PCollection, name: str, threshold: float, cap: bool
                 ) -> Tuple[beam.PCollection, beam.PCollection, beam.PCollection]:
    """(examples, {user: share} of users above `threshold`, capped-row counter names).

    `split` holds (split, (user, timestamp, example)); with `cap` a heavy user keeps only its
    latest rows (heavy_users says how many), otherwise the split is unchanged.
    """
    rows = split | f"{name}Rows" >> beam.Values()
    total = beam.pvalue.AsSingleton(rows | f"{name}Total" >> beam.combiners.Count.Globally())
    shares = (rows
              | f"{name}UserOnes" >> beam.Map(lambda r: (r[0], 1))
              | f"{name}PerUser" >> beam.CombinePerKey(sum)
              | f"{name}AboveShare" >> beam.Filter(
                  lambda kv, t: t > 0 and kv[1] / t > threshold, total)
              | f"{name}HeavyList" >> beam.combiners.ToList()
              | f"{name}Heavy" >> beam.Map(heavy_users, total, threshold))
    if not cap:
        return (rows | f"{name}Examples" >> beam.Map(lambda r: r[2]), shares,
                rows | f"{name}NoneCapped" >> beam.Filter(lambda _: False))
    heavy = beam.pvalue.AsSingleton(shares)
    light = (rows
             | f"{name}Light" >> beam.Filter(lambda r, h: r[0] not in h, heavy)
             | f"{name}LightExamples" >> beam.Map(lambda r: r[2]))
    capped = (rows
              | f"{name}HeavyRows" >> beam.Filter(lambda r, h: r[0] in h, heavy)
              | f"{name}ByUser" >> beam.Map(lambda r: (r[0], (r[1], r[2])))
              | f"{name}GroupHeavy" >> beam.GroupByKey()
              | f"{name}Cap" >> beam.FlatMap(cap_user_rows, heavy))
    parts = capped | f"{name}CapParts" >> beam.Partition(
        lambda kv, n: 0 if kv[0] == "keep" else 1, 2)
    kept = parts[0] | f"{name}KeptExamples" >> beam.Values()
    examples = (light, kept) | f"{name}AllExamples" >> beam.Flatten()
    return examples, shares, parts[1] | f"{name}CappedCount" >> beam.Values()


def order_key(example: bytes) -> Tuple[bytes, bytes]:
    """Where a serialized example goes in its split: a hash of its bytes (mixes items,
    users and times), then the bytes (a total order: equal keys are equal examples)."""
    return hashlib.blake2b(example, digest_size=8).digest(), example


def in_stable_order(examples: beam.PCollection, name: str, buckets: int) -> beam.PCollection:
    """`examples` sorted by `order_key` within each of `buckets` hash buckets.

    One bucket: the split is written as one file in one order, the same on every run (what
    makes a training run reproducible). More buckets spread a large split over workers on a
    distributed runner; each bucket is still sorted, so the order stays mixed, but which file
    holds which bucket is up to the runner.
    """
    def bucket(example: bytes) -> Tuple[int, Tuple[bytes, bytes]]:
        key = order_key(example)  # hashed once: it picks the bucket and sorts within it
        return int.from_bytes(key[0][:4], "big") % buckets, key

    return (examples
            | f"{name}OrderBucket" >> beam.Map(bucket)
            | f"{name}GatherBucket" >> beam.GroupByKey()
            | f"{name}SortBucket" >> beam.FlatMap(
                lambda kv: [example for _, example in sorted(kv[1])]))
