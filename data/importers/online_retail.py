"""Imports the UCI Online Retail data set (invoice lines of a UK gift shop) as the contract.

Online Retail is one table of 541,909 invoice lines (InvoiceNo, StockCode, Description,
Quantity, InvoiceDate, UnitPrice, CustomerID, Country) over 2010-12-01..2011-12-09. The import
reads it in three pure steps, each a function of a DataFrame so that it can be tested without
the file:

1. `clean_lines`: drops the lines that are not a sale of a product, each line counted under
   the first rule (in `DROP_RULES` order) that drops it, and normalises stock codes (upper
   case), descriptions (whitespace) and times (one time per invoice: its first line's).
2. `build_catalogue`: one item per stock code: title and description are the code's most
   frequent description (ties: the lexically first), category from a keyword table
   (categories.py), price the median unit price, first_seen the code's first invoice time,
   no image. Lines without a customer count here: they are real sales of the product.
   `import_table` then keeps first_seen to what was known before the eval cutoff
   (tables.first_seen_before_eval): an item first sold in the eval period is listed from
   the cutoff.
3. `build_events`: one "purchase" event per (customer, stock code, invoice time): several
   lines of one code in one invoice are one purchase. Lines without a CustomerID cannot
   become an event (there is no user) and are counted. The device is unknown.

`import_online_retail` then optionally samples customers, cuts the timeline into equal spans
from the first sale's UTC midnight (the last span may be partial) and writes the span folders
and import_report.json (contract.py).
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from typing import Any, Callable, Dict, Optional

import numpy as np
import pandas as pd

from hyperrec.schemas import features
from hyperrec.components import config as config_lib
from hyperrec.data.contract import iso_utc
from hyperrec.data import contract
from hyperrec.data.importers import categories, tables

SOURCE_COLUMNS = ("InvoiceNo", "StockCode", "Description", "Quantity", "InvoiceDate",
                  "UnitPrice", "CustomerID", "Country")
PURCHASE = "purchase"  # the only event Online Retail records (one of features.EVENTS)

# A product's stock code is 5 digits, optionally followed by letters (85123A, 15056BL). Every
# other code in the file is a service or accounting line (POST, DOT, M, D, C2, S, B, CRUK,
# BANK CHARGES, AMAZONFEE, PADS, gift_0001_20) or a "DCGS" web-shop code (a few dozen lines).
PRODUCT_CODE = r"\d{5}[A-Z]*"
_PRODUCT_CODE = re.compile(PRODUCT_CODE)

# Each rule drops the lines it matches among those no earlier rule dropped.
DROP_RULES = {
    "cancelled_invoice": "InvoiceNo starts with C: a cancellation (negative quantities)",
    "non_positive_quantity": "Quantity <= 0 outside a cancellation: stock adjustments",
    "non_product_code": f"StockCode (upper-cased) is not {PRODUCT_CODE}: postage, fees, "
                        "discounts, manual lines, vouchers, web-shop codes",
    "non_positive_price": "UnitPrice <= 0: free samples, write-offs, bad-debt adjustments",
    "missing_description": "no Description text",
    "duplicate_line": "an exact copy (all 8 columns) of an earlier kept line",
}
MIN_PRICE = 0.01  # the contract wants a positive price with 2 decimals


@dataclasses.dataclass
class CleanLines:
    """The invoice lines that are sales of a product, and what cleaning did to get them.

    `lines` columns: invoice, item_id (upper-cased stock code), description (whitespace-
    normalised), timestamp (the invoice's time, epoch seconds), unit_price, customer_id
    ("" when missing).
    """

    lines: pd.DataFrame
    lines_read: int
    customers_read: int
    dropped: Dict[str, int]
    non_product_codes: Dict[str, int]
    normalised: Dict[str, int]


def clean_lines(raw: pd.DataFrame) -> CleanLines:
    """Applies DROP_RULES and the normalisations to the raw Online Retail table."""
    missing = [column for column in SOURCE_COLUMNS if column not in raw.columns]
    if missing:
        raise ValueError(f"not an Online Retail table: missing columns {missing}")
    raw = raw.reset_index(drop=True)
    customer = _customer_ids(raw["CustomerID"])
    # Text rules run once per distinct value: ~4k codes and descriptions in 540k lines.
    invoice = _map_distinct(raw["InvoiceNo"], _strip)
    raw_code = _map_distinct(raw["StockCode"], _strip)
    code = _map_distinct(raw_code, str.upper)
    raw_description = _map_distinct(raw["Description"], lambda text: text)  # str, None if NA
    description = _map_distinct(raw_description, lambda text: " ".join(text.split()))
    quantity = pd.to_numeric(raw["Quantity"], errors="coerce")
    price = pd.to_numeric(raw["UnitPrice"], errors="coerce")

    reason = pd.Series("", index=raw.index)
    rule_masks = {
        "cancelled_invoice": _map_distinct(invoice, lambda text: text.startswith("C")),
        "non_positive_quantity": ~(quantity > 0),
        "non_product_code": ~_map_distinct(code, _PRODUCT_CODE.fullmatch).astype(bool),
        "non_positive_price": ~(price > 0),
        "missing_description": description.fillna("") == "",
        # Identical lines get identical verdicts from the rules above, so a duplicate that is
        # still undecided here is a copy of an earlier line that was kept.
        "duplicate_line": raw.duplicated(list(SOURCE_COLUMNS)),
    }
    for rule, mask in rule_masks.items():
        reason[mask.astype(bool) & (reason == "")] = rule
    kept = reason == ""

    lines = pd.DataFrame({
        "invoice": invoice[kept],
        "item_id": code[kept],
        "description": description[kept],
        "line_time": _epoch_seconds(raw["InvoiceDate"])[kept],
        "unit_price": price[kept],
        "customer_id": customer[kept],
    })
    # One time per invoice (a few invoices' lines straddle a minute): its first line's.
    lines["timestamp"] = lines.groupby("invoice")["line_time"].transform("min")
    normalised = {
        "stock_code_upper_cased": int((raw_code[kept] != code[kept]).sum()),
        "description_whitespace": int((raw_description[kept] != description[kept]).sum()),
        "line_time_set_to_invoice_time": int((lines["line_time"] != lines["timestamp"]).sum()),
    }
    non_product = raw_code[reason == "non_product_code"]
    return CleanLines(
        lines=lines.drop(columns="line_time").reset_index(drop=True),
        lines_read=len(raw),
        customers_read=int(customer[customer != ""].nunique()),
        dropped={rule: int((reason == rule).sum()) for rule in DROP_RULES},
        non_product_codes=tables.count_by(non_product),
        normalised=normalised,
    )


def build_catalogue(lines: pd.DataFrame) -> tuple[pd.DataFrame, Dict[str, Any]]:
    """One item per stock code (the ITEM_COLUMNS, first_seen in epoch seconds) and counts."""
    variants = (lines.groupby(["item_id", "description"]).size().rename("lines").reset_index()
                .sort_values(["item_id", "lines", "description"], ascending=[True, False, True],
                             kind="stable"))
    canonical = variants.drop_duplicates("item_id").set_index("item_id")["description"]
    variant_counts = variants.groupby("item_id").size()
    per_item = lines.groupby("item_id")
    median_price = per_item["unit_price"].median()
    price_text = median_price.map(lambda value: f"{value:.2f}")
    below_minimum = price_text == "0.00"
    price_text[below_minimum] = f"{MIN_PRICE:.2f}"

    items = pd.DataFrame({"item_id": canonical.index})
    items["title"] = items["item_id"].map(canonical)
    items["description"] = items["title"]  # the shop's only product text; nothing invented
    items["category"] = items["title"].map(categories.category_of)
    items["price"] = items["item_id"].map(price_text)
    items["image"] = ""
    items["first_seen"] = items["item_id"].map(per_item["timestamp"].min())
    counts = {
        "items": len(items),
        "with_description_variants": int((variant_counts > 1).sum()),
        "description_variants_not_chosen": int((variant_counts - 1).sum()),
        "price_raised_to_minimum": int(below_minimum.sum()),
        "by_category": tables.count_by(items["category"]),
    }
    return items[list(features.ITEM_COLUMNS)], counts


def build_events(lines: pd.DataFrame) -> tuple[pd.DataFrame, Dict[str, int]]:
    """One purchase event per (customer, item, invoice time), and what was merged or left out."""
    with_customer = lines[lines["customer_id"] != ""]
    per_invoice = with_customer.drop_duplicates(["invoice", "item_id"])
    # Two invoices of one customer in the same minute would give identical rows: one event.
    per_moment = per_invoice.drop_duplicates(["customer_id", "item_id", "timestamp"])
    events = pd.DataFrame({
        "user_id": per_moment["customer_id"],
        "item_id": per_moment["item_id"],
        "timestamp": per_moment["timestamp"],
        "event": PURCHASE,
        "device": features.UNKNOWN,  # Online Retail records no device
    }).reset_index(drop=True)
    counts = {
        "lines_without_customer": len(lines) - len(with_customer),
        "lines_merged_same_invoice": len(with_customer) - len(per_invoice),
        "lines_merged_same_customer_minute": len(per_invoice) - len(per_moment),
    }
    return events[list(contract.INTERACTION_HEADER)], counts


# One implementation for every purchase-only log (tables.py): Online Retail's and the
# generic table importer's.
sample_negatives = tables.sample_negatives


def sample_customers(events: pd.DataFrame, max_customers: Optional[int], seed: int) -> pd.DataFrame:
    """The events of `max_customers` customers drawn uniformly (seeded), or all events."""
    customers = np.sort(events["user_id"].unique())
    if max_customers is None or max_customers >= len(customers):
        return events
    rng = np.random.Generator(np.random.PCG64(seed))
    chosen = customers[rng.choice(len(customers), size=max_customers, replace=False)]
    return events[events["user_id"].isin(set(chosen))].reset_index(drop=True)


def read_source(path: str) -> tuple[pd.DataFrame, Dict[str, Any]]:
    """The Online Retail table from an .rda/.rds file, and where it came from."""
    from hyperrec.data.importers import rda

    frames, reader = rda.read_data_frames(path)
    tables = {name: frame for name, frame in frames.items()
              if set(SOURCE_COLUMNS) <= set(frame.columns)}
    if len(tables) != 1:
        raise ValueError(f"{path}: expected one data frame with columns {SOURCE_COLUMNS}, "
                         f"found {sorted(frames)}")
    (name, table), = tables.items()
    with open(path, "rb") as handle:
        digest = hashlib.sha256(handle.read()).hexdigest()
    source = {"file": os.path.basename(path), "sha256": digest, "object": name,
              "reader": reader}
    return table, source


DEFAULT_NEGATIVES_PER_PURCHASE = 1
# The eval period the pipeline splits this data with (the online_retail experiment's
# data.eval_days): first_seen may only use what was known before it.
DEFAULT_EVAL_DAYS = config_lib.EXPERIMENTS["online_retail"]().data.eval_days


def import_online_retail(path: str, out_dir: str, span_days: int = 28,
                         max_customers: Optional[int] = None, seed: int = 0,
                         negatives_per_purchase: int = DEFAULT_NEGATIVES_PER_PURCHASE,
                         eval_days: float = DEFAULT_EVAL_DAYS) -> Dict[str, Any]:
    """Reads, cleans and writes Online Retail under `out_dir`; returns the import report."""
    raw, source = read_source(path)
    return import_table(raw, source, out_dir, span_days, max_customers, seed,
                        negatives_per_purchase, eval_days)


def import_table(raw: pd.DataFrame, source: Dict[str, Any], out_dir: str, span_days: int = 28,
                 max_customers: Optional[int] = None, seed: int = 0,
                 negatives_per_purchase: int = DEFAULT_NEGATIVES_PER_PURCHASE,
                 eval_days: float = DEFAULT_EVAL_DAYS) -> Dict[str, Any]:
    """The import of an already-read Online Retail table (what import_online_retail runs);
    `eval_days` is the pipeline's (data.eval_days): first_seen is known before its cutoff."""
    if span_days < 1:
        raise ValueError("span_days must be at least 1")
    clean = clean_lines(raw)
    if clean.lines.empty:
        raise ValueError("no invoice line survived cleaning: nothing to import")
    items, item_counts = build_catalogue(clean.lines)
    events, event_counts = build_events(clean.lines)
    all_customers = events["user_id"].nunique()
    events = sample_customers(events, max_customers, seed)
    if events["user_id"].nunique() < all_customers:
        # A sample is self-contained: its catalogue is what its customers bought.
        items = items[items["item_id"].isin(set(events["item_id"]))]
    # Before the negatives are drawn: they are drawn among the items on sale at each time.
    first_seen, first_seen_report = tables.first_seen_before_eval(
        items["first_seen"], events["timestamp"], eval_days,
        derived_from="the stock code's first invoice time (lines without a customer too)")
    items = items.assign(first_seen=first_seen)
    negatives, negative_counts = sample_negatives(events, items, negatives_per_purchase, seed)
    purchases = events
    events = pd.concat([purchases, negatives], ignore_index=True)
    # The timeline is the whole file's, so a sample's spans are the full import's spans.
    first_sale, last_sale = (int(clean.lines["timestamp"].min()),
                             int(clean.lines["timestamp"].max()))
    timeline = contract.Timeline.covering(first_sale, last_sale, span_days)

    with tables.atomic_output(out_dir) as staging:
        spans = tables.write_spans(staging, timeline, events, items)
        report = {
            "importer": "online-retail",
            "source": {**source, "lines": clean.lines_read,
                       "customers": clean.customers_read},
            "options": {"span_days": span_days, "max_customers": max_customers,
                        "seed": seed, "negatives_per_purchase": negatives_per_purchase,
                        "eval_days": eval_days},
            "cleaning": {
                "rules": DROP_RULES,
                "rule_order": list(DROP_RULES),
                "dropped_lines": clean.dropped,
                "non_product_codes": clean.non_product_codes,
                "normalised_lines": clean.normalised,
                "kept_lines": len(clean.lines),
            },
            "catalogue": {**item_counts, "items_written": len(items),
                          "first_seen": first_seen_report},
            "interactions": {
                **event_counts,
                "events": len(purchases),
                **negative_counts,
                "events_by_type": tables.count_by(events["event"]),
                "customers_with_events": all_customers,
                "customers_written": int(events["user_id"].nunique()),
            },
            "timeline": {"start": spans[0]["start"], "end": spans[-1]["end"],
                         "span_days": span_days, "spans": timeline.n_spans,
                         "first_sale": iso_utc(first_sale), "last_sale": iso_utc(last_sale)},
            "spans": spans,
            "images": {"copied": 0},  # Online Retail has no product images
        }
        tables.write_report(staging, report)
    return report


def _epoch_seconds(times: pd.Series) -> pd.Series:
    """InvoiceDate as integer epoch seconds (R's POSIXct is float seconds; pandas datetimes)."""
    if pd.api.types.is_datetime64_any_dtype(times):
        if times.dt.tz is not None:
            times = times.dt.tz_convert("UTC").dt.tz_localize(None)
        return (times.astype("int64") // 10**9).astype("int64")
    return pd.to_numeric(times).round().astype("int64")


def _customer_ids(values: pd.Series) -> pd.Series:
    """CustomerID as text ("17850", not "17850.0"); "" where it is missing."""
    if pd.api.types.is_numeric_dtype(values):
        return _map_distinct(values, lambda number: str(int(number)), missing="")
    return _map_distinct(values, _strip, missing="")


def _strip(value: Any) -> str:
    return str(value).strip()


def _map_distinct(values: pd.Series, function: Callable[[Any], Any],
                  missing: Any = None) -> pd.Series:
    """`function` of every value, computed once per distinct value; NA/NaN -> `missing`."""
    codes, distinct = pd.factorize(values)
    mapped = np.array([function(value) for value in distinct] + [missing], dtype=object)
    return pd.Series(mapped[codes], index=values.index)  # code -1 (NA) picks `missing`
