"""Common random numbers: every policy is scored on the same customers. On the same episode seed two
different policies see the same visitors (or cohorts) every day, and the evaluation code hands every policy
the same seeds; a policy's own randomness never draws from the env's stream."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pandas as pd
import pytest

from promogym import envs  # noqa: F401
from promogym.agents.base import EnvPolicy, episode_table
from promogym.agents.registry import PolicyContext, make_policy, policies_for
from promogym.experiments.evaluation import play

MARKET = {"n_customers": 800, "n_products": 100}
PRICING = {"market": MARKET, "n_products": 4, "horizon": 5, "daily_customers": 60, "initial_stock": 15}
CONFIGS = {
    "promogym/DynamicPricing-v1": PRICING,
    "promogym/PricePromo-v1": {**PRICING, "budget": 30.0},
    "promogym/CouponAllocation-v1": {"market": MARKET, "cohort_size": 8, "horizon": 5, "budget": 30.0},
}
SEEDS = (0, 1)
# cheap planner settings: what is tested is whose random numbers they draw, not how well they plan
CHEAP = {"oracle", "myopic", "best_static", "uplift"}


def _customers(env: gym.Env[Any, Any], info: dict[str, Any]) -> tuple:
    """Who the step's customers were: the pricing envs' visitors (count and ids, from the offers the
    step made), the coupon env's cohort."""
    if "visitors" in info:
        offers = env.unwrapped.last_offers
        users = () if offers is None else tuple(np.asarray(offers.users)[:, 0])
        return info["visitors"], users
    return len(info["users"]), tuple(info["users"])


def _customers_seen(env: gym.Env[Any, Any], policy: Any) -> dict[tuple[int, int], tuple]:
    seen: dict[tuple[int, int], tuple] = {}

    def hook(seed: int, e: gym.Env[Any, Any], t: int, info: dict[str, Any]) -> None:
        seen[(seed, t)] = _customers(e, info)

    episode_table(env, policy, SEEDS, on_step=hook)
    return seen


def _policy_names(env_id: str) -> list[str]:
    names = []
    for entry in policies_for(env_id):
        names.append(f"{entry.name}:0.8" if entry.arg else entry.name)
    return names


class _GreedyForRandomness(EnvPolicy):
    """A policy that (wrongly) draws its noise from the env's own generator."""

    name = "steals_env_rng"

    def act(self, observation: np.ndarray) -> np.ndarray:
        self.env.np_random.random(3)
        return np.zeros(self.env.action_space.shape, dtype=self.env.action_space.dtype)


@pytest.mark.parametrize("env_id", list(CONFIGS))
def test_every_registered_policy_sees_the_same_customers_on_the_same_seeds(env_id):
    cfg = CONFIGS[env_id]
    env = gym.make(env_id, config=cfg)
    ctx = PolicyContext(env_id, env, None, search_seeds=2)
    seen = {}
    for name in _policy_names(env_id):
        policy = make_policy(name, env, ctx)
        if name in CHEAP and hasattr(policy, "users"):  # a planner's visitor sample: small, it is not under test
            policy.users, policy.sets = policy.users[:60], policy.sets[:60]
        seen[name] = _customers_seen(env, policy)
    first = next(iter(seen))
    assert len(seen) >= 5, seen.keys()
    for name, customers in seen.items():
        # day 0 at least (an episode a policy ends early by selling out has fewer days): identical customers
        for seed in SEEDS:
            assert customers[(seed, 0)] == seen[first][(seed, 0)], (name, seed)
            assert customers[(seed, 0)][0] > 0
        common = customers.keys() & seen[first].keys()
        assert all(customers[k] == seen[first][k] for k in common), name
    # the two seeds differ: the comparison is not trivially between empty or constant draws
    assert seen[first][(0, 0)] != seen[first][(1, 0)]


@pytest.mark.parametrize("env_id", ["promogym/DynamicPricing-v1", "promogym/CouponAllocation-v1"])
def test_a_policy_drawing_from_the_env_stream_would_be_caught(env_id):
    """The guard above can fail: a policy that draws from ``env.np_random`` changes the customers that
    arrive after its first decision, on the same seed."""
    env = gym.make(env_id, config=CONFIGS[env_id])
    honest = make_policy("random", env, PolicyContext(env_id, env, None))
    a = _customers_seen(env, honest)
    b = _customers_seen(env, _GreedyForRandomness(env))
    common = a.keys() & b.keys()
    assert len(common) >= 4 and any(a[k] != b[k] for k in common)


def test_play_gives_every_policy_the_same_seeds_and_customers(monkeypatch):
    """`promogym evaluate`'s loop: the seeds each policy is played on, and the customers it meets."""
    import promogym.experiments.evaluation as evaluation

    calls: list[tuple[str, tuple[int, ...], dict]] = []
    real = evaluation.episode_table

    def recording(env, policy, seeds, name=None, on_step=None):
        seen: dict[tuple[int, int], tuple] = {}
        df = real(env, policy, seeds, name=name,
                  on_step=lambda s, e, t, info: seen.__setitem__((s, t), _customers(e, info)))
        calls.append((name, tuple(int(s) for s in seeds), seen))
        return df

    monkeypatch.setattr(evaluation, "episode_table", recording)
    table = play("promogym/PricePromo-v1", CONFIGS["promogym/PricePromo-v1"], "world",
                 ["list_price", "random", "static:0.7", "thompson"], episodes=3, seed=5)
    assert [c[0] for c in calls] == ["list_price", "random", "static:0.7", "thompson"]
    assert {c[1] for c in calls} == {(5, 6, 7)}
    for _, _, seen in calls[1:]:
        common = seen.keys() & calls[0][2].keys()
        assert {(s, 0) for s in (5, 6, 7)} <= common
        assert all(seen[k] == calls[0][2][k] for k in common)
    # the table says the same: each policy one row per seed, the same seeds
    seeds = table.groupby("policy")["seed"].apply(lambda s: tuple(sorted(s)))
    assert set(seeds) == {(5, 6, 7)} and len(seeds) == 4
    # and the returns differ between policies: they really did act differently on those customers
    assert table.groupby("policy")["return"].mean().nunique() == 4
    assert isinstance(table, pd.DataFrame)
