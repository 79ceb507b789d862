"""promogym environments and the ground-truth market they simulate.

Importing ``envs`` registers the Gymnasium ids (idempotently):
``promogym/DynamicPricing-v0``, ``promogym/CouponAllocation-v0``, ``promogym/PricePromo-v0``.
"""

from __future__ import annotations

import gymnasium as gym

ENV_IDS: dict[str, str] = {
    "promogym/DynamicPricing-v0": "envs.pricing:DynamicPricingEnv",
    "promogym/CouponAllocation-v0": "envs.coupons:CouponAllocationEnv",
    "promogym/PricePromo-v0": "envs.pricing:PricePromoEnv",
}


def register_envs() -> None:
    for env_id, entry_point in ENV_IDS.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=entry_point, disable_env_checker=True)


register_envs()
