"""A coarse product category from a product's text, by a fixed keyword table.

Online Retail has no category column, only short upper-case product names such as
"JUMBO BAG RED RETROSPOT" or "WHITE HANGING HEART T-LIGHT HOLDER". In these names the product
noun is usually the last word, followed at most by colours, patterns and sizes, and preceded
by adjectives; so the rule is: scan the words from the right and take the category of the first
word found in the keyword table below ("BAG" in "JUMBO BAG RED RETROSPOT"). Generic words that
fit many products (HOLDER, SET, DESIGN, colours, sizes) are deliberately absent, so the scan
walks past them ("T-LIGHT HOLDER" -> T-LIGHT -> lighting). A plural is matched by its singular
("MUGS" -> MUG). A name with no keyword gets "other".

The table is a heuristic, not ground truth ("NAPKIN RING" lands in jewellery); it is fixed, so
the same name always gets the same category, and the import report counts items per category.
"""
from __future__ import annotations

import re
from typing import Dict, Iterable

OTHER = "other"

_KEYWORDS_BY_CATEGORY: Dict[str, Iterable[str]] = {
    "bags": ("BAG", "HANDBAG", "PURSE", "WASHBAG", "BACKPACK", "RUCKSACK", "SHOPPER", "TOTE",
             "SATCHEL"),
    "kitchen": ("MUG", "CUP", "SAUCER", "PLATE", "BOWL", "DISH", "JUG", "TEAPOT", "CUTLERY",
                "BEAKER", "TRAY", "SPOON", "COASTER", "APRON", "TOWEL", "BOTTLE", "JAR",
                "CAKESTAND", "GLOVE", "TUMBLER", "GLASSES", "CHOPSTICKS", "PLACEMAT", "SCALES",
                "MOULD", "CUTTER", "FLASK", "TEA", "COFFEE", "LUNCHBOX", "PAN", "STRAW", "STAND",
                "BOARD", "BRUSH"),
    "lighting": ("CANDLE", "T-LIGHT", "TEALIGHT", "LIGHT", "LANTERN", "LAMP", "LAMPSHADE",
                 "CANDLEHOLDER", "CANDLESTICK", "NIGHTLIGHT", "CANDLEPOT", "INCENSE"),
    "decorations": ("DECORATION", "ORNAMENT", "BUNTING", "GARLAND", "WREATH", "BAUBLE", "BELL",
                    "MOBILE", "CHIME", "CHIMES", "FLOWER", "FEATHER", "BIRD", "EGG", "DOORSTOP",
                    "VASE", "TREE"),
    "wall_decor": ("SIGN", "PLAQUE", "FRAME", "MIRROR", "CLOCK", "PICTURE", "POSTER", "PRINT",
                   "TILE", "ART"),
    "stationery": ("CARD", "WRAP", "PAPER", "NOTEBOOK", "SKETCHBOOK", "JOURNAL", "PEN", "PENCIL",
                   "STICKER", "STICKERS", "TAPE", "TAG", "ENVELOPE", "NOTELETS", "CALENDAR",
                   "DIARY", "ERASER", "BOOK", "BOOKMARK", "CRAYONS", "CHALK", "STAMP", "LABELS",
                   "MAGNET", "RIBBON", "TISSUES", "NOTEPAD", "STATIONERY"),
    "party": ("NAPKINS", "NAPKIN", "CASES", "BALLOON", "BALLOONS", "PARTY", "CONFETTI", "HAT",
              "PICKS", "PLATES"),
    "storage": ("BOX", "BOXES", "TIN", "BASKET", "CONTAINER", "ORGANISER", "CABINET", "DRAWER",
                "HOOK", "HANGER", "RACK", "SHELF", "TRUNK", "CRATE", "BUCKET", "CADDY",
                "STORAGE", "CHEST", "KEEPSAKE", "BIN"),
    "textiles": ("CUSHION", "COVER", "BLANKET", "THROW", "QUILT", "CURTAIN", "TABLECLOTH",
                 "DOORMAT", "MAT", "DOILY", "DOILIES", "SCARF", "HOTTIE", "SLIPPERS", "SOCKS"),
    "jewellery": ("NECKLACE", "BRACELET", "EARRINGS", "RING", "CHARM", "BROOCH", "BEADS",
                  "PENDANT", "BANGLE", "KEYRING", "HAIRCLIP", "HAIRCLIPS", "SLIDE", "HAIRBAND",
                  "COMB", "LOCKET", "CLIP"),
    "toys": ("TOY", "GAME", "JIGSAW", "PUZZLE", "DOLL", "DOLLY", "BALL", "KIT", "SOLDIERS",
             "SKITTLES", "DOMINOES", "BLOCKS", "TEDDY", "SPACEBOY", "RABBIT", "BUNNY", "DUCK",
             "DUCKS", "MONKEY", "HORSE", "PUPPET", "MARBLES", "SKIPPING", "SPINNING"),
    "garden": ("GARDEN", "PLANTER", "POT", "THERMOMETER", "FEEDER", "BIRDHOUSE", "TROWEL",
               "GNOME", "SEEDS", "CAN", "PARASOL", "UMBRELLA", "WINDMILL"),
}

# word -> category; built once, checked for words listed under two categories.
KEYWORDS: Dict[str, str] = {}
for _category, _words in _KEYWORDS_BY_CATEGORY.items():
    for _word in _words:
        if _word in KEYWORDS:
            raise ValueError(f"keyword {_word} listed under {KEYWORDS[_word]} and {_category}")
        KEYWORDS[_word] = _category

CATEGORIES = tuple(sorted(_KEYWORDS_BY_CATEGORY)) + (OTHER,)
_WORD = re.compile(r"[A-Z][A-Z'\-]*")


def category_of(text: str) -> str:
    """The coarse category of a product name (see the module docstring), or "other"."""
    for word in reversed(_WORD.findall((text or "").upper())):
        singular = word[:-1] if word.endswith("S") else word
        category = KEYWORDS.get(word) or KEYWORDS.get(singular)
        if category:
            return category
    return OTHER
