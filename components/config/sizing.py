"""A configuration sized from the data: what `hyperrec run --data D` uses without
--experiment, chosen from an import's profile, with the reason for every chosen field."""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict

from hyperrec.components.config.experiments import EXPERIMENTS
from hyperrec.components.config.sections import EvalConfig, HyperrecConfig

SIZED = "sized"  # the name of a configuration sized from an import's profile
EVAL_SHARE = 0.15  # the eval window: this share of the log's days, at least one span
MAX_SPANS = 16  # an import's automatic span length keeps the log within this many spans
COMPACT_EVENTS = 50_000  # below: tiny's model sizes (a few minutes on a laptop)
# Engaged events needed before the gate requires baselines: fewer, and a recall difference
# between the candidate and a baseline is noise (tiny's reasoning); up to the second, the
# popularity baselines (the floor any recommender must clear); from it, every baseline.
GATE_POPULARITY_FROM = 5_000
GATE_ALL_FROM = 50_000
# Above this share of items whose first_seen the import derived from the log (the item table
# had no launch dates), the model gets no freshness term: an item's "age" is then the time
# since the log began, its first sale or the eval cutoff, not since its launch. On the
# reviews example without `launched` (100 items, 28 days) the freshness term learned that
# artefact: ranking AUC 0.514 (gate 0.55, not blessed), recall@10 on warm items 0.147
# against 0.336 with launch dates; without the term, AUC 0.569 (blessed), warm recall@10
# 0.170. Dropping new_item_days (the id-less training of young items) did not help
# (AUC 0.506, warm recall@10 0.124), so it stays.
FRESHNESS_DERIVED_SHARE = 0.5


def span_days_for(log_days: float) -> int:
    """An import's span length: weekly, or whole weeks long enough that the log fits in
    MAX_SPANS spans (a span folder holds a catalogue snapshot; thousands of them would not)."""
    weeks = max(1, math.ceil(log_days / (7 * MAX_SPANS)))
    return 7 * weeks


def eval_days_for(log_days: float, span_days: int) -> float:
    """The eval window of a log: EVAL_SHARE of its days (whole days), at least one span."""
    return float(max(span_days, math.floor(EVAL_SHARE * log_days)))


def _power_of_two_between(value: float, low: int, high: int) -> int:
    return int(min(high, max(low, 2 ** round(math.log2(max(value, 1))))))


def _vocabulary(count: int) -> int:
    """Room for the ids seen plus a quarter for growth, rounded up to a thousand."""
    return int(math.ceil(count * 1.25 / 1000) * 1000)


def sized(profile: Dict[str, Any]) -> "tuple[HyperrecConfig, Dict[str, str]]":
    """A configuration sized from an import's profile (import_report.json's `profile`) and,
    per chosen field, why: what `hyperrec run --data D` uses without --experiment.

    `profile` keys: events, engaged_events, users, items, log_days, span_days, spans,
    eval_days, items_with_image, items_with_text (shares), text_tokens (distinct words of
    titles and descriptions), engaged_per_user_median, sampled_negatives (bool),
    first_seen_derived (share of items whose first_seen came from the log; absent: 0).
    """
    events, engaged = int(profile["events"]), int(profile["engaged_events"])
    compact = events < COMPACT_EVENTS
    config = EXPERIMENTS["tiny"]() if compact else HyperrecConfig()
    config = dataclasses.replace(config, name=SIZED, data_scale="")
    config.eval.smoke_configuration = ""  # tiny's; set below only where the gate is a smoke gate
    why: Dict[str, str] = {}

    def choose(path: str, value: Any, reason: str) -> None:
        *parents, leaf = path.split(".")
        target = config
        for part in parents:
            target = getattr(target, part)
        setattr(target, leaf, value)
        why[path] = reason

    scale = (f"{events:,} events < {COMPACT_EVENTS:,}: tiny's model sizes" if compact else
             f"{events:,} events >= {COMPACT_EVENTS:,}: the default model sizes")
    choose("model.embedding_dim", config.model.embedding_dim, scale)
    ids = max(int(profile["users"]), int(profile["items"]))
    choose("transform.id_vocab_size", _vocabulary(ids),
           f"{int(profile['users']):,} users, {int(profile['items']):,} items, "
           "+25% for growth, rounded up to a thousand")
    choose("transform.num_oov_buckets", 1 if ids < 10_000 else 10,
           "ids unseen in training (new users and items) share these buckets: "
           + ("one for a small catalogue" if ids < 10_000 else "ten for 10,000+ ids"))
    tokens = int(profile["text_tokens"])
    choose("transform.text_vocab_size",
           max(100, min(config.transform.text_vocab_size, _vocabulary(tokens))),
           f"{tokens:,} distinct words in titles and descriptions (at most "
           f"{config.transform.text_vocab_size:,}, at least 100)")
    if float(profile["items_with_image"]) == 0:
        choose("data.image_size", 16, "no item has an image: the image tower is masked, "
                                      "the smallest size saves ExampleGen's work")
    history = int(min(30, max(5, round(float(profile["engaged_per_user_median"])))))
    choose("data.history_length", history,
           f"median engaged events per user {float(profile['engaged_per_user_median']):g}, "
           "kept within 5..30")
    batch = _power_of_two_between(events / 100, 64, 512)
    choose("model.batch_size", batch, f"about 100 steps an epoch over {events:,} rows "
                                      "(a power of two within 64..512)")
    choose("model.epochs", config.model.epochs,
           ("the validation slice's early stopping picks the length up to this"))
    eval_days = float(profile["eval_days"])
    choose("data.eval_days", eval_days,
           f"{EVAL_SHARE:.0%} of the log's {float(profile['log_days']):g} days, at least one "
           f"span ({int(profile['span_days'])} days); the import cut first_seen at this cutoff")
    choose("data.window_spans", int(profile["spans"]),
           f"the whole log: {int(profile['spans'])} spans of {int(profile['span_days'])} days")
    choose("model.validation_days", eval_days, "the end of the train split as long as the "
                                                "eval window: model selection")
    choose("eval.ranking_validation_days", eval_days, "the same window tunes the baselines")
    if engaged < GATE_POPULARITY_FROM:
        choose("eval.must_beat", (), f"{engaged:,} engaged events < {GATE_POPULARITY_FROM:,}: "
               "a recall difference is noise at this size; the baselines are reported, not "
               "required (a smoke gate)")
        choose("eval.smoke_configuration", f"{SIZED}: {engaged:,} engaged events",
               "the gate's reason says the baselines were not required")
    elif engaged < GATE_ALL_FROM:
        choose("eval.must_beat", ("most_popular", "recent_popular"),
               f"{engaged:,} engaged events < {GATE_ALL_FROM:,}: the popularity baselines, "
               "the floor any recommender must clear")
    else:
        choose("eval.must_beat", EvalConfig().must_beat,
               f"{engaged:,} engaged events: every baseline")
    if profile.get("sampled_negatives"):
        choose("eval.min_auc", 0.52, "a purchase-only log: the ranking head tells purchases "
                                     "from popularity-sampled items, a hard task "
                                     "(online_retail's gate)")
    else:
        choose("eval.min_auc", config.eval.min_auc, "the ranking AUC gate of "
               + ("tiny" if compact else "the default experiment"))
    derived = float(profile.get("first_seen_derived", 0.0))
    if derived > FRESHNESS_DERIVED_SHARE:
        choose("model.freshness_days", (),
               f"first_seen derived from the log for {derived:.0%} of items (no launch dates "
               f"in the item table): an age would count from the log's start "
               f"({float(profile['log_days']):g} days), an item's first sale or the eval "
               "cutoff, not from its launch; no freshness term")
    if compact:
        choose("ingest_running_mode", "in_memory", "worker start-up costs more than it saves "
                                                   "on fewer than 50,000 rows")
    return config, why
