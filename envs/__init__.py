"""promogym environments and the ground-truth market they simulate.

Importing ``promogym.envs`` registers the Gymnasium ids (idempotently):
``promogym/DynamicPricing-v1``, ``promogym/CouponAllocation-v1``, ``promogym/PricePromo-v1``,
``promogym/DynamicPricing-v2``, ``promogym/CouponAllocation-v2`` and ``promogym/PromoRecommendation-v0`` (the
synthetic market) and
``promogym/HillstromTargeting-v0`` (real customers of the Hillstrom e-mail trial) and ``promogym/ShopPricing-v0``
(an imported shop's logged customers, answered by a model fitted on them: no world).
"""

from __future__ import annotations

import gymnasium as gym

ENV_IDS: dict[str, str] = {
    "promogym/DynamicPricing-v1": "promogym.envs.pricing:DynamicPricingEnv",
    "promogym/DynamicPricing-v2": "promogym.envs.pricing:SeasonalPricingEnv",
    "promogym/CouponAllocation-v1": "promogym.envs.coupons:CouponAllocationEnv",
    "promogym/CouponAllocation-v2": "promogym.envs.coupons:PacedCouponEnv",
    "promogym/PricePromo-v1": "promogym.envs.pricing:PricePromoEnv",
    "promogym/HillstromTargeting-v0": "promogym.envs.hillstrom:HillstromTargetingEnv",
    "promogym/PromoRecommendation-v0": "promogym.envs.recommendation:PromoRecommendationEnv",
    "promogym/ShopPricing-v0": "promogym.envs.shop:ShopPricingEnv",
}

# the envs simulating the synthetic market (world or learned backends)
MARKET_ENV_IDS = ("promogym/DynamicPricing-v1", "promogym/CouponAllocation-v1", "promogym/PricePromo-v1",
                  "promogym/DynamicPricing-v2", "promogym/CouponAllocation-v2", "promogym/PromoRecommendation-v0")


def register_envs() -> None:
    """Register every id of ``ENV_IDS`` with Gymnasium (string entry points); registered ids are left as they are."""
    for env_id, entry_point in ENV_IDS.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=entry_point, disable_env_checker=True)


register_envs()
