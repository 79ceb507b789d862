"""`promogym evaluate` and `promogym ab`: any policy on any market env and backend, scored in the world.

Policies are named: a baseline (``list_price``, ``best_static``, ``static:<multiplier>``, ``uniform_discount``,
``cost_plus``, ``markdown``, ``thompson``, ``random``, ``myopic``, ``oracle``; on CouponAllocation-v0
``no_coupon``, ``all_5pct``, ``all_10pct``, ``uplift``, ``myopic``, ``oracle``, ``random``) or a training run
folder (a learned agent, read with its saved normalization). Policies that plan with a response model
(``myopic``, ``best_static``) plan with the simulator given by ``--response`` wherever they are played.

``evaluate`` plays every policy on the same episode seeds (common random numbers) in the simulator and,
when the simulator is not the world, in the world too; one row per (policy, backend, episode) with the
reward components goes to a parquet file. ``ab`` plays two policies on paired episodes in the world and
reports the lift, a paired confidence interval, the p-value and the episodes needed for a given power.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pandas as pd

from promogym.core.io import atomic_path, write_json
from promogym.experiments.errors import CLIError
from promogym.experiments.fit_cmd import parse_overrides
from promogym.experiments.paths import output_file

PRICING_BASELINES = ("list_price", "best_static", "uniform_discount", "cost_plus", "markdown", "thompson", "random",
                     "myopic", "oracle")
COUPON_BASELINES = ("no_coupon", "all_5pct", "all_10pct", "uplift", "random", "myopic", "oracle")


def _check_env(env_id: str) -> None:
    from promogym import envs

    if env_id not in envs.MARKET_ENV_IDS:
        raise CLIError(f"unknown or unsupported env id {env_id!r}; choose one of {', '.join(envs.MARKET_ENV_IDS)} "
                       f"(HillstromTargeting-v0 is scored off-policy by `promogym hillstrom`)")


def check_policy(spec: str, env_id: str) -> None:
    """Raise CLIError for a policy name this env does not have or a run folder of another env."""
    import yaml

    path = Path(spec)
    if (path / "config.yml").is_file():
        run_env = yaml.safe_load((path / "config.yml").read_text()).get("env_id")
        if run_env != env_id:
            raise CLIError(f"run folder {path} holds an agent for {run_env}, not {env_id}")
        return
    names = COUPON_BASELINES if env_id.endswith("CouponAllocation-v0") else PRICING_BASELINES
    if spec.startswith("static:") and not env_id.endswith("CouponAllocation-v0"):
        try:
            float(spec.split(":", 1)[1])
        except ValueError as exc:
            raise CLIError(f"static:<multiplier> needs a number, got {spec!r}") from exc
        return
    if spec not in names:
        raise CLIError(f"unknown policy {spec!r} for {env_id}: a run folder (with config.yml) or one of "
                       f"{', '.join(names)}" + ("" if env_id.endswith("CouponAllocation-v0") else ", static:<m>"))


class PolicyFactory:
    """Builds named policies for an env; planning baselines use the simulator env's response model."""

    def __init__(self, env_id: str, simulator_env: gym.Env[Any, Any], logs: str | pd.DataFrame | None = None,
                 search_seeds: int = 10) -> None:
        self.env_id, self.sim, self.search_seeds = env_id, simulator_env, search_seeds
        self.logs_path = logs if isinstance(logs, str) else None
        self._logs: pd.DataFrame | None = logs if isinstance(logs, pd.DataFrame) else None
        self._best: np.ndarray | None = None

    def _best_static(self) -> np.ndarray:
        if self._best is None:
            from promogym.agents.baselines import search_static_prices

            sim_cfg = self.sim.unwrapped.config  # type: ignore[attr-defined]
            self._best, _ = search_static_prices(lambda: gym.make(self.env_id, config=sim_cfg),
                                                 seeds=range(self.search_seeds))
        return self._best

    def _uplift_logs(self) -> pd.DataFrame:
        if self._logs is None:
            if self.logs_path:
                self._logs = pd.read_parquet(self.logs_path)
            else:
                from promogym.envs.market.logs import generate_logs

                self._logs = generate_logs(self.sim.unwrapped.market, 100_000, seed=11)  # type: ignore[attr-defined]
        return self._logs

    def make(self, spec: str, env: gym.Env[Any, Any]) -> Any:
        from promogym.agents import baselines as b
        from promogym.agents.coupons import CouponOracle, MyopicCoupons, UpliftTargeting
        from promogym.agents.oracle import MPCOracle, MyopicGreedy
        from promogym.agents.train import LearnedPolicy

        if (Path(spec) / "config.yml").is_file():
            policy: Any = LearnedPolicy(spec, env)
            policy.name = Path(spec).name
            return policy
        backend = self.sim.unwrapped.backend  # type: ignore[attr-defined]
        if self.env_id.endswith("CouponAllocation-v0"):
            coupon = {"no_coupon": lambda: b.UniformCoupon(env, 0), "all_5pct": lambda: b.UniformCoupon(env, 1),
                      "all_10pct": lambda: b.UniformCoupon(env, 2), "random": lambda: b.RandomPolicy(env),
                      "myopic": lambda: MyopicCoupons(env, simulator=backend), "oracle": lambda: CouponOracle(env),
                      "uplift": lambda: UpliftTargeting(env, self._uplift_logs())}
            return coupon[spec]()
        if spec.startswith("static:"):
            return b.StaticPrice(env, float(spec.split(":", 1)[1]))
        # PricePromo's oracle also plans a coupon level per segment: a smaller visitor sample keeps it at
        # ~3.5 s an episode (1,000 visitors: ~10 s)
        visitors = 300 if self.env_id.endswith("PricePromo-v0") else 1000
        pricing = {"list_price": lambda: b.ListPrice(env),
                   "best_static": lambda: b.StaticPrice(env, self._best_static()),
                   "uniform_discount": lambda: b.UniformDiscount(env, 0.1), "cost_plus": lambda: b.CostPlus(env, 1.0),
                   "markdown": lambda: b.Markdown(env), "thompson": lambda: b.ThompsonPricing(env),
                   "random": lambda: b.RandomPolicy(env), "myopic": lambda: MyopicGreedy(env, simulator=backend),
                   "oracle": lambda: MPCOracle(env, n_visitors=visitors)}
        return pricing[spec]()


def play(env_id: str, env_config: dict[str, Any], response: str, policies: list[str], episodes: int, seed: int,
         logs: str | None = None) -> pd.DataFrame:
    """The tidy episode table: every policy on the same seeds, in the simulator and (if different) the world."""
    from promogym.agents.base import episode_table

    sim = gym.make(env_id, config={**env_config, "response": response})
    factory = PolicyFactory(env_id, sim, logs)
    if response == "world":
        backends = [("world", sim)]
    else:
        backends = [("simulator", sim), ("world", gym.make(env_id, config={**env_config, "response": "world"}))]
    seeds = range(seed, seed + episodes)
    frames = []
    for backend_name, env in backends:
        for spec in policies:
            policy = factory.make(spec, env)
            df = episode_table(env, policy, seeds, name=spec if not (Path(spec) / "config.yml").is_file()
                               else policy.name)
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


# ---------------------------------------------------------------------------------------- A/B test
def ab_test(a: np.ndarray, b: np.ndarray, alpha: float = 0.05, power: float = 0.8) -> dict[str, Any]:
    """Paired comparison of per-episode returns of B against A on the same seeds."""
    from scipy import stats

    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.shape != b.shape or len(a) < 2:
        raise ValueError("A and B need the same number (>= 2) of paired episodes")
    d = b - a
    n = len(d)
    mean, sd = float(d.mean()), float(d.std(ddof=1))
    se = sd / np.sqrt(n)
    t = stats.t.ppf(1 - alpha / 2, n - 1)
    p = float(stats.ttest_rel(b, a).pvalue) if sd > 0 else (0.0 if mean != 0 else 1.0)
    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    needed = float(np.ceil((z * sd / mean) ** 2)) if mean != 0 else float("inf")
    base = float(a.mean())
    return {"episodes": n, "mean_a": base, "mean_b": float(b.mean()), "diff": mean,
            "diff_ci": (mean - t * se, mean + t * se), "lift": mean / base if base else float("nan"),
            "lift_ci": ((mean - t * se) / base, (mean + t * se) / base) if base else (float("nan"),) * 2,
            "p_value": p, "alpha": alpha, "power": power, "episodes_needed": needed,
            "significant": bool(p < alpha)}


# ---------------------------------------------------------------------------------------- CLI
def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--env", required=True, help="a market env id, e.g. promogym/DynamicPricing-v0")
    p.add_argument("--response", default="world", help="the simulator: world (default), bert:<dir>, gbdt:<file>")
    p.add_argument("--env-set", action="append", default=[], metavar="KEY=VALUE", help="env config override")
    p.add_argument("--seed", type=int, default=0, help="first episode seed (episodes use seed, seed+1, ...)")
    p.add_argument("--logs", default=None, help="logs parquet for uplift targeting (default: generated)")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="play policies on an env (simulator and world), one row per episode",
                       description=__doc__.split("\n\n")[1] if __doc__ else None)
    _common(p)
    p.add_argument("--policy", action="append", required=True, metavar="NAME|RUN_DIR", help="repeatable")
    p.add_argument("--episodes", type=int, default=100)
    p.add_argument("--out", default="episodes.parquet", help="the episode table (parquet)")
    p.set_defaults(func=run_evaluate)
    q = sub.add_parser("ab", help="A/B test of two policies on paired episodes in the world")
    _common(q)
    q.add_argument("--a", required=True, metavar="NAME|RUN_DIR", help="the control policy")
    q.add_argument("--b", required=True, metavar="NAME|RUN_DIR", help="the treatment policy")
    q.add_argument("--episodes", type=int, default=200)
    q.add_argument("--alpha", type=float, default=0.05)
    q.add_argument("--power", type=float, default=0.8, help="power for the episodes-needed estimate")
    q.add_argument("--out", default=None, help="also write the result as JSON here")
    q.set_defaults(func=run_ab)


def _validate(args: argparse.Namespace, policies: list[str]) -> dict[str, Any]:
    _check_env(args.env)
    if args.episodes < 1:
        raise CLIError(f"--episodes must be >= 1, got {args.episodes}")
    for spec in policies:
        check_policy(spec, args.env)
    env_config = parse_overrides(args.env_set)
    try:
        gym.make(args.env, config={**env_config, "response": "world"})
    except ValueError as exc:
        raise CLIError(str(exc)) from exc
    return env_config


def run_evaluate(args: argparse.Namespace) -> int:
    env_config = _validate(args, args.policy)
    out = output_file(args.out)
    try:
        table = play(args.env, env_config, args.response, args.policy, args.episodes, args.seed, args.logs)
    except (ValueError, FileNotFoundError) as exc:
        raise CLIError(str(exc)) from exc
    with atomic_path(out) as tmp:
        table.to_parquet(tmp, index=False)
    print(summary(table).to_string(float_format=lambda x: f"{x:,.1f}"))
    print(f"wrote {out} ({len(table)} episodes)")
    return 0


def run_ab(args: argparse.Namespace) -> int:
    env_config = _validate(args, [args.a, args.b])
    if not 0 < args.alpha < 1 or not 0 < args.power < 1:
        raise CLIError("--alpha and --power must be in (0, 1)")
    if args.episodes < 2:
        raise CLIError(f"--episodes must be >= 2 for a paired test, got {args.episodes}")
    out = output_file(args.out) if args.out else None
    try:
        table = play(args.env, env_config, args.response, [args.a, args.b], args.episodes, args.seed, args.logs)
    except (ValueError, FileNotFoundError) as exc:
        raise CLIError(str(exc)) from exc
    world = table[table["backend"] == "world"]
    names = list(dict.fromkeys(world["policy"]))
    a = world[world["policy"] == names[0]].sort_values("seed")["return"].to_numpy()
    b = world[world["policy"] == names[-1]].sort_values("seed")["return"].to_numpy()
    result = {"env": args.env, "a": args.a, "b": args.b, **ab_test(a, b, args.alpha, args.power)}
    lo, hi = result["lift_ci"]
    print(f"A {args.a}: {result['mean_a']:,.1f}   B {args.b}: {result['mean_b']:,.1f}   ({result['episodes']} paired "
          f"episodes in the world)")
    print(f"lift {result['lift']:+.2%} [{lo:+.2%}, {hi:+.2%}]  p = {result['p_value']:.3g}  "
          f"({'significant' if result['significant'] else 'not significant'} at {args.alpha})")
    print(f"episodes needed for {args.power:.0%} power at this effect: {result['episodes_needed']:,.0f}")
    if out is not None:
        write_json(out, json.loads(json.dumps(result, default=float)))
        print(f"wrote {out}")
    return 0
