"""`promogym experiment <config.yml>`: from logs to a policy evaluation report, in one resumable command.

Stages, each skipped when its output exists with the same key (a hash of its settings and of the
stages it reads):

1. ``logs``: interactions logged by the world's logging policy, with their propensities;
2. ``predictor``: the conversion model fitted on those logs (BERT by default), scored against the
   world's true probabilities (calibration included) — it is the simulator of the next stages;
   ``fidelity/<env>``: the predictor against the world on the offers of static policies played in each env
   (:mod:`promogym.experiments.fidelity`);
3. ``train``: every algorithm x seed x env, trained on the simulator (``sim``) and on the world
   (``world``); one trial per run folder;
4. ``evaluate``: every policy (baselines, oracle, each learned seed) on the same episode seeds in the
   world and, except the oracle, in the simulator; step traces of the first episodes; on an env whose
   ``config.constraints`` sets business constraints, every policy also in the world with the constraints off
   (backend ``world_unconstrained``, the same seeds), so the report can say what the constraints cost;
5. ``report``: tables, statistics and plots (``promogym report``).

A trial (one training run, one policy's evaluation) is written into a temporary folder and renamed
when complete, so an interruption loses at most the trials in flight; rerunning the same command
continues where it stopped. Trials run in a local process pool (``execution.jobs``) or on Ray
(``execution.backend: ray``).
"""

from __future__ import annotations

import dataclasses
import functools
import shutil
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd
import yaml

from promogym.agents.registry import default_baselines, policies_for
from promogym.core.config import ConfigBase, param
from promogym.core.io import atomic_dir, atomic_path, write_json
from promogym.envs.base import world_config
from promogym.envs.constraints import BusinessConstraints
from promogym.envs.families import short_name
from promogym.experiments.pipeline import Pipeline, key_of, read_record

CONFIG_DIR = Path(__file__).with_name("configs")
SIM, WORLD = "sim", "world"
UNCONSTRAINED = "world_unconstrained"  # the world with the env's business constraints off (what they cost)
FIDELITY_MULTIPLIERS = (0.6, 0.8, 0.9, 1.1, 1.2, 1.4)  # with list price (1.0): static prices across the band


# ---------------------------------------------------------------------------------------- configuration
@dataclasses.dataclass(frozen=True)
class LogsSection(ConfigBase):
    """The ``logs`` section: the logged interactions the predictor is fitted on."""

    rows: int = param(30_000, "logged offers", lo=1_000, hi=50_000_000)
    seed: int = param(0, "seed of the logging run", lo=0, hi=2**32 - 1)
    path: str | None = param(None, "use this logs parquet (with its sidecar JSON if any) instead of logging the world")

    def validate(self) -> None:
        """A given logs file must exist."""
        if self.path is not None and not Path(self.path).is_file():
            raise ValueError(f"LogsSection.path: logs file not found: {self.path}")

    def key_settings(self) -> dict[str, Any]:
        """The settings that identify the logs: a given file by its content, else the rows and seed."""
        from promogym.core.io import file_sha256

        if self.path is None:
            return {"rows": self.rows, "seed": self.seed}
        return {"file_sha256": file_sha256(self.path)}


@dataclasses.dataclass(frozen=True)
class PredictorSection(ConfigBase):
    """The ``predictor`` section: the conversion model fitted on the logs (the simulator)."""

    kind: str = param("bert", "the simulator's conversion model: bert, or a kind of the response-model registry "
                              "with a fitter (gbdt, logistic, ...)")
    encoder: str = param("minilm", "bert: 'minilm', 'tiny' or a local BERT folder")
    mode: str = param("hybrid", "bert input mode", choices=("hybrid", "text"))
    fit: Mapping[str, Any] = param(None, "overrides of the fit settings (see `promogym fit --set`)", factory=dict)
    eval_rows: int = param(20_000, "rows per evaluation set when scoring the predictor", lo=100, hi=10_000_000)
    seed: int = param(0, "seed of the split and the fit", lo=0, hi=2**32 - 1)

    def validate(self) -> None:
        """The kind has a fitter, the encoder exists and the fit settings are valid."""
        if self.kind != "bert":
            from promogym.predictors.registry import ModelSpec, model_entry

            try:
                fitter = model_entry(ModelSpec(self.kind, "model.skops.zip"), "conversion").fitter
            except ValueError as exc:
                raise ValueError(f"PredictorSection.kind: {exc}") from exc
            if fitter is None:
                raise ValueError(f"PredictorSection.kind: {self.kind!r} has no fitter in the response-model registry")
        if self.kind == "bert" and self.encoder not in ("minilm", "tiny") \
                and not (Path(self.encoder) / "config.json").is_file():
            raise ValueError(f"encoder checkpoint not found: {self.encoder} (a Hugging Face BERT folder with "
                             f"config.json, or 'minilm' / 'tiny')")
        if self.kind == "bert":
            from promogym.predictors.train import FitConfig

            FitConfig.from_dict({"encoder": self.encoder, "mode": self.mode, **self.fit})


@dataclasses.dataclass(frozen=True)
class EnvSection(ConfigBase):
    """One ``envs.<env id>`` entry: what is trained and scored on that env, and its config."""

    algos: tuple[str, ...] = param(None, "algorithms trained on this env", factory=lambda: ("ppo",))
    timesteps: int = param(50_000, "training steps per run", lo=1, hi=10**9)
    config: Mapping[str, Any] = param(None, "env config overrides (its default_config keys)", factory=dict)
    hyperparams: Mapping[str, Any] = param(None, "per-algorithm overrides of agents/hyperparams.yml", factory=dict)
    baselines: tuple[str, ...] | None = param(None, "baselines scored (default: all the env has)")


@dataclasses.dataclass(frozen=True)
class TrainSection(ConfigBase):
    """The ``train`` section: seeds, simulators trained on, evaluation during training."""

    seeds: int = param(5, "training seeds per algorithm and simulator", lo=1, hi=1000)
    simulators: tuple[str, ...] = param(None, "trained on: sim (the fitted predictor) and/or world",
                                factory=lambda: (SIM, WORLD))
    eval_freq: int = param(0, "steps between evaluations during training (0: timesteps / 20)", lo=0, hi=10**9)
    eval_episodes: int = param(10, "episodes per evaluation during training", lo=1, hi=10_000)

    def validate(self) -> None:
        """Simulators are distinct values among sim and world."""
        bad = [x for x in self.simulators if x not in (SIM, WORLD)]
        if bad or not self.simulators or len(set(self.simulators)) != len(self.simulators):
            raise ValueError("TrainSection.simulators must be distinct values among 'sim', 'world', "
                             f"got {list(self.simulators)}")


@dataclasses.dataclass(frozen=True)
class EvaluateSection(ConfigBase):
    """The ``evaluate`` section: the common evaluation episodes every policy plays."""

    episodes: int = param(100, "evaluation episodes per policy (the same seeds for all)", lo=2, hi=1_000_000)
    seed: int = param(1_000_000, "first evaluation episode seed (apart from training seeds)", lo=0, hi=2**31)
    trace_episodes: int = param(3, "episodes whose steps are recorded for trajectory plots", lo=0, hi=1000)
    sim_planners: bool = param(True, "also score myopic and best_static planned on the simulator",
                               choices=(True, False))


@dataclasses.dataclass(frozen=True)
class FidelitySection(ConfigBase):
    """The ``fidelity`` section: the predictor against the world on each env's offers."""

    episodes: int = param(2, "episodes per policy when comparing the predictor with the world on each env's offers "
                             "(`promogym fidelity`)", lo=1, hi=10_000)


@dataclasses.dataclass(frozen=True)
class ReportSection(ConfigBase):
    """Settings of the report drawn from the run (``promogym report``)."""

    bias_band: float = param(0.05, "the simulator's stated band for the ship rule: a learned policy is shipped only "
                                   "when |the simulator's bias on its own offers| is within it", lo=0.0, hi=1.0)


@dataclasses.dataclass(frozen=True)
class ExecutionSection(ConfigBase):
    """The ``execution`` section: where trials run."""

    backend: str = param("local", "where trials run", choices=("local", "ray"))
    jobs: int = param(2, "trials in parallel (local processes or Ray CPUs)", lo=1, hi=4096)
    address: str | None = param(None, "Ray cluster address ('auto', 'ray://host:10001'); none: a local Ray")


def read_yaml_config(path: str | Path, what: str) -> Any:
    """A config file's parsed YAML (an empty file: {}); FileNotFoundError or ValueError naming the file."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{what} not found: {p}")
    try:
        return yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"{p} is not valid YAML: {exc}") from exc


def read_sections(raw: Any, sections: Mapping[str, type[ConfigBase]], keys: tuple[str, ...], what: str
                  ) -> tuple[str, dict[str, Any]]:
    """A config mapping's ``name`` and its validated ``sections`` (each a :class:`ConfigBase` from its mapping;
    absent: defaults); besides them only ``name``, ``description`` and ``keys`` are allowed. ValueError naming the
    key for anything else."""
    if not isinstance(raw, Mapping):
        raise ValueError(f"{what} is a YAML mapping with keys name, {', '.join(keys)}, ...")
    known = {"name", "description", *keys, *sections}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(f"unknown config key(s): {', '.join(unknown)}; known keys: {', '.join(sorted(known))}")
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip(".") or not all(c.isalnum() or c in "-_." for c in name):
        raise ValueError(f"name must be a non-empty string of letters, digits, '-', '_', '.', got {name!r}")
    out: dict[str, Any] = {}
    for key, section in sections.items():
        value = raw.get(key) or {}
        if not isinstance(value, Mapping):
            raise ValueError(f"{key} must be a mapping, got {value!r}")
        try:
            out[key] = section.from_dict(value)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{key}: {exc}") from exc
    return name, out


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """A validated experiment config (the YAML of ``promogym experiment``)."""

    name: str
    description: str
    logs: LogsSection
    predictor: PredictorSection
    envs: dict[str, EnvSection]
    train: TrainSection
    evaluate: EvaluateSection
    execution: ExecutionSection
    fidelity: FidelitySection
    report: ReportSection = dataclasses.field(default_factory=ReportSection)

    SECTIONS: ClassVar[dict[str, type[ConfigBase]]] = {
        "logs": LogsSection, "predictor": PredictorSection, "train": TrainSection,
        "evaluate": EvaluateSection, "execution": ExecutionSection, "fidelity": FidelitySection,
        "report": ReportSection}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> ExperimentConfig:
        """Validate a parsed YAML config; every problem is a ValueError naming the key."""
        from promogym import envs
        from promogym.agents.registry import check_policy
        from promogym.agents.train import ALGOS, check_compatible, check_hyperparams, resolved_hyperparams

        name, sections = read_sections(raw, cls.SECTIONS, ("envs",), "an experiment config")
        env_raw = raw.get("envs")
        if not isinstance(env_raw, Mapping) or not env_raw:
            raise ValueError(f"envs must map env ids ({', '.join(envs.MARKET_ENV_IDS)}) to settings")
        env_sections: dict[str, EnvSection] = {}
        for env_id, value in env_raw.items():
            if env_id not in envs.MARKET_ENV_IDS:
                raise ValueError(f"envs: unknown env id {env_id!r}; choose among {', '.join(envs.MARKET_ENV_IDS)}")
            try:
                sec = EnvSection.from_dict(value or {})
            except (ValueError, TypeError) as exc:
                raise ValueError(f"envs.{env_id}: {exc}") from exc
            for algo in sec.algos:
                if algo not in ALGOS:
                    raise ValueError(f"envs.{env_id}.algos: unknown algorithm {algo!r}; "
                                     f"choose among {', '.join(ALGOS)}")
                try:
                    check_compatible(env_id, algo, dict(sec.config))
                except (ValueError, TypeError) as exc:
                    raise ValueError(f"envs.{env_id}: {exc}") from exc
            extra = sorted(set(sec.hyperparams) - set(sec.algos))
            if extra:
                raise ValueError(f"envs.{env_id}.hyperparams: {', '.join(extra)} not among its algos {list(sec.algos)}")
            for algo, params in sec.hyperparams.items():
                if not isinstance(params, Mapping):
                    raise ValueError(f"envs.{env_id}.hyperparams.{algo} must be a mapping of settings")
                try:  # the settings as training will use them: agents/hyperparams.yml, then the config's
                    check_hyperparams(algo, resolved_hyperparams(env_id, algo, params), env_id, dict(sec.config))
                except (ValueError, TypeError) as exc:
                    raise ValueError(f"envs.{env_id}.hyperparams.{algo}: {exc}") from exc
            for b in sec.baselines or ():
                try:
                    check_policy(b, env_id)
                except ValueError as exc:
                    raise ValueError(f"envs.{env_id}.baselines: {exc}") from exc
            env_sections[env_id] = sec
        description = str(raw.get("description") or "")
        return cls(name, description, envs=env_sections, **sections)

    @classmethod
    def load(cls, path: str | Path) -> ExperimentConfig:
        """Read and validate a YAML config file."""
        return cls.from_dict(read_yaml_config(path, "experiment config"))

    def to_dict(self) -> dict[str, Any]:
        """The resolved config as plain values (written as the run's experiment.yml)."""
        out: dict[str, Any] = {"name": self.name, "description": self.description}
        for key in self.SECTIONS:
            out[key] = getattr(self, key).to_dict()
        out["envs"] = {k: v.to_dict() for k, v in self.envs.items()}
        return out


# ---------------------------------------------------------------------------------------- trial payloads
def baselines_of(env_id: str, sec: EnvSection) -> list[str]:
    """The baselines scored on an env: those the config names, else the env's defaults."""
    return list(sec.baselines) if sec.baselines is not None else default_baselines(env_id)


def unconstrained_config(env_config: Mapping[str, Any]) -> dict[str, Any] | None:
    """``env_config`` with its business constraints off (``constraints: {}``), or None when it sets none (a
    missing, empty or all-null ``constraints`` mapping): the env the constraints' cost is measured against."""
    c = env_config.get("constraints")
    if not isinstance(c, Mapping) or not BusinessConstraints.coerce(c).active():
        return None
    return {**env_config, "constraints": {}}


def fit_predictor(pc: PredictorSection, logs: Path, tmp: Path, echo: Callable[[str], None] = print,
                  init_from: str | None = None) -> dict[str, Any]:
    """Fit the conversion model ``pc`` describes on ``logs`` into ``tmp`` (``model/`` for BERT, ``model.skops.zip``
    otherwise) and score it against the world's probabilities (report, calibration plot, table). ``init_from``: a
    BERT checkpoint to warm-start from (``FitConfig.init_from``); a scikit-learn kind is refitted from scratch.
    Returns the fit's seconds for the stage record."""
    from promogym.predictors.data import load_logs
    from promogym.predictors.evaluate import evaluate, plot_calibration, summary_table, write_report
    from promogym.predictors.registry import load_model, market_for_data

    start = time.perf_counter()
    if pc.kind == "bert":
        from promogym.predictors.train import FitConfig, fit

        cfg = FitConfig.from_dict({"encoder": pc.encoder, "mode": pc.mode, "seed": pc.seed, **pc.fit,
                                   **({"init_from": str(init_from)} if init_from else {})})
        fit(logs, cfg, tmp / "model")
        spec = f"bert:{tmp / 'model'}"
    else:  # the kind's fitter in the response-model registry
        from promogym.predictors.data import split_rows
        from promogym.predictors.registry import ModelSpec, model_entry

        df = load_logs(logs)
        fitter = model_entry(ModelSpec(pc.kind, "model.skops.zip"), "conversion").fitter
        if fitter is None:
            raise ValueError(f"predictor kind {pc.kind!r} has no fitter in the registry")
        fitter(df[split_rows(df, seed=pc.seed).train], tmp / "model.skops.zip", seed=pc.seed)
        spec = f"{pc.kind}:{tmp / 'model.skops.zip'}"
    fit_s = time.perf_counter() - start
    market = market_for_data(logs)
    if pc.kind == "bert" and pc.mode == "hybrid" and market is not None:
        # the envs bind every customer and product of the market: encode them once, here
        from promogym.predictors.bert import BertConversionModel

        BertConversionModel.load(tmp / "model").save_tower_cache(
            tmp / "model", market.customers.text, market.catalog.text)
    result = evaluate({pc.kind: load_model(spec, market)}, load_logs(logs), split_seed=pc.seed,
                      max_rows=pc.eval_rows)
    write_report(result, tmp)
    plot_calibration(result, tmp / "calibration.png")
    (tmp / "table.md").write_text(summary_table(result) + "\n")
    echo(f"predictor: {pc.kind} fitted and scored in {time.perf_counter() - start:.0f} s")
    return {"fit_seconds": fit_s}


def train_trial(p: dict[str, Any]) -> dict[str, Any]:
    """Train one (env, simulator, algorithm, seed) run into ``p['dir']`` (replaced only when complete)."""
    from promogym.agents.train import TrainSpec, train

    final = Path(p["dir"])
    final.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with atomic_dir(final) as tmp:
        spec = TrainSpec(p["env_id"], p["algo"], p["seed"], p["timesteps"], response=p["response"],
                         env_config=p["env_config"], eval_freq=p["eval_freq"], eval_episodes=p["eval_episodes"],
                         checkpoint_freq=max(p["timesteps"], 1), hyperparams=p["hyperparams"],
                         init_from=p.get("init_from"))
        meta = train(spec, tmp)
        shutil.rmtree(tmp / "checkpoints", ignore_errors=True)  # complete runs do not need resume points
        write_json(tmp / "trial.json", {"key": p["key"], "run_id": uuid.uuid4().hex,
                                        "seconds": time.perf_counter() - start,
                                        "wall_seconds": meta["wall_seconds"]})
    return {"dir": str(final), "seconds": time.perf_counter() - start}


def _run_id(run_dir: str) -> str | None:
    """The identity of a finished training run (a retrained run is another policy, even with equal settings)."""
    run_id = read_record(Path(run_dir) / "trial.json").get("run_id")
    return None if run_id is None else str(run_id)


def eval_trial(p: dict[str, Any]) -> dict[str, Any]:
    """Play one policy (every training seed of a learned one) on the evaluation seeds in one backend;
    writes ``<stem>.parquet`` (one row per episode) and ``<stem>.trace.parquet`` (steps of the first ones)."""
    import gymnasium as gym

    from promogym.agents.base import episode_table
    from promogym.agents.registry import PolicyContext, make_policy
    from promogym.envs.families import family_of

    start = time.perf_counter()
    env_id = p["env_id"]
    env = gym.make(env_id, config={**p["env_config"], "response": p["response"]})
    planner_env = env if p["planner_response"] == p["response"] else \
        gym.make(env_id, config={**p["env_config"], "response": p["planner_response"]})
    ctx = PolicyContext(env_id, planner_env, p.get("logs"))
    trace_rows = family_of(env_id).trace_rows
    seeds = list(range(p["first_seed"], p["first_seed"] + p["episodes"]))
    frames, traces = [], []
    for train_seed, spec in p["specs"]:
        policy = make_policy(spec, env, ctx)
        trace: list[dict[str, Any]] = []
        traced = set(seeds[:p["trace_episodes"]]) if train_seed in (-1, 0) else set()

        def hook(seed: int, e: Any, t: int, info: dict[str, Any], traced: set[int] = traced,
                 trace: list[dict[str, Any]] = trace) -> None:
            if seed in traced and trace_rows is not None:
                trace.extend(trace_rows(e, seed, t, info))

        # expected_profit_model beside expected_profit_world: with a learned backend, its bias on the policy's offers
        df = episode_table(env, policy, seeds, p["label"], on_step=hook)
        df.insert(1, "train_seed", train_seed)
        frames.append(df)
        if trace:
            traces.append(pd.DataFrame(trace).assign(train_seed=train_seed))
    table = pd.concat(frames, ignore_index=True)
    table.insert(1, "backend", p["backend"])
    table.insert(2, "env_id", env_id)
    table.insert(3, "trained_on", p["trained_on"])
    table.insert(4, "algo", p["algo"])
    stem = Path(p["stem"])
    stem.parent.mkdir(parents=True, exist_ok=True)
    if traces:
        tr = pd.concat(traces, ignore_index=True).assign(policy=p["label"], backend=p["backend"], env_id=env_id)
        with atomic_path(stem.with_suffix(".trace.parquet")) as tmp:
            tr.to_parquet(tmp, index=False)
    else:
        stem.with_suffix(".trace.parquet").unlink(missing_ok=True)  # an earlier configuration's trace
    with atomic_path(stem.with_suffix(".parquet")) as tmp:
        table.to_parquet(tmp, index=False)
    write_json(stem.with_suffix(".json"), {"key": p["key"], "seconds": time.perf_counter() - start})
    return {"stem": str(stem), "seconds": time.perf_counter() - start}


# ---------------------------------------------------------------------------------------- the runner
class Experiment(Pipeline):
    """The stages of one experiment in one run folder. The predictor stage runs only when something needs
    the simulator (training on ``sim`` or scoring planners on it); without it every policy is scored in the
    world alone."""

    def __init__(self, config: ExperimentConfig, out: Path, progress: bool = True,
                 echo: Callable[[str], None] = print) -> None:
        ex = config.execution
        super().__init__(out, progress, echo, ex.backend, ex.jobs, ex.address)
        self.cfg = config
        self.needs_simulator = SIM in config.train.simulators or config.evaluate.sim_planners

    # -- stages
    def logs(self) -> Path:
        """The logs stage: the logs parquet (logged by the world, or copied from ``logs.path``)."""
        from promogym.experiments.data import copy_logs, make_logs

        lc = self.cfg.logs

        def build(tmp: Path) -> None:
            start = time.perf_counter()
            if lc.path is not None:
                copy_logs(lc.path, tmp)
                self.echo(f"logs: copied {lc.path}")
                return
            make_logs(lc.rows, lc.seed, tmp / "logs.parquet", progress=self.progress)
            self.echo(f"logs: {lc.rows:,} rows in {time.perf_counter() - start:.0f} s")

        return self.stage("logs", key_of("logs", lc.key_settings()), build) / "logs.parquet"

    def predictor_response(self) -> str:
        """The response spec of the fitted predictor (the simulator ``sim``)."""
        folder = self.out / "predictor"
        kind = self.cfg.predictor.kind
        if kind == "bert":
            return f"bert:{(folder / 'model').resolve()}"
        return f"{kind}:{(folder / 'model.skops.zip').resolve()}"

    def predictor(self, logs: Path) -> str:
        """The predictor stage: fit and score the conversion model; its response spec."""
        pc = self.cfg.predictor
        # a scikit-learn kind's key names its file format: a model of an earlier format is refitted, not read
        file_format = [] if pc.kind == "bert" else ["model.skops.zip"]
        self.stage("predictor", key_of("predictor", pc.to_dict(), self.ids["logs"], *file_format),
                   lambda tmp: self._fit_predictor(logs, tmp))
        return self.predictor_response()

    def _fit_predictor(self, logs: Path, tmp: Path) -> dict[str, Any]:
        return fit_predictor(self.cfg.predictor, logs, tmp, self.echo)

    def fidelity(self, response: str, logs: Path) -> None:
        """For each env, the predictor against the world on the offers of a few static policies (one stage per
        env: ``fidelity/<env>/`` with fidelity.json, .md and .png)."""
        for env_id, sec in self.cfg.envs.items():
            settings: dict[str, Any] = {"env_id": env_id, "env_config": dict(sec.config),
                                        "episodes": self.cfg.fidelity.episodes, "seed": self.cfg.evaluate.seed}
            key = key_of("fidelity", settings, FIDELITY_MULTIPLIERS, self.ids["predictor"], self.ids["logs"])
            self.stage(f"fidelity/{short_name(env_id)}", key,
                       functools.partial(self._measure_fidelity, response, logs, **settings))

    def _measure_fidelity(self, response: str, logs: Path, tmp: Path, *, env_id: str, env_config: dict[str, Any],
                          episodes: int, seed: int) -> dict[str, Any]:
        import gymnasium as gym

        from promogym.experiments.fidelity import (
            NoOffersError,
            default_policies,
            measure_fidelity,
            write_fidelity,
        )

        start = time.perf_counter()
        env = gym.make(env_id, config=world_config(env_config))
        policies = default_policies(env_id, env, multipliers=FIDELITY_MULTIPLIERS, random=False)
        try:
            result = measure_fidelity(env_id, response, policies, episodes, seed, env_config, logs,
                                      progress=self.progress)
        except NoOffersError as exc:  # an env that records no offers: said in the report, not a failed run
            self.echo(f"fidelity: {short_name(env_id)} not measured ({exc})")
            return {"skipped": str(exc)}
        write_fidelity(result, tmp)
        worst = max((abs(p["profit"]["bias"]) for p in result["policies"] if p["profit"]["bias"] is not None),
                    default=float("nan"))
        self.echo(f"fidelity: {short_name(env_id)} {len(policies)} policies x {episodes} episodes in "
                  f"{time.perf_counter() - start:.0f} s (largest profit bias {worst:.1%})")
        return {}

    def train_payloads(self, response: str) -> list[dict[str, Any]]:
        """One training trial per (env, simulator, algorithm, seed)."""
        from promogym.agents.train import resolved_hyperparams

        tc = self.cfg.train
        out = []
        for env_id, sec in self.cfg.envs.items():
            for on in tc.simulators:
                for algo in sec.algos:
                    overrides = dict(sec.hyperparams.get(algo) or {})
                    resolved = resolved_hyperparams(env_id, algo, overrides)  # the stage key's: the table row too
                    for seed in range(tc.seeds):
                        resp = response if on == SIM else WORLD
                        eval_freq = tc.eval_freq or max(1, sec.timesteps // 20)
                        settings = {"env_id": env_id, "algo": algo, "seed": seed, "timesteps": sec.timesteps,
                                    "response": resp, "env_config": dict(sec.config), "eval_freq": eval_freq,
                                    "eval_episodes": tc.eval_episodes, "hyperparams": dict(overrides)}
                        keyed = {**settings, "hyperparams": resolved}
                        key = key_of("train", keyed if on == WORLD else {**keyed, "response": SIM},
                                     self.ids["predictor"] if on == SIM else None)
                        run_dir = self.out / "train" / short_name(env_id) / on / f"{algo}_s{seed}"
                        out.append({**settings, "key": key, "dir": str(run_dir), "on": on,
                                    "record": str(run_dir / "trial.json")})
        return out

    def train(self, response: str) -> list[dict[str, Any]]:
        """The train stage: every training trial; their payloads."""
        payloads = self.train_payloads(response)
        self.trials("train", payloads, train_trial,
                    lambda p: f"{short_name(p['env_id'])} {p['algo']} seed {p['seed']} on {p['on']}", unit="runs")
        return payloads

    def eval_payloads(self, response: str, runs: list[dict[str, Any]], logs: Path) -> list[dict[str, Any]]:
        """One evaluation trial per (env, policy, backend): the world, the simulator (when there is one) and, on
        an env with business constraints, the world with them off (:data:`UNCONSTRAINED`)."""
        ev = self.cfg.evaluate
        out = []
        base = {"episodes": ev.episodes, "first_seed": ev.seed, "trace_episodes": ev.trace_episodes,
                "logs": str(logs.resolve())}
        backends = (WORLD, SIM) if self.needs_simulator else (WORLD,)
        for env_id, sec in self.cfg.envs.items():
            # (label, trained_on, algo, planner, [(train_seed, spec)], key parts)
            policies: list[tuple[str, str, str, str, list[tuple[int, str]], Any]] = []
            entries = {e.name: e for e in policies_for(env_id)}
            names = baselines_of(env_id, sec)
            for b in names:
                policies.append((b, "-", "-", WORLD, [(-1, b)], None))
            if ev.sim_planners and self.needs_simulator:
                for b in names:
                    if b in entries and entries[b].plans:
                        policies.append((f"{b}@sim", "-", "-", SIM, [(-1, b)], self.ids["predictor"]))
            for on in self.cfg.train.simulators:
                for algo in sec.algos:
                    mine = [r for r in runs if r["env_id"] == env_id and r["on"] == on and r["algo"] == algo]
                    policies.append((f"{algo}@{on}", on, algo, WORLD, [(r["seed"], r["dir"]) for r in mine],
                                     [(r["key"], _run_id(r["dir"])) for r in mine]))
            for label, trained_on, algo, planner, specs, dep in policies:
                for backend in backends:
                    if backend == SIM and label in entries and entries[label].knows_truth:
                        continue  # the oracle is defined by the world; its simulated score means nothing
                    resp = response if backend == SIM else WORLD
                    plan = response if planner == SIM else WORLD
                    settings = {"env_id": env_id, "env_config": dict(sec.config), "label": label, "backend": backend,
                                "trained_on": trained_on, "algo": algo}
                    # where the logs file lies is not part of the key: a moved run folder stays valid
                    key = key_of("evaluate", settings, {k: v for k, v in base.items() if k != "logs"}, dep,
                                 self.ids["predictor"] if SIM in (backend, planner) else None)
                    stem = self.out / "evaluate" / short_name(env_id) / backend / label.replace("@", "_at_")
                    out.append({**base, **settings, "response": resp, "planner_response": plan, "specs": specs,
                                "key": key, "stem": str(stem), "record": str(stem.with_suffix(".json"))})
            free = unconstrained_config(sec.config)
            if free is None:
                continue
            # what the constraints cost: every policy (a learned one as trained, under the constraints) in the
            # world with the constraints off, on the same seeds; planners plan without them too; no traces
            for label, trained_on, algo, planner, specs, dep in policies:
                plan = response if planner == SIM else WORLD
                settings = {"env_id": env_id, "env_config": free, "label": label, "backend": UNCONSTRAINED,
                            "trained_on": trained_on, "algo": algo}
                key = key_of("evaluate", settings, {k: v for k, v in base.items() if k != "logs"}, dep,
                             self.ids["predictor"] if planner == SIM else None)
                stem = self.out / "evaluate" / short_name(env_id) / UNCONSTRAINED / label.replace("@", "_at_")
                out.append({**base, **settings, "trace_episodes": 0, "response": WORLD, "planner_response": plan,
                            "specs": specs, "key": key, "stem": str(stem), "record": str(stem.with_suffix(".json"))})
        return out

    def evaluate(self, response: str, runs: list[dict[str, Any]], logs: Path) -> None:
        """The evaluate stage: every trial of :meth:`eval_payloads`."""
        payloads = self.eval_payloads(response, runs, logs)
        # the record names this experiment's tables: a table left by an earlier configuration is ignored
        tables = [str(Path(p["stem"]).relative_to(self.out)) for p in payloads]
        self.trials("evaluate", payloads, eval_trial, lambda p: f"{short_name(p['env_id'])} {p['label']} in the "
                    f"{p['backend']}", tables=tables, unit="policy x backend tables",
                    # the slowest first, so the pool is not left waiting on one long trial at the end
                    first=lambda p: (p["label"] != "oracle", not p["label"].startswith("myopic"), p["backend"] != SIM))

    def run(self, report_out: Path | None) -> Path | None:
        """Every stage, then the report into ``report_out`` (None: no report); the report's path."""
        start = time.perf_counter()
        self.out.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.out / "experiment.yml") as tmp:
            tmp.write_text(yaml.safe_dump(self.cfg.to_dict(), sort_keys=False))
        logs = self.logs()
        response = self.predictor(logs) if self.needs_simulator else WORLD
        if self.needs_simulator:
            self.fidelity(response, logs)
        runs = self.train(response)
        self.evaluate(response, runs, logs)
        self.record_run(self.cfg.name, time.perf_counter() - start)
        if report_out is None:
            return None
        from promogym.experiments.report import write_report

        return write_report(self.out, report_out)
