"""Playing policies on an env: every policy on the same episode seeds (common random numbers), in the
simulator and, when the simulator is not the world (and the env has one), in the world too; one row per
(policy, backend, episode) with the reward components."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import pandas as pd

from promogym.agents.base import episode_table
from promogym.agents.registry import PolicyContext, is_run_folder, make_policy
from promogym.envs.base import world_config, world_free


def play(env_id: str, env_config: dict[str, Any], response: str, policies: list[str], episodes: int, seed: int,
         logs: str | None = None, trust: bool = False) -> pd.DataFrame:
    """The tidy episode table. Planning policies plan with ``response`` wherever they are played; run folders
    without a valid manifest are refused unless ``trust``. A world-free env is played on its model only."""
    sim = gym.make(env_id, config={**env_config, "response": response})
    ctx = PolicyContext(env_id, sim, logs)
    if response == "world":
        backends = [("world", sim)]
    elif world_free(env_id):  # a shop's own model is all there is
        backends = [("simulator", sim)]
    else:
        backends = [("simulator", sim), ("world", gym.make(env_id, config=world_config(env_config)))]
    seeds = range(seed, seed + episodes)
    frames = []
    for backend_name, env in backends:
        for spec in policies:
            policy = make_policy(spec, env, ctx, trust=trust)
            df = episode_table(env, policy, seeds, name=policy.name if is_run_folder(spec) else spec)
            df.insert(1, "backend", backend_name)
            df.insert(2, "response", response if backend_name == "simulator" else "world")
            frames.append(df)
    return pd.concat(frames, ignore_index=True)


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """Mean return per policy and backend, and the simulator's bias (simulator − world) where both ran."""
    out = table.pivot_table(index="policy", columns="backend", values="return", aggfunc="mean", sort=False)
    if {"simulator", "world"} <= set(out.columns):
        out["sim_minus_world"] = out["simulator"] - out["world"]
    return out


__all__ = ["play", "summary"]
