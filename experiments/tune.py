"""A budgeted hyperparameter search over the trainer's settings (Optuna: TPE sampler, median pruner).

A study is ``trials`` trainings of one algorithm on one env, each for ``timesteps`` steps from the same training
seed, scored by the mean world return of the final model over ``eval_episodes`` fixed evaluation seeds
(``seed + 1,000,000 ...``: not the training seeds, and the same for every trial and every evaluation: common
random numbers). Every ``timesteps / 4`` steps the model is evaluated on those seeds and the value reported to
the trial; the median pruner stops a trial whose value is below the median of the completed trials' at the same
step (once 5 trials completed). The TPE sampler (its first 5 trials random) is seeded with ``seed`` (a resumed
study's with ``seed`` plus the number of trials it holds, so it repeats none of the earlier draws).

Trial 0 is the env's current hyperparameter table (``agents/hyperparams.yml``), enqueued with
``study.enqueue_trial``, so the best trial is never worse than it on this objective. Other trials merge the sampled
values over the table: ``policy`` and the ``policy_kwargs`` keys not searched are kept; the sampled net width ``w``
becomes ``policy_kwargs.net_arch = [w, w]`` (for ``policy: per_customer`` the widths of its shared MLPs). Each
trial's hyperparameters pass ``check_hyperparams`` before training.

Search spaces, per algorithm family:

* ppo, maskable_ppo: learning_rate log-uniform [1e-5, 1e-3]; n_steps {256, 512, 1024, 2048}; batch_size
  {64, 128, 256} (every choice divides every n_steps x n_envs, n_envs = 1); n_epochs {5, 10, 20}; gamma
  {0.95, 0.98, 0.99, 0.995, 0.999}; gae_lambda {0.9, 0.95, 0.98}; ent_coef log-uniform [1e-5, 1e-2];
  clip_range {0.1, 0.2, 0.3}; net width {32, 64, 128, 256}.
* sac, td3: learning_rate log-uniform [1e-4, 3e-3]; batch_size {128, 256, 512}; gamma {0.95, 0.98, 0.99}; tau
  {0.005, 0.01, 0.02}; learning_starts {500, 1000, 2000}; net width {64, 128, 256}.

Training is the trainer's (``promogym.agents.train``): its vectorized env with VecNormalize (observations
normalized, rewards normalized during training, gamma 0.99), its model arguments (named policies) and seed; it is
run here rather than through ``train()`` because the pruner needs the evaluations while the model learns. No model
is kept: the study's result is the hyperparameters (``promogym train`` with them trains the agent).

The study lives in a journal (Optuna's ``JournalStorage`` over a JSON-lines file, ``journal.jsonl``) in the study
folder: a study that stopped resumes where it left off (its completed, pruned and failed trials count toward
``trials``; one that was running when it stopped is run again). Nothing pickled is read back.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import inspect
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

JOURNAL = "journal.jsonl"
LOCK = "tune.lock"  # held (flock) by the command running the study
EVAL_SEED_OFFSET = 1_000_000  # evaluation seeds: seed + EVAL_SEED_OFFSET + i, never a training seed
EVALUATIONS = 4  # evaluations per trial: every timesteps / 4 steps, the last one the objective
STARTUP_TRIALS = 5  # trials sampled at random before TPE, and completed before the pruner prunes anything
FORMAT = "promogym-tune/1"


@dataclasses.dataclass(frozen=True)
class LogUniform:
    """A float searched on a log scale between ``low`` and ``high``."""

    low: float
    high: float

    def contains(self, value: Any) -> bool:
        """Whether ``value`` is a number in [low, high]."""
        return (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
                and self.low <= value <= self.high)

    def describe(self) -> str:
        """The range as the docs write it."""
        return f"log-uniform [{self.low:g}, {self.high:g}]"


@dataclasses.dataclass(frozen=True)
class Choice:
    """One of a few values."""

    values: tuple[Any, ...]

    def contains(self, value: Any) -> bool:
        """Whether ``value`` is one of the choices (of the same type: 1 is no choice of (1.0, ...))."""
        return any(type(value) is type(v) and value == v for v in self.values)

    def describe(self) -> str:
        """The choices as the docs write them."""
        return "{" + ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in self.values) + "}"


Dimension = LogUniform | Choice
NET_WIDTH = "net_width"  # searched as one width w; set as policy_kwargs.net_arch = [w, w]

_PPO: dict[str, Dimension] = {
    "learning_rate": LogUniform(1e-5, 1e-3),
    "n_steps": Choice((256, 512, 1024, 2048)),
    "batch_size": Choice((64, 128, 256)),
    "n_epochs": Choice((5, 10, 20)),
    "gamma": Choice((0.95, 0.98, 0.99, 0.995, 0.999)),
    "gae_lambda": Choice((0.9, 0.95, 0.98)),
    "ent_coef": LogUniform(1e-5, 1e-2),
    "clip_range": Choice((0.1, 0.2, 0.3)),
    NET_WIDTH: Choice((32, 64, 128, 256)),
}
_OFF_POLICY: dict[str, Dimension] = {
    "learning_rate": LogUniform(1e-4, 3e-3),
    "batch_size": Choice((128, 256, 512)),
    "gamma": Choice((0.95, 0.98, 0.99)),
    "tau": Choice((0.005, 0.01, 0.02)),
    "learning_starts": Choice((500, 1000, 2000)),
    NET_WIDTH: Choice((64, 128, 256)),
}
# the search space of each algorithm tune can search (the others have none)
SPACES: dict[str, dict[str, Dimension]] = {"ppo": _PPO, "maskable_ppo": _PPO, "sac": _OFF_POLICY, "td3": _OFF_POLICY}


def _count(name: str, value: Any, lo: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ValueError(f"TuneSpec.{name} must be an integer >= {lo}, got {value!r}")


@dataclasses.dataclass(frozen=True)
class TuneSpec:
    """What to search: ``algo`` on ``env_id`` (with ``env_config``), ``trials`` trainings of ``timesteps`` steps from
    training seed ``seed``, each scored on ``eval_episodes`` evaluation episodes; ``jobs`` trials at a time (one
    process each). Invalid counts raise ValueError naming the field."""

    env_id: str
    algo: str
    trials: int = 12
    timesteps: int = 30_000
    eval_episodes: int = 10
    seed: int = 0
    env_config: dict[str, Any] = dataclasses.field(default_factory=dict)
    jobs: int = 1

    def __post_init__(self) -> None:
        """ValueError naming the field for a count no search could use."""
        _count("trials", self.trials, 1)
        _count("timesteps", self.timesteps, 1)
        _count("eval_episodes", self.eval_episodes, 1)
        _count("seed", self.seed, 0)
        _count("jobs", self.jobs, 1)
        if self.seed + EVAL_SEED_OFFSET + self.eval_episodes > 2**31 - 1:
            raise ValueError(f"TuneSpec.seed {self.seed} is too large: evaluation seeds are seed + "
                             f"{EVAL_SEED_OFFSET:,} + i and must stay below 2**31")

    @property
    def name(self) -> str:
        """The study's file name: the env's short name and the algorithm (``DynamicPricing-v2_ppo``)."""
        return f"{self.env_id.split('/')[-1]}_{self.algo}"

    @property
    def response(self) -> str:
        """The ground truth trials train and are scored in: the world for the market envs, the env's own
        response (Hillstrom's cells) otherwise."""
        from promogym import envs

        return "world" if self.env_id in envs.MARKET_ENV_IDS else "cells"

    @property
    def eval_every(self) -> int:
        """Steps between evaluations (at least 1)."""
        return max(1, self.timesteps // EVALUATIONS)

    @property
    def eval_seeds(self) -> list[int]:
        """The evaluation episodes' seeds, the same for every trial and every evaluation."""
        start = self.seed + EVAL_SEED_OFFSET
        return list(range(start, start + self.eval_episodes))

    def settings(self) -> dict[str, Any]:
        """What a resumed study must share with the one it continues (all but ``trials`` and ``jobs``)."""
        return {"format": FORMAT, "env_id": self.env_id, "algo": self.algo, "env_config": self.env_config,
                "timesteps": self.timesteps, "eval_episodes": self.eval_episodes, "seed": self.seed}


# ---------------------------------------------------------------------------------------- hyperparameters
def space_of(algo: str) -> dict[str, Dimension]:
    """The search space of ``algo``; ValueError naming the algorithms tune can search otherwise."""
    if algo not in SPACES:
        raise ValueError(f"tune has no search space for {algo}; it searches {', '.join(SPACES)}")
    return SPACES[algo]


def describe_space(algo: str) -> dict[str, str]:
    """The search space of ``algo`` as text, one entry per searched name."""
    return {name: dim.describe() for name, dim in space_of(algo).items()}


def spaces_text() -> str:
    """Every search space in one paragraph (the command's help), algorithms sharing a space named together."""
    groups: dict[int, list[str]] = {}
    for algo, space in SPACES.items():
        groups.setdefault(id(space), []).append(algo)
    return "; ".join(f"{', '.join(algos)}: " + ", ".join(f"{k} {v}" for k, v in describe_space(algos[0]).items())
                     for algos in groups.values()) + f" ({NET_WIDTH} w sets policy_kwargs.net_arch = [w, w])"


def hyperparams_for(table: Mapping[str, Any], params: Mapping[str, Any], n_envs: int = 1) -> dict[str, Any]:
    """The table's hyperparameters with the sampled ``params`` merged over them: the net width as
    ``policy_kwargs.net_arch = [w, w]`` (other policy_kwargs kept), every other value as is. ValueError when
    batch_size does not divide n_steps x n_envs (a rollout would end in a truncated mini-batch)."""
    out = copy.deepcopy(dict(table))
    for key, value in params.items():
        if key == NET_WIDTH:
            out["policy_kwargs"] = {**dict(out.get("policy_kwargs") or {}), "net_arch": [value, value]}
        else:
            out[key] = value
    if "batch_size" in out and "n_steps" in out and (out["n_steps"] * n_envs) % out["batch_size"]:
        raise ValueError(f"batch_size {out['batch_size']} does not divide n_steps x n_envs = "
                         f"{out['n_steps'] * n_envs}")
    return out


def table_params(table: Mapping[str, Any], algo: str) -> dict[str, Any]:
    """The searched values in effect under the table (its own, else the algorithm's constructor defaults), those that
    lie in the search space: trial 0's parameters. A net width is read only from a table's ``[w, w]`` net_arch."""
    from promogym.agents.train import algo_class

    defaults = {k: p.default for k, p in inspect.signature(algo_class(algo)).parameters.items()
                if p.default is not inspect.Parameter.empty}
    out: dict[str, Any] = {}
    for name, dim in space_of(algo).items():
        if name == NET_WIDTH:
            arch = (table.get("policy_kwargs") or {}).get("net_arch")
            value = arch[0] if isinstance(arch, list) and len(arch) == 2 and arch[0] == arch[1] else None
        else:
            value = table.get(name, defaults.get(name))
        if dim.contains(value):
            out[name] = value
    return out


def _suggest(trial: Any, name: str, dim: Dimension) -> Any:
    if isinstance(dim, LogUniform):
        return trial.suggest_float(name, dim.low, dim.high, log=True)
    return trial.suggest_categorical(name, list(dim.values))


def check(spec: TuneSpec) -> dict[str, Any]:
    """ValueError before any work when the search cannot run: an unknown env id or algorithm, one the env's action
    space cannot use, an env without a world (the shop's), an algorithm without a search space, a table or env
    config the trainer refuses. Returns the table's hyperparameters (the baseline)."""
    from promogym.agents.train import check_compatible, check_hyperparams, load_hyperparams
    from promogym.envs.base import world_free

    if world_free(spec.env_id):
        raise ValueError(f"{spec.env_id} has no world to score trials in (its response is a model fitted on the "
                         f"shop); tune by hand with `promogym train` and `promogym evaluate` on the model")
    check_compatible(spec.env_id, spec.algo, spec.env_config)
    space_of(spec.algo)
    table = load_hyperparams(spec.env_id, spec.algo)
    check_hyperparams(spec.algo, table, spec.env_id, spec.env_config)
    return table


# ---------------------------------------------------------------------------------------- one trial
class _ModelPolicy:
    """A model being trained behind the common ``predict()``, reading observations with its current normalization
    statistics (as ``LearnedPolicy`` does with a saved run's)."""

    def __init__(self, model: Any, env: Any, algo: str) -> None:
        self.model, self.algo = model, algo
        self.env: Any = env.unwrapped
        self.norm = model.get_vec_normalize_env()

    def predict(self, observation: np.ndarray, state: Any = None, episode_start: Any = None,
                deterministic: bool = True) -> tuple[np.ndarray, Any]:
        obs = np.asarray(observation, dtype=np.float32)[None]
        if self.norm is not None:
            obs = self.norm.normalize_obs(obs)
        kwargs: dict[str, Any] = {"deterministic": deterministic}
        if self.algo == "maskable_ppo":
            kwargs["action_masks"] = self.env.action_masks()[None]
        action, state = self.model.predict(obs, **kwargs)
        return action[0], state


@dataclasses.dataclass
class _Scorer:
    """Mean return of a model over the fixed evaluation seeds, in the ground truth; counts the steps it plays. A
    model trained with ``train_split`` ``split`` plays the env it trains on (its batches split the same way)."""

    spec: TuneSpec
    split: int = 1
    steps: int = 0
    env: Any = None

    def __call__(self, model: Any) -> float:
        import gymnasium as gym

        from promogym.agents.base import run_episode
        from promogym.envs.base import split_config, world_config

        if self.env is None:
            env_config = split_config(self.spec.env_id, self.spec.env_config, self.split)
            cfg = (world_config(env_config) if self.spec.response == "world"
                   else {**env_config, "response": self.spec.response})
            self.env = gym.make(self.spec.env_id, config=cfg)
        policy = _ModelPolicy(model, self.env, self.spec.algo)
        rows = [run_episode(self.env, policy, s) for s in self.spec.eval_seeds]
        self.steps += sum(int(r["steps"]) for r in rows)
        return float(np.mean([r["return"] for r in rows]))


def train_and_score(spec: TuneSpec, hyperparams: Mapping[str, Any],
                    report: Callable[[float, int, int, int], bool]) -> tuple[float | None, int, int]:
    """Train ``spec.algo`` with ``hyperparams`` (the table merged with a trial's values) as the trainer does, scoring
    it every ``spec.eval_every`` steps; ``report(value, step, train_steps, eval_steps)`` returns True to stop
    (prune). Returns ``(final value or None when stopped, train steps, eval steps)``."""
    from stable_baselines3.common.callbacks import BaseCallback

    from promogym.agents.train import TrainSpec, _make_vec, algo_class, model_arguments, train_split

    # the trainer's env construction, so observation and reward normalization are exactly what `train` does
    train_spec = TrainSpec(env_id=spec.env_id, algo=spec.algo, seed=spec.seed, timesteps=spec.timesteps,
                           response=spec.response, env_config=dict(spec.env_config), n_envs=1,
                           hyperparams=dict(hyperparams))
    train_env = _make_vec(train_spec, spec.seed, training=True)
    policy, kwargs = model_arguments(spec.algo, hyperparams, train_env)
    model = algo_class(spec.algo)(policy, train_env, seed=spec.seed, verbose=0, **kwargs)
    score = _Scorer(spec, split=train_split(hyperparams))

    class Evaluate(BaseCallback):
        """Scores the model every ``eval_every`` steps (before the last) and stops when the trial is pruned."""

        next_step = spec.eval_every
        stopped = False

        def _on_step(self) -> bool:
            while self.num_timesteps >= self.next_step and self.next_step < spec.timesteps:
                step, self.next_step = self.next_step, self.next_step + spec.eval_every
                if report(score(self.model), step, self.num_timesteps, score.steps):
                    self.stopped = True
                    return False
            return True

    callback = Evaluate()
    try:
        model.learn(total_timesteps=spec.timesteps, callback=callback, progress_bar=False)
        if callback.stopped:
            return None, int(model.num_timesteps), score.steps
        value = score(model)
        report(value, spec.timesteps, int(model.num_timesteps), score.steps)
        return value, int(model.num_timesteps), score.steps
    finally:
        train_env.close()
        if score.env is not None:
            score.env.close()


# ---------------------------------------------------------------------------------------- the study
_CAUGHT = (ValueError, RuntimeError, FloatingPointError)  # a trial that fails this way is recorded, not fatal


@dataclasses.dataclass
class Objective:
    """The study's objective: one trial's hyperparameters (trial 0: the table's), trained and scored; raises
    ``optuna.TrialPruned`` when the pruner stops it. Picklable, for worker processes."""

    spec: TuneSpec
    table: dict[str, Any]

    def __call__(self, trial: Any) -> float:
        """Train and score the trial's hyperparameters; the mean evaluation return of the final model."""
        import optuna

        space = space_of(self.spec.algo)
        baseline = bool(trial.user_attrs.get("baseline"))
        # the baseline asks only for the values it was enqueued with (the table's, in the space): nothing sampled
        names = table_params(self.table, self.spec.algo) if baseline else space
        params = {name: _suggest(trial, name, space[name]) for name in names}
        start = time.perf_counter()

        def report(value: float, step: int, train_steps: int, eval_steps: int) -> bool:
            trial.set_user_attr("train_steps", train_steps)
            trial.set_user_attr("eval_steps", eval_steps)
            trial.set_user_attr("seconds", time.perf_counter() - start)
            trial.report(value, step)
            return step < self.spec.timesteps and trial.should_prune()

        try:
            hyperparams = copy.deepcopy(self.table) if baseline else hyperparams_for(self.table, params)
            trial.set_user_attr("hyperparams", hyperparams)
            from promogym.agents.train import check_hyperparams

            check_hyperparams(self.spec.algo, hyperparams, self.spec.env_id, self.spec.env_config)
            value, _, _ = train_and_score(self.spec, hyperparams, report)
        except _CAUGHT as exc:
            message = f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:500]
            trial.set_user_attr("error", message)
            log.warning("trial %s failed: %s", trial.number, message)
            raise
        if value is None:
            raise optuna.TrialPruned()
        return value


def _sampler(seed: int) -> Any:
    import optuna

    return optuna.samplers.TPESampler(n_startup_trials=STARTUP_TRIALS, seed=seed)


def _pruner() -> Any:
    import optuna

    return optuna.pruners.MedianPruner(n_startup_trials=STARTUP_TRIALS, n_warmup_steps=0)


def _storage(study_dir: Path) -> Any:
    import optuna
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(str(study_dir / JOURNAL)))


def open_study(spec: TuneSpec, study_dir: Path, table: Mapping[str, Any], worker: int = 0) -> Any:
    """The study in ``study_dir``'s journal (created with ``spec``'s settings and the baseline table when new);
    ValueError when the journal holds a study of other settings or another table."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    storage = _storage(study_dir)
    if spec.name in {s.study_name for s in storage.get_all_studies()}:  # loading writes nothing to the journal
        study = optuna.load_study(study_name=spec.name, storage=storage, sampler=_sampler(spec.seed),
                                  pruner=_pruner())
    else:
        study = optuna.create_study(study_name=spec.name, storage=storage, direction="maximize",
                                    sampler=_sampler(spec.seed), pruner=_pruner())
    # the sampler's seed: --seed for a new study; a resumed one (or another worker) draws other random numbers
    # than the run before it did, so its first trials repeat none of the earlier ones
    study.sampler = _sampler(spec.seed + len(study.get_trials(deepcopy=False)) + 100_003 * worker)
    before = study.user_attrs
    if not before:
        study.set_user_attr("settings", spec.settings())
        study.set_user_attr("table", dict(table))
        return study
    then, now = before.get("settings") or {}, spec.settings()
    if then != now:
        differ = ", ".join(f"{k} {then.get(k)!r}, not {now[k]!r}" for k in now if then.get(k) != now[k])
        raise ValueError(f"study folder {study_dir} holds a study with other settings ({differ}); pass the same "
                         f"settings to resume it or --force to start anew")
    if before.get("table") != dict(table):
        raise ValueError(f"study folder {study_dir} began from another hyperparameters.yml entry for {spec.algo} on "
                         f"{spec.env_id} (its baseline differs); pass --force to start anew")
    return study


def counted(trial: Any) -> bool:
    """Whether a trial counts toward the budget: completed, pruned or failed in training (not interrupted)."""
    from optuna.trial import TrialState

    return trial.state in (TrialState.COMPLETE, TrialState.PRUNED) or (
        trial.state == TrialState.FAIL and "error" in trial.user_attrs)


def _prepare(study: Any, table: Mapping[str, Any], algo: str) -> None:
    """Mark trials left running by a stopped process as failed (they run again), and enqueue the baseline unless it
    is counted or waiting."""
    from optuna.trial import TrialState

    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
        log.warning("trial %s was interrupted; it does not count and another trial takes its place", t.number)
    trials = study.get_trials(deepcopy=False)
    if not any(t.user_attrs.get("baseline") and (counted(t) or t.state == TrialState.WAITING) for t in trials):
        study.enqueue_trial(table_params(table, algo), user_attrs={"baseline": True})


def _work(spec: TuneSpec, study_dir: str, table: dict[str, Any], worker: int, n_trials: int) -> None:
    """One worker process of a parallel search: ``n_trials`` trials on the shared journal."""
    import torch

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // spec.jobs))
    study = open_study(spec, Path(study_dir), table, worker)
    study.optimize(Objective(spec, table), n_trials=n_trials, catch=_CAUGHT)


def _shares(n: int, jobs: int) -> list[int]:
    return [n // jobs + (1 if i < n % jobs else 0) for i in range(min(jobs, n))]


def run_study(spec: TuneSpec, study_dir: Path, table: dict[str, Any], progress: bool = False) -> Any:
    """Run the study in ``study_dir`` until ``spec.trials`` trials count (those of an earlier run included); returns
    the study."""
    study = open_study(spec, study_dir, table)
    _prepare(study, table, spec.algo)
    done = sum(counted(t) for t in study.get_trials(deepcopy=False))
    todo = max(0, spec.trials - done)
    if done:
        log.info("resuming %s: %d trial(s) done, %d to run", study_dir, done, todo)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=spec.trials, initial=min(done, spec.trials), desc=f"tune {spec.name}", unit="trial")
    try:
        if todo and spec.jobs == 1:
            callbacks = [lambda _study, _trial: bar.update(1)] if bar is not None else []
            study.optimize(Objective(spec, table), n_trials=todo, catch=_CAUGHT, callbacks=callbacks)
        elif todo:
            _parallel(spec, study_dir, table, todo, study, bar)
    finally:
        if bar is not None:
            bar.close()
    return study


def _parallel(spec: TuneSpec, study_dir: Path, table: dict[str, Any], todo: int, study: Any, bar: Any) -> None:
    import concurrent.futures
    import multiprocessing

    with concurrent.futures.ProcessPoolExecutor(max_workers=spec.jobs,
                                                mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(_work, spec, str(study_dir), table, i, n)
                   for i, n in enumerate(_shares(todo, spec.jobs))]
        pending = set(futures)
        while pending:
            _, pending = concurrent.futures.wait(pending, timeout=2.0)
            if bar is not None:
                bar.n = min(spec.trials, sum(counted(t) for t in study.get_trials(deepcopy=False)))
                bar.refresh()
        for f in futures:
            f.result()


# ---------------------------------------------------------------------------------------- results
def _state(trial: Any) -> str:
    from optuna.trial import TrialState

    if trial.state == TrialState.FAIL and "error" not in trial.user_attrs:
        return "interrupted"
    return str(trial.state.name).lower()


def _seconds(trial: Any) -> float | None:
    if trial.datetime_start is not None and trial.datetime_complete is not None:
        return (trial.datetime_complete - trial.datetime_start).total_seconds()
    return trial.user_attrs.get("seconds")


def trial_record(trial: Any) -> dict[str, Any]:
    """One trial as the results JSON lists it."""
    attrs = trial.user_attrs
    record: dict[str, Any] = {
        "number": trial.number, "state": _state(trial), "baseline": bool(attrs.get("baseline")),
        "params": dict(trial.params), "value": trial.value,
        "intermediate": {str(k): v for k, v in sorted(trial.intermediate_values.items())},
        "hyperparams": attrs.get("hyperparams"), "train_steps": attrs.get("train_steps", 0),
        "eval_steps": attrs.get("eval_steps", 0), "wall_seconds": _seconds(trial)}
    if "error" in attrs:
        record["error"] = attrs["error"]
    return record


def summarize(spec: TuneSpec, study: Any, table: Mapping[str, Any], wall_seconds: float,
              command: str, commit: str | None) -> dict[str, Any]:
    """The results: budget, search space, every trial, the baseline and the best trial, provenance (``commit``:
    the code's commit when the search started)."""
    from promogym.core.io import machine_info, package_versions

    trials = [trial_record(t) for t in study.get_trials(deepcopy=False)
              if _state(t) in ("complete", "pruned", "fail", "interrupted")]
    complete = [t for t in trials if t["state"] == "complete"]
    baseline = next((t for t in complete if t["baseline"]), None)
    best = max(complete, key=lambda t: t["value"]) if complete else None
    train_steps = sum(t["train_steps"] for t in trials)
    eval_steps = sum(t["eval_steps"] for t in trials)
    versions = package_versions()
    try:
        import importlib.metadata

        versions["optuna"] = importlib.metadata.version("optuna")
    except importlib.metadata.PackageNotFoundError:
        pass
    return {
        "format": FORMAT, "env_id": spec.env_id, "algo": spec.algo, "env_config": spec.env_config,
        "response": spec.response, "command": command,
        "objective": f"mean {spec.response} return of the final model over {spec.eval_episodes} evaluation "
                     f"episodes (seeds {spec.eval_seeds[0]}..{spec.eval_seeds[-1]}), training seed {spec.seed}",
        "budget": {
            "trials": spec.trials, "trials_counted": sum(t["state"] != "interrupted" for t in trials),
            "complete": len(complete), "pruned": sum(t["state"] == "pruned" for t in trials),
            "failed": sum(t["state"] == "fail" for t in trials),
            "interrupted": sum(t["state"] == "interrupted" for t in trials),
            "timesteps_per_trial": spec.timesteps, "eval_every": spec.eval_every,
            "eval_episodes": spec.eval_episodes,
            "env_steps": {"train": train_steps, "eval": eval_steps, "total": train_steps + eval_steps},
            "wall_seconds": sum(t["wall_seconds"] or 0.0 for t in trials),
            "wall_seconds_this_run": wall_seconds, "jobs": spec.jobs, "machine": machine_info(),
            "cpus": os.cpu_count()},
        "sampler": f"TPESampler(n_startup_trials={STARTUP_TRIALS}, seed={spec.seed}; a resumed study's sampler "
                   f"is seeded with seed + the number of trials before it)",
        "pruner": f"MedianPruner(n_startup_trials={STARTUP_TRIALS}, evaluations every {spec.eval_every} steps)",
        "search_space": describe_space(spec.algo),
        "table": dict(table),
        "baseline": None if baseline is None else {k: baseline[k] for k in ("number", "value", "hyperparams")},
        "best": None if best is None else {
            **{k: best[k] for k in ("number", "value", "params", "hyperparams")},
            "over_baseline": None if baseline is None else best["value"] - baseline["value"]},
        "trials": trials,
        "commit": commit, "versions": versions,
    }


def _trials(n: int) -> str:
    return f"{n} trial{'' if n == 1 else 's'}"


def best_yaml(result: Mapping[str, Any]) -> str:
    """The best hyperparameters as an ``agents/hyperparams.yml`` entry, under a comment stating the budget and
    the command."""
    import yaml

    b, best, base = result["budget"], result["best"], result["baseline"]
    header = [
        f"# promogym tune: best {result['algo']} hyperparameters on {result['env_id']} (Optuna TPE sampler, median "
        f"pruner)",
        f"# budget: {_trials(b['trials_counted'])} ({b['complete']} complete, {b['pruned']} pruned, {b['failed']} "
        f"failed) x {b['timesteps_per_trial']:,} timesteps; {b['env_steps']['total']:,} env steps, "
        f"{b['wall_seconds']:,.0f} s on {b['cpus']} cpus",
        f"# objective: {result['objective']}",
        f"# best: trial {best['number']}, {best['value']:.6g}" + (
            "" if base is None else f"; baseline (the table's values, trial {base['number']}): {base['value']:.6g}"),
        f"# command: {result['command']}",
        f"# commit: {result['commit']}",
    ]
    body = yaml.safe_dump({result["env_id"]: {result["algo"]: best["hyperparams"]}}, sort_keys=False)
    return "\n".join(header) + "\n" + body


def plot_history(result: Mapping[str, Any], path: Path) -> None:
    """The optimisation history as a PNG: each trial's value (pruned ones at their last evaluation), the best so
    far and the baseline."""
    from promogym.core.plots import pyplot, save_png

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    complete = [t for t in result["trials"] if t["state"] == "complete"]
    pruned = [t for t in result["trials"] if t["state"] == "pruned" and t["intermediate"]]
    ax.plot([t["number"] for t in complete], [t["value"] for t in complete], "o", color="tab:blue",
            label="complete")
    if pruned:
        ax.plot([t["number"] for t in pruned], [list(t["intermediate"].values())[-1] for t in pruned], "x",
                color="tab:gray", label="pruned (last evaluation)")
    if complete:
        best = np.maximum.accumulate([t["value"] for t in complete])
        ax.step([t["number"] for t in complete], best, where="post", color="tab:orange", label="best so far")
    if result["baseline"] is not None:
        ax.axhline(result["baseline"]["value"], ls="--", color="tab:green", lw=1, label="baseline (table)")
    ax.set_xlabel("trial")
    ax.set_ylabel(f"mean {result['response']} return")
    ax.set_title(f"{result['algo']} on {result['env_id']}: {result['budget']['timesteps_per_trial']:,} steps per trial")
    ax.legend(loc="best", fontsize=8)
    save_png(fig, path)


def output_files(out: Path, name: str) -> dict[str, Path]:
    """The files a study writes in ``out``: ``json``, ``yml``, ``png`` and its ``study`` folder."""
    return {"json": out / f"{name}.json", "yml": out / f"{name}.yml", "png": out / f"{name}.png",
            "study": out / name}


@contextlib.contextmanager
def study_lock(study_dir: Path) -> Iterator[None]:
    """Hold the study folder for one command (an advisory lock, released when the process ends however it ends);
    ValueError when another command holds it (it would take that one's running trial for an interrupted one)."""
    import fcntl

    with open(study_dir / LOCK, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ValueError(f"study folder {study_dir} is in use by another promogym tune; wait for it to "
                             f"end") from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def clear_study(study_dir: Path) -> None:
    """Remove the journal (and its lock) this command wrote in ``study_dir``; nothing else there."""
    for f in (study_dir / JOURNAL, study_dir / f"{JOURNAL}.lock"):
        f.unlink(missing_ok=True)


def tune(spec: TuneSpec, out: Path, progress: bool = False, command: str = "") -> dict[str, Any]:
    """Run (or resume) the search and write its results in ``out`` (:func:`output_files`): the JSON, the YAML
    entry of the best hyperparameters and the history PNG. Returns the results; ValueError for a study folder
    holding other settings."""
    from promogym.core.io import atomic_path, git_commit, write_json

    table = check(spec)
    files = output_files(out, spec.name)
    files["study"].mkdir(parents=True, exist_ok=True)
    start, commit = time.perf_counter(), git_commit()
    study = run_study(spec, files["study"], table, progress)
    result = summarize(spec, study, table, time.perf_counter() - start, command, commit)
    write_json(files["json"], result)
    if result["best"] is not None:
        with atomic_path(files["yml"]) as tmp:
            tmp.write_text(best_yaml(result))
        plot_history(result, files["png"])
    return result


__all__ = ["SPACES", "Choice", "LogUniform", "Objective", "TuneSpec", "best_yaml", "check", "clear_study",
           "counted", "describe_space", "hyperparams_for", "open_study", "output_files", "plot_history",
           "run_study", "space_of", "spaces_text", "study_lock", "summarize", "table_params", "train_and_score",
           "trial_record", "tune"]
