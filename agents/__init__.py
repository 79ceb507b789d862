"""Policies for the promogym environments, all behind Stable-Baselines3's
``predict(observation, state, episode_start, deterministic)``: the policy registry
(:mod:`promogym.agents.registry`: every named policy and the env families it plays), the baselines a
pricing team runs (:mod:`~promogym.agents.baselines`, :mod:`~promogym.agents.coupons`), the planners and
oracles (:mod:`~promogym.agents.oracle`), and Stable-Baselines3 training and learned policies
(:mod:`~promogym.agents.train`)."""

from promogym.agents.base import Policy, episode_table, run_episode

__all__ = ["Policy", "episode_table", "run_episode"]
