"""Training Stable-Baselines3 agents on the promogym environments.

One run folder per run: ``config.yml`` (the resolved settings), ``model.zip`` (final),
``best_model.zip`` (best periodic evaluation) with ``best_vecnormalize.json`` (the normalization
statistics it was evaluated with), ``vecnormalize.json`` (the final observation-normalization
statistics; each model is always applied with its own), ``evaluations.npz`` (the periodic evaluations),
``checkpoints/`` (``model_<n>_steps.zip`` with ``model_vecnormalize_<n>_steps.json`` every
``checkpoint_freq`` steps, for ``resume``), ``metadata.json`` (git commit, package versions, seed, the
response model's hash, wall time) and ``manifest.json``.

A run may start from an earlier run's policy (``TrainSpec.init_from``, the warm start of a closed loop that
retrains the agent on a refitted simulator each round): the new run builds its model from its own spec (env
config, response, hyperparameters, seed) and copies in the earlier run's final policy weights (``model.zip``,
every tensor of the policy: actor, critic, target networks, log std) and its final observation and return
normalization statistics (``vecnormalize.json``), both read through the checked readers resume uses (the
earlier run's manifest, or ``trust``). The final model rather than the best one: the best was picked on a few
evaluation episodes of the earlier simulator (a noisy choice the new simulator does not vouch for), while the final
weights are where optimisation stood, and they go with the statistics they were trained on. Optimizer moments,
replay buffers, SAC's learned entropy coefficient and the step count start afresh: they belong to the earlier
objective. The earlier run must be of the same env id and algorithm, on the same observation and action spaces,
with the same policy architecture (class, tensor names and shapes, layers); anything else is refused before the
run folder is touched. ``config.yml`` keeps the folder and ``metadata.json`` its model's sha256.

A run trains where ``train_split`` (a hyperparameter, default 1) says: with ``k`` > 1 the training and its
evaluations play the env with every step's batch of arrivals split into ``k`` steps of a batch ``k`` times smaller
(:func:`promogym.envs.base.split_config`; PromoRecommendation-v0's 8 visitors a step become 8 steps of one), so
each reward sums fewer decisions. Only a policy whose parameters do not depend on the batch (``per_customer``) can
then act on the env as configured: :class:`LearnedPolicy` loads it with that env's spaces and repeats the
normalization statistics of the smaller batch over the larger one.

Nothing is unpickled from a file the project did not write. The normalization statistics are plain JSON
(running means, variances and counts, clip values, epsilon, gamma) from which ``VecNormalize`` is rebuilt.
SB3's model zips hold cloudpickled objects, so they are loaded only from run folders whose ``manifest.json``
(the sha256 of every file the run wrote, rewritten atomically after each checkpoint and last of all) lists
them with their current hash; any other folder is refused unless the caller passes ``trust=True``
(``--trust``), which runs code from the folder's pickles.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import importlib
import inspect
import io
import json
import logging
import math
import os
import re
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import yaml
from gymnasium import spaces

from promogym import envs
from promogym.core.io import atomic_path, git_commit, package_versions, write_json
from promogym.envs.base import probe_config, split_config

log = logging.getLogger(__name__)

HYPERPARAMS = Path(__file__).with_name("hyperparams.yml")
# the reward a model trains on: the env's (realized) or its expectation under the response backend (ExpectedReward)
TRAINING_REWARDS = ("realized", "expected")
# hyperparameters promogym reads itself (not the algorithm's): how the reward is computed, how the batches split
OWN_KEYS = ("training_reward", "train_split")
ALGOS = ("ppo", "a2c", "sac", "td3", "dqn", "maskable_ppo", "recurrent_ppo")
# which action spaces each algorithm can act in
SUPPORTED: dict[str, tuple[type[spaces.Space[Any]], ...]] = {
    "ppo": (spaces.Box, spaces.Discrete, spaces.MultiDiscrete),
    "a2c": (spaces.Box, spaces.Discrete, spaces.MultiDiscrete),
    "recurrent_ppo": (spaces.Box, spaces.Discrete, spaces.MultiDiscrete),
    "sac": (spaces.Box,),
    "td3": (spaces.Box,),
    "dqn": (spaces.Discrete,),
    "maskable_ppo": (spaces.Discrete, spaces.MultiDiscrete),
}
MANIFEST = "manifest.json"
MANIFEST_FORMAT = "promogym-run-manifest/1"
NORM_FORMAT = "promogym-vecnormalize/1"
TRUST_HELP = ("load the run folder even without a valid manifest.json: SB3 model zips hold pickles, so this runs "
              "code from the folder's files; only for folders you trust")


def _count(name: str, value: Any, lo: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ValueError(f"TrainSpec.{name} must be an integer >= {lo}, got {value!r}")


@dataclasses.dataclass
class TrainSpec:
    """What to train: ``algo`` on ``env_id`` (with ``response`` and ``env_config``) for ``timesteps`` steps from
    ``seed``; evaluation and checkpoint frequencies in steps, parallel envs and hyperparameter overrides of the YAML
    table's; ``init_from``, an earlier run folder whose final policy weights and normalization statistics the run
    starts from (a warm start; None: a fresh policy). Invalid counts or hyperparameters raise ValueError naming the
    field on construction."""

    env_id: str
    algo: str
    seed: int
    timesteps: int
    response: str = "world"
    env_config: dict[str, Any] = dataclasses.field(default_factory=dict)
    eval_freq: int = 5000
    eval_episodes: int = 5
    checkpoint_freq: int = 10000
    n_envs: int = 1
    hyperparams: dict[str, Any] = dataclasses.field(default_factory=dict)
    init_from: str | None = None

    def __post_init__(self) -> None:
        """ValueError naming the field for settings no training could use (checked before any work)."""
        if self.init_from is not None:
            if not isinstance(self.init_from, str | os.PathLike) or not str(self.init_from):
                raise ValueError(f"TrainSpec.init_from must be a run folder path or None, got {self.init_from!r}")
            self.init_from = str(self.init_from)
        _count("seed", self.seed, 0)
        _count("timesteps", self.timesteps, 1)
        _count("eval_freq", self.eval_freq, 1)
        _count("eval_episodes", self.eval_episodes, 1)
        _count("checkpoint_freq", self.checkpoint_freq, 1)
        _count("n_envs", self.n_envs, 1)
        if not isinstance(self.hyperparams, Mapping):
            raise ValueError(f"TrainSpec.hyperparams must be a mapping, got {self.hyperparams!r}")
        # the overrides with the table's row under them: an override is checked against the policy the run uses
        check_hyperparams(self.algo, resolved_hyperparams(self.env_id, self.algo, self.hyperparams))


def algo_class(algo: str) -> Any:
    """The SB3 (or sb3-contrib) class of an algorithm name of ``ALGOS`` (ValueError naming the known ones otherwise)."""
    if algo not in ALGOS:
        raise ValueError(f"unknown algorithm {algo!r}; choose one of {', '.join(ALGOS)}")
    if algo in ("maskable_ppo", "recurrent_ppo"):
        import sb3_contrib

        return {"maskable_ppo": sb3_contrib.MaskablePPO, "recurrent_ppo": sb3_contrib.RecurrentPPO}[algo]
    import stable_baselines3

    return getattr(stable_baselines3, algo.upper())


def policy_name(algo: str) -> str:
    """The SB3 policy class name an algorithm trains by default: ``MlpLstmPolicy`` for recurrent_ppo, else
    ``MlpPolicy``."""
    return "MlpLstmPolicy" if algo == "recurrent_ppo" else "MlpPolicy"


@dataclasses.dataclass(frozen=True)
class PolicyChoice:
    """A policy a hyperparameter table may name instead of the default (``policy: <name>``): its class for each
    algorithm that can train it (``"module:Class"``; the others cannot use it), and ``env_kwargs``, a
    ``"module:function"`` reading the policy kwargs it needs from an env (ValueError when the env does not fit)."""

    classes: Mapping[str, str]
    env_kwargs: str | None = None


# the policies a table may name besides policy_name(algo); each class is imported only when used
POLICIES: dict[str, PolicyChoice] = {
    "per_customer": PolicyChoice(
        {"maskable_ppo": "promogym.agents.per_customer:PerCustomerPolicy",
         "ppo": "promogym.agents.per_customer:PerCustomerPPOPolicy"},
        env_kwargs="promogym.agents.per_customer:env_policy_kwargs"),  # one MLP scores each customer of a cohort
}


def _import(path: str) -> Any:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def _policy_choice(algo: str, params: Mapping[str, Any]) -> tuple[str, PolicyChoice | None]:
    """(name, its PolicyChoice, None for the default) of the hyperparameters' ``policy``; ValueError naming the
    known policies for an unknown name, and the algorithms that can train it for a policy ``algo`` cannot."""
    default = policy_name(algo)
    name = params.get("policy", default)
    if name == default:
        return default, None
    if not isinstance(name, str) or name not in POLICIES:
        known = [default, *(n for n, c in POLICIES.items() if algo in c.classes)]
        raise ValueError(f"hyperparameter policy {name!r} is not a known policy for {algo}; choose one of "
                         f"{', '.join(known)}")
    choice = POLICIES[name]
    if algo not in choice.classes:
        raise ValueError(f"hyperparameter policy {name!r} trains with {', '.join(choice.classes)} only, not {algo}")
    return name, choice


def _unwrapped(env: Any) -> Any:
    """The base env of a gym env, its wrappers or a VecEnv (the first of its envs)."""
    if hasattr(env, "get_attr") and not isinstance(env, gym.Env):
        return env.get_attr("unwrapped")[0]
    return getattr(env, "unwrapped", env)


def model_arguments(algo: str, params: Mapping[str, Any], env: Any) -> tuple[Any, dict[str, Any]]:
    """``(policy, keyword arguments)`` to build ``algo``'s model on ``env`` (a gym env or VecEnv) with these
    hyperparameters: ``policy`` taken out of them, and the policy kwargs the named policy reads from the env filled
    in (ValueError when the env does not fit it, or a table sets one to another value). A deep copy: SB3 adds its
    defaults (torch classes) to policy_kwargs in place."""
    kwargs = copy.deepcopy(dict(params))
    kwargs.pop("policy", None)
    for key in OWN_KEYS:
        kwargs.pop(key, None)
    name, choice = _policy_choice(algo, params)
    if choice is None:
        return name, kwargs
    if choice.env_kwargs is not None:
        base = _unwrapped(env)
        try:
            from_env = _import(choice.env_kwargs)(base)
        except ValueError as exc:
            raise ValueError(f"hyperparameter policy {name!r}: {exc}") from None
        policy_kwargs = dict(kwargs.get("policy_kwargs") or {})
        for key, value in from_env.items():
            if key in policy_kwargs and policy_kwargs[key] != value:
                raise ValueError(f"hyperparameter policy_kwargs.{key} is {policy_kwargs[key]!r} but the env's is "
                                 f"{value!r} (it is read from the env; leave it out)")
            policy_kwargs[key] = value
        kwargs["policy_kwargs"] = policy_kwargs
    return _import(choice.classes[algo]), kwargs


# ---------------------------------------------------------------------------------------- hyperparameters
# what train() passes itself: not hyperparameters
_RESERVED = ("policy", "env", "seed", "verbose", "_init_setup_model")
_POS_INT = ("n_steps", "batch_size", "n_epochs", "buffer_size", "target_update_interval", "policy_delay",
            "stats_window_size")
_NONNEG_INT = ("learning_starts",)
_UNIT = ("gamma", "gae_lambda", "tau", "exploration_fraction", "exploration_initial_eps", "exploration_final_eps")
_POSITIVE = ("learning_rate", "clip_range", "max_grad_norm", "rms_prop_eps")
_NONNEG = ("vf_coef", "target_policy_noise", "target_noise_clip")
_OPT_POSITIVE = ("clip_range_vf", "target_kl")
_BOOL = ("normalize_advantage", "use_sde", "use_sde_at_warmup", "optimize_memory_usage", "use_rms_prop")


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _integer(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_value(key: str, v: Any) -> str | None:
    """Why ``v`` is no value of the hyperparameter ``key`` (None when it is one or the key is not checked)."""
    if key in _POS_INT and not (_integer(v) and v >= 1):
        return "an integer >= 1"
    if key in _NONNEG_INT and not (_integer(v) and v >= 0):
        return "an integer >= 0"
    if key in _UNIT and not (_number(v) and 0 <= v <= 1):
        return "a number in [0, 1]"
    if key in _POSITIVE and not (_number(v) and v > 0):
        return "a number > 0"
    if key in _NONNEG and not (_number(v) and v >= 0):
        return "a number >= 0"
    if key in _OPT_POSITIVE and not (v is None or (_number(v) and v > 0)):
        return "null or a number > 0"
    if key in _BOOL and not isinstance(v, bool):
        return "true or false"
    if key == "ent_coef" and not ((_number(v) and v >= 0) or (isinstance(v, str) and re.fullmatch(
            r"auto(_\d+(\.\d*)?([eE]-?\d+)?)?", v))):
        return "a number >= 0 (or 'auto' / 'auto_<init>' for sac)"
    if key == "gradient_steps" and not (_integer(v) and (v >= 1 or v == -1)):
        return "an integer >= 1 or -1"
    if key == "sde_sample_freq" and not (_integer(v) and v >= -1):
        return "an integer >= -1"
    if key == "train_freq" and not ((_integer(v) and v >= 1) or (
            isinstance(v, (list, tuple)) and len(v) == 2 and _integer(v[0]) and v[0] >= 1
            and v[1] in ("step", "episode"))):
        return "an integer >= 1 or [n, step|episode]"
    if key in ("policy_kwargs", "replay_buffer_kwargs", "rollout_buffer_kwargs") and not (
            v is None or isinstance(v, Mapping)):
        return "a mapping"
    return None


def check_hyperparams(algo: str, params: Mapping[str, Any], env_id: str | None = None,
                      env_config: dict[str, Any] | None = None) -> None:
    """ValueError naming the key for a hyperparameter the algorithm's constructor does not take, or a value of
    the wrong type or range for the common numeric ones (and for ``policy_kwargs`` keys its policy does not
    take) — before any training. ``policy`` names the policy (``POLICIES``; default ``policy_name(algo)``): an
    unknown name, or one the algorithm cannot train, is a ValueError; given ``env_id`` (and its ``env_config``),
    so is a policy that does not fit the env (e.g. ``per_customer`` on an env without a per-customer layout)."""
    cls = algo_class(algo)
    name, choice = _policy_choice(algo, params)
    accepted = set(inspect.signature(cls).parameters) - set(_RESERVED)
    for key, value in params.items():
        if key == "policy":
            continue
        if key == "training_reward":
            if value not in TRAINING_REWARDS:
                raise ValueError(f"hyperparameter training_reward must be one of {', '.join(TRAINING_REWARDS)}, "
                                 f"got {value!r}")
            continue
        if key == "train_split":
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"hyperparameter train_split must be an integer >= 1, got {value!r}")
            if value > 1 and name != "per_customer":
                raise ValueError(f"hyperparameter train_split {value} needs policy per_customer (parameters that do "
                                 f"not depend on the batch size), not {name}")
            if env_id is not None:
                split_config(env_id, env_config, value)
            continue
        if key not in accepted:
            near = [k for k in sorted(accepted) if k[:3] == str(key)[:3]]
            hint = f" (did you mean {', '.join(near)}?)" if near else ""
            raise ValueError(f"hyperparameter {key!r} is not a setting of {cls.__name__}{hint}; it takes "
                             f"{', '.join(sorted(accepted))}")
        why = _check_value(key, value)
        if why is not None:
            raise ValueError(f"hyperparameter {key} must be {why}, got {value!r}")
    if choice is not None and choice.env_kwargs is not None and env_id is not None:
        check_compatible(env_id, algo, env_config)
        model_arguments(algo, params, gym.make(env_id, config=probe_config(env_id, env_config)))
    kwargs = params.get("policy_kwargs") or {}
    policy_cls = cls.policy_aliases.get(name) if choice is None else _import(choice.classes[algo])
    if kwargs and policy_cls is not None:
        taken = set(inspect.signature(policy_cls).parameters) - {"observation_space", "action_space", "lr_schedule"}
        for key in kwargs:
            if key not in taken:
                raise ValueError(f"hyperparameter policy_kwargs.{key} is not a setting of {policy_cls.__name__}; it "
                                 f"takes {', '.join(sorted(taken))}")
        arch = kwargs.get("net_arch")
        if arch is not None and not _net_arch_ok(arch):
            raise ValueError(f"hyperparameter policy_kwargs.net_arch must be a list of layer widths >= 1 (or "
                             f"{{pi: [...], vf: [...]}}), got {arch!r}")
        if "activation_fn" in kwargs:
            raise ValueError("hyperparameter policy_kwargs.activation_fn cannot be set from a config (it is a "
                             "torch class)")


def _net_arch_ok(arch: Any) -> bool:
    if isinstance(arch, Mapping):
        return all(_net_arch_ok(v) for v in arch.values()) and set(arch) <= {"pi", "vf", "qf"}
    return isinstance(arch, list) and all(_integer(w) and w >= 1 for w in arch)


def check_compatible(env_id: str, algo: str, env_config: dict[str, Any] | None = None) -> None:
    """Raise ValueError before any training when the env id, algorithm or action space do not fit."""
    if env_id not in envs.ENV_IDS:
        raise ValueError(f"unknown env id {env_id!r}; choose one of {', '.join(envs.ENV_IDS)}")
    algo_class(algo)
    space = gym.make(env_id, config=probe_config(env_id, env_config)).action_space
    if not isinstance(space, SUPPORTED[algo]):
        raise ValueError(f"{algo} cannot act in {env_id}'s action space {space}; it needs "
                         f"{' or '.join(s.__name__ for s in SUPPORTED[algo])}")


def resolved_hyperparams(env_id: str, algo: str, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The hyperparameters a run of ``algo`` on ``env_id`` trains with: the table's row with ``overrides`` on top
    (what a pipeline stage's key must hold, so that a changed table row retrains rather than reuses)."""
    return {**load_hyperparams(env_id, algo), **(overrides or {})}


def load_hyperparams(env_id: str, algo: str) -> dict[str, Any]:
    """The hyperparameters of ``algo`` on ``env_id`` from the YAML table (``hyperparams.yml``); empty when not
    listed."""
    table = yaml.safe_load(HYPERPARAMS.read_text())
    return dict(table.get(env_id, {}).get(algo, {}))


def response_hash(response: str) -> str | None:
    """sha256 over a learned response model's files (None for the world)."""
    from promogym.predictors.registry import parse_spec

    spec = parse_spec(response)
    if spec.kind == "world" or spec.path is None:
        return None
    p = Path(spec.path)
    files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()


# ---------------------------------------------------------------------------------------- normalization files
def normalization_dict(vec: Any) -> dict[str, Any]:
    """The statistics and settings of a VecNormalize, as plain JSON values (float64 exactly: JSON floats
    round-trip)."""
    if isinstance(vec.obs_rms, dict):
        raise ValueError("dict observation spaces are not supported by the normalization file")

    def rms(r: Any) -> dict[str, Any]:
        return {"mean": np.asarray(r.mean, dtype=np.float64).tolist(),
                "var": np.asarray(r.var, dtype=np.float64).tolist(), "count": float(r.count)}

    return {"format": NORM_FORMAT, "norm_obs": bool(vec.norm_obs), "norm_reward": bool(vec.norm_reward),
            "clip_obs": float(vec.clip_obs), "clip_reward": float(vec.clip_reward), "gamma": float(vec.gamma),
            "epsilon": float(vec.epsilon), "obs_rms": rms(vec.obs_rms), "ret_rms": rms(vec.ret_rms)}


def _norm_bytes(vec: Any) -> bytes:
    return (json.dumps(normalization_dict(vec), indent=1) + "\n").encode()


def normalization_from_bytes(data: bytes, venv: Any, where: Path | str, training: bool = False,
                             widen: Callable[[np.ndarray], np.ndarray] | None = None) -> Any:
    """A VecNormalize around ``venv`` rebuilt from a normalization file's bytes; ValueError naming ``where`` when
    the file is truncated, malformed or does not fit the env's observations. ``widen`` maps the file's observation
    means and variances onto the env's observation (statistics of a smaller batch repeated over a larger one)."""
    from stable_baselines3.common.vec_env import VecNormalize

    try:
        raw = json.loads(data.decode())
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"normalization file {where} is not valid JSON (truncated or not written by promogym?): "
                         f"{str(exc).splitlines()[0]}") from None
    try:
        if not isinstance(raw, dict) or raw.get("format") != NORM_FORMAT:
            raise ValueError(f"format is not {NORM_FORMAT}")
        settings = {k: float(raw[k]) for k in ("clip_obs", "clip_reward", "gamma", "epsilon")}
        if not all(math.isfinite(v) for v in settings.values()) or settings["epsilon"] <= 0 \
                or settings["clip_obs"] <= 0 or settings["clip_reward"] <= 0 or not 0 <= settings["gamma"] <= 1:
            raise ValueError(f"bad settings {settings}")
        flags = {k: raw[k] for k in ("norm_obs", "norm_reward")}
        if not all(isinstance(v, bool) for v in flags.values()):
            raise ValueError("norm_obs and norm_reward must be true or false")
        vec = VecNormalize(venv, training=training, norm_obs=flags["norm_obs"], norm_reward=flags["norm_reward"],
                           clip_obs=settings["clip_obs"], clip_reward=settings["clip_reward"],
                           gamma=settings["gamma"], epsilon=settings["epsilon"])
        obs_rms: Any = vec.obs_rms  # one RunningMeanStd for a Box observation space
        for name, shape in (("obs_rms", obs_rms.mean.shape), ("ret_rms", ())):
            part = raw[name]
            mean = np.asarray(part["mean"], dtype=np.float64)
            var = np.asarray(part["var"], dtype=np.float64)
            count = float(part["count"])
            if widen is not None and name == "obs_rms" and mean.ndim == 1 and mean.shape == var.shape:
                mean, var = widen(mean), widen(var)
            if mean.shape != shape or var.shape != shape:
                raise ValueError(f"{name} has shape {mean.shape}, the env's is {shape}")
            if not (np.isfinite(mean).all() and np.isfinite(var).all() and (var >= 0).all() and count > 0):
                raise ValueError(f"{name} holds non-finite or negative statistics")
            target = getattr(vec, name)
            target.mean, target.var, target.count = mean, var, count
    except (KeyError, TypeError, ValueError) as exc:
        what = f"missing {exc}" if isinstance(exc, KeyError) else str(exc)
        raise ValueError(f"normalization file {where} is malformed: {what}") from None
    return vec


# ---------------------------------------------------------------------------------------- manifest
def read_manifest(run: Path) -> dict[str, str] | None:
    """The run's manifest (relative path -> sha256), None when it has none or it is not a valid one."""
    try:
        raw = json.loads((run / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    files = raw.get("files") if isinstance(raw, dict) and raw.get("format") == MANIFEST_FORMAT else None
    if not isinstance(files, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
        return None
    return dict(files)


def write_manifest(run: Path, files: Mapping[str, str]) -> None:
    """The manifest, written atomically (after the files it lists)."""
    write_json(run / MANIFEST, {"format": MANIFEST_FORMAT, "files": dict(sorted(files.items()))})


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_verified(run: Path, rel: str, trust: bool = False, manifest: Mapping[str, str] | None = None) -> bytes:
    """The bytes of ``run/rel`` if the run's manifest lists them with this hash; ValueError naming the folder and
    the file otherwise, unless ``trust``. The bytes checked are the bytes returned (no second read)."""
    path = run / rel
    if not path.is_file():
        raise ValueError(f"run folder {run}: {rel} not found")
    data = path.read_bytes()
    if trust:
        return data
    files = manifest if manifest is not None else read_manifest(run)
    hint = "pass --trust (trust=True) only if you trust it: its pickles run code"
    if files is None:
        raise ValueError(f"refusing to load {path}: run folder {run} has no valid {MANIFEST} (not written by "
                         f"promogym's train); {hint}")
    if rel not in files:
        raise ValueError(f"refusing to load {path}: run folder {run}'s {MANIFEST} does not list {rel}; {hint}")
    if files[rel] != _sha(data):
        raise ValueError(f"refusing to load {path}: run folder {run}: {rel} differs from its {MANIFEST} entry "
                         f"(modified or truncated); {hint}")
    return data


def _write_bytes(path: Path, data: bytes) -> str:
    """Write ``data`` atomically (with the umask's permissions, as SB3's own files had); its sha256."""
    mask = os.umask(0)
    os.umask(mask)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
        tmp.chmod(0o666 & ~mask)
    return _sha(data)


def _model_bytes(model: Any) -> bytes:
    buf = io.BytesIO()
    model.save(buf)
    return buf.getvalue()


def _load_model(cls: Any, data: bytes, **kwargs: Any) -> Any:
    return cls.load(io.BytesIO(data), **kwargs)


# ---------------------------------------------------------------------------------------- training
class ExpectedReward(gym.Wrapper[Any, Any, Any, Any]):
    """Training reward ``expected``: each step's reward with the realized profit replaced by its expectation under
    the env's response backend (``info["expected_profit"]``: choice probabilities x margins of the step's offers;
    on an env with stock, ``info["expected_profit_served"]``, the same with each product's expected sales capped
    at its stock, so that pricing lower than the stock left can serve earns nothing extra). The same expected
    value given the state and action, without the noise of who happened to buy: on an allocation env the reward
    of a cohort of 64 customers otherwise buries each customer's action under the others' purchases. Used for
    training only; evaluations score the realized reward."""

    def __init__(self, env: gym.Env[Any, Any]) -> None:
        super().__init__(env)
        if getattr(getattr(env.unwrapped, "config", None), "reward", "profit") != "profit":
            raise ValueError("training_reward 'expected' needs an env with reward 'profit'")

    def step(self, action: Any) -> Any:
        """The env's step with the realized profit swapped for the expected profit in the reward."""
        obs, reward, terminated, truncated, info = self.env.step(action)
        c = info["components"]
        realized = c["revenue"] - c["cost"] - c["coupon_spend"]
        served = info.get("expected_profit_served", np.nan)
        expected = served if np.isfinite(served) else info["expected_profit"]
        return obs, float(reward - realized + expected), terminated, truncated, info


def train_split(params: Mapping[str, Any]) -> int:
    """The ``train_split`` of resolved hyperparameters (1: train on the env as configured)."""
    return int(params.get("train_split", 1))


def _make_vec(spec: TrainSpec, seed: int, training: bool) -> Any:
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    cfg = {**split_config(spec.env_id, spec.env_config, train_split(spec.hyperparams)), "response": spec.response}
    expected = training and spec.hyperparams.get("training_reward", "realized") == "expected"

    def factory(rank: int) -> Any:
        def make() -> gym.Env[Any, Any]:
            base = gym.make(spec.env_id, config=cfg)
            env = Monitor(ExpectedReward(base) if expected else base)
            env.reset(seed=seed + rank)
            return env
        return make

    vec = DummyVecEnv([factory(r) for r in range(spec.n_envs if training else 1)])
    vec.seed(seed)
    return VecNormalize(vec, norm_obs=True, norm_reward=training, training=training, gamma=0.99)


def checkpoint_files(steps: int) -> tuple[str, str]:
    """The model and normalization files of the checkpoint at ``steps`` (relative to the run folder)."""
    return f"checkpoints/model_{steps}_steps.zip", f"checkpoints/model_vecnormalize_{steps}_steps.json"


def _checkpoints(run: Path) -> list[int]:
    """The steps of the run's checkpoints, latest first."""
    found = []
    for f in (run / "checkpoints").glob("model_*_steps.zip"):
        m = re.fullmatch(r"model_(\d+)_steps\.zip", f.name)
        if m:
            found.append(int(m.group(1)))
    return sorted(found, reverse=True)


def _resume_point(run: Path, cls: Any, venv: Any, spec: TrainSpec, files: Mapping[str, str] | None,
                  trust: bool) -> tuple[Any, Any, int, list[str]] | None:
    """(model, train env, steps, skipped) from the latest intact checkpoint the manifest vouches for (any intact
    one with ``trust``), None when the run has no checkpoint; ValueError when none of them is intact."""
    steps_found = _checkpoints(run)
    skipped: list[str] = []
    for steps in steps_found:
        model_rel, norm_rel = checkpoint_files(steps)
        try:
            norm_data = read_verified(run, norm_rel, trust, files)
            model_data = read_verified(run, model_rel, trust, files)
            train_env = normalization_from_bytes(norm_data, venv, run / norm_rel, training=True)
            try:
                model = _load_model(cls, model_data, env=train_env, seed=spec.seed)
            except Exception as exc:  # a truncated or foreign zip: any error of the zip/torch readers
                raise ValueError(f"checkpoint {run / model_rel} cannot be read ({type(exc).__name__}: "
                                 f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
        except ValueError as exc:
            skipped.append(str(exc))
            log.warning("resume: skipping the checkpoint at %s steps: %s", steps, exc)
            continue
        if skipped:
            log.warning("resume: falling back to the intact checkpoint at %s steps (%s)", steps, run / model_rel)
        return model, train_env, steps, skipped
    if steps_found:
        raise ValueError(f"no intact checkpoint to resume from in {run / 'checkpoints'} (tried {len(steps_found)}; "
                         f"latest: {skipped[0]})")
    return None


def _callbacks(run: Path, files: dict[str, str], save_freq: int) -> tuple[Any, Any]:
    """(on new best, checkpointer): each writes its files atomically, then the manifest listing them."""
    from stable_baselines3.common.callbacks import BaseCallback

    class SaveBestNormalization(BaseCallback):
        """For EvalCallback's new best models: the normalization statistics the model was evaluated with (they
        keep moving during training; the final ones would misread its observations)."""

        def _on_step(self) -> bool:
            vec = self.model.get_vec_normalize_env()
            if vec is not None:
                files["best_vecnormalize.json"] = _write_bytes(run / "best_vecnormalize.json", _norm_bytes(vec))
            best = run / "best_model.zip"
            if best.is_file():
                files["best_model.zip"] = _sha(best.read_bytes())
            if (run / "evaluations.npz").is_file():
                files["evaluations.npz"] = _sha((run / "evaluations.npz").read_bytes())
            write_manifest(run, files)
            return True

    class Checkpoint(BaseCallback):
        """SB3's CheckpointCallback without pickles: the model zip and a JSON normalization file."""

        def _on_step(self) -> bool:
            if self.n_calls % save_freq == 0:
                (run / "checkpoints").mkdir(exist_ok=True)
                model_rel, norm_rel = checkpoint_files(self.num_timesteps)
                files[model_rel] = _write_bytes(run / model_rel, _model_bytes(self.model))
                vec = self.model.get_vec_normalize_env()
                files[norm_rel] = _write_bytes(run / norm_rel, _norm_bytes(vec))
                write_manifest(run, files)
            return True

    return SaveBestNormalization(), Checkpoint()


def _check_resumable(run: Path, spec: TrainSpec) -> None:
    """ValueError when ``run`` holds something other than a run of this env, algorithm and settings."""
    config_file = run / "config.yml"
    if not config_file.is_file():
        if run.is_dir() and any(run.iterdir()):
            raise ValueError(f"cannot resume in {run}: it is not a training run folder (no config.yml)")
        return
    try:
        before = yaml.safe_load(config_file.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"cannot resume in {run}: {config_file} is not valid YAML") from exc
    if not isinstance(before, dict):
        raise ValueError(f"cannot resume in {run}: {config_file} is not a mapping")
    if before.get("env_id") != spec.env_id or before.get("algo") != spec.algo:
        raise ValueError(f"{run} holds a {before.get('algo')} run on {before.get('env_id')}, "
                         f"not {spec.algo} on {spec.env_id}")
    for key in ("response", "env_config", "hyperparams", "init_from"):
        theirs, ours = before.get(key), getattr(spec, key)
        if key == "hyperparams" and isinstance(theirs, dict):  # a run from before train_split trained unsplit
            theirs, ours = {"train_split": 1, **theirs}, {"train_split": 1, **ours}
        if key in before and theirs != ours:
            raise ValueError(f"{run} holds a run with {key} {before[key]!r}, not {getattr(spec, key)!r}; resume "
                             f"it with the same settings")


@dataclasses.dataclass(frozen=True)
class WarmStart:
    """An earlier run a training starts from (``TrainSpec.init_from``): its folder, resolved config and the
    verified bytes of its final model and normalization statistics, with what ``metadata.json`` keeps of them."""

    path: Path
    config: dict[str, Any]
    model: bytes
    normalization: bytes
    metadata: dict[str, Any]

    @classmethod
    def read(cls, spec: TrainSpec, run: Path, trust: bool = False) -> WarmStart:
        """The run folder ``spec.init_from``, read through the run's manifest (``trust``: any readable files):
        a one-line ValueError when it is missing, is ``run`` itself, holds a run of another env id or
        algorithm, or its config, model or statistics are not the ones its manifest vouches for."""
        assert spec.init_from is not None
        p = Path(spec.init_from)
        if not (p / "config.yml").is_file():
            raise ValueError(f"init_from {p}: not a training run folder (no config.yml)")
        if p.resolve() == run.resolve():
            raise ValueError(f"init_from {p} is the run folder itself: train into a new folder (or continue an "
                             f"interrupted run with resume)")
        manifest = None if trust else read_manifest(p)
        try:
            config = yaml.safe_load(read_verified(p, "config.yml", trust, manifest).decode())
        except (UnicodeDecodeError, yaml.YAMLError):
            config = None
        if not isinstance(config, dict):
            raise ValueError(f"init_from {p}: config.yml is not a run's settings (a YAML mapping)")
        if config.get("env_id") != spec.env_id or config.get("algo") != spec.algo:
            raise ValueError(f"cannot start from {p}: it holds a {config.get('algo')} run on {config.get('env_id')}, "
                             f"not {spec.algo} on {spec.env_id}")
        model = read_verified(p, "model.zip", trust, manifest)
        normalization = read_verified(p, "vecnormalize.json", trust, manifest)
        metadata: Any = None
        if (p / "metadata.json").is_file():
            try:
                metadata = json.loads(read_verified(p, "metadata.json", trust, manifest).decode())
            except (UnicodeDecodeError, ValueError):
                metadata = None
        metadata = metadata if isinstance(metadata, dict) else {}
        return cls(p, config, model, normalization, metadata)

    def record(self) -> dict[str, Any]:
        """What ``metadata.json`` keeps of the start: the folder, the model file and the sha256 of it and of its
        statistics, the earlier run's response model (and its hash) and that run's own ``init_from`` (the lineage
        of a chain of warm starts)."""
        return {"path": str(self.path.resolve()), "model": "model.zip", "model_sha256": _sha(self.model),
                "vecnormalize_sha256": _sha(self.normalization), "seed": self.config.get("seed"),
                "response": self.config.get("response"), "response_sha256": self.metadata.get("response_sha256"),
                "init_from": self.metadata.get("init_from")}

    def build(self, spec: TrainSpec, params: Mapping[str, Any], cls: Any, venv: Any) -> tuple[Any, Any]:
        """(model, training env): a model of ``spec`` on ``venv`` (the spec's own env and response) with the
        earlier run's final policy weights, wrapped in a VecNormalize holding its statistics (training on). A
        one-line ValueError, before anything is trained, when the observation or action spaces or the policy
        architecture differ."""
        where = self.path / "model.zip"
        try:
            before = _load_model(cls, self.model, device="cpu")
        except Exception as exc:  # a truncated zip under trust: any error of the zip/torch readers
            raise ValueError(f"cannot start from {self.path}: model.zip cannot be read ({type(exc).__name__})") \
                from None
        for name in ("observation_space", "action_space"):
            theirs, ours = getattr(before, name), getattr(venv, name)
            if theirs != ours:
                split = (train_split(self.config.get("hyperparams") or {}), train_split(params))
                why = f" (it trained with train_split {split[0]}, this run with {split[1]})" if split[0] != split[1] \
                    else ""
                raise ValueError(f"cannot start from {self.path}: its {name.replace('_', ' ')} {theirs} differs from "
                                 f"this env's {ours}{why}")
        train_env = normalization_from_bytes(self.normalization, venv, self.path / "vecnormalize.json",
                                             training=True)
        policy, kwargs = model_arguments(spec.algo, params, train_env)
        model = cls(policy, train_env, seed=spec.seed, verbose=0, **kwargs)
        differ = _architecture_difference(before.policy, model.policy)
        if differ:
            raise ValueError(f"cannot start from {self.path}: its policy architecture differs from this run's "
                             f"({differ})")
        model.policy.load_state_dict(before.policy.state_dict())
        log.info("warm start from %s (%s)", where, _sha(self.model)[:12])
        return model, train_env


def _architecture_difference(before: Any, now: Any) -> str | None:
    """What differs between two policies' architectures (class, tensor names, shapes, layers), None when nothing."""
    kinds = [f"{type(x).__module__}.{type(x).__qualname__}" for x in (before, now)]
    if kinds[0] != kinds[1]:
        return f"class {kinds[0]} vs {kinds[1]}"
    a, b = before.state_dict(), now.state_dict()
    if a.keys() != b.keys():
        extra = sorted(a.keys() ^ b.keys())
        return f"tensor {extra[0]} in {'the earlier run' if extra[0] in a else 'this run'} only"
    for key in a:
        if tuple(a[key].shape) != tuple(b[key].shape):
            return f"{key} of shape {tuple(a[key].shape)} vs {tuple(b[key].shape)}"
    for line_a, line_b in zip(repr(before).splitlines(), repr(now).splitlines(), strict=False):
        if line_a != line_b:
            return f"{line_a.strip()} vs {line_b.strip()}"
    return None


def train(spec: TrainSpec, run: Path, resume: bool = False, progress: bool = False,
          trust: bool = False) -> dict[str, Any]:
    """Train one agent; returns the metadata written to ``run/metadata.json``. With ``resume``, training continues
    from the latest checkpoint the run's manifest vouches for (``trust``: any readable one), falling back past
    truncated ones. With ``spec.init_from``, a fresh run starts from that run's final policy and normalization
    statistics (read the same way; see :class:`WarmStart`), everything checked before ``run`` is touched; a
    resumed run continues from its own checkpoint."""
    from stable_baselines3.common.callbacks import CallbackList, EvalCallback

    commit = git_commit()  # the code that trains, before a long run
    probe = {**spec.env_config, "response": spec.response}  # a world-free env's only response is the spec's
    check_compatible(spec.env_id, spec.algo, probe)
    params = resolved_hyperparams(spec.env_id, spec.algo, spec.hyperparams)
    check_hyperparams(spec.algo, params, spec.env_id, probe)
    spec.hyperparams = params
    if spec.init_from is not None:
        spec.init_from = str(Path(spec.init_from).resolve())
    if resume:
        _check_resumable(run, spec)
    start_from = WarmStart.read(spec, run, trust) if spec.init_from is not None else None
    cls = algo_class(spec.algo)
    train_env = _make_vec(spec, spec.seed, training=True)
    eval_env = _make_vec(spec, spec.seed + 10_000, training=False)
    warm = start_from.build(spec, params, cls, train_env.venv) if start_from is not None else None
    run.mkdir(parents=True, exist_ok=True)
    prior = read_manifest(run) if resume else None  # what the run vouched for so far (None: no valid manifest)
    files: dict[str, str] = dict(prior or {})
    if not resume:  # a fresh run (--force) replaces what it writes: nothing stale is left to be mistaken for it
        for rel in (MANIFEST, "model.zip", "vecnormalize.json", "best_model.zip", "best_vecnormalize.json",
                    "evaluations.npz", "metadata.json"):
            (run / rel).unlink(missing_ok=True)
        for steps in _checkpoints(run):
            for rel in checkpoint_files(steps):
                (run / rel).unlink(missing_ok=True)
    done = 0
    point = _resume_point(run, cls, train_env.venv, spec, prior, trust) if resume else None
    skipped: list[str] = []
    config_text = yaml.safe_dump(dataclasses.asdict(spec), sort_keys=False)
    if point is not None:
        model, train_env, done, skipped = point
    elif warm is not None:
        model, train_env = warm
    else:
        policy, kwargs = model_arguments(spec.algo, params, train_env)
        model = cls(policy, train_env, seed=spec.seed, verbose=0, **kwargs)
    files["config.yml"] = _write_bytes(run / "config.yml", config_text.encode())
    write_manifest(run, files)
    eval_cls: Any = EvalCallback
    if spec.algo == "maskable_ppo":
        from sb3_contrib.common.maskable.callbacks import MaskableEvalCallback

        eval_cls = MaskableEvalCallback
    on_best, checkpointer = _callbacks(run, files, max(1, spec.checkpoint_freq // spec.n_envs))
    callbacks = CallbackList([
        eval_cls(eval_env, n_eval_episodes=spec.eval_episodes, eval_freq=max(1, spec.eval_freq // spec.n_envs),
                 log_path=str(run), best_model_save_path=str(run), deterministic=True, verbose=0,
                 callback_on_new_best=on_best),
        checkpointer,
    ])
    start = time.perf_counter()
    model.learn(total_timesteps=max(0, spec.timesteps - done), callback=callbacks, progress_bar=progress,
                reset_num_timesteps=point is None)
    files["model.zip"] = _write_bytes(run / "model.zip", _model_bytes(model))
    files["vecnormalize.json"] = _write_bytes(run / "vecnormalize.json", _norm_bytes(train_env))
    if (run / "evaluations.npz").is_file():  # rewritten by EvalCallback at every evaluation
        files["evaluations.npz"] = _sha((run / "evaluations.npz").read_bytes())
    meta = {"env_id": spec.env_id, "algo": spec.algo, "seed": spec.seed, "timesteps": spec.timesteps,
            "resumed_from_step": done, "wall_seconds": time.perf_counter() - start, "commit": commit,
            "versions": package_versions(), "response": spec.response,
            "response_sha256": response_hash(spec.response),
            "policy": _policy_choice(spec.algo, params)[0], "train_split": train_split(params),
            "policy_class": f"{type(model.policy).__module__}.{type(model.policy).__qualname__}"}
    if start_from is not None:
        meta["init_from"] = start_from.record()
    if skipped:
        meta["skipped_checkpoints"] = skipped
    write_json(run / "metadata.json", meta)
    files["metadata.json"] = _sha((run / "metadata.json").read_bytes())
    write_manifest(run, files)  # last: it vouches for everything above
    return meta


# ---------------------------------------------------------------------------------------- the learned policy
class LearnedPolicy:
    """A trained agent with its saved observation normalization, behind the common ``predict()``.

    The model zip and the normalization file are read only when the run's manifest lists them with their
    current hash (``trust=True`` skips that check: the zip's pickles then run whatever they hold); the
    normalization statistics are JSON, never unpickled."""

    def __init__(self, run: str | Path, env: gym.Env[Any, Any] | None = None, best: bool = True,
                 trust: bool = False) -> None:
        from stable_baselines3.common.vec_env import DummyVecEnv

        run = Path(run)
        if not (run / "config.yml").is_file():
            raise ValueError(f"run folder {run}: config.yml not found (not a training run folder)")
        cfg = yaml.safe_load((run / "config.yml").read_text())
        self.env_id, self.algo = cfg["env_id"], cfg["algo"]
        self.name = f"{self.algo}"
        use_best = best and (run / "best_model.zip").is_file()
        file = "best_model.zip" if use_best else "model.zip"
        stats = "best_vecnormalize.json" if use_best and (run / "best_vecnormalize.json").is_file() \
            else "vecnormalize.json"
        if not (run / stats).is_file():
            legacy = sorted(p.name for p in run.glob("*vecnormalize.pkl"))
            note = (f"; {', '.join(legacy)} is a pickle from an older promogym, never read (it could run code): "
                    f"retrain the run") if legacy else ""
            raise ValueError(f"run folder {run}: {stats} not found{note}")
        manifest = None if trust else read_manifest(run)
        model_data = read_verified(run, file, trust, manifest)  # both vouched for before anything is loaded
        stats_data = read_verified(run, stats, trust, manifest)
        def configured_env() -> gym.Env[Any, Any]:  # the env the run's config.yml configures
            return gym.make(self.env_id, config=probe_config(self.env_id, cfg["env_config"], cfg.get("response")))

        target = env if env is not None else configured_env()
        widen, spaces_now = None, {}
        split = train_split(cfg.get("hyperparams") or {})
        if split > 1:  # trained on smaller batches: it acts on the env it was configured for, with that env's spaces
            from promogym.agents.per_customer import CohortLayout, env_item_features, widen_item_statistics

            configured = target if env is None else configured_env()
            for name in ("observation_space", "action_space"):
                if getattr(configured, name) != getattr(target, name):
                    raise ValueError(f"run folder {run} acts on {self.env_id} as configured in its config.yml, "
                                     f"whose {name.replace('_', ' ')} is {getattr(configured, name)}; this env's is "
                                     f"{getattr(target, name)}")
            layout = CohortLayout.from_spaces(target.observation_space, target.action_space,
                                              env_item_features(target))
            widen = functools.partial(widen_item_statistics, layout=layout, batches=split)
            spaces_now = {"custom_objects": {"observation_space": target.observation_space,
                                             "action_space": target.action_space}}
        self.norm = normalization_from_bytes(stats_data, DummyVecEnv([lambda: target]), run / stats, widen=widen)
        try:
            self.model = _load_model(algo_class(self.algo), model_data, device="cpu", **spaces_now)
        except Exception as exc:  # a truncated zip under trust: any error of the zip/torch readers
            raise ValueError(f"run folder {run}: {file} cannot be read ({type(exc).__name__})") from None
        self.env: Any = env.unwrapped if env is not None else None

    def predict(self, observation: np.ndarray, state: Any = None, episode_start: Any = None,
                deterministic: bool = True) -> tuple[np.ndarray, Any]:
        """The action for one observation, as SB3's ``predict`` (observation normalized with the run's statistics;
        MaskablePPO gets the env's action masks, RecurrentPPO its ``state`` and ``episode_start``). Returns ``(action,
        state)``."""
        obs = self.norm.normalize_obs(np.asarray(observation, dtype=np.float32)[None])
        kwargs: dict[str, Any] = {"deterministic": deterministic}
        if self.algo == "maskable_ppo" and self.env is not None:
            kwargs["action_masks"] = self.env.action_masks()[None]
        if self.algo == "recurrent_ppo":
            kwargs.update(state=state, episode_start=episode_start)
        action, state = self.model.predict(obs, **kwargs)
        return action[0], state


__all__ = ["ALGOS", "MANIFEST", "POLICIES", "TRUST_HELP", "LearnedPolicy", "PolicyChoice", "TrainSpec", "WarmStart",
           "check_compatible", "check_hyperparams", "model_arguments", "read_manifest", "read_verified", "train"]
