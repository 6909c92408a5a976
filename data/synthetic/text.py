"""Titles and descriptions written from an item's latent attributes.

The text must carry the attributes (so a text tower can recover colour, pattern, style and
price band, which are not columns) without being one fixed template (so the tower has to read
words, not memorise positions). Each attribute is spelled with one of several synonyms, the
word order varies between templates, and some noise is added the way real catalogues have it:
brand names, marketing words, occasional typos, inconsistent casing. Descriptions contain
commas and the odd double quote and non-ASCII letter, so CSV quoting and UTF-8 get exercised;
they never contain a newline.
"""
from __future__ import annotations

from typing import Dict, Sequence, Tuple

import numpy as np

COLOUR_WORDS: Dict[str, Tuple[str, ...]] = {
    "red": ("red", "crimson", "scarlet", "cherry red"),
    "orange": ("orange", "tangerine", "burnt orange", "apricot"),
    "yellow": ("yellow", "mustard", "lemon", "golden"),
    "green": ("green", "emerald", "forest green", "sage"),
    "blue": ("blue", "navy", "cobalt", "azure"),
    "purple": ("purple", "violet", "plum", "aubergine"),
    "pink": ("pink", "rose", "blush", "fuchsia"),
    "black": ("black", "jet black", "onyx", "charcoal"),
}
CATEGORY_WORDS: Dict[str, Tuple[str, ...]] = {
    "tops": ("top", "tee", "t-shirt", "blouse", "shirt"),
    "dresses": ("dress", "frock", "gown", "sundress"),
    "shoes": ("shoes", "sneakers", "trainers", "loafers", "footwear"),
    "bags": ("bag", "handbag", "tote", "purse", "satchel"),
    "hats": ("hat", "cap", "beanie", "fedora"),
    "trousers": ("trousers", "pants", "slacks", "chinos"),
    "jackets": ("jacket", "coat", "blazer", "bomber"),
    "skirts": ("skirt", "miniskirt", "midi skirt", "pleated skirt"),
}
# Solid items often say nothing about their pattern, as in real listings.
PATTERN_WORDS: Dict[str, Tuple[str, ...]] = {
    "solid": ("", "", "plain", "solid", "block-colour"),
    "stripes": ("striped", "stripe", "pinstripe", "candy-stripe"),
    "dots": ("polka dot", "dotted", "spotted", "polka-dot"),
    "checks": ("checked", "plaid", "gingham", "tartan"),
}
STYLE_WORDS: Dict[str, Tuple[str, ...]] = {
    "casual": ("casual", "everyday", "relaxed", "laid-back"),
    "formal": ("formal", "elegant", "tailored", "smart"),
    "sporty": ("sporty", "athletic", "active", "performance"),
    "vintage": ("vintage", "retro", "classic", "old-school"),
}
PRICE_WORDS: Dict[str, Tuple[str, ...]] = {
    "budget": ("affordable", "value", "budget-friendly", "essential"),
    "mid": ("", "", "quality"),
    "premium": ("premium", "luxury", "designer", "deluxe"),
}
OCCASION_WORDS: Dict[str, Tuple[str, ...]] = {
    "casual": ("weekends", "a day out", "running errands", "lazy Sundays"),
    "formal": ("the office", "evening events", "weddings", "business meetings"),
    "sporty": ("the gym", "a morning run", "training", "outdoor adventures"),
    "vintage": ("flea-market fans", "a throwback look", "retro parties", "collectors"),
}
MATERIAL_WORDS: Dict[str, Tuple[str, ...]] = {
    "tops": ("soft cotton", "breathable jersey", "linen blend"),
    "dresses": ("flowing viscose", "silky satin", "light chiffon"),
    "shoes": ("supple leather", "breathable mesh", "suede"),
    "bags": ("grained leather", "sturdy canvas", "vegan leather"),
    "hats": ("wool felt", "woven straw", "cotton twill"),
    "trousers": ("stretch twill", "wool blend", "denim"),
    "jackets": ("water-resistant nylon", "wool tweed", "quilted polyester"),
    "skirts": ("crisp cotton", "pleated chiffon", "soft corduroy"),
}
BRANDS: Tuple[str, ...] = ("Nordwind", "Aurelia", "Kestrel", "Maison Élodie", "Søren & Co",
                           "Bluefield", "Okapi", "Verdant", "Halcyon", "Mirabel")
MARKETING_WORDS: Tuple[str, ...] = ("New!", "Bestseller", "Limited edition", "Must-have",
                                    "Sale", "Trending", "Online exclusive")

TITLE_TEMPLATES: Tuple[str, ...] = (
    "{colour} {pattern} {category}",
    "{style} {colour} {category}",
    "{category} in {colour}",
    "{pattern} {category} - {colour}",
    "{brand} {colour} {style} {category}",
    "{price} {pattern} {colour} {category}",
    "{colour} {category}, {style}",
)
DESCRIPTION_OPENERS: Tuple[str, ...] = (
    "{a_style} {category} in {colour}{pattern_phrase}.",
    "This {colour} {category} brings {a_style} touch{pattern_phrase}.",
    "{Colour}, {style} and easy to wear: our {pattern} {category}.",
    "Meet the {category}: {colour}, {pattern}, {style}.",
)
DESCRIPTION_EXTRAS: Tuple[str, ...] = (
    "Made from {material}, it is comfortable all day.",
    "Perfect for {occasion}.",
    "Ideal for {occasion}, with a fit our customers call \"just right\".",
    "{a_price} pick for {occasion}.",
    "Crafted in {material} by {brand}.",
    "Machine washable, easy care.",
)


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _with_article(words: str) -> str:
    """'a' or 'an' before `words` ("an everyday", "a retro"); just 'a' before nothing."""
    if not words:
        return "a"
    return f"an {words}" if words[0].lower() in "aeiou" else f"a {words}"


def _typo(rng: np.random.Generator, text: str) -> str:
    """Swaps two adjacent letters of one longer word, the commonest real-world typo."""
    words = text.split(" ")
    candidates = [i for i, word in enumerate(words) if len(word) >= 5 and word.isalpha()]
    if not candidates:
        return text
    index = candidates[int(rng.integers(len(candidates)))]
    word = words[index]
    at = int(rng.integers(1, len(word) - 2))
    words[index] = word[:at] + word[at + 1] + word[at] + word[at + 2:]
    return " ".join(words)


def _tidy(text: str) -> str:
    """Collapses the gaps an empty synonym leaves ("red  dress", "dress , casual")."""
    text = " ".join(text.split())
    return text.replace(" ,", ",").replace(" .", ".").replace("- -", "-").strip(" -,")


def _words(rng: np.random.Generator, item) -> Dict[str, str]:
    words = {
        "colour": _pick(rng, COLOUR_WORDS[item.colour]),
        "category": _pick(rng, CATEGORY_WORDS[item.category]),
        "pattern": _pick(rng, PATTERN_WORDS[item.pattern]),
        "style": _pick(rng, STYLE_WORDS[item.style]),
        "price": _pick(rng, PRICE_WORDS[item.price_band]),
        "brand": _pick(rng, BRANDS),
        "occasion": _pick(rng, OCCASION_WORDS[item.style]),
        "material": _pick(rng, MATERIAL_WORDS[item.category]),
    }
    words["a_style"] = _with_article(words["style"])
    words["a_price"] = _with_article(words["price"])
    words["pattern_phrase"] = (f" with {_with_article(words['pattern'])} look"
                               if words["pattern"] else "")
    return words


def make_title(rng: np.random.Generator, item) -> str:
    """A short product title; never empty (the category word is always in it)."""
    words = _words(rng, item)
    title = _tidy(_pick(rng, TITLE_TEMPLATES).format(**words))
    if rng.random() < 0.15:  # marketing noise in front or at the end
        marketing = _pick(rng, MARKETING_WORDS)
        title = f"{marketing} {title}" if rng.random() < 0.5 else f"{title} - {marketing}"
    if rng.random() < 0.05:
        title = _typo(rng, title)
    casing = rng.random()
    if casing < 0.4:
        title = title.title()
    elif casing < 0.5:
        title = title.lower()
    else:
        title = title[0].upper() + title[1:]
    return title


def make_description(rng: np.random.Generator, item) -> str:
    """One to three sentences that restate the attributes with fresh synonyms."""
    words = _words(rng, item)
    words["Colour"] = words["colour"].capitalize()
    if not words["pattern"]:
        words["pattern"] = "plain"
    sentences = [_tidy(_pick(rng, DESCRIPTION_OPENERS).format(**words))]
    n_extras = int(rng.integers(0, 3))
    extras = rng.permutation(len(DESCRIPTION_EXTRAS))[:n_extras]
    for extra in sorted(int(e) for e in extras):
        # Re-draw the synonyms per sentence so one description repeats no single spelling.
        sentence_words = dict(words, **_words(rng, item))
        # ...but one item is made of one material by one brand.
        sentence_words.update(material=words["material"], brand=words["brand"])
        sentences.append(_tidy(DESCRIPTION_EXTRAS[extra].format(**sentence_words)))
    description = " ".join(sentence[0].upper() + sentence[1:] for sentence in sentences)
    if rng.random() < 0.05:
        description = _typo(rng, description)
    return description
