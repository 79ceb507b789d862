"""Policies for the promogym environments: baselines (and, later, learned agents and the oracle), all with
Stable-Baselines3's ``predict(observation, state, episode_start, deterministic)``."""

from promogym.agents.base import Policy, episode_table, run_episode

__all__ = ["Policy", "episode_table", "run_episode"]
