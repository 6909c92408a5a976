"""The offline ranking protocol: which users, which targets, which items are ranked.

- The pipeline's own temporal split: ExampleGen's train split (before the cutoff), eval split
  (the last `eval_days`) and catalogue split (every item, with its first_seen time).
- Candidates are only what was available at the query time: an item first seen after a
  user's query time is ranked by no method for that user (Task.exclusions, the one place
  the rule lives; every method's ranking passes through exclude_and_truncate with it).
- Evaluated users have >= 1 engaged (positive) train event and >= 1 NEW eval positive: an
  engaged eval item that is not in the user's train history and was available at the cutoff.
  Their targets are those items. An eval positive on an item first seen after the cutoff
  cannot be ranked by anyone at the query time: it is dropped and counted
  (Task.n_unavailable_targets).
- Every method ranks the full catalogue for each user, minus the user's WHOLE train history
  (not only the last N items the model's history feature holds).
- Slices: warm vs cold items (cold: available at the cutoff, but nobody engaged with it in
  the train split: "recommends items nobody has interacted with yet"; a user is in a slice
  when they have a target in it, and only those targets count) and returning vs new users
  (new: the user's first train event is less than `new_user_days` before the cutoff; every
  evaluated user has train positives, so "new" means a short train history).
- Query time: every user is queried at the cutoff (QUERY_TIMES[0]), so the request's hour
  and day of week are the same for all users. "first_eval_event" queries each user at the
  time of their first eval event of any kind (their next visit, which serving would see as
  the request's timestamp; the history is still train-only, as it was at that moment). The
  items available then are ranked; the targets stay those available at the cutoff (the
  earliest query time), so both query times are scored on the same users and targets.
"""
from __future__ import annotations

import dataclasses
import glob
import os
from typing import Dict, List, Optional, Sequence

import numpy as np

from hyperrec.schemas import features
from hyperrec.data import history as history_lib

SLICES = ("overall", "warm_items", "cold_items", "returning_users", "new_users")
QUERY_TIMES = ("cutoff", "first_eval_event")


@dataclasses.dataclass
class Events:
    """One split's interactions as parallel arrays (one entry per tf.Example)."""

    users: np.ndarray  # str
    items: np.ndarray  # str
    timestamps: np.ndarray  # int64 seconds
    events: np.ndarray  # str, one of features.EVENTS
    labels: np.ndarray  # int64, 1 = engaged
    devices: np.ndarray  # str

    def __len__(self) -> int:
        return len(self.users)

    def subset(self, mask: np.ndarray) -> "Events":
        return Events(**{f.name: getattr(self, f.name)[mask] for f in dataclasses.fields(self)})


@dataclasses.dataclass
class Catalogue:
    item_ids: np.ndarray  # str, the index of an item is its position here
    # bool [C]: in a Task, available at the cutoff and engaged with by nobody in the train
    # split (build_task sets it from the task's own train split).
    cold: Optional[np.ndarray] = None
    first_seen: Optional[np.ndarray] = None  # int64 [C] seconds; None: all available always

    def index(self) -> Dict[str, int]:
        return {item: i for i, item in enumerate(self.item_ids.tolist())}

    def unavailable_at(self, timestamp: int) -> np.ndarray:
        """Catalogue indices of the items first seen after `timestamp` (not in the shop yet)."""
        if self.first_seen is None:
            return np.zeros(0, np.int64)
        return np.flatnonzero(self.first_seen > timestamp).astype(np.int64)


@dataclasses.dataclass
class Task:
    """Everything every method ranks against: the same users, exclusions and targets."""

    catalogue: Catalogue
    cutoff: int  # first eval timestamp: a query is made "now" = at the cutoff
    users: List[str]
    excluded: List[np.ndarray]  # per user: catalogue indices of their whole train history
    history: List[List[str]]  # per user: the last `history_length` engaged train ids, oldest first
    devices: List[str]  # per user: device of their last train event
    targets: List[np.ndarray]  # per user: catalogue indices of new eval positives
    new_user: np.ndarray  # bool [U]
    popularity: np.ndarray  # float [C]: share of train users who engaged with the item
    train: Events  # the train split (baselines fit on its positives)
    first_eval_times: Optional[np.ndarray] = None  # int64 [U]: each user's first eval event
    # New eval positives (user, item) of users with train positives whose item was first
    # seen after the cutoff: no method could rank them then, so they are not targets.
    n_unavailable_targets: int = 0

    def query_timestamps(self, query_time: str = "cutoff") -> np.ndarray:
        """int64 [U]: when each user's query is made (see QUERY_TIMES)."""
        if query_time == "cutoff":
            return np.full(len(self.users), self.cutoff, np.int64)
        if query_time == "first_eval_event":
            if self.first_eval_times is None:
                raise ValueError("this task has no eval event times (build_task sets them)")
            return np.asarray(self.first_eval_times, np.int64)
        raise ValueError(f"unknown query time {query_time!r}; choose from {QUERY_TIMES}")

    def exclusions(self, query_time: str = "cutoff") -> List[np.ndarray]:
        """Per user, the catalogue indices no method may rank for them: their whole train
        history and every item first seen after their query time (not in the shop yet).

        The one place the candidate rule lives: every method's ranking (model, baselines,
        extra rankings) is filtered with these by exclude_and_truncate."""
        unavailable: Dict[int, np.ndarray] = {}
        out = []
        for history, timestamp in zip(self.excluded, self.query_timestamps(query_time)):
            timestamp = int(timestamp)
            if timestamp not in unavailable:
                unavailable[timestamp] = self.catalogue.unavailable_at(timestamp)
            out.append(np.union1d(history, unavailable[timestamp]).astype(np.int64))
        return out

    def subset_users(self, rows: Sequence[int]) -> "Task":
        """The same task for the users at `rows` (in that order): per-user fields are cut,
        the catalogue, train split, popularity and n_unavailable_targets (a count over the
        whole task) are shared. A sample or a shard of users ranks and scores exactly as
        those users do in the whole task."""
        rows = [int(r) for r in rows]
        pick = np.asarray(rows, np.int64)
        return dataclasses.replace(
            self, users=[self.users[r] for r in rows],
            excluded=[self.excluded[r] for r in rows],
            history=[self.history[r] for r in rows], devices=[self.devices[r] for r in rows],
            targets=[self.targets[r] for r in rows], new_user=self.new_user[pick],
            first_eval_times=(None if self.first_eval_times is None
                              else self.first_eval_times[pick]))

    def slice_targets(self, name: str) -> List[np.ndarray]:
        """Per user, that slice's targets (empty: the user is not in the slice)."""
        if name in ("overall", "returning_users", "new_users"):
            keep_user = {"overall": np.ones(len(self.users), bool),
                         "returning_users": ~self.new_user, "new_users": self.new_user}[name]
            return [t if keep else t[:0] for t, keep in zip(self.targets, keep_user)]
        cold = self.catalogue.cold
        if name == "warm_items":
            return [t[~cold[t]] for t in self.targets]
        if name == "cold_items":
            return [t[cold[t]] for t in self.targets]
        raise ValueError(f"unknown slice {name!r}; choose from {SLICES}")


def read_split(examples_uri: str, split: str, batch_size: int = 4096) -> Events:
    """Reads an ExampleGen split (GZIP TFRecords of tf.Examples) into arrays."""
    import tensorflow as tf  # heavy; only the readers need it

    files = sorted(glob.glob(os.path.join(examples_uri, f"Split-{split}", "*")))
    if not files:
        raise FileNotFoundError(f"no files for split {split!r} under {examples_uri}")
    spec = {features.USER_ID: tf.io.FixedLenFeature([], tf.string),
            features.ITEM_ID: tf.io.FixedLenFeature([], tf.string),
            features.TIMESTAMP: tf.io.FixedLenFeature([], tf.int64),
            features.EVENT: tf.io.FixedLenFeature([], tf.string),
            features.LABEL: tf.io.FixedLenFeature([], tf.int64),
            features.DEVICE: tf.io.FixedLenFeature([], tf.string, default_value=b"")}
    columns: Dict[str, list] = {name: [] for name in spec}
    dataset = tf.data.TFRecordDataset(files, compression_type="GZIP").batch(batch_size)
    for batch in dataset:
        parsed = tf.io.parse_example(batch, spec)
        for name in spec:
            columns[name].append(parsed[name].numpy())
    values = {name: np.concatenate(parts) if parts else np.array([]) for name, parts in
              columns.items()}

    def text(name: str) -> np.ndarray:
        return np.array([v.decode() for v in values[name]], dtype=object)

    return Events(users=text(features.USER_ID), items=text(features.ITEM_ID),
                  timestamps=values[features.TIMESTAMP].astype(np.int64),
                  events=text(features.EVENT), labels=values[features.LABEL].astype(np.int64),
                  devices=text(features.DEVICE))


def read_catalogue(examples_uri: str) -> Catalogue:
    """The catalogue split's item ids and first_seen times (cold items are the task's:
    build_task sets them)."""
    import tensorflow as tf

    files = sorted(glob.glob(os.path.join(examples_uri, f"Split-{features.CATALOG_SPLIT}", "*")))
    spec = {features.ITEM_ID: tf.io.FixedLenFeature([], tf.string),
            features.FIRST_SEEN: tf.io.FixedLenFeature([], tf.int64)}
    ids, first_seen = [], []
    for batch in tf.data.TFRecordDataset(files, compression_type="GZIP").batch(4096):
        parsed = tf.io.parse_example(batch, spec)
        ids.extend(v.decode() for v in parsed[features.ITEM_ID].numpy())
        first_seen.extend(parsed[features.FIRST_SEEN].numpy().tolist())
    if not ids:
        raise ValueError(f"the catalogue split under {examples_uri} is empty")
    return Catalogue(item_ids=np.array(ids, dtype=object),
                     first_seen=np.array(first_seen, np.int64))


def build_task(train: Events, eval_events: Events, catalogue: Catalogue, *,
               history_length: int, new_user_days: float,
               cutoff: Optional[int] = None) -> Task:
    """The evaluated users and their targets (see the module docstring).

    Items outside the catalogue are dropped from targets and exclusions (no method can rank
    them), and so are items first seen after the cutoff (counted: n_unavailable_targets).
    `cutoff` defaults to the first eval timestamp. The returned task's catalogue has `cold`
    set for this train split.
    """
    if len(eval_events) == 0:
        raise ValueError("the eval split is empty: nothing to evaluate")
    if cutoff is None:
        cutoff = int(eval_events.timestamps.min())
    index = catalogue.index()
    not_yet = set(catalogue.item_ids[catalogue.unavailable_at(cutoff)].tolist())
    positive = train.labels == 1
    train_items: Dict[str, set] = {}
    for user, item in zip(train.users[positive], train.items[positive]):
        train_items.setdefault(user, set()).add(item)
    eval_targets: Dict[str, set] = {}
    unavailable_targets = set()
    eval_positive = eval_events.labels == 1
    for user, item in zip(eval_events.users[eval_positive], eval_events.items[eval_positive]):
        if user in train_items and item not in train_items[user] and item in index:
            if item in not_yet:
                unavailable_targets.add((user, item))
            else:
                eval_targets.setdefault(user, set()).add(item)
    # A set lookup per item: np.isin on object (string) arrays compares every pair.
    engaged = set(train.items[positive].tolist())
    engaged_in_train = np.fromiter((item in engaged for item in catalogue.item_ids.tolist()),
                                   bool, len(catalogue.item_ids))
    available = np.ones(len(catalogue.item_ids), bool)
    available[catalogue.unavailable_at(cutoff)] = False
    catalogue = dataclasses.replace(catalogue, cold=available & ~engaged_in_train)

    by_user: Dict[str, List[history_lib.Event]] = {}
    first_seen: Dict[str, int] = {}
    last_device: Dict[str, tuple] = {}
    for user, item, ts, event, device in zip(train.users, train.items, train.timestamps,
                                             train.events, train.devices):
        ts = int(ts)
        first_seen[user] = min(first_seen.get(user, ts), ts)
        if user not in last_device or ts >= last_device[user][0]:
            last_device[user] = (ts, device)
        if event in features.POSITIVE_EVENTS:
            by_user.setdefault(user, []).append((ts, item, event, None))

    users = sorted(eval_targets)
    first_eval: Dict[str, int] = {}
    for user, ts in zip(eval_events.users, eval_events.timestamps):
        first_eval[user] = min(first_eval.get(user, int(ts)), int(ts))
    new_before = cutoff - new_user_days * features.SECONDS_PER_DAY
    n_train_users = max(1, len(train_items))
    popularity = np.zeros(len(catalogue.item_ids))
    for items in train_items.values():
        rows = [index[i] for i in items if i in index]
        popularity[rows] += 1.0 / n_train_users
    return Task(
        catalogue=catalogue, cutoff=cutoff, users=users,
        excluded=[np.array(sorted(index[i] for i in train_items[u] if i in index), np.int64)
                  for u in users],
        history=[history_lib.last_engaged(by_user[u], history_length) for u in users],
        devices=[last_device[u][1] or features.UNKNOWN for u in users],
        targets=[np.array(sorted(index[i] for i in eval_targets[u]), np.int64) for u in users],
        new_user=np.array([first_seen[u] >= new_before for u in users], bool),
        popularity=popularity, train=train,
        first_eval_times=np.array([first_eval[u] for u in users], np.int64),
        n_unavailable_targets=len(unavailable_targets))


def load_task(examples_uri: str, *, history_length: int, new_user_days: float) -> Task:
    """The task of an ExampleGen examples artifact (its train, eval and catalogue splits)."""
    return build_task(read_split(examples_uri, features.TRAIN_SPLIT),
                      read_split(examples_uri, features.EVAL_SPLIT),
                      read_catalogue(examples_uri), history_length=history_length,
                      new_user_days=new_user_days)


def sample_rows(n_users: int, n: Optional[int], seed: int = 0) -> Optional[np.ndarray]:
    """Sorted rows of `n` of `n_users` users, drawn uniformly without replacement (seeded);
    None (every user) when there are no more than `n` or `n` is None."""
    if n is None or n_users <= n:
        return None
    if n < 1:
        raise ValueError(f"cannot sample {n} users")
    return np.sort(np.random.default_rng(seed).choice(n_users, size=n, replace=False))


def sample_users(task: Task, n: Optional[int], seed: int = 0) -> Task:
    """The task for at most `n` of its users (sample_rows; kept in the task's order).
    How a catalogue of 10^6 items is evaluated in bounded time: components/evaluation/README.md
    ("At 10^6 items")."""
    rows = sample_rows(len(task.users), n, seed)
    return task if rows is None else task.subset_users(rows)


def row_isin(ranked: np.ndarray, sets: Sequence[np.ndarray]) -> np.ndarray:
    """bool [rows, depth]: is ranked[r, j] (>= 0) in sets[r]? One binary search of (row,
    item) keys instead of one np.isin per row."""
    ranked = np.asarray(ranked, np.int64)
    sets = [np.asarray(s, np.int64) for s in sets]
    if ranked.size == 0 or not any(len(s) for s in sets):
        return np.zeros(ranked.shape, bool)
    span = max([int(ranked.max())] + [int(s.max()) for s in sets if len(s)]) + 1
    keys = np.concatenate([s[s >= 0] + row * span for row, s in enumerate(sets)])
    if keys.size == 0:
        return np.zeros(ranked.shape, bool)
    if np.any(keys[1:] < keys[:-1]):  # sorted already when each set is (exclusions, targets)
        keys.sort()
    lookup = np.arange(len(ranked), dtype=np.int64)[:, np.newaxis] * span + ranked
    # Binary search in the keys: no sort of keys + lookups together (GBs when every user
    # excludes the 10^4 items not launched yet at 10^6 items).
    found = np.minimum(np.searchsorted(keys, lookup), len(keys) - 1)
    return (ranked >= 0) & (keys[found] == lookup)


def exclude_and_truncate(ranked_ids: Sequence[Sequence[int]], excluded: Sequence[np.ndarray],
                         depth: int) -> np.ndarray:
    """Rows of catalogue indices (-1 = none) minus each user's exclusions, cut to `depth`.

    Every method's raw ranking passes through here with Task.exclusions (train history and
    items not yet available at the query time), so the rule cannot differ between methods
    (a model that already excludes them loses nothing). Vectorised over all rows.
    """
    n_rows = len(ranked_ids)
    out = np.full((n_rows, depth), -1, np.int64)
    if isinstance(ranked_ids, np.ndarray) and ranked_ids.ndim == 2:
        ranked = ranked_ids.astype(np.int64)
    else:  # ragged rows, padded with -1
        rows = [np.asarray(r, np.int64).ravel() for r in ranked_ids]
        ranked = np.full((n_rows, max([len(r) for r in rows] + [0])), -1, np.int64)
        for number, row in enumerate(rows):
            ranked[number, :len(row)] = row
    if ranked.size == 0 or depth <= 0:
        return out
    rows, cols = np.nonzero((ranked >= 0) & ~row_isin(ranked, excluded))  # row-major
    values = ranked[rows, cols]
    if not len(values):
        return out
    # A ranking may repeat an item (it should not); the first occurrence counts.
    _, first = np.unique(rows * (int(values.max()) + 1) + values, return_index=True)
    keep = np.zeros(len(values), bool)
    keep[first] = True
    rows, values = rows[keep], values[keep]
    position = np.arange(len(rows)) - np.searchsorted(rows, rows, side="left")
    fits = position < depth
    out[rows[fits], position[fits]] = values[fits]
    return out
