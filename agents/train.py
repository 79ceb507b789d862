"""Training Stable-Baselines3 agents on the promogym environments.

One run folder per run: ``config.yml`` (the resolved settings), ``model.zip`` (final),
``best_model.zip`` (best periodic evaluation) with ``best_vecnormalize.pkl`` (the normalization
statistics it was evaluated with), ``vecnormalize.pkl`` (the final observation-normalization
statistics; each model is always applied with its own), ``evaluations.npz`` (the periodic evaluations),
``checkpoints/`` (every ``checkpoint_freq`` steps, for ``resume``) and ``metadata.json`` (git commit,
package versions, seed, the response model's hash, wall time).
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import yaml
from gymnasium import spaces

from promogym import envs
from promogym.core.io import atomic_path, git_commit, package_versions, write_json

HYPERPARAMS = Path(__file__).with_name("hyperparams.yml")
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


@dataclasses.dataclass
class TrainSpec:
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


def algo_class(algo: str) -> Any:
    if algo not in ALGOS:
        raise ValueError(f"unknown algorithm {algo!r}; choose one of {', '.join(ALGOS)}")
    if algo in ("maskable_ppo", "recurrent_ppo"):
        import sb3_contrib

        return {"maskable_ppo": sb3_contrib.MaskablePPO, "recurrent_ppo": sb3_contrib.RecurrentPPO}[algo]
    import stable_baselines3

    return getattr(stable_baselines3, algo.upper())


def policy_name(algo: str) -> str:
    return "MlpLstmPolicy" if algo == "recurrent_ppo" else "MlpPolicy"


def probe_config(env_id: str, env_config: dict[str, Any] | None = None) -> dict[str, Any]:
    """The env config with its cheapest response: the world for the market envs, the env's default otherwise
    (for reading spaces, never for scoring)."""
    cfg = dict(env_config or {})
    if env_id in envs.MARKET_ENV_IDS:
        cfg["response"] = "world"
    else:
        cfg.pop("response", None)
    return cfg


def check_compatible(env_id: str, algo: str, env_config: dict[str, Any] | None = None) -> None:
    """Raise ValueError before any training when the env id, algorithm or action space do not fit."""
    if env_id not in envs.ENV_IDS:
        raise ValueError(f"unknown env id {env_id!r}; choose one of {', '.join(envs.ENV_IDS)}")
    algo_class(algo)
    space = gym.make(env_id, config=probe_config(env_id, env_config)).action_space
    if not isinstance(space, SUPPORTED[algo]):
        raise ValueError(f"{algo} cannot act in {env_id}'s action space {space}; it needs "
                         f"{' or '.join(s.__name__ for s in SUPPORTED[algo])}")


def load_hyperparams(env_id: str, algo: str) -> dict[str, Any]:
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


def _make_vec(spec: TrainSpec, seed: int, training: bool) -> Any:
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    cfg = {**spec.env_config, "response": spec.response}

    def factory(rank: int) -> Any:
        def make() -> gym.Env[Any, Any]:
            env = Monitor(gym.make(spec.env_id, config=cfg))
            env.reset(seed=seed + rank)
            return env
        return make

    vec = DummyVecEnv([factory(r) for r in range(spec.n_envs if training else 1)])
    vec.seed(seed)
    return VecNormalize(vec, norm_obs=True, norm_reward=training, training=training, gamma=0.99)


def _latest_checkpoint(run: Path) -> tuple[Path, Path, int] | None:
    found = []
    for f in (run / "checkpoints").glob("model_*_steps.zip"):
        m = re.search(r"model_(\d+)_steps", f.name)
        if m:
            found.append((int(m.group(1)), f))
    if not found:
        return None
    steps, f = max(found)
    return f, run / "checkpoints" / f"model_vecnormalize_{steps}_steps.pkl", steps


def _normalization_saver(path: Path) -> Any:
    """A callback for EvalCallback's new best models: saves the normalization statistics the model was
    evaluated with (they keep moving during training; the final ones would misread its observations)."""
    from stable_baselines3.common.callbacks import BaseCallback

    class SaveNormalization(BaseCallback):
        def _on_step(self) -> bool:
            vec = self.model.get_vec_normalize_env()
            if vec is not None:
                vec.save(str(path))
            return True

    return SaveNormalization()


def train(spec: TrainSpec, run: Path, resume: bool = False, progress: bool = False) -> dict[str, Any]:
    """Train one agent; returns the metadata written to ``run/metadata.json``."""
    from stable_baselines3.common.callbacks import CallbackList, CheckpointCallback, EvalCallback
    from stable_baselines3.common.vec_env import VecNormalize

    check_compatible(spec.env_id, spec.algo, spec.env_config)
    params = {**load_hyperparams(spec.env_id, spec.algo), **spec.hyperparams}
    spec.hyperparams = params
    run.mkdir(parents=True, exist_ok=True)
    resolved = dataclasses.asdict(spec)
    config_file = run / "config.yml"
    if resume and config_file.is_file():
        before = yaml.safe_load(config_file.read_text())
        if before.get("env_id") != spec.env_id or before.get("algo") != spec.algo:
            raise ValueError(f"{run} holds a {before.get('algo')} run on {before.get('env_id')}, "
                             f"not {spec.algo} on {spec.env_id}")
    with atomic_path(config_file) as tmp:
        tmp.write_text(yaml.safe_dump(resolved, sort_keys=False))
    cls = algo_class(spec.algo)
    train_env = _make_vec(spec, spec.seed, training=True)
    eval_env = _make_vec(spec, spec.seed + 10_000, training=False)
    done = 0
    latest = _latest_checkpoint(run) if resume else None
    if latest is not None:
        model_file, norm_file, done = latest
        train_env = VecNormalize.load(str(norm_file), train_env.venv)
        model = cls.load(str(model_file), env=train_env, seed=spec.seed)
    else:
        kwargs = dict(params)
        model = cls(policy_name(spec.algo), train_env, seed=spec.seed, verbose=0, **kwargs)
    eval_cls: Any = EvalCallback
    if spec.algo == "maskable_ppo":
        from sb3_contrib.common.maskable.callbacks import MaskableEvalCallback

        eval_cls = MaskableEvalCallback
    callbacks = CallbackList([
        eval_cls(eval_env, n_eval_episodes=spec.eval_episodes, eval_freq=max(1, spec.eval_freq // spec.n_envs),
                 log_path=str(run), best_model_save_path=str(run), deterministic=True, verbose=0,
                 callback_on_new_best=_normalization_saver(run / "best_vecnormalize.pkl")),
        CheckpointCallback(save_freq=max(1, spec.checkpoint_freq // spec.n_envs), save_path=str(run / "checkpoints"),
                           name_prefix="model", save_vecnormalize=True),
    ])
    start = time.perf_counter()
    model.learn(total_timesteps=max(0, spec.timesteps - done), callback=callbacks, progress_bar=progress,
                reset_num_timesteps=latest is None)
    model.save(str(run / "model.zip"))
    train_env.save(str(run / "vecnormalize.pkl"))
    meta = {"env_id": spec.env_id, "algo": spec.algo, "seed": spec.seed, "timesteps": spec.timesteps,
            "resumed_from_step": done, "wall_seconds": time.perf_counter() - start, "commit": git_commit(),
            "versions": package_versions(), "response": spec.response,
            "response_sha256": response_hash(spec.response)}
    write_json(run / "metadata.json", meta)
    return meta


class LearnedPolicy:
    """A trained agent with its saved observation normalization, behind the common ``predict()``."""

    def __init__(self, run: str | Path, env: gym.Env[Any, Any] | None = None, best: bool = True) -> None:
        from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

        run = Path(run)
        cfg = yaml.safe_load((run / "config.yml").read_text())
        self.env_id, self.algo = cfg["env_id"], cfg["algo"]
        self.name = f"{self.algo}"
        use_best = best and (run / "best_model.zip").is_file()
        file = run / ("best_model.zip" if use_best else "model.zip")
        stats = run / "best_vecnormalize.pkl" if use_best and (run / "best_vecnormalize.pkl").is_file() \
            else run / "vecnormalize.pkl"
        self.model = algo_class(self.algo).load(str(file), device="cpu")
        dummy = DummyVecEnv([lambda: env if env is not None else gym.make(
            self.env_id, config=probe_config(self.env_id, cfg["env_config"]))])
        self.norm = VecNormalize.load(str(stats), dummy)
        self.norm.training = False
        self.env: Any = env.unwrapped if env is not None else None

    def predict(self, observation: np.ndarray, state: Any = None, episode_start: Any = None,
                deterministic: bool = True) -> tuple[np.ndarray, Any]:
        obs = self.norm.normalize_obs(np.asarray(observation, dtype=np.float32)[None])
        kwargs: dict[str, Any] = {"deterministic": deterministic}
        if self.algo == "maskable_ppo" and self.env is not None:
            kwargs["action_masks"] = self.env.action_masks()[None]
        if self.algo == "recurrent_ppo":
            kwargs.update(state=state, episode_start=episode_start)
        action, state = self.model.predict(obs, **kwargs)
        return action[0], state


__all__ = ["ALGOS", "LearnedPolicy", "TrainSpec", "check_compatible", "train"]
