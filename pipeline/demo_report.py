"""What `make demo` prints about its demo user: their hidden tastes (synthetic data only),
their last items, the pushed model's top-10 and how many of the top-10 follow the tastes.

On synthetic data the generator's ground_truth.json (data/synthetic) knows each user's
favourite categories, colours and style and each item's category, colour and style; the
top-10's share in them is what issue 25 calls taste match. On imported data there is no
truth: the report shows the history and the list with the catalogue's titles and categories.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import os
import re
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from rich.console import Console
from rich.table import Table

from hyperrec.data import contract

_SPAN_DIR = re.compile(r"^span-(\d+)$")


@dataclasses.dataclass(frozen=True)
class Taste:
    """A synthetic user's hidden favourites (ground_truth.json's users[user])."""

    categories: Tuple[str, ...]
    colours: Tuple[str, ...]
    style: str


@dataclasses.dataclass(frozen=True)
class TasteMatch:
    """How many of `listed` items fall in the user's favourite category, colour, style."""

    listed: int
    in_category: int
    in_colour: int
    in_style: int


def user_taste(truth: Mapping[str, object], user_id: str) -> Optional[Taste]:
    """The user's favourites from the ground truth; None when the truth does not know them."""
    prefs = truth.get("users", {}).get(user_id)
    if not prefs:
        return None
    return Taste(tuple(prefs.get("fav_categories", ())), tuple(prefs.get("fav_colours", ())),
                 prefs.get("fav_style", ""))


def matched_traits(taste: Taste, item: Mapping[str, object]) -> List[str]:
    """The item's traits that are among the user's favourites: category, colour, style."""
    hits = (("category", item.get("category") in taste.categories),
            ("colour", item.get("colour") in taste.colours),
            ("style", bool(taste.style) and item.get("style") == taste.style))
    return [name for name, hit in hits if hit]


def taste_match(taste: Taste, items: Mapping[str, Mapping[str, object]],
                item_ids: Sequence[str]) -> TasteMatch:
    """Counts the listed items that match each favourite (an unknown item matches none)."""
    traits = [matched_traits(taste, items.get(item_id, {})) for item_id in item_ids]
    return TasteMatch(listed=len(item_ids),
                      in_category=sum("category" in t for t in traits),
                      in_colour=sum("colour" in t for t in traits),
                      in_style=sum("style" in t for t in traits))


def read_ground_truth(data_root: str) -> Dict[str, object]:
    """ground_truth.json of a synthetic data root; {} for imported data."""
    path = os.path.join(data_root, contract.GROUND_TRUTH_FILE)
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def read_items(data_root: str, truth: Mapping[str, object]) -> Dict[str, Dict[str, object]]:
    """item id -> title and category from the latest span's items.csv, with the ground
    truth's colour, style and first_seen where the data is synthetic."""
    spans = {int(m.group(1)): name for name in os.listdir(data_root)
             if (m := _SPAN_DIR.match(name))}
    items: Dict[str, Dict[str, object]] = {}
    if spans:
        path = os.path.join(data_root, spans[max(spans)], contract.ITEMS_FILE)
        with open(path, newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                items[row["item_id"]] = {"title": row.get("title", ""),
                                         "category": row.get("category", "")}
    for item_id, described in truth.get("items", {}).items():
        items.setdefault(item_id, {}).update(described)
    return items


def print_user_report(console: Console, user: str, device: str, past: Sequence[str],
                      recommended: Sequence[Tuple[str, float]], source: str,
                      items: Mapping[str, Mapping[str, object]],
                      taste: Optional[Taste]) -> None:
    """The user's tastes (if known), their last items and the top-k from `source` (which
    model answered, e.g. "the pushed SavedModel (version 3)"), with the match line."""
    console.print(f"\n[bold]demo user {user}[/] on {device}")
    if taste:
        console.print(f"favourite categories: {', '.join(taste.categories)}; colours: "
                      f"{', '.join(taste.colours)}; style: {taste.style} (ground truth)",
                      soft_wrap=True)
    console.print(_history_table(past, items, taste))
    console.print(_recommendation_table(user, recommended, source, items, taste))
    if taste:
        match = taste_match(taste, items, [item_id for item_id, _ in recommended])
        console.print(f"[bold]{match.in_category} of the top-{match.listed} are in a favourite "
                      f"category, {match.in_colour} in a favourite colour[/] "
                      f"({match.in_style} in the favourite style)", soft_wrap=True)


def _item_columns(taste: Optional[Taste]) -> Tuple[str, ...]:
    # Colour, style and the favourites exist only where the ground truth does.
    if taste is None:
        return ("category", "title")
    return ("category", "colour", "style", "title", "favourite")


def _item_cells(item: Mapping[str, object], taste: Optional[Taste]) -> List[str]:
    cells = {"favourite": ", ".join(matched_traits(taste, item)) if taste else ""}
    return [cells.get(column, str(item.get(column, ""))) for column in _item_columns(taste)]


def _history_table(past: Sequence[str], items: Mapping[str, Mapping[str, object]],
                   taste: Optional[Taste]) -> Table:
    # No leading rank column: the e2e test counts the top-10 table's "│ rank │ item" rows.
    table = Table(title=f"their last {len(past)} items (oldest first)")
    table.add_column("item", no_wrap=True)
    for column in _item_columns(taste):
        table.add_column(column)
    for item_id in past:
        table.add_row(item_id, *_item_cells(items.get(item_id, {}), taste))
    return table


def _recommendation_table(user: str, recommended: Sequence[Tuple[str, float]], source: str,
                          items: Mapping[str, Mapping[str, object]],
                          taste: Optional[Taste]) -> Table:
    table = Table(title=f"top-{len(recommended)} for {user} from {source}")
    for column in ("rank", "item", "score"):
        table.add_column(column, no_wrap=True)
    for column in _item_columns(taste):
        table.add_column(column)
    for rank, (item_id, score) in enumerate(recommended, 1):
        table.add_row(str(rank), item_id, f"{score:.3f}",
                      *_item_cells(items.get(item_id, {}), taste))
    return table
