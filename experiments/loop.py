"""`promogym loop <config.yml>`: the closed loop of a shop that prices with a learned simulator — deploy, log,
refit, retrain — with a statistical gate in front of every deployment.

Round 0 (shared by every variant of a loop seed):

1. ``logs``: the market's logs of its own logging policy (``logs.rows``, as ``promogym data`` writes them);
2. ``r0/fit``: the response model fitted on them (the simulator);
3. ``r0/deploy``: the incumbent (``deploy.incumbent``, a rule of the env such as ``list_price``; a planning rule
   plans with the round's simulator) played in the world for ``deploy.episodes`` seasons through an
   :class:`~promogym.envs.recording.ExploreWrapper`, so every row it logs has an exact propensity and the day's
   observation: the data a candidate is first judged on;
4. ``r0/train``: the agent trained on the simulator: the first candidate.

Round r = 1 .. ``loop.rounds``, per variant:

1. ``gate``: the candidate (round r-1's agent) against the incumbent (the policy deployed at round r-1) by
   off-policy evaluation on the rows the loop has deployed so far (:mod:`promogym.experiments.ope`: the doubly
   robust estimate of their per-day profit on the logged days, the round r-1 simulator as the direct model, a
   day-cluster bootstrap; or, with ``gate.estimator`` ``season_dr``, per season: both policies' paired seasons in
   that simulator plus a correction of its per-visit error on each policy's offers on the logged days) — deploy
   the candidate only when the lower confidence bound of (candidate - incumbent) clears ``gate.margin`` x the
   incumbent's estimate; with ``gate.ab_episodes`` also a paired A/B test in the world, both required (with
   ``gate.ab_only`` the A/B test alone decides: the logs judge a policy on the states the incumbent led to, and
   a seasonal price path is only seen on its own path by deploying it). Both policies are also scored in the
   world on the common evaluation seeds (their true values, which the gate never sees): the check of the OPE and
   of the gate's decision;
2. ``deploy``: the winner in the world for ``deploy.episodes`` seasons with recorded exploration; its rows are
   appended to the loop's data;
3. ``fit``: the simulator refitted on the market's logs and every deployed row (a BERT model warm-started from the
   last checkpoint; a scikit-learn kind refitted from scratch), then its fidelity on the deployed policy's own
   offers (:func:`~promogym.experiments.fidelity.measure_fidelity`, with the coverage of those offers by the
   data), and the previous simulator's on the same policy (the one the policy was chosen on);
4. ``train``: the agent retrained on the refitted simulator, warm-started from its last weights (not after the last
   round: nothing would judge it).

Variants (``loop.variants``), on the same number of logged rows: ``full`` (as above), ``passive`` (always deploys
the round-0 incumbent: the model is refitted on more of the same data; its candidates are trained and gated but
never deployed, and its simulator's fidelity is also measured on the full loop's deployed policy of the same
round) and ``no_gate`` (always deploys the candidate). The references are the best constant price searched in the
world itself (what a shop could not know) and, with ``evaluate.world_agent``, the agent trained in the world for as
many steps as the loop's agent took in all.

Every stage is a stage of the pipeline engine (:mod:`promogym.experiments.pipeline`) in the run folder, keyed by its
settings and the ids of what it reads: an interrupted loop resumes at the stage it was in. A seed's stages run one
after another (a round needs the one before it); the loop seeds are independent trials after the shared ``logs``
stage, run in a local process pool (``execution.jobs``) or on Ray (``execution.backend: ray``) like an experiment's
trials, each in its own ``s<seed>/`` folders. The references run after every seed has finished.

Demand choices in the refit data: a deployed visitor whose chosen product had sold out that day bought nothing in
the world (``purchased`` 0, ``stocked_out`` 1); the data the model is refitted on counts that visit as a choice of
that product (the demand the model must learn), not as a visit that bought nothing.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import pandas as pd
import yaml

from promogym.core.config import ConfigBase, param
from promogym.core.io import write_json
from promogym.experiments.experiment import (
    ExecutionSection,
    LogsSection,
    PredictorSection,
    read_sections,
    read_yaml_config,
)
from promogym.experiments.pipeline import Pipeline, key_of, read_record

DEPLOYABLE_ENVS: tuple[str, ...] = ("promogym/DynamicPricing-v1", "promogym/DynamicPricing-v2",
                                    "promogym/PricePromo-v1")
VARIANTS: tuple[str, ...] = ("full", "passive", "no_gate")
ESTIMATORS: tuple[str, ...] = ("dr", "ips", "dm", "season_dr")
EPISODES_PER_ROUND = 1000  # deployed episodes are numbered round x this + i (+ 1: visit ids apart from the logs')
GATE_ERROR_SHARE = 0.01    # a deployment whose world value is below the incumbent's by more than this is an error


# ---------------------------------------------------------------------------------------- configuration
@dataclasses.dataclass(frozen=True)
class AgentSection(ConfigBase):
    """The ``agent`` section: the policy trained on the simulator each round."""

    algo: str = param("ppo", "the algorithm (`promogym train --algo`)")
    timesteps: int = param(50_000, "training steps at round 0", lo=1, hi=10**9)
    retrain_timesteps: int = param(0, "steps of each warm-started retraining (0: timesteps)", lo=0, hi=10**9)
    hyperparams: Mapping[str, Any] = param(None, "overrides of agents/hyperparams.yml", factory=dict)
    eval_freq: int = param(0, "steps between evaluations on the simulator during training (0: a tenth of the "
                              "run)", lo=0, hi=10**9)
    eval_episodes: int = param(5, "episodes per evaluation during training", lo=1, hi=10_000)

    def steps(self, round_: int) -> int:
        """The training steps of the run of ``round_`` (0: the first)."""
        return self.timesteps if round_ == 0 or not self.retrain_timesteps else self.retrain_timesteps


@dataclasses.dataclass(frozen=True)
class DeploySection(ConfigBase):
    """The ``deploy`` section: how a policy is deployed in the world and logged."""

    episodes: int = param(4, "seasons the winner is deployed for each round, with exploration", lo=1, hi=100_000)
    exploration: Mapping[str, Any] = param(None, "ExploreWrapper settings (epsilon, grid_step, coupon_epsilon)",
                                           factory=lambda: {"epsilon": 0.1})
    incumbent: str = param("list_price", "the policy deployed at round 0: a rule of the env (not learned, not "
                                         "an oracle)")


@dataclasses.dataclass(frozen=True)
class GateSection(ConfigBase):
    """The ``gate`` section: when a candidate replaces the incumbent."""

    estimator: str = param("dr", "the off-policy estimator: per logged day (dr, ips, dm) or per season (season_dr: "
                                 "the simulator's paired seasons plus a correction of its per-visit error on the logs)",
                           choices=ESTIMATORS)
    sim_episodes: int = param(20, "seasons each policy plays in the simulator for season_dr (common seeds)", lo=2,
                              hi=100_000)
    level: float = param(0.95, "confidence of the one-sided lower bound of (candidate - incumbent)", lo=0.5, hi=0.9999)
    margin: float = param(0.0, "the lower bound must exceed this share of the incumbent's estimate", lo=-1.0, hi=1.0)
    ab_episodes: int = param(0, "a paired A/B test of this many world episodes after the OPE (0: none); its lower "
                                "bound must clear the margin too", lo=0, hi=100_000)
    bootstrap: int = param(2000, "bootstrap resamples of the OPE's day clusters (season_dr: of the logged and the "
                                 "simulated seasons)", lo=100, hi=1_000_000)
    min_ess: float = param(0.0, "keep the incumbent when the candidate's importance weights are worth fewer visits "
                                "(the logs barely cover it: DR would rest on the simulator alone)", lo=0.0, hi=1e12)
    ab_only: bool = param(False, "the A/B test alone decides (a policy the logs cannot judge, such as a seasonal "
                                 "price path); the OPE is still computed and reported beside it, a check of the OPE")

    def validate(self) -> None:
        """``ab_only`` needs an A/B test of at least 2 episodes."""
        if self.ab_only and self.ab_episodes < 2:
            raise ValueError(f"GateSection.ab_only needs ab_episodes >= 2 (the A/B test that decides), got "
                             f"{self.ab_episodes}")

    def key_settings(self) -> dict[str, Any]:
        """The settings that decide a gate: ``sim_episodes`` only for ``season_dr``, the one estimator that reads
        it, ``ab_only`` only when set (run folders of gates without them keep their keys)."""
        out = self.to_dict()
        if self.estimator != "season_dr":
            out.pop("sim_episodes")
        if not self.ab_only:
            out.pop("ab_only")
        return out


@dataclasses.dataclass(frozen=True)
class LoopSection(ConfigBase):
    """The ``loop`` section: rounds, seeds, variants."""

    rounds: int = param(3, "deployment rounds after round 0", lo=1, hi=100)
    seeds: int = param(1, "independent loops (seeds 0 .. n-1: their logs, fits, agents and deployments)",
                       lo=1, hi=1000)
    variants: tuple[str, ...] = param(None, "variants run", factory=lambda: VARIANTS)

    def validate(self) -> None:
        """Variants are distinct names among :data:`VARIANTS`."""
        bad = [v for v in self.variants if v not in VARIANTS]
        if bad or not self.variants or len(set(self.variants)) != len(self.variants):
            raise ValueError(f"LoopSection.variants must be distinct values among {', '.join(VARIANTS)}, "
                             f"got {list(self.variants)}")


@dataclasses.dataclass(frozen=True)
class LoopEvaluateSection(ConfigBase):
    """The ``evaluate`` section: the world values the gate never sees."""

    episodes: int = param(20, "world episodes scoring each round's candidate and incumbent (common seeds)",
                          lo=2, hi=1_000_000)
    seed: int = param(1_000_000, "first evaluation seed", lo=0, hi=2**31)
    fidelity_episodes: int = param(2, "episodes of the deployed policy for the simulator's fidelity", lo=1, hi=1000)
    search_seeds: int = param(10, "episodes of the best-constant-price search in the world (the reference)",
                              lo=1, hi=10_000)
    world_agent: bool = param(False, "also train the agent in the world for the loop's total steps (a reference)",
                              choices=(True, False))


@dataclasses.dataclass(frozen=True)
class LoopConfig:
    """A validated loop config (the YAML of ``promogym loop``)."""

    name: str
    description: str
    env: str
    env_config: dict[str, Any]
    logs: LogsSection
    predictor: PredictorSection
    agent: AgentSection
    deploy: DeploySection
    gate: GateSection
    loop: LoopSection
    evaluate: LoopEvaluateSection
    execution: ExecutionSection

    SECTIONS: ClassVar[dict[str, type[ConfigBase]]] = {
        "logs": LogsSection, "predictor": PredictorSection, "agent": AgentSection, "deploy": DeploySection,
        "gate": GateSection, "loop": LoopSection, "evaluate": LoopEvaluateSection, "execution": ExecutionSection}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> LoopConfig:
        """Validate a parsed YAML config: every problem is a ValueError naming the key, raised before any work."""
        name, sections = read_sections(raw, cls.SECTIONS, ("env", "env_config"), "a loop config")
        env_id = raw.get("env")
        if env_id not in DEPLOYABLE_ENVS:
            raise ValueError(f"env: {env_id!r} cannot be deployed by the loop (its policies' actions have no recorded "
                             f"exploration); choose among {', '.join(DEPLOYABLE_ENVS)}")
        env_config = raw.get("env_config") or {}
        if not isinstance(env_config, Mapping):
            raise ValueError(f"env_config must be a mapping of the env's config keys, got {env_config!r}")
        cfg = cls(name, str(raw.get("description") or ""), str(env_id), dict(env_config), **sections)
        cfg.check()
        return cfg

    def check(self) -> None:
        """What needs the env: its config, the algorithm and hyperparameters, the incumbent, the exploration and
        a logs file of the same world (ValueError naming the key)."""
        from promogym.agents.registry import check_policy, entry, is_run_folder
        from promogym.agents.train import check_compatible, check_hyperparams, resolved_hyperparams
        from promogym.envs.recording import ExploreWrapper

        try:
            env = gym.make(self.env, config=self.env_config)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"env_config: {exc}") from exc
        try:
            ExploreWrapper(env, self.deploy.exploration)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"deploy.exploration: {exc}") from exc
        try:
            check_compatible(self.env, self.agent.algo, self.env_config)
            check_hyperparams(self.agent.algo, resolved_hyperparams(self.env, self.agent.algo, self.agent.hyperparams),
                              self.env, self.env_config)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"agent: {exc}") from exc
        spec = self.deploy.incumbent
        if is_run_folder(spec):
            raise ValueError(f"deploy.incumbent: {spec!r} is a training run; the loop starts from a rule of the env")
        try:
            check_policy(spec, self.env, env)
        except ValueError as exc:
            raise ValueError(f"deploy.incumbent: {exc}") from exc
        found = entry(spec, self.env)
        if found.knows_truth:
            raise ValueError(f"deploy.incumbent: {spec!r} is told the world's truth; a shop cannot deploy it")
        if not found.static:
            raise ValueError(f"deploy.incumbent: {spec!r} changes prices with the env's state; the gate replays "
                             f"the incumbent on logged observations, so it must be a static rule (list_price, "
                             f"best_static, static:<multiplier>, uniform_discount, cost_plus)")
        if self.gate.estimator == "season_dr" and env.unwrapped.config.reward != "profit":  # type: ignore[attr-defined]
            raise ValueError("gate.estimator season_dr adds the simulated seasons' returns to a correction in profit; "
                             "the env's reward must be profit (env_config.reward)")
        if self.logs.path is not None:
            check_same_world(self.logs.path, env)

    @classmethod
    def load(cls, path: str | Path) -> LoopConfig:
        """Read and validate a YAML config file."""
        return cls.from_dict(read_yaml_config(path, "loop config"))

    def to_dict(self) -> dict[str, Any]:
        """The resolved config as plain values (written as the run's loop.yml)."""
        out: dict[str, Any] = {"name": self.name, "description": self.description, "env": self.env,
                               "env_config": json.loads(json.dumps(self.env_config, default=str))}
        for key in self.SECTIONS:
            out[key] = getattr(self, key).to_dict()
        return out


def check_same_world(logs: str | Path, env: gym.Env[Any, Any]) -> None:
    """ValueError unless the logs file was logged in the env's market (its sidecar's world config)."""
    from promogym.predictors.data import read_world_config

    world = read_world_config(logs)
    if world is None:
        raise ValueError(f"logs.path {logs}: no sidecar JSON with its world config; the loop refits on logs of the "
                         f"env's own market only")
    mine = env.unwrapped.market.config.to_dict()  # type: ignore[attr-defined]
    if json.dumps(world, sort_keys=True, default=str) != json.dumps(mine, sort_keys=True, default=str):
        differ = sorted(k for k in set(world) | set(mine) if world.get(k) != mine.get(k))
        raise ValueError(f"logs.path {logs} was logged in another world than {env.spec.id if env.spec else 'the env'}"
                         f"'s market (differing keys: {', '.join(differ[:5])}); a refit on it would model another "
                         f"shop")


# ---------------------------------------------------------------------------------------- helpers
def fit_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """Deployed rows as refit data: the market log columns, a stocked-out choice counted as the choice it was."""
    from promogym.envs.market.logs import LOG_COLUMNS

    out = rows[list(LOG_COLUMNS)].copy()
    demand = rows["purchased"].astype(bool) | rows["stocked_out"].astype(bool)
    out["purchased"] = demand.astype(out["purchased"].dtype)
    return out


def compare_policies(sim: gym.Env[Any, Any], candidate: Any, incumbent: Any, rows: pd.DataFrame,
                     exploration: Mapping[str, Any], gc: GateSection,
                     sim_returns: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, Any]:
    """The gate's OPE (:mod:`promogym.experiments.ope`): both policies' estimates on ``rows`` with the simulator
    ``sim``'s backend as the direct model, their paired difference per logged day and per season, and the decision
    (the margin a share of the incumbent's estimate). With ``gate.estimator`` ``season_dr`` the difference is
    :func:`~promogym.experiments.ope.season_difference`'s, from ``sim_returns`` (the candidate's and the
    incumbent's returns in ``sim`` on the same seeds; ValueError without them), reported per day as the season's
    difference over the logged days per season."""
    from promogym.envs.recording import ExploreWrapper
    from promogym.experiments import ope

    wrapper = ExploreWrapper(sim, exploration)
    backend = sim.unwrapped.backend  # type: ignore[attr-defined]
    tc = ope.ope_terms(candidate, rows, wrapper, backend, name="candidate")
    ti = ope.ope_terms(incumbent, rows, wrapper, backend, name="incumbent")
    est_c = ope.ope_estimate(tc, reps=gc.bootstrap, level=gc.level)
    est_i = ope.ope_estimate(ti, reps=gc.bootstrap, level=gc.level)
    days_per_episode = est_c["days"] / max(est_c["episodes"], 1)
    ess = tc.diagnostics()["ess"]
    season = None
    if gc.estimator == "season_dr":
        if sim_returns is None:
            raise ValueError("gate.estimator season_dr needs both policies' simulated seasons (sim_returns)")
        season = ope.season_difference(tc, ti, *sim_returns, level=gc.level, reps=gc.bootstrap)
        decision = ope.decide(season, ess, gc.margin * abs(season["incumbent"]), gc.min_ess, unit="per season")
        per_day = {"mean": season["diff"] / days_per_episode, "ci": [c / days_per_episode for c in season["diff_ci"]],
                   "lcb": season["lcb"] / days_per_episode, "per_episode": season["diff"]}
    else:
        margin = gc.margin * abs(est_i[gc.estimator])
        paired = ope.paired_difference(tc, ti, gc.estimator, level=gc.level, reps=gc.bootstrap)
        decision = ope.decide(paired, ess, margin, gc.min_ess)
        per_day = {"mean": paired["diff"], "ci": list(paired["diff_ci"]), "lcb": paired["lcb"],
                   "per_episode": paired["diff"] * days_per_episode}
    return {"estimator": gc.estimator, "unit": "profit per logged day", "days": est_c["days"],
            "episodes": est_c["episodes"], "days_per_episode": days_per_episode,
            "candidate": est_c, "incumbent": est_i, "difference": {**per_day, "level": gc.level},
            "season": season, "deploy": decision.deploy, "reason": decision.reason}


def world_values(env: gym.Env[Any, Any], policy: Any, seeds: list[int]) -> np.ndarray:
    """The policy's return in ``env`` (the world, or a simulator) on each seed (common random numbers across
    policies)."""
    from promogym.agents.base import episode_table

    return episode_table(env, policy, seeds)["return"].to_numpy(dtype=float)


def mean_ci(x: np.ndarray) -> dict[str, Any]:
    """Mean and percentile-bootstrap 95% CI of per-episode values."""
    from promogym.experiments.stats import bootstrap_ci

    lo, hi = bootstrap_ci(np.asarray(x, float))
    return {"mean": float(np.mean(x)), "ci95": [lo, hi], "episodes": len(x)}


# ---------------------------------------------------------------------------------------- the loop
class Loop(Pipeline):
    """The stages of one loop config in one run folder (see the module docstring)."""

    def __init__(self, config: LoopConfig, out: Path, progress: bool = True,
                 echo: Callable[[str], None] = print) -> None:
        ex = config.execution
        super().__init__(out, progress, echo, ex.backend, ex.jobs, ex.address)  # the seeds are the trials
        self.cfg = config
        self.eval_seeds = list(range(config.evaluate.seed, config.evaluate.seed + config.evaluate.episodes))

    # -- envs and policies
    def env(self, response: str = "world") -> gym.Env[Any, Any]:
        """The loop's env with ``response`` (the world or a model spec)."""
        return gym.make(self.cfg.env, config={**self.cfg.env_config, "response": response})

    def policy(self, spec: str, env: gym.Env[Any, Any], response: str, sim: gym.Env[Any, Any] | None = None) -> Any:
        """A policy by spec (a rule or a run folder) acting in ``env``; a planning rule plans with ``sim`` (default:
        an env with ``response``, built only for a rule that plans)."""
        from promogym.agents.registry import PolicyContext, entry, is_run_folder, make_policy

        if sim is None:
            plans = not is_run_folder(spec) and entry(spec, self.cfg.env).plans
            sim = self.env(response) if plans and response != "world" else env
        return make_policy(spec, env, PolicyContext(self.cfg.env, sim, search_seeds=self.cfg.evaluate.search_seeds))

    @staticmethod
    def response_of(fit_dir: Path, kind: str) -> str:
        """The response spec of a fit stage's model."""
        return f"bert:{(fit_dir / 'model').resolve()}" if kind == "bert" \
            else f"{kind}:{(fit_dir / 'model.skops.zip').resolve()}"

    # -- stages
    def market_logs(self) -> Path:
        """The ``logs`` stage: the market's logs (or a copy of ``logs.path``)."""
        from promogym.core.io import package_versions
        from promogym.envs.market.logs import LoggingPolicy, generate_logs
        from promogym.experiments.data import copy_logs, write_logs

        lc = self.cfg.logs

        def build(tmp: Path) -> None:
            if lc.path is not None:
                copy_logs(lc.path, tmp)
                return
            market = self.env().unwrapped.market  # type: ignore[attr-defined]
            df = generate_logs(market, lc.rows, lc.seed, LoggingPolicy())
            write_logs(df, tmp / "logs.parquet", {"kind": "promogym-logs", "rows": lc.rows, "seed": lc.seed,
                                                  "world": market.config.to_dict(),
                                                  "logging_policy": LoggingPolicy().to_dict(),
                                                  "versions": package_versions()})
            self.echo(f"logs: {len(df):,} rows")

        key = key_of("loop-logs", lc.key_settings(), self.cfg.env, self.cfg.env_config.get("market"))
        return self.stage("logs", key, build) / "logs.parquet"

    def fit(self, name: str, data: list[Path], logs: Path, init_from: Path | None) -> Path:
        """A fit stage: the model fitted on the market logs plus the deployed rows of ``data`` (refit data)."""
        from promogym.experiments.data import write_logs
        from promogym.experiments.experiment import fit_predictor

        pc = self.cfg.predictor

        def build(tmp: Path) -> dict[str, Any]:
            frames = [pd.read_parquet(logs)] + [fit_rows(pd.read_parquet(f)) for f in data]
            meta = json.loads(logs.with_suffix(".json").read_text())
            meta = {**meta, "rows": sum(len(f) for f in frames), "deployed_rows": sum(len(f) for f in frames[1:])}
            write_logs(pd.concat(frames, ignore_index=True), tmp / "data.parquet", meta)
            start = time.perf_counter()
            fit_predictor(pc, tmp / "data.parquet", tmp, self.echo,
                          init_from=str(init_from / "model") if init_from is not None and pc.kind == "bert" else None)
            return {"fit_seconds": time.perf_counter() - start, "rows": meta["rows"],
                    "deployed_rows": meta["deployed_rows"]}

        deps = [self.ids["logs"], *[self._id(f) for f in data], *([self._id(init_from)] if init_from else [])]
        return self.stage(name, key_of("loop-fit", pc.to_dict(), deps), build)

    def _stage_of(self, path: Path) -> str:
        """The stage name of a stage folder or a file in one."""
        p = Path(path)
        folder = p.parent if p.suffix else p
        return str(folder.resolve().relative_to(self.out.resolve()))  # run folders are named by resolved paths

    def deploy(self, name: str, spec: str, response: str, round_: int, seed: int, deps: list[str]) -> Path:
        """A deploy stage: ``spec`` played in the world with exploration; ``rows.parquet`` and the seasons' returns."""
        from promogym.envs.recording import ExploreWrapper, record_episode

        dc = self.cfg.deploy

        def build(tmp: Path) -> dict[str, Any]:
            env = self.env()
            wrapper = ExploreWrapper(env, dc.exploration)
            policy = self.policy(spec, env, response)
            frames, returns = [], []
            for i in range(dc.episodes):
                episode = 1 + round_ * EPISODES_PER_ROUND + i
                rows = record_episode(wrapper, policy, seed=self._deploy_seed(seed, round_, i), episode=episode)
                frames.append(rows)
                returns.append(float(rows["profit"].sum()))
            df = pd.concat(frames, ignore_index=True)
            df.to_parquet(tmp / "rows.parquet", index=False)
            record = {"policy": spec, "episodes": dc.episodes, "rows": len(df),
                      "explored_profit": mean_ci(np.array(returns)) if len(returns) > 1 else
                      {"mean": returns[0], "ci95": [None, None], "episodes": 1}}
            write_json(tmp / "deploy.json", record)
            self.echo(f"{name}: {spec if not Path(spec).is_absolute() else Path(spec).name} "
                      f"deployed for {dc.episodes} seasons, {len(df):,} rows")
            return {}

        key = key_of("loop-deploy", dc.to_dict(), spec if not Path(spec).is_absolute() else "run", round_, seed,
                     self.cfg.env, self.cfg.env_config, deps)
        return self.stage(name, key, build) / "rows.parquet"

    def _deploy_seed(self, seed: int, round_: int, i: int) -> int:
        return 10_000_000 + seed * 100_000 + round_ * EPISODES_PER_ROUND + i

    def train(self, name: str, response: str, round_: int, seed: int, init_from: Path | None,
              deps: list[str], steps: int | None = None) -> Path:
        """A train stage: the agent trained on ``response`` (a simulator, or the world) for ``steps`` (default: the
        round's), warm-started from ``init_from``'s run."""
        from promogym.agents.train import resolved_hyperparams
        from promogym.experiments.experiment import train_trial

        ac = self.cfg.agent
        steps = steps or ac.steps(round_)

        def build(tmp: Path) -> dict[str, Any]:
            result = train_trial({"dir": str(tmp / "run"), "env_id": self.cfg.env, "algo": ac.algo,
                                  "seed": seed * 100 + round_, "timesteps": steps, "response": response,
                                  "env_config": self.cfg.env_config,
                                  "eval_freq": ac.eval_freq or max(steps // 10, 1),
                                  "eval_episodes": ac.eval_episodes, "hyperparams": dict(ac.hyperparams),
                                  "key": "loop", "init_from": str(init_from / "run") if init_from else None})
            where = "in the world" if response == "world" else "on the simulator"
            self.echo(f"{name}: {ac.algo} {steps:,} steps {where} ({result['seconds']:.0f} s)")
            return {"train_seconds": result["seconds"]}

        key = key_of("loop-train", {**ac.to_dict(), "hyperparams": resolved_hyperparams(self.cfg.env, ac.algo,
                                                                                         ac.hyperparams)},
                     steps, seed, round_, deps)
        return self.stage(name, key, build)

    def gate(self, name: str, variant: str, candidate: str, incumbent: str, response: str, data: list[Path],
             deps: list[str]) -> dict[str, Any]:
        """A gate stage: OPE of candidate and incumbent on the deployed rows, the decision, and both policies' true
        world values on the evaluation seeds (``gate.json``)."""
        from promogym.experiments.stats import ab_test

        gc = self.cfg.gate

        def build(tmp: Path) -> dict[str, Any]:
            rows = pd.concat([pd.read_parquet(f) for f in data], ignore_index=True)
            sim = self.env(response)
            world = self.env()
            cand, inc = self.policy(candidate, world, response, sim), self.policy(incumbent, world, response, sim)
            sim_returns = None
            if gc.estimator == "season_dr":  # the policies rebuilt on the simulator (a rule reads its env's state)
                seeds = list(range(self.cfg.evaluate.seed + 700_000, self.cfg.evaluate.seed + 700_000
                                   + gc.sim_episodes))  # apart from the evaluation and A/B seeds
                sim_returns = (world_values(sim, self.policy(candidate, sim, response, sim), seeds),
                               world_values(sim, self.policy(incumbent, sim, response, sim), seeds))
            result = compare_policies(sim, cand, inc, rows, self.cfg.deploy.exploration, gc, sim_returns)
            values_c, values_i = world_values(world, cand, self.eval_seeds), world_values(world, inc, self.eval_seeds)
            deploy_candidate = bool(result["deploy"])
            ab = None
            if gc.ab_episodes:
                first = self.cfg.evaluate.seed + 500_000  # apart from the evaluation seeds
                seeds = list(range(first, first + gc.ab_episodes))
                ab = ab_test(world_values(world, inc, seeds), world_values(world, cand, seeds),
                             alpha=2 * (1 - gc.level))
                passes = ab["diff_ci"][0] > gc.margin * abs(ab["mean_a"])
                deploy_candidate = passes if gc.ab_only else deploy_candidate and passes
            if variant == "passive":
                decision, deployed = "passive loop: the logging policy stays deployed", incumbent
            elif variant == "no_gate":
                decision, deployed = "no gate: the candidate is deployed", candidate
            else:
                deployed = candidate if deploy_candidate else incumbent
                ab_words = "" if ab is None else (f"A/B in the world {ab['diff']:+,.0f} [{ab['diff_ci'][0]:+,.0f}, "
                                                  f"{ab['diff_ci'][1]:+,.0f}]")
                decision = (f"{'deploy the candidate' if deploy_candidate else 'keep the incumbent'}: {ab_words} "
                            f"(the OPE, not deciding: {result['reason']})") if gc.ab_only else \
                    result["reason"] + (f"; {ab_words}" if ab_words else "")
            true_diff = values_c - values_i
            record = {"candidate": candidate, "incumbent": incumbent, "deployed": deployed,
                      "deployed_is_candidate": deployed == candidate, "decision": decision,
                      "ope": result, "ab": ab,
                      "world": {"candidate": mean_ci(values_c), "incumbent": mean_ci(values_i),
                                "difference": mean_ci(true_diff)}}
            write_json(tmp / "gate.json", record)
            self.echo(f"{name}: {decision}")
            return {}

        folder = self.stage(name, key_of("loop-gate", variant, self.cfg.gate.key_settings(), self.eval_seeds,
                                          deps), build)
        return read_record(folder / "gate.json")

    def fidelity(self, name: str, response: str, spec: str, data: Path, deps: list[str]) -> dict[str, Any]:
        """A fidelity stage: the simulator ``response`` against the world on ``spec``'s offers, and its coverage by
        ``data`` (the rows the model was fitted on)."""
        from promogym.experiments.fidelity import measure_fidelity

        ec = self.cfg.evaluate

        def build(tmp: Path) -> dict[str, Any]:
            result = measure_fidelity(self.cfg.env, response, [spec], episodes=ec.fidelity_episodes,
                                      seed=ec.seed + 900_000, env_config=self.cfg.env_config, logs=data)
            row = result["policies"][0]
            write_json(tmp / "fidelity.json", {"policy": spec, "profit": row["profit"],
                                                "coverage": row.get("coverage"), "model": result["model"]})
            return {}

        folder = self.stage(name, key_of("loop-fidelity", ec.fidelity_episodes, ec.seed, spec, deps), build)
        return read_record(folder / "fidelity.json")

    # -- the whole loop
    def references(self) -> dict[str, Any]:
        """The ``references`` stage: the best constant price searched in the world, scored on the evaluation seeds;
        with ``evaluate.world_agent``, the agent trained in the world for the loop's total steps (first seed)."""
        def build(tmp: Path) -> dict[str, Any]:
            world = self.env()
            out = {"best_static_world": mean_ci(world_values(world, self.policy("best_static", world, "world"),
                                                             self.eval_seeds))}
            write_json(tmp / "references.json", out)
            return {}

        key = key_of("loop-references", self.cfg.env, self.cfg.env_config, self.eval_seeds,
                     self.cfg.evaluate.search_seeds)
        out = read_record(self.stage("references", key, build) / "references.json")
        if self.cfg.evaluate.world_agent:
            total = sum(self.cfg.agent.steps(r) for r in range(self.cfg.loop.rounds))
            folder = self.train("world_agent", "world", 0, 0, None, [], steps=total)
            out["world_agent"] = {**mean_ci(world_values(self.env(), self.policy(str((folder / "run").resolve()),
                                                                                  self.env(), "world"),
                                                         self.eval_seeds)), "timesteps": total}
        return out

    def run_seed(self, seed: int) -> list[dict[str, Any]]:
        """Every variant's rounds for one loop seed; one record per (variant, round)."""
        kind, rounds = self.cfg.predictor.kind, self.cfg.loop.rounds
        logs = self.market_logs()
        s = f"s{seed}"
        fit0 = self.fit(f"{s}/r0/fit", [], logs, None)
        resp0 = self.response_of(fit0, kind)
        incumbent0 = self.cfg.deploy.incumbent
        rows0 = self.deploy(f"{s}/r0/deploy", incumbent0, resp0, 0, seed, [self.ids[f"{s}/r0/fit"]])
        train0 = self.train(f"{s}/r0/train", resp0, 0, seed, None, [self.ids[f"{s}/r0/fit"]])
        records: list[dict[str, Any]] = []
        full_deployed: dict[int, str] = {}
        for variant in self.cfg.loop.variants:
            data, fit_dir, train_dir, incumbent = [rows0], fit0, train0, incumbent0
            for r in range(1, rounds + 1):
                v = f"{s}/{variant}/r{r}"
                response = self.response_of(fit_dir, kind)
                candidate = str((train_dir / "run").resolve())
                gate = self.gate(f"{v}/gate", variant, candidate, incumbent, response, data,
                                 [self._id(train_dir), self._id(fit_dir), *[self._id(f) for f in data],
                                  incumbent if not Path(incumbent).is_absolute() else self._id(Path(incumbent).parent)])
                deployed = gate["deployed"]
                rows = self.deploy(f"{v}/deploy", deployed, response, r, seed, [self.ids[f"{v}/gate"]])
                data = [*data, rows]
                new_fit = self.fit(f"{v}/fit", data, logs, fit_dir)
                new_response = self.response_of(new_fit, kind)
                after = self.fidelity(f"{v}/fidelity", new_response, deployed, new_fit / "data.parquet",
                                      [self.ids[f"{v}/fit"]])
                before = self.fidelity(f"{v}/fidelity_before", response, deployed, fit_dir / "data.parquet",
                                       [self._id(fit_dir)])
                record = {"seed": seed, "variant": variant, "round": r, "gate": gate,
                          "fidelity": after, "fidelity_before": before,
                          "deploy": read_record(rows.parent / "deploy.json")}
                if variant == "full":
                    full_deployed[r] = deployed
                elif variant == "passive" and r in full_deployed:
                    spec = full_deployed[r]
                    spec_id = self._id(Path(spec).parent) if Path(spec).is_absolute() else spec
                    record["fidelity_on_full"] = self.fidelity(f"{v}/fidelity_on_full", new_response, spec,
                                                               new_fit / "data.parquet",
                                                               [self.ids[f"{v}/fit"], spec_id])
                records.append(record)
                if r < rounds:
                    train_dir = self.train(f"{v}/train", new_response, r, seed, train_dir,
                                           [self.ids[f"{v}/fit"], self._id(train_dir)])
                fit_dir, incumbent = new_fit, deployed
        return records

    def _id(self, path: Path) -> str:
        """The output id of the stage holding ``path`` (a stage folder or a file in one)."""
        name = self._stage_of(path)
        return self.ids.get(name) or str(read_record(self.out / name / "stage.json").get("id"))

    def run_seeds(self) -> list[dict[str, Any]]:
        """Every loop seed's records, in seed order: the seeds as trials of the execution backend after the shared
        ``logs`` stage (one seed, or one job: in this process). The stages each seed ran join this run's keys."""
        from promogym.experiments.trials import run_trials

        seeds = list(range(self.cfg.loop.seeds))
        if len(seeds) == 1 or (self.jobs <= 1 and self.backend == "local"):
            return [rec for seed in seeds for rec in self.run_seed(seed)]
        self.market_logs()  # once, before the workers read it
        payloads = [{"config": self.cfg.to_dict(), "out": str(self.out), "seed": seed} for seed in seeds]
        by_seed: dict[int, list[dict[str, Any]]] = {}
        for payload, result in run_trials(run_loop_seed, payloads, self.backend, min(self.jobs, len(seeds)),
                                          self.address):
            by_seed[payload["seed"]] = result["records"]
            self.keys.update(result["keys"])
            self.ids.update(result["ids"])
            self.echo(f"s{payload['seed']}: loop seed finished")
        return [rec for seed in seeds for rec in by_seed[seed]]

    def run(self) -> dict[str, Any]:
        """Every seed's loop and the references; writes ``loop.json`` in the run folder and returns it."""
        start = time.perf_counter()
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "loop.yml").write_text(yaml.safe_dump(self.cfg.to_dict(), sort_keys=False))
        records = self.run_seeds()
        result = {"format": "promogym-loop/1", "config": self.cfg.to_dict(), "records": records,
                  "references": self.references(), "eval_seeds": [self.eval_seeds[0], self.eval_seeds[-1]]}
        result["timing"] = self.stage_timing()
        write_json(self.out / "loop.json", result)
        self.record_run("loop", time.perf_counter() - start)
        return result


def run_loop_seed(payload: Mapping[str, Any]) -> dict[str, Any]:
    """One loop seed in a worker (a trial): ``payload`` holds the resolved config, the run folder and the seed;
    returns the seed's records and the keys and ids of the stages it ran (picklable plain values)."""
    loop = Loop(LoopConfig.from_dict(payload["config"]), Path(payload["out"]), progress=False)
    records = loop.run_seed(int(payload["seed"]))  # its logs stage: done already, by the parent
    return {"records": records, "keys": dict(loop.keys), "ids": dict(loop.ids)}


__all__ = ["DEPLOYABLE_ENVS", "VARIANTS", "AgentSection", "DeploySection", "GateSection", "Loop", "LoopConfig",
           "LoopEvaluateSection", "LoopSection", "check_same_world", "fit_rows", "run_loop_seed"]
