"""Catalogue refresh: new items become recommendable without a retraining.

Beside the Pusher on the data flow: it reads the newest version under a serving base path,
embeds the new items with THAT version's item tower (`new_catalogue_entries`, saved on the
export's ServingModule), appends them to its catalogue (`replace_catalogue`), and pushes the
result as the next version. The weights are the served ones, so every old item keeps its
score; the server polling the base path swaps to the new version as it swaps to a push.

Input: an items CSV in the data contract's item format (data/README.md: item_id, title,
description, category, price, image; first_seen may be present and is ignored) and the
folder holding the images it references. Each new item gets what the export gives a
catalogue item (trainer/catalogue_embedding.py): its embedding, its score bias (an id
the model never trained on gets the OOV bucket's bias), first seen = the refresh time (it is
new to the served catalogue now: the freshness term treats it as brand new) and a
recent-popularity count of 0.

Refused inputs, each a RefreshError subclass naming the file and rows: no file, an empty file,
missing columns, a bad row (no id, no price), duplicate ids in the file, a referenced image
that is not there or does not decode, and an id the served catalogue already holds: a
refresh only adds items (changing an existing item's content would mix its learned id terms
with new content; that is a retrain's job). An empty image cell is legal (the model masks a
missing image, as in training).
"""
from __future__ import annotations

import collections
import os
import time
import uuid
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import tensorflow as tf

from hyperrec.schemas import features
from hyperrec.components import pusher, transform
from hyperrec.components.trainer import export
from hyperrec.components.example_gen import executor as example_gen
from hyperrec.data import image_normaliser as images

# The contract's item columns a refresh needs (first_seen is the refresh time instead).
REQUIRED_COLUMNS = tuple(c for c in features.ITEM_COLUMNS if c != "first_seen")
# parse_item wants a first_seen; the refresh replaces it with the refresh time.
_ANY_CONTRACT_TIME = "1970-01-01T00:00:00Z"
EMBED_BATCH = 256  # items per new_catalogue_entries call: bounds memory on big refreshes


class RefreshError(ValueError):
    """A refresh input that cannot be served; nothing is written."""


class ItemsFileNotFound(RefreshError):
    pass


class EmptyItemsFile(RefreshError):
    pass


class MissingColumns(RefreshError):
    pass


class BadItemRow(RefreshError):
    pass


class DuplicateItemIds(RefreshError):
    pass


class MissingImageFile(RefreshError):
    pass


class UnreadableImage(RefreshError):
    pass


class ItemAlreadyInCatalogue(RefreshError):
    pass


class NoServedVersion(RefreshError):
    pass


class NotRefreshable(RefreshError):
    """The served version was exported before its catalogue could be replaced."""


def _image_reference(reference: str, images_dir: str) -> str:
    """A relative reference is looked up under `images_dir` as written, then by its file
    name (a contract items.csv says images/<id>.png relative to its data root)."""
    if not reference or "://" in reference or os.path.isabs(reference):
        return reference
    as_written = os.path.join(images_dir, reference)
    by_name = os.path.join(images_dir, os.path.basename(reference))
    return by_name if not tf.io.gfile.exists(as_written) and tf.io.gfile.exists(
        by_name) else as_written


def read_rows(items_csv: str) -> List[Dict[str, str]]:
    """The rows of a new-items CSV after the file-level checks (empty, columns, repeated
    ids), before any image is read."""
    if not tf.io.gfile.exists(items_csv):
        raise ItemsFileNotFound(f"{items_csv}: no such file")
    with tf.io.gfile.GFile(items_csv, "rb") as handle:
        if not handle.read().strip():
            raise EmptyItemsFile(f"{items_csv}: the file is empty (no header, no items)")
    try:
        example_gen.check_header(items_csv, REQUIRED_COLUMNS, ("first_seen",))
    except example_gen.ContractError as err:
        raise MissingColumns(str(err)) from err
    rows = list(example_gen.read_csv_rows(items_csv))
    if not rows:
        raise EmptyItemsFile(f"{items_csv}: a header but no items")
    counts = collections.Counter((row.get("item_id") or "").strip() for row in rows)
    repeated = sorted(i for i, n in counts.items() if n > 1 and i)
    if repeated:
        raise DuplicateItemIds(f"{items_csv}: item id(s) listed more than once: {repeated}")
    return rows


def read_new_items(items_csv: str, images_dir: str, image_size: int,
                   rows: Optional[List[Dict[str, str]]] = None) -> Dict[str, List[Any]]:
    """The new items as {raw item feature: [values]} in file order, images normalised as
    ExampleGen normalises them; RefreshError for any refused input (module docstring).
    `rows`: `read_rows(items_csv)` when the caller has already read them."""
    rows = read_rows(items_csv) if rows is None else rows
    items: Dict[str, List[Any]] = {name: [] for name in transform.ITEM_INPUTS}
    for number, row in enumerate(rows, start=1):  # data rows (a quoted cell may span lines)
        reference = (row.get("image") or "").strip()
        resolved = _image_reference(reference, images_dir)
        parsed = example_gen.parse_item(
            {**row, "first_seen": _ANY_CONTRACT_TIME, "image": resolved}, images_dir,
            image_size)
        if parsed.record is None:
            raise BadItemRow(f"{items_csv} row {number}: {parsed.skipped}")
        item_id, record = parsed.record
        if reference and record[features.IMAGE_STATUS] != images.STATUS_OK:
            if not tf.io.gfile.exists(resolved):
                raise MissingImageFile(f"{items_csv} row {number} ({item_id}): image "
                                       f"{reference!r} not found under {images_dir}")
            raise UnreadableImage(f"{items_csv} row {number} ({item_id}): image {resolved} "
                                  f"cannot be decoded ({record[features.IMAGE_STATUS]})")
        for name in transform.ITEM_INPUTS:
            items[name].append(record[name])
    return items


def _next_version(base_path: str) -> int:
    versions = pusher.pushed_versions(base_path)
    if not versions:
        raise NoServedVersion(f"no pushed version (a folder with saved_model.pb) under "
                              f"{base_path}")
    return versions[-1] + 1


def refresh(items_csv: str, images_dir: str, base_path: str,
            now: Optional[float] = None,
            log: Callable[[str], None] = print) -> Dict[str, Any]:
    """Adds the items of `items_csv` to the newest version under `base_path` and pushes the
    result as the next version; returns a summary (items, sizes, versions, path, seconds).

    `now` (epoch seconds, default the current time) is the new items' first-seen time.
    """
    started = time.monotonic()
    now = time.time() if now is None else float(now)
    version = _next_version(base_path)
    rows = read_rows(items_csv)  # the file's own faults before the minutes a model load takes
    served = os.path.join(base_path, str(version - 1))
    log(f"loading version {version - 1} from {served}")
    loaded = tf.saved_model.load(served)
    if not hasattr(loaded, "replace_catalogue"):
        raise NotRefreshable(f"{served} has no replace_catalogue: it was exported before "
                             "catalogue refresh existed; push a retrained model first")
    items = read_new_items(items_csv, images_dir, int(loaded.item_image_size.numpy()), rows)
    new_ids = [str(i) for i in items[features.ITEM_ID]]
    old_ids = loaded.catalog_item_ids.numpy()
    known = sorted(set(new_ids) & {i.decode() for i in old_ids.tolist()})
    if known:
        raise ItemAlreadyInCatalogue(
            f"{items_csv}: {len(known)} item(s) already in the served catalogue (a refresh "
            f"only adds items; changed content needs a retrain): {known[:10]}")
    log(f"embedding {len(new_ids)} new item(s) with version {version - 1}'s item tower")
    parts = collections.defaultdict(list)
    for start in range(0, len(new_ids), EMBED_BATCH):
        batch = {name: tf.constant(values[start:start + EMBED_BATCH],
                                   tf.float32 if name == features.PRICE else tf.string)
                 for name, values in items.items()}
        for name, value in loaded.new_catalogue_entries(batch).items():
            parts[name].append(value.numpy())
    entries = {name: np.concatenate(values) for name, values in parts.items()}
    first_seen = np.full(len(new_ids), now / features.SECONDS_PER_DAY, np.float32)
    size = loaded.replace_catalogue(
        tf.constant(np.concatenate([old_ids, np.array(new_ids, object)]), tf.string),
        np.concatenate([loaded.catalog_embeddings.numpy(),
                        entries[export.CATALOGUE_EMBEDDING]]),
        np.concatenate([loaded.catalog_score_bias.numpy(),
                        entries[export.CATALOGUE_SCORE_BIAS]]),
        np.concatenate([loaded.catalog_first_seen_days.numpy(), first_seen]),
        np.concatenate([loaded.catalog_prior.numpy(), entries[export.CATALOGUE_PRIOR]]))

    # Written beside the versions under a name the server never loads, then renamed: the
    # server sees no version until it is complete (a rename is atomic on one filesystem).
    staging = os.path.join(base_path, f".refresh-{uuid.uuid4().hex}")
    target = os.path.join(base_path, str(version))
    try:
        tf.saved_model.save(loaded, staging, signatures=dict(loaded.signatures))
        extra = os.path.join(served, os.path.dirname(export.WARMUP_FILE))
        if tf.io.gfile.isdir(extra):  # warmup requests (and anything else TF Serving reads)
            for folder, _, files in tf.io.gfile.walk(extra):
                relative = os.path.relpath(folder, served)
                tf.io.gfile.makedirs(os.path.join(staging, relative))
                for name in files:
                    tf.io.gfile.copy(os.path.join(folder, name),
                                     os.path.join(staging, relative, name))
        if tf.io.gfile.exists(target):
            raise RefreshError(f"{target} appeared while refreshing: another push won; "
                               "run the refresh again")
        tf.io.gfile.rename(staging, target)
    finally:
        if tf.io.gfile.exists(staging):
            tf.io.gfile.rmtree(staging)
    summary = {"new_items": len(new_ids), "old_catalogue_size": len(old_ids),
               "new_catalogue_size": int(size), "from_version": version - 1,
               "version": version, "path": target,
               "seconds": round(time.monotonic() - started, 1)}
    log(f"pushed version {version}: {summary['new_items']} new item(s), catalogue "
        f"{summary['old_catalogue_size']} -> {summary['new_catalogue_size']} items "
        f"({summary['seconds']} s) at {target}")
    return summary
