"""Deterministic multimodal sample data for hyperrec: interaction logs, catalogue, images.

`generate(scale, seed, out_dir)` simulates a small fashion shop and writes it in the format of
data/README.md: weekly `span-{k}/` folders of interactions and catalogue snapshots, product
images, and `ground_truth.json` with the hidden truth (item attributes, user tastes, the
shift). The data is built to be learnable by the project's towers:

- items have latent attributes (category, colour, pattern, style, price band); the image is
  rendered from them and the title/description are written from them with synonyms and noise;
- users click by a logistic choice model over taste match, price, context and item quality;
- items keep arriving (cold-start items in the last 20% of the timeline), and at a known span
  boundary a colour becomes trendy and a batch of one category arrives (drift).

Same (scale, seed) => byte-identical output tree.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Dict

from hyperrec.schemas import features
from hyperrec.data.synthetic import attributes, behaviour, catalogue, streams, text, writer
from hyperrec.data import contract
from hyperrec.data.contract import iso_utc
from hyperrec.data.synthetic.scales import SCALES, DatagenScale, get_scale

__all__ = ["generate", "SCALES", "DatagenScale", "get_scale"]


def _fill_text(seed: int, items) -> None:
    for item in items:
        rng = streams.stream(seed, streams.ITEM_TEXT, item.index)
        item.title = text.make_title(rng, item)
        # Drawn even when dropped, so dropping a description never changes another field.
        description = text.make_description(rng, item)
        item.description = description if item.has_description else ""


def _describe_item(item: catalogue.Item) -> Dict[str, object]:
    return {
        "category": item.category,
        "colour": item.colour,
        "pattern": item.pattern,
        "style": item.style,
        "price_band": item.price_band,
        "price": item.price,
        "quality": round(item.quality, 4),
        "first_seen": iso_utc(item.first_seen),
        "in_shift_batch": item.in_shift_batch,
        "has_image": item.has_image,
        "has_description": item.has_description,
        "image_size": list(item.image_size) if item.has_image else None,
    }


def _ground_truth(seed: int, scale: DatagenScale, shift: behaviour.Shift, items, users
                  ) -> Dict[str, object]:
    duration = scale.end_ts - scale.start_ts
    n_batch = sum(item.in_shift_batch for item in items)
    return {
        "seed": seed,
        "scale": scale.name,
        "scale_config": dataclasses.asdict(scale),
        "timeline": {"start": iso_utc(scale.start_ts), "end": iso_utc(scale.end_ts),
                     "span_days": scale.span_days,
                     "cold_start_from": iso_utc(scale.start_ts + int(0.8 * duration))},
        "spans": [{"span": k, "start": iso_utc(begin), "end": iso_utc(end)}
                  for k, (begin, end) in enumerate(scale.span_windows(), start=1)],
        "shift": {
            "date": iso_utc(shift.timestamp),
            "span": scale.shift_span,
            "trendy_colour": shift.trendy_colour,
            "trend_adoption": behaviour.TREND_ADOPTION,
            "batch_category": shift.batch_category,
            "batch_items": n_batch,
            "description": (
                f"From {iso_utc(shift.timestamp)} (start of span {scale.shift_span}) "
                f"{behaviour.TREND_ADOPTION:.0%} of users (follows_trend) gain a strong taste "
                f"for {shift.trendy_colour} items (utility +{behaviour.CHOICE_MODEL.trend}), "
                f"and a batch of {n_batch} new {shift.batch_category} items arrives within two "
                f"days."),
        },
        "choice_model": dataclasses.asdict(behaviour.CHOICE_MODEL),
        "context_effects": {
            "evening_hours_utc": [min(behaviour.EVENING_HOURS), max(behaviour.EVENING_HOURS)],
            "evening_categories": list(behaviour.EVENING_CATEGORIES),
            "morning_hours_utc": [min(behaviour.MORNING_HOURS), max(behaviour.MORNING_HOURS)],
            "morning_style": "sporty",
            "weekend_style": "casual",
            "mobile": "price term x (1 + mobile_price_extra)",
        },
        "vocabulary": {
            "categories": list(attributes.CATEGORIES),
            "colours": {name: list(rgb) for name, rgb in attributes.COLOURS.items()},
            "patterns": list(attributes.PATTERNS),
            "styles": list(attributes.STYLES),
            "price_bands": list(attributes.PRICE_BANDS),
            "devices": list(attributes.DEVICES),
            "events": list(features.EVENTS),
        },
        "items": {item.item_id: _describe_item(item) for item in items},
        "users": {user.user_id: behaviour.describe_user(user) for user in users},
    }


def generate(scale: str, seed: int, out_dir: str) -> Dict[str, object]:
    """Generates the sample dataset of `scale` with `seed` into `out_dir`; returns a summary.

    Overwrites what an earlier run left in `out_dir` (span folders, images/, ground_truth.json)
    and nothing else. The summary holds counts, the timeline, the shift date and the paths.
    """
    config = get_scale(scale)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")

    shift = behaviour.draw_shift(seed, config)
    items = catalogue.build_catalogue(seed, config, shift.batch_category)
    _fill_text(seed, items)
    users = behaviour.build_users(seed, config)
    rows = behaviour.simulate(seed, users, items, config, shift)

    os.makedirs(out_dir, exist_ok=True)
    contract.clear_owned(out_dir)
    n_images = writer.write_images(seed, out_dir, items)
    rows_per_span = writer.write_spans(out_dir, config, items, [u.user_id for u in users], rows)
    truth_path = writer.write_ground_truth(
        out_dir, _ground_truth(seed, config, shift, items, users))

    event_counts = {event: 0 for event in features.EVENTS}
    for row in rows:
        event_counts[features.EVENTS[row[3]]] += 1
    engaged = len(rows) - event_counts["impression"]
    return {
        "scale": config.name,
        "seed": seed,
        "n_users": len(users),
        "n_active_users": len({row[1] for row in rows}),
        "n_items": len(items),
        "n_rows": len(rows),
        "n_spans": config.n_spans,
        "n_images": n_images,
        "rows_per_span": rows_per_span,
        "event_counts": event_counts,
        "click_rate": round(engaged / max(1, len(rows)), 4),
        "timeline_start": iso_utc(config.start_ts),
        "timeline_end": iso_utc(config.end_ts),
        "shift_date": iso_utc(shift.timestamp),
        "paths": {
            "root": out_dir,
            "spans": [contract.span_dir(out_dir, k) for k in range(1, config.n_spans + 1)],
            "images": os.path.join(out_dir, contract.IMAGES_DIR),
            "ground_truth": truth_path,
        },
    }
