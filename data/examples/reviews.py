"""Writes data/examples/reviews/: the tiny sample data (seed 42) as a foreign review log.

The sample data's funnel becomes star ratings (an impression: 1-3 stars, a click, cart or
purchase: 4-5 stars), its times epoch milliseconds (a random sub-second part), its columns and
categories other names, its launch dates zone-less local text, its images 32-pixel thumbnails
matched on the item id. What the rows say
is unchanged, so `hyperrec import table` with `engaged_if: rating>=4` recovers engaged vs shown
exactly. The output is a pure function of the code (seeded; gzip without a timestamp).
"""
from __future__ import annotations

import gzip
import io
import os
import shutil
import sys
import tempfile

import numpy as np
import pandas as pd
from PIL import Image

from hyperrec.data import contract
from hyperrec.schemas import features

SEED = 42
THUMBNAIL = 32  # pixels: the tiny configurations train on 24-pixel images
DEPARTMENTS = {  # the sample data's categories -> a shop's own department names
    "tops": "Tops & T-Shirts", "dresses": "Dresses", "shoes": "Footwear",
    "bags": "Bags & Luggage", "hats": "Headwear", "trousers": "Trousers & Jeans",
    "jackets": "Coats & Jackets", "skirts": "Skirts",
}
MAPPING = """\
# `hyperrec import table data/examples/reviews/ratings.csv.gz --mapping THIS --out DIR`
# Column names of ratings.csv.gz and products.csv; paths relative to this file.
user: reviewer
item: product
timestamp: rated_at_ms
timestamp_unit: ms
rating: stars
engaged_if: "rating>=4"
device: platform
items: products.csv
item_id: sku
title: name
description: blurb
category: department
price: price_eur
first_seen: launched
images: photos
"""


def build(out_dir: str) -> None:
    """Writes ratings.csv.gz, products.csv, photos/ and mapping.yaml under `out_dir`."""
    from hyperrec.data import synthetic

    with tempfile.TemporaryDirectory() as generated:
        synthetic.generate("tiny", SEED, generated)
        spans = sorted(int(name.split("-")[1]) for name in os.listdir(generated)
                       if name.startswith("span-"))
        events = pd.concat([pd.read_csv(os.path.join(contract.span_dir(generated, span),
                                                     contract.INTERACTIONS_FILE),
                                        dtype=str, keep_default_na=False) for span in spans],
                           ignore_index=True)
        items = pd.read_csv(os.path.join(contract.span_dir(generated, spans[-1]),
                                         contract.ITEMS_FILE), dtype=str, keep_default_na=False)
        os.makedirs(out_dir, exist_ok=True)
        photos = os.path.join(out_dir, "photos")
        shutil.rmtree(photos, ignore_errors=True)
        os.makedirs(photos)
        for image in items["image"]:
            if image:
                _thumbnail(os.path.join(generated, image),
                           os.path.join(photos, os.path.basename(image)))

    rng = np.random.Generator(np.random.PCG64(SEED))
    engaged = events["event"].isin(features.POSITIVE_EVENTS).to_numpy()
    stars = np.where(engaged, rng.integers(4, 6, len(events)), rng.integers(1, 4, len(events)))
    seconds = pd.to_datetime(events["timestamp"], utc=True).astype("int64") // 10**9
    ratings = pd.DataFrame({
        "reviewer": events["user_id"], "product": events["item_id"], "stars": stars,
        "rated_at_ms": seconds * 1000 + rng.integers(0, 1000, len(events)),
        "platform": events["device"],
    })
    with open(os.path.join(out_dir, "ratings.csv.gz"), "wb") as raw:
        with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as handle:
            handle.write(ratings.to_csv(index=False, lineterminator="\n").encode("utf-8"))
    products = pd.DataFrame({
        "sku": items["item_id"], "name": items["title"], "blurb": items["description"],
        "department": items["category"].map(DEPARTMENTS), "price_eur": items["price"],
        # The shop's launch dates, as a local export writes them: no zone (read as UTC).
        "launched": items["first_seen"].str.replace("T", " ").str.rstrip("Z"),
    })
    products.to_csv(os.path.join(out_dir, "products.csv"), index=False, lineterminator="\n")
    with open(os.path.join(out_dir, "mapping.yaml"), "w", encoding="utf-8") as handle:
        handle.write(MAPPING)


def _thumbnail(source: str, target: str) -> None:
    with Image.open(source) as image:
        image = image.convert("RGB")
        image.thumbnail((THUMBNAIL, THUMBNAIL))
        buffer = io.BytesIO()
        if target.endswith(".png"):
            image.save(buffer, format="PNG", optimize=True)
        else:
            image.save(buffer, format="JPEG", quality=90)
    with open(target, "wb") as handle:
        handle.write(buffer.getvalue())


if __name__ == "__main__":
    build(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(
        os.path.abspath(__file__)), "reviews"))
