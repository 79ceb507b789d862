"""The market's configuration: sizes, customer mix and the strength of each behavioural effect."""

from __future__ import annotations

import dataclasses

from promogym.core.config import ConfigBase, param

CUSTOMER_TYPE_NAMES: tuple[str, ...] = ("deal_seeker", "regular", "buys_anyway", "promo_averse", "browser")


@dataclasses.dataclass(frozen=True)
class MarketConfig(ConfigBase):
    """Parameters of the ground-truth market. Every field is validated against its range."""

    n_products: int = param(200, "products in the catalog", lo=10, hi=100_000)
    n_categories: int = param(10, "product categories (at most 10 have names)", lo=2, hi=10)
    n_customers: int = param(5000, "customers in the population", lo=10, hi=10_000_000)
    new_product_share: float = param(
        0.15, "share of products held out as new products for cold-start evaluation", lo=0.0, hi=0.9)
    type_shares: tuple[float, ...] = param(
        None, "shares of deal_seeker, regular, buys_anyway, promo_averse, browser customers",
        lo=0.0, hi=1.0, factory=lambda: (0.30, 0.30, 0.15, 0.10, 0.15))
    daily_arrivals: float = param(1300.0, "mean customer visits per day (before weekly seasonality)",
                                  lo=1.0, hi=1e7)
    weekly_amplitude: float = param(
        0.25, "weekly seasonality: weekend arrivals are about (1 + amplitude) times midweek", lo=0.0, hi=0.9)
    views_per_visit: float = param(1.5, "mean extra products viewed per visit (1 + Poisson)", lo=0.0, hi=20.0)
    customer_noise: float = param(0.5, "sd of the hidden per-customer taste intercept", lo=0.0, hi=3.0)
    product_noise: float = param(0.3, "sd of the hidden per-product appeal", lo=0.0, hi=3.0)
    price_sensitivity_noise: float = param(
        0.2, "sd of the hidden relative deviation of a customer's price sensitivity", lo=0.0, hi=0.3)
    affinity_weight: float = param(1.2, "utility of a favourite category", lo=0.0, hi=5.0)
    quality_weight: float = param(0.8, "utility per quality step for a quality-minded customer",
                                  lo=0.0, hi=5.0)
    tier_weight: float = param(0.4, "utility of a brand tier that matches the customer's preference",
                               lo=0.0, hi=5.0)
    competition_weight: float = param(
        3.0, "convex loss of utility as the price paid rises above list price (rival shops sell at list)",
        lo=0.0, hi=50.0)
    weekend_uplift: float = param(0.15, "utility bonus on Saturdays and Sundays", lo=-2.0, hi=2.0)
    reference_adaptation: float = param(
        0.1, "daily rate at which a product's reference price moves toward the prices shown", lo=0.0, hi=1.0)
    fatigue_decay: float = param(0.85, "daily multiplicative decay of promotion fatigue", lo=0.0, hi=1.0)
    fatigue_sensitivity: float = param(
        0.5, "how fast fatigue erodes coupon response: factor exp(-s * fatigue)", lo=0.0, hi=10.0)
    seed: int = param(0, "seed of the world's construction (catalog, customers, texts)", lo=0, hi=2**32 - 1)

    def validate(self) -> None:
        """Check that ``type_shares`` has one share per customer type and sums to 1, and that there are at least two
        products per category (ValueError naming the key)."""
        if len(self.type_shares) != len(CUSTOMER_TYPE_NAMES):
            raise ValueError(
                f"MarketConfig.type_shares must have {len(CUSTOMER_TYPE_NAMES)} entries "
                f"({', '.join(CUSTOMER_TYPE_NAMES)}), got {len(self.type_shares)}")
        if abs(sum(self.type_shares) - 1.0) > 1e-6:
            raise ValueError(f"MarketConfig.type_shares must sum to 1, got {sum(self.type_shares):.6f}")
        if self.n_products < 2 * self.n_categories:
            raise ValueError(
                f"MarketConfig.n_products ({self.n_products}) must be at least 2 x n_categories "
                f"({self.n_categories})")
