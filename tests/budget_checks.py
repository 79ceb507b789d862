"""Budget checks shared by the tests: play a policy step by step and hold the env to its budget rules.

Every env with a budget hands out a coupon (or an e-mail) only while the budget can pay it, and counts what
it refused (``info["coupons_clipped"]``, ``info["emails_clipped"]`` on Hillstrom). A test that only checks
the spend against the budget passes whatever the policy does; these helpers also record what each policy
asked for and what it was given, so a test can show that the budget was tried and the refusal counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np


class MostGenerous:
    """Asks for the most generous offer for everyone, every step: the top coupon level per customer on
    CouponAllocation, the top level for every segment (at list price) on PricePromo, an e-mail for every
    customer on Hillstrom."""

    name = "most_generous"

    def __init__(self, env: gym.Env[Any, Any]) -> None:
        self.env = env.unwrapped

    def predict(self, observation: np.ndarray, state: Any = None, episode_start: Any = None,
                deterministic: bool = True) -> tuple[np.ndarray, Any]:
        e, space = self.env, self.env.action_space
        if isinstance(space, gym.spaces.MultiDiscrete):
            return (space.nvec - 1).astype(np.int64), state
        action = np.ones(space.shape, dtype=np.float32)          # top coupon level for every segment
        action[: e.config.n_products] = e.action_from_prices(e.list_price)
        return action, state


@dataclass
class BudgetLedger:
    """What a policy asked for and got over some episodes."""

    budget: float
    requested: int = 0          # offers the policy asked for (coupons, e-mails)
    given: int = 0              # offers the env made
    clipped: int = 0            # what the env reported it refused
    spend: list[float] = field(default_factory=list)      # per episode, in the budget's unit
    masked_requests: int = 0    # offers asked for at a level ``action_masks()`` forbade (maskable envs)


def _requested_and_given(env: Any, action: np.ndarray, info: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(asked, got) per customer of the step: the coupon share (or e-mail arm) asked for and given."""
    if "emails_clipped" in info:                                   # Hillstrom: arms, the budget in e-mails
        return np.asarray(action), np.asarray(info["arms"])
    if "coupon" in info:                                           # CouponAllocation: a level per customer
        return env.levels[np.asarray(action)], np.asarray(info["coupon"])
    offers = env.last_offers                                       # PricePromo: a level per visit segment
    if offers is None:
        return np.zeros(0), np.zeros(0)
    users = np.asarray(offers.users)[:, 0]
    asked = env.coupon_levels_from_action(action)[env.market.customers.visit_band[users]]
    return asked, np.asarray(offers.coupon)[:, 0]


def play_within_budget(env: gym.Env[Any, Any], policy: Any, seeds: range | list[int]) -> BudgetLedger:
    """Play ``policy`` on ``seeds`` and check, every step: what was given is what was asked for or nothing;
    the refusals the env counts are exactly the offers asked for and not given; the spend so far never
    exceeds the budget and ``budget_left`` is the budget less the spend."""
    e = env.unwrapped
    hillstrom = not hasattr(e.config, "budget")                    # Hillstrom: a share of customers, in e-mails
    ledger = BudgetLedger(budget=float(e.budget if hillstrom else e.config.budget))
    for seed in seeds:
        obs, _ = env.reset(seed=seed)
        if hasattr(policy, "reset"):
            policy.reset()
        budget = float(e.budget) if hillstrom else ledger.budget
        spent, state, start = 0.0, None, True
        while True:
            if hasattr(e, "action_masks"):
                mask = e.action_masks().reshape(len(e.action_space.nvec), -1)
            action, state = policy.predict(obs, state=state, episode_start=np.array([start]), deterministic=True)
            start = False
            action = np.asarray(action)
            if hasattr(e, "action_masks"):
                ledger.masked_requests += int((~mask[np.arange(len(action)), action]).sum())
            obs, _, terminated, truncated, info = env.step(action)
            asked, got = _requested_and_given(e, action, info)
            assert ((got == asked) | (got == 0)).all(), "the env gave something that was not asked for"
            refused = int(((asked > 0) & (got == 0)).sum())
            reported = info["emails_clipped"] if hillstrom else info["coupons_clipped"]
            assert reported == refused, (reported, refused)
            ledger.requested += int((asked > 0).sum())
            ledger.given += int((got > 0).sum())
            ledger.clipped += reported
            spent += float(info["emails_sent"]) if hillstrom else float(info["components"]["coupon_spend"])
            assert spent <= budget + 1e-6, (spent, budget)
            assert abs(info["components"]["budget_left"] - (budget - spent)) < 1e-6
            if terminated or truncated:
                break
        ledger.spend.append(spent)
    return ledger


def unconstrained_spend(env_id: str, config: dict[str, Any], seeds: range | list[int], budget_key: str = "budget",
                        huge: float = 1e9) -> float:
    """The most a most-generous policy spends in one of ``seeds`` when the budget is out of reach: above the
    budget it is tested against, the budget binds."""
    env = gym.make(env_id, config={**config, budget_key: huge if budget_key == "budget" else 1.0})
    ledger = play_within_budget(env, MostGenerous(env), seeds)
    assert ledger.clipped == 0
    return max(ledger.spend)
