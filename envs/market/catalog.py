"""The product catalog: categories, brand tiers, quality, prices, costs and descriptions.

A description is generated from the product's attributes with varied wording, so that the text
carries the category, tier and quality (the signal a text model can use for products it never saw
in training) while a hidden per-product appeal stays out of it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from promogym.envs.market.config import MarketConfig

TIERS: tuple[str, ...] = ("budget", "mid", "premium")
TIER_PRICE = np.array([0.7, 1.0, 1.6])


@dataclass(frozen=True)
class Category:
    """A product category: its name, base list price and the nouns and features its product texts use."""

    name: str
    base_price: float
    nouns: tuple[str, ...]
    features: tuple[str, ...]


CATEGORIES: tuple[Category, ...] = (
    Category("outdoor & camping", 45.0,
             ("tent", "sleeping bag", "camping stove", "hiking backpack", "headlamp", "water bottle"),
             ("waterproof seams", "a lightweight frame", "a compact pack size", "reinforced stitching")),
    Category("kitchen & dining", 30.0,
             ("chef's knife", "frying pan", "blender", "coffee grinder", "dinner set", "cutting board"),
             ("a non-stick coating", "dishwasher-safe parts", "a stainless steel body", "an ergonomic grip")),
    Category("electronics", 90.0,
             ("wireless earbuds", "bluetooth speaker", "smartwatch", "power bank", "webcam", "keyboard"),
             ("long battery life", "fast charging", "low-latency pairing", "a companion app")),
    Category("home fitness", 55.0,
             ("yoga mat", "kettlebell", "resistance band set", "jump rope", "foam roller", "dumbbell pair"),
             ("a non-slip surface", "adjustable resistance", "a carry strap", "a printed workout guide")),
    Category("beauty & personal care", 22.0,
             ("face serum", "hair dryer", "electric toothbrush", "moisturizer", "beard trimmer", "shampoo"),
             ("dermatologist-tested formula", "a travel case", "fragrance-free ingredients", "a refillable bottle")),
    Category("toys & games", 28.0,
             ("board game", "building set", "puzzle", "remote-control car", "plush toy", "card game"),
             ("parts for ages 6 and up", "a quick-start rule sheet", "non-toxic materials", "a storage box")),
    Category("books & stationery", 15.0,
             ("notebook", "fountain pen", "planner", "sketchbook", "desk organizer", "cookbook"),
             ("acid-free paper", "a lay-flat binding", "a hardcover", "refillable cartridges")),
    Category("pet supplies", 25.0,
             ("dog bed", "cat tree", "pet feeder", "leash", "litter box", "chew toy set"),
             ("a washable cover", "a chew-resistant build", "a timer function", "non-slip feet")),
    Category("garden & patio", 40.0,
             ("garden hose", "pruning shears", "planter set", "solar lights", "bird feeder", "garden chair"),
             ("weather-resistant materials", "a rust-proof finish", "a foldable design", "UV-stable plastic")),
    Category("fashion accessories", 35.0,
             ("leather wallet", "sunglasses", "scarf", "watch strap", "tote bag", "belt"),
             ("hand-finished edges", "a gift box", "a lifetime repair service", "recycled fabric")),
)

_BRAND_SYLLABLES = ("Nor", "Vel", "Ari", "Tor", "Kes", "Lum", "Bra", "Ost", "Mira", "Dal", "Fen", "Qui")
_BRAND_ENDINGS = ("peak", "ora", "wick", "line", "ford", "mont", "stone", "vale", "craft", "works")

_TIER_PHRASES = {
    "budget": ("an affordable everyday brand", "a value brand", "a no-frills budget label", "a low-cost brand"),
    "mid": ("a well-known mid-range brand", "a popular mainstream brand", "a reliable mid-priced label"),
    "premium": ("a premium brand", "a high-end label", "a luxury brand known for craftsmanship"),
}
_QUALITY_PHRASES = {
    1: ("Reviews are poor; many buyers report defects.", "Rated 1 star by most reviewers.",
        "Customers say it breaks quickly."),
    2: ("Reviews are mixed and below average.", "Rated 2 stars on average.",
        "Buyers find it flimsy but usable."),
    3: ("Average reviews: does the job.", "Rated 3 stars by customers.", "Decent, unremarkable quality."),
    4: ("Well reviewed for its durability.", "Rated 4 stars by most buyers.", "Customers praise its build."),
    5: ("Outstanding reviews; buyers call it the best in class.", "Rated 5 stars across hundreds of reviews.",
        "Exceptional quality that reviewers rave about."),
}
_TEMPLATES = (
    "{Brand} {noun} by {tier}. {quality} Features {feature}. Category: {category}.",
    "A {noun} from {Brand}, {tier}, with {feature}. {quality} Sold in {category}.",
    "{category_cap}: the {Brand} {noun}. {quality} Made by {tier}; comes with {feature}.",
    "{quality} This {noun} by {Brand} ({tier}) offers {feature}. Listed under {category}.",
)


@dataclass(frozen=True)
class Catalog:
    """Product attributes as parallel arrays (index = product id)."""

    category: np.ndarray      # int, category index
    tier: np.ndarray          # int, index into TIERS
    stars: np.ndarray         # int, 1..5 (revealed by the description)
    list_price: np.ndarray    # float, currency units
    unit_cost: np.ndarray     # float
    appeal: np.ndarray        # float, hidden per-product utility shift
    is_new: np.ndarray        # bool, held out of training as new products
    text: tuple[str, ...]     # descriptions
    category_names: tuple[str, ...]

    @property
    def n(self) -> int:
        """Number of products."""
        return len(self.category)

    @property
    def quality(self) -> np.ndarray:
        """Quality in [-1, 1] from the star rating."""
        return (self.stars - 3.0) / 2.0


def _brand_names(rng: np.random.Generator, n: int) -> list[str]:
    names: list[str] = []
    while len(names) < n:
        name = str(rng.choice(_BRAND_SYLLABLES)) + str(rng.choice(_BRAND_ENDINGS))
        if name not in names:
            names.append(name)
    return names


def make_catalog(cfg: MarketConfig, rng: np.random.Generator) -> Catalog:
    """Draw a catalog of ``cfg.n_products`` products over ``cfg.n_categories`` categories (every category has a
    product): tier, stars, list price, unit cost, hidden appeal, new-product flags and texts."""
    n, k = cfg.n_products, cfg.n_categories
    cats = CATEGORIES[:k]
    category = np.concatenate([np.arange(k), rng.integers(0, k, size=n - k)])
    rng.shuffle(category)
    tier = rng.choice(3, size=n, p=[0.35, 0.4, 0.25])
    stars = np.clip(np.round(rng.normal(3.2 + 0.45 * (tier - 1), 1.0, size=n)), 1, 5).astype(np.int64)
    base = np.array([c.base_price for c in cats])[category]
    raw = base * TIER_PRICE[tier] * (1.0 + 0.08 * (stars - 3)) * rng.lognormal(0.0, 0.15, size=n)
    list_price = np.maximum(np.round(raw) - 0.01, 1.99)
    unit_cost = np.round(list_price * rng.uniform(0.35, 0.6, size=n), 2)
    appeal = rng.normal(0.0, cfg.product_noise, size=n)
    is_new = np.zeros(n, dtype=bool)
    n_new = round(cfg.new_product_share * n)
    if n_new:
        # one random product per category stays in training, so every category is seen
        perm = rng.permutation(n)
        anchors = perm[np.unique(category[perm], return_index=True)[1]]
        candidates = np.setdiff1d(np.arange(n), anchors)
        is_new[rng.choice(candidates, size=min(n_new, len(candidates)), replace=False)] = True
    brands = _brand_names(rng, 3 * k)
    texts = []
    for j in range(n):
        c = cats[category[j]]
        tpl = _TEMPLATES[rng.integers(len(_TEMPLATES))]
        texts.append(tpl.format(
            Brand=brands[3 * category[j] + tier[j]],
            noun=c.nouns[rng.integers(len(c.nouns))],
            tier=_TIER_PHRASES[TIERS[tier[j]]][rng.integers(len(_TIER_PHRASES[TIERS[tier[j]]]))],
            quality=_QUALITY_PHRASES[int(stars[j])][rng.integers(3)],
            feature=c.features[rng.integers(len(c.features))],
            category=c.name,
            category_cap=c.name.capitalize(),
        ))
    return Catalog(category=category, tier=tier, stars=stars, list_price=list_price, unit_cost=unit_cost,
                   appeal=appeal, is_new=is_new, text=tuple(texts), category_names=tuple(c.name for c in cats))
