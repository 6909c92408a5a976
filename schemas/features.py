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

SECONDS_PER_DAY = 86_400  # timestamps are epoch seconds (UTC) everywhere

ITEM_FEATURES = (ITEM_ID, TITLE, DESCRIPTION, CATEGORY, PRICE, IMAGE, IMAGE_STATUS,
                 FIRST_SEEN)

# ---- ExampleGen output splits -------------------------------------------------------------
TRAIN_SPLIT = "train"
EVAL_SPLIT = "eval"
CATALOG_SPLIT = "catalog"  # one example per catalogue item (ITEM_FEATURES + COLD_START)

# ---- Transformed features (preprocessing_fn outputs) ----------------------------------------
def xf(name: str) -> str:
    """The transformed name of a raw feature."""
    return f"{name}_xf"

# ---- Transformed feature names (the raw names above, through xf) ---------------------------
USER_ID_XF = xf(USER_ID)
ITEM_ID_XF = xf(ITEM_ID)
HISTORY_XF = xf(HISTORY)
DEVICE_XF = xf(DEVICE)
CATEGORY_XF = xf(CATEGORY)
PRICE_XF = xf(PRICE)
IMAGE_XF = xf(IMAGE)
LABEL_XF = xf(LABEL)
ITEM_AGE_XF = xf("item_age_days")
EVENT_DAY_XF = xf("event_day")  # float32 days since the epoch of the event (query side)
TITLE_TOKENS_XF = xf("title_tokens")  # int64 [text_max_tokens], 0 = padding
HOUR_XF = xf("hour")
DAY_OF_WEEK_XF = xf("day_of_week")

# ---- SavedModel contract: signature names and their input/output keys ------------------------
# The exported model (components/trainer/export.py) and its clients (serving/) agree on these.
SERVING_DEFAULT = "serving_default"  # tf.saved_model.DEFAULT_SERVING_SIGNATURE_DEF_KEY
RECOMMEND = "recommend"
RECOMMEND_EXCLUDING = "recommend_excluding"  # recommend + EXCLUDE_ITEM_IDS
EMBED_ITEMS = "embed_items"
EXAMPLES = "examples"  # serving_default input: serialized tf.Example
SCORE = "score"  # serving_default output: ranking probability
K = "k"  # recommend input: how many items per row (the batch uses the max)
# recommend_excluding input: string [batch, n] item ids never to return ("" = padding)
EXCLUDE_ITEM_IDS = "exclude_item_ids"
ITEM_IDS = "item_ids"  # recommend output
SCORES = "scores"  # recommend output
EMBEDDING = "embedding"  # embed_items output
# TFMA slices on the outputs of a signature of this name (tfma's default preprocessing name)
TRANSFORMED_FEATURES = "transformed_features"
USER_SEGMENT = "user_segment"  # its output: NEW_USER (nothing engaged before) or RETURNING_USER
NEW_USER = "new"
RETURNING_USER = "returning"
