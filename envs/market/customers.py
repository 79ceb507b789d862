"""The customer population: latent types, revealed tastes, hidden idiosyncrasies and profile texts.

What a profile reveals (exactly, through varied wording): the customer's type, favourite categories,
how much quality matters, brand-tier preference and how often they visit. What stays hidden: a
per-customer taste intercept and a deviation of price sensitivity, both independent of everything
revealed, so the expected purchase probability given the text is an average over their prior.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from promogym.envs.market.config import CUSTOMER_TYPE_NAMES, MarketConfig


@dataclass(frozen=True)
class CustomerType:
    """Behavioural parameters of a customer type (the utility's coefficients)."""

    name: str
    intercept: float        # base log-odds of buying a viewed product at its list price
    price_sensitivity: float  # eta: utility falls by eta * log(price paid / list price)
    gain: float             # extra utility per log-unit the shelf price is below the reference price
    loss: float             # utility lost per log-unit the shelf price is above the reference price
    promo: float            # utility of receiving a coupon at all (negative: put off by promotions)
    description: str


CUSTOMER_TYPES: tuple[CustomerType, ...] = (
    CustomerType("deal_seeker", -5.5, 2.4, 0.8, 1.6, 1.0, "price- and promotion-driven; coupons persuade"),
    CustomerType("regular", -4.9, 1.5, 0.4, 1.4, 0.35, "moderate price sensitivity, mild coupon response"),
    CustomerType("buys_anyway", -3.6, 0.55, 0.05, 1.2, 0.0,
                 "buys on need at the usual price; coupons only subsidise"),
    CustomerType("promo_averse", -4.6, 1.1, 0.3, 1.2, -0.9, "put off by promotions; coupons lower purchase"),
    CustomerType("browser", -7.0, 1.0, 0.1, 0.6, 0.0, "browses, almost never buys"),
)
assert tuple(t.name for t in CUSTOMER_TYPES) == CUSTOMER_TYPE_NAMES

# Type-level coefficient vectors, indexed by type id.
INTERCEPT = np.array([t.intercept for t in CUSTOMER_TYPES])
PRICE_SENS = np.array([t.price_sensitivity for t in CUSTOMER_TYPES])
GAIN = np.array([t.gain for t in CUSTOMER_TYPES])
LOSS = np.array([t.loss for t in CUSTOMER_TYPES])
PROMO = np.array([t.promo for t in CUSTOMER_TYPES])

QUALITY_TASTES = (0.0, 0.5, 1.0)           # revealed: "doesn't care" / "somewhat" / "a lot"
TIER_PREFS = ("budget", "neutral", "premium")
VISIT_BANDS = ("daily", "weekly", "monthly")
SENSITIVITY = ("low", "mid", "high")  # terciles of the customers' hidden price sensitivity
VISIT_WEIGHT = np.array([1.0, 0.2, 0.05])  # expected visits per day, before scaling

_TYPE_PHRASES = {
    "deal_seeker": ("Bargain hunter who rarely pays full price.", "Always on the lookout for a deal.",
                    "Waits for sales and loves a discount code.", "Compares prices and jumps on promotions."),
    "regular": ("Shops regularly and buys what fits the budget.", "A steady shopper with ordinary price awareness.",
                "Buys when the price looks fair.", "Shops for what is needed, at a sensible price."),
    "buys_anyway": ("Loyal customer who buys what they need regardless of price.",
                    "Rarely checks prices before buying.", "Buys on need, not on offers.",
                    "Convenience matters more than price."),
    "promo_averse": ("Dislikes promotional e-mails and coupon spam.", "Distrusts heavy discounting.",
                     "Finds coupons off-putting and prefers straightforward prices.",
                     "Unsubscribes from marketing and ignores deals."),
    "browser": ("Mostly browses for ideas without buying.", "Window-shops and seldom checks out.",
                "Visits often, buys almost never.", "Likes to look around; purchases are rare."),
}
_CATEGORY_TEMPLATES = ("Mostly shops for {a} and {b}.", "Favourite departments: {a} and {b}.",
                       "Usually buys {a}, sometimes {b}.", "Interested mainly in {a} and {b}.")
_QUALITY_TEMPLATES = {
    0.0: ("Quality is not a priority.", "Happy with basic quality.", "Does not read reviews."),
    0.5: ("Quality matters somewhat.", "Reads a few reviews before buying.", "Wants decent quality."),
    1.0: ("Quality matters a lot.", "Reads every review and insists on quality.", "Only buys well-made products."),
}
_TIER_TEMPLATES = {
    "budget": ("Prefers budget brands.", "Sticks to low-cost labels.", "Avoids expensive brands."),
    "neutral": ("Has no brand preference.", "Open to any brand.", "Not loyal to any label."),
    "premium": ("Leans toward premium brands.", "Likes high-end labels.", "Pays attention to brand prestige."),
}
_VISIT_TEMPLATES = {
    "daily": ("Visits the shop almost every day.", "A daily visitor."),
    "weekly": ("Visits about once a week.", "Drops by weekly."),
    "monthly": ("Visits once a month or so.", "An occasional, monthly visitor."),
}


@dataclass(frozen=True)
class Customers:
    """Customer attributes as parallel arrays (index = customer id)."""

    ctype: np.ndarray          # int, index into CUSTOMER_TYPES (revealed)
    favourites: np.ndarray     # int (n, 2), favourite categories (revealed)
    affinity: np.ndarray       # float (n, n_categories): 1 for favourites, 0 otherwise
    quality_taste: np.ndarray  # float in {0, .5, 1} (revealed)
    tier_pref: np.ndarray      # int, index into TIER_PREFS (revealed)
    visit_band: np.ndarray     # int, index into VISIT_BANDS (revealed)
    taste: np.ndarray          # float, hidden intercept
    price_dev: np.ndarray      # float, hidden relative deviation of price sensitivity
    text: tuple[str, ...]

    @property
    def n(self) -> int:
        """Number of customers."""
        return len(self.ctype)

    @property
    def activity(self) -> np.ndarray:
        """Relative visit rate (from the revealed visit band)."""
        return VISIT_WEIGHT[self.visit_band]


def make_customers(cfg: MarketConfig, category_names: tuple[str, ...], rng: np.random.Generator) -> Customers:
    """Draw ``cfg.n_customers`` customers: type (by ``cfg.type_shares``), two favourite categories, quality taste, tier
    preference, visit band, hidden taste and price-sensitivity deviation, and profile texts."""
    n, k = cfg.n_customers, cfg.n_categories
    ctype = rng.choice(len(CUSTOMER_TYPES), size=n, p=np.asarray(cfg.type_shares))
    # two distinct favourite categories per customer, with popularity skew across categories
    popularity = rng.dirichlet(np.full(k, 3.0))
    keys = rng.gumbel(size=(n, k)) + np.log(popularity)
    favourites = np.argsort(-keys, axis=1)[:, :2]
    affinity = np.zeros((n, k))
    np.put_along_axis(affinity, favourites, 1.0, axis=1)
    quality_taste = np.asarray(QUALITY_TASTES)[rng.choice(3, size=n, p=[0.3, 0.4, 0.3])]
    tier_pref = rng.choice(3, size=n, p=[0.35, 0.4, 0.25])
    visit_band = rng.choice(3, size=n, p=[0.15, 0.45, 0.4])
    taste = rng.normal(0.0, cfg.customer_noise, size=n)
    price_dev = np.clip(rng.normal(0.0, cfg.price_sensitivity_noise, size=n), -0.95, None)
    texts = []
    for i in range(n):
        parts = [
            _pick(rng, _TYPE_PHRASES[CUSTOMER_TYPES[ctype[i]].name]),
            _pick(rng, _CATEGORY_TEMPLATES).format(a=category_names[favourites[i, 0]],
                                                    b=category_names[favourites[i, 1]]),
            _pick(rng, _QUALITY_TEMPLATES[float(quality_taste[i])]),
            _pick(rng, _TIER_TEMPLATES[TIER_PREFS[tier_pref[i]]]),
            _pick(rng, _VISIT_TEMPLATES[VISIT_BANDS[visit_band[i]]]),
        ]
        head, rest = parts[0], parts[1:]
        order = rng.permutation(len(rest))
        texts.append(" ".join([head, *[rest[o] for o in order]]))
    return Customers(ctype=ctype, favourites=favourites, affinity=affinity, quality_taste=quality_taste,
                     tier_pref=tier_pref, visit_band=visit_band, taste=taste, price_dev=price_dev,
                     text=tuple(texts))


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def sensitivity_band(customers: Customers, users: np.ndarray) -> np.ndarray:
    """Index into SENSITIVITY of each user's hidden price sensitivity (terciles over all customers)."""
    cuts = np.quantile(customers.price_dev, [1 / 3, 2 / 3])
    return np.searchsorted(cuts, customers.price_dev[np.asarray(users)])
