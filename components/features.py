"""Feature names: the one place every stage reads them from.

Data enters as the contract in data/README.md (CSV columns), ExampleGen turns each interaction
into a tf.Example with the RAW_* keys below, Transform turns those into the *_XF keys the model
reads. Nothing else in the project spells a feature name as a string literal.
"""

# ---- Contract columns (CSV files of a span) ---------------------------------------------
ITEM_COLUMNS = ("item_id", "title", "description", "category", "price", "image", "first_seen")
INTERACTION_COLUMNS = ("user_id", "item_id", "timestamp", "event")
CONTEXT_COLUMNS = ("device",)  # optional in the data; ExampleGen fills "unknown"

EVENTS = ("impression", "click", "add_to_cart", "purchase")
POSITIVE_EVENTS = ("click", "add_to_cart", "purchase")  # engaged: a label of 1, enters history
UNKNOWN = "unknown"

# ---- Raw tf.Example keys written by ExampleGen ------------------------------------------
USER_ID = "user_id"
ITEM_ID = "item_id"
TIMESTAMP = "timestamp"  # int64, seconds since the epoch (UTC)
EVENT = "event"
LABEL = "label"  # int64 1 for an engaged event, 0 for an impression; absent in SERVING
DEVICE = "device"
HISTORY = "history_item_ids"  # the user's last N engaged item ids strictly before TIMESTAMP
TITLE = "item_title"
DESCRIPTION = "item_description"
CATEGORY = "item_category"
PRICE = "item_price"  # float
IMAGE = "item_image"  # normalised PNG bytes, b"" when the image is missing or corrupt
IMAGE_STATUS = "item_image_status"  # one of IMAGE_STATUSES
FIRST_SEEN = "item_first_seen"  # int64 seconds
COLD_START = "is_cold_start"  # int64 1 when the item was first seen after the split cutoff

IMAGE_STATUSES = ("ok", "missing", "corrupt")

ITEM_FEATURES = (ITEM_ID, TITLE, DESCRIPTION, CATEGORY, PRICE, IMAGE, IMAGE_STATUS,
                 FIRST_SEEN)
QUERY_FEATURES = (USER_ID, HISTORY, DEVICE, TIMESTAMP)

# ---- ExampleGen output splits -------------------------------------------------------------
TRAIN_SPLIT = "train"
EVAL_SPLIT = "eval"
CATALOG_SPLIT = "catalog"  # one example per catalogue item (ITEM_FEATURES + COLD_START)

# ---- Transformed features (preprocessing_fn outputs) ----------------------------------------
def xf(name: str) -> str:
    """The transformed name of a raw feature."""
    return f"{name}_xf"

TITLE_TOKENS = xf("title_tokens")  # int64 [text_max_tokens], 0 = padding
HOUR = xf("hour")
DAY_OF_WEEK = xf("day_of_week")
