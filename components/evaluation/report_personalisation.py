"""The run report's personalisation section: how personal each method's top-10 lists are,
and three sample users' history beside the candidate's list, with the items' images.

Read from artifacts, never recomputed: the numbers and the sample users' item ids are the
RankingEvaluator's metrics.json (`personalisation`, see personalisation.summarise); the
items' titles, categories and images are ExampleGen's catalogue split (normalised PNG bytes,
inlined as data URIs so the report stays one file).
"""
from __future__ import annotations

import base64
import dataclasses
import os
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence

import tensorflow as tf
from ml_metadata.proto import metadata_store_pb2

from hyperrec.components.evaluation import gate, personalisation
from hyperrec.components.evaluation.report_html import escape, html_table, not_run
from hyperrec.components.evaluation.report_ranking import load_ranking, methods_of
from hyperrec.schemas import features

TITLE = "Personalisation (top-10 lists)"
EXAMPLES = "Examples"
EXAMPLE_GEN_NODE = "FileBasedExampleGen"
HISTORY_SHOWN = 10  # the most recent items of a sample user's history
STYLE = """
.people{display:flex;gap:24px;flex-wrap:wrap}.items{display:flex;flex-wrap:wrap;gap:6px;
max-width:700px}.item{width:120px;font-size:11px;border:1px solid #ddd;padding:3px}
.item img{width:112px;height:112px;object-fit:contain;background:#fafafa}
.item .fav{color:#1a6b1a;font-weight:bold}.noimg{width:112px;height:112px;background:#eee;
display:flex;align-items:center;justify-content:center;color:#999}
"""


@dataclasses.dataclass
class ItemCard:
    """What the report shows of a catalogue item."""

    title: str
    category: str
    png: bytes  # b"": no usable image


def read_items(examples_uri: str, item_ids: Iterable[str]) -> Dict[str, ItemCard]:
    """The catalogue split's title, category and image of `item_ids` (others skipped)."""
    wanted = set(item_ids)
    files = sorted(tf.io.gfile.glob(os.path.join(examples_uri,
                                                 f"Split-{features.CATALOG_SPLIT}", "*")))
    spec = {name: tf.io.FixedLenFeature([], tf.string, default_value=b"")
            for name in (features.ITEM_ID, features.TITLE, features.CATEGORY, features.IMAGE)}
    cards: Dict[str, ItemCard] = {}
    for batch in tf.data.TFRecordDataset(files, compression_type="GZIP").batch(1024):
        parsed = {name: values.numpy() for name, values in tf.io.parse_example(batch,
                                                                               spec).items()}
        for row, raw_id in enumerate(parsed[features.ITEM_ID]):
            item_id = raw_id.decode()
            if item_id in wanted:
                cards[item_id] = ItemCard(parsed[features.TITLE][row].decode(),
                                          parsed[features.CATEGORY][row].decode(),
                                          parsed[features.IMAGE][row])
    return cards


def _value(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.3f}"


def _metrics_table(block: Mapping[str, Any], methods: Sequence[str]) -> str:
    columns = personalisation.columns(block)
    rows = [[name] + [_value(block["methods"][name].get(c)) for c in columns]
            for name in methods if name in block["methods"]]
    own = block.get(personalisation.OWN_HISTORY)
    if own:
        rows.append([f"{personalisation.OWN_HISTORY} (their past, not a recommender)"]
                    + [_value(own.get(c)) for c in columns])
    return ('<div class="wide">' + html_table(["method"] + columns, rows, "ranking")
            + "</div>")


def _favourites(item: Mapping[str, Any], taste: Mapping[str, Any]) -> List[str]:
    """The item's traits that are the user's favourites (the truth's favourite style is one
    value, categories and colours are lists)."""
    hits = []
    for trait in personalisation.TRAITS:
        liked = taste.get(trait, ())
        liked = [liked] if isinstance(liked, str) else liked
        if item.get(trait) is not None and item.get(trait) in liked:
            hits.append(trait)
    return hits


def _item_card(item_id: str, card: Optional[ItemCard], traits: Mapping[str, Any],
               taste: Optional[Mapping[str, Any]]) -> str:
    e = escape
    if card is not None and card.png:
        image = (f'<img alt="item {e(item_id)}" src="data:image/png;base64,'
                 f'{base64.b64encode(card.png).decode("ascii")}">')
    else:
        image = '<div class="noimg">no image</div>'
    lines = [f"<b>{e(item_id)}</b>"]
    if card is not None:
        lines.append(e(card.title))
    described = [str(traits[t]) for t in personalisation.TRAITS if traits.get(t)]
    lines.append(e(", ".join(described) if described else (card.category if card else "")))
    if taste:
        favourites = _favourites(traits, taste)
        if favourites:
            lines.append(f'<span class="fav">favourite {e(", ".join(favourites))}</span>')
    return f'<div class="item">{image}<br>' + "<br>".join(lines) + "</div>"


def _sample_user(sample: Mapping[str, Any], method: str, cards: Mapping[str, ItemCard],
                 traits: Mapping[str, Mapping[str, Any]]) -> str:
    e = escape
    taste = sample.get("taste")
    history = list(sample["history"])[-HISTORY_SHOWN:]
    listed = sample["lists"].get(method, [])
    heading = (f"<h4>user {e(sample['user_id'])} (train history: {sample['n_train_items']} "
               "distinct items)</h4>")
    if taste:
        heading += ("<p>Hidden favourites (ground truth): categories "
                    f"{e(', '.join(taste['category']))}; colours {e(', '.join(taste['colour']))}"
                    f"; style {e(taste['style'])}.</p>")

    def column(title: str, item_ids: Sequence[str]) -> str:
        cells = "".join(_item_card(i, cards.get(i), traits.get(i, {}), taste) for i in item_ids)
        return f"<div><p><b>{e(title)}</b></p><div class='items'>{cells}</div></div>"

    return (heading + "<div class='people'>"
            + column(f"their last {len(history)} items (oldest first)", history)
            + column(f"{method}'s top-{len(listed)}", listed) + "</div>")


def section(ranking: Optional[metadata_store_pb2.Artifact],
            examples: Optional[metadata_store_pb2.Artifact]) -> str:
    """The section's HTML; "" without a ranking artifact (the ranking section already says it
    did not run)."""
    if ranking is None:
        return ""
    result = load_ranking(ranking)
    block = result.get("personalisation")
    if not block:
        return not_run(TITLE, "this RankingEvaluation's metrics.json has no "
                                          "personalisation block (written by an older "
                                          "evaluator)")
    methods = methods_of(result)
    samples = block.get("sample_users", [])
    shown = next((m for m in (gate.CANDIDATE, *methods)
                  if samples and m in samples[0]["lists"]), None)
    parts = [f"<section><h2>{escape(TITLE)}</h2>",
             f"<p>Over {block['n_users']} evaluated users: taste_* is the share of a user's "
             "top-k in their hidden favourite category, colour and style (synthetic data "
             "only); jaccard_distance is the mean pairwise Jaccard distance between users' "
             "top-k sets (0: everyone gets the same list); coverage the share of the "
             "catalogue in any top-k; overlap the share of a top-k also in the reference's "
             "top-k for the same user.</p>",
             _metrics_table(block, methods)]
    if samples and shown:
        item_ids = {i for s in samples for i in list(s["history"])[-HISTORY_SHOWN:]}
        item_ids |= {i for s in samples for i in s["lists"].get(shown, [])}
        cards = read_items(examples.uri, item_ids) if examples is not None else {}
        parts.append(f"<h3>Sample users: the {len(samples)} with the most train history"
                     + ("" if examples is not None else
                        " (no ExampleGen catalogue in this run: no images)") + "</h3>")
        traits = block.get("sample_items", {})
        parts += [_sample_user(sample, shown, cards, traits) for sample in samples]
    parts.append("</section>")
    return "".join(parts)
