"""The policy interface shared by learned agents and baselines, and one evaluation loop for all."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol, runtime_checkable

import gymnasium as gym
import numpy as np
import pandas as pd

COMPONENTS = ("revenue", "cost", "coupon_spend", "units", "stockouts")
# what the env refused or moved, summed over an episode: offers past the budget (coupons or e-mails), coupons past
# a customer's cap, products whose price the business constraints moved
REFUSALS = {"offers_refused": ("coupons_clipped", "emails_clipped"), "coupons_capped": ("coupons_capped",),
            "prices_adjusted": ("constraint_adjusted",)}


@runtime_checkable
class Policy(Protocol):
    """Stable-Baselines3's prediction signature: (action, recurrent state)."""

    def predict(self, observation: np.ndarray, state: Any = None, episode_start: Any = None,
                deterministic: bool = True) -> tuple[np.ndarray, Any]:
        """The action for ``observation`` and the recurrent state to pass back next step."""
        ...


class EnvPolicy:
    """Base of the baselines: reads the environment it acts in (its config, list prices, costs), as a
    pricing team's rule would; ``reset`` is called at the start of each episode."""

    name = "policy"

    def __init__(self, env: gym.Env[Any, Any]) -> None:
        self.env: Any = env.unwrapped

    def reset(self) -> None:
        """Forget anything learned within an episode (most baselines hold nothing)."""

    def act(self, observation: np.ndarray) -> np.ndarray:
        """The action for ``observation`` (subclasses implement the rule)."""
        raise NotImplementedError

    def predict(self, observation: np.ndarray, state: Any = None, episode_start: Any = None,
                deterministic: bool = True) -> tuple[np.ndarray, Any]:
        """SB3's signature: ``(act(observation), state)``; rules are deterministic whatever ``deterministic``."""
        return self.act(observation), state


StepHook = Callable[[gym.Env[Any, Any], int, dict[str, Any]], None]


def episode_steps(env: gym.Env[Any, Any], policy: Policy, seed: int
                  ) -> Iterator[tuple[np.ndarray, float, bool, dict[str, Any]]]:
    """The steps of one episode from ``reset(seed=seed)``, the policy acting deterministically (a baseline is
    reset first): ``(action, reward, terminated, info)`` per step, until the episode ends. The one loop every
    evaluation plays, so each sees the same decisions."""
    obs, _ = env.reset(seed=seed)
    if isinstance(policy, EnvPolicy):
        policy.reset()
    state = None
    start = True
    while True:
        action, state = policy.predict(obs, state=state, episode_start=np.array([start]), deterministic=True)
        start = False
        obs, reward, terminated, truncated, info = env.step(action)
        yield np.asarray(action), float(reward), bool(terminated), info
        if terminated or truncated:
            return


def run_episode(env: gym.Env[Any, Any], policy: Policy, seed: int, on_step: StepHook | None = None
                ) -> dict[str, Any]:
    """One episode from ``reset(seed=seed)`` (:func:`episode_steps`); the return, the summed reward components,
    the backend's and the world's expected profit of the decisions made (``expected_profit_model``,
    ``expected_profit_world``: with a learned backend, its bias on the policy's own offers) and what the env refused
    or moved (``REFUSALS``: offers past the budget, coupons past a cap, prices the constraints moved).
    ``on_step(env, t, info)`` is called after every step (to record trajectories)."""
    total, steps = 0.0, 0
    sums = dict.fromkeys(COMPONENTS, 0.0)
    refusals = dict.fromkeys(REFUSALS, 0)
    model = world = 0.0
    terminated = False
    for _action, reward, done, info in episode_steps(env, policy, seed):
        total += reward
        steps += 1
        terminated = done  # the last step's: whether the episode ended (not a time limit)
        for k in COMPONENTS:
            sums[k] += float(info["components"][k])
        for name, keys in REFUSALS.items():
            refusals[name] += sum(int(info.get(k, 0)) for k in keys)
        model += float(info.get("expected_profit", np.nan))
        world += float(info.get("expected_profit_world", np.nan))
        if on_step is not None:
            on_step(env, steps - 1, info)
    return {"seed": seed, "return": total, "steps": steps, **sums, "expected_profit_world": world,
            "terminated": terminated, **refusals, "expected_profit_model": model}


def episode_table(env: gym.Env[Any, Any], policy: Policy, seeds: Sequence[int], name: str | None = None,
                  on_step: Callable[[int, gym.Env[Any, Any], int, dict[str, Any]], None] | None = None
                  ) -> pd.DataFrame:
    """A tidy table, one row per episode (common random numbers: pass the same seeds to every policy);
    ``on_step(seed, env, t, info)`` sees every step."""
    def hook(seed: int) -> StepHook | None:
        if on_step is None:
            return None
        return lambda e, t, info: on_step(seed, e, t, info)

    rows = [run_episode(env, policy, int(s), hook(int(s))) for s in seeds]
    df = pd.DataFrame(rows)
    df.insert(0, "policy", name or getattr(policy, "name", type(policy).__name__))
    return df
