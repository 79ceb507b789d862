"""`promogym train`: SB3 agents on the envs, run folders, resume, and errors before training."""

import json

import gymnasium as gym
import numpy as np
import pytest
import yaml
from budget_checks import MostGenerous, play_within_budget, unconstrained_spend

from promogym.agents.base import run_episode
from promogym.agents.train import LearnedPolicy, algo_class, model_arguments
from promogym.experiments.cli import main

FAST_ENV = ["--env-set", "horizon=8", "--env-set", "daily_customers=60", "--env-set", "initial_stock=15",
            "--env-set", "market={n_customers: 800, n_products: 100}"]
PPO_SMALL = ["--set", "n_steps=64", "--set", "batch_size=32", "--set", "n_epochs=2"]


def _train(tmp_path, algo, env, extra, steps=128, name=None):
    out = tmp_path / (name or algo)
    code = main(["train", "--env", env, "--algo", algo, "--timesteps", str(steps), "--out", str(out),
                 "--eval-freq", "64", "--checkpoint-freq", "64", "--no-progress", *extra])
    return code, out


def test_ppo_run_folder_and_learned_policy(tmp_path, capsys):
    code, out = _train(tmp_path, "ppo", "promogym/DynamicPricing-v1", FAST_ENV + PPO_SMALL)
    assert code == 0 and "ppo on promogym/DynamicPricing-v1" in capsys.readouterr().out
    for f in ("config.yml", "model.zip", "best_model.zip", "best_vecnormalize.json", "vecnormalize.json",
              "evaluations.npz", "metadata.json", "manifest.json"):
        assert (out / f).is_file(), f
    cfg = yaml.safe_load((out / "config.yml").read_text())
    assert cfg["hyperparams"]["n_steps"] == 64 and cfg["hyperparams"]["gamma"] == 0.99  # YAML + overrides
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["seed"] == 0 and "stable-baselines3" in meta["versions"]
    env = gym.make("promogym/DynamicPricing-v1", config=cfg["env_config"])
    policy = LearnedPolicy(out, env)
    row = run_episode(env, policy, seed=0)
    assert row["steps"] == 8 and np.isfinite(row["return"])
    # the best model is read with the statistics it was evaluated with, the final model with the final ones
    best_stats = json.loads((out / "best_vecnormalize.json").read_text())["obs_rms"]["mean"]
    np.testing.assert_array_equal(policy.norm.obs_rms.mean, best_stats)
    final = LearnedPolicy(out, env, best=False)
    final_stats = json.loads((out / "vecnormalize.json").read_text())["obs_rms"]["mean"]
    np.testing.assert_array_equal(final.norm.obs_rms.mean, final_stats)
    assert not list(out.rglob("*.pkl"))  # nothing the project reads is a pickle of its own


def test_resume_continues_from_the_latest_checkpoint(tmp_path):
    code, out = _train(tmp_path, "ppo", "promogym/DynamicPricing-v1", FAST_ENV + PPO_SMALL, steps=128)
    assert code == 0
    code, _ = _train(tmp_path, "ppo", "promogym/DynamicPricing-v1", [*FAST_ENV, *PPO_SMALL, "--resume"],
                     steps=256)
    assert code == 0
    assert json.loads((out / "metadata.json").read_text())["resumed_from_step"] == 128


def test_maskable_ppo_on_coupons_never_overspends(tmp_path):
    """A budget of 20 binds (the most generous rule would spend far more): the learned policy asks only for
    levels its mask allows, gets exactly what the budget can pay of what it asked for, and never overspends;
    a rule that asks for the top coupon for everyone is refused coupons, and the refusals are counted."""
    env_set = ["--env-set", "cohort_size=8", "--env-set", "horizon=10", "--env-set", "budget=20",
               "--env-set", "market={n_customers: 800, n_products: 100}"]
    code, out = _train(tmp_path, "maskable_ppo", "promogym/CouponAllocation-v1", env_set + PPO_SMALL)
    assert code == 0
    cfg = yaml.safe_load((out / "config.yml").read_text())
    env = gym.make("promogym/CouponAllocation-v1", config=cfg["env_config"])
    seeds = range(3)
    assert unconstrained_spend("promogym/CouponAllocation-v1", cfg["env_config"], seeds) > 20  # the budget binds
    generous = play_within_budget(env, MostGenerous(env), seeds)
    assert generous.clipped > 0 and generous.given > 0 and max(generous.spend) <= 20 + 1e-9
    learned = play_within_budget(env, LearnedPolicy(out, env), seeds)
    assert learned.masked_requests == 0                    # MaskablePPO reads action_masks() at every step
    assert learned.given + learned.clipped == learned.requested and max(learned.spend) <= 20 + 1e-9


def test_sac_trains_on_a_box_env(tmp_path):
    code, out = _train(tmp_path, "sac", "promogym/DynamicPricing-v1",
                       [*FAST_ENV, "--set", "learning_starts=32", "--set", "batch_size=32"], steps=96)
    assert code == 0
    _trained_saved_and_playable(out, "promogym/DynamicPricing-v1", "sac")


@pytest.mark.parametrize(("args", "needle"), [
    (["--env", "promogym/Nope-v0", "--algo", "ppo"], "unknown env id"),
    (["--env", "promogym/DynamicPricing-v1", "--algo", "dqn"], "dqn cannot act in"),
    (["--env", "promogym/CouponAllocation-v1", "--algo", "sac"], "sac cannot act in"),
    (["--env", "promogym/DynamicPricing-v1", "--algo", "xgboost"], "unknown algorithm"),
    (["--env", "promogym/DynamicPricing-v1", "--algo", "ppo", "--timesteps", "0"], "--timesteps must be >= 1"),
])
def test_bad_requests_fail_before_training(tmp_path, capsys, args, needle):
    assert main(["train", *args, "--out", str(tmp_path / "r"), "--no-progress"]) == 2
    assert needle in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_resuming_a_run_of_another_env_is_refused(tmp_path, capsys):
    code, out = _train(tmp_path, "ppo", "promogym/DynamicPricing-v1", FAST_ENV + PPO_SMALL)
    assert code == 0
    code = main(["train", "--env", "promogym/PricePromo-v1", "--algo", "ppo", "--timesteps", "64", "--out", str(out),
                 "--resume", "--no-progress", *FAST_ENV])
    assert code == 2 and "holds a ppo run on promogym/DynamicPricing-v1" in capsys.readouterr().err


SMALL_MARKET = ["--env-set", "market={n_customers: 800, n_products: 100}"]
COUPON_ENV = [*SMALL_MARKET, "--env-set", "cohort_size=8", "--env-set", "horizon=10", "--env-set", "budget=20"]
HILLSTROM_ENV = ["--env-set", "batch_size=4", "--env-set", "horizon=8"]
FITS = [
    ("promogym/DynamicPricing-v1", "a2c", FAST_ENV, []),
    ("promogym/DynamicPricing-v1", "td3", FAST_ENV, ["--set", "learning_starts=32", "--set", "batch_size=32"]),
    ("promogym/DynamicPricing-v1", "recurrent_ppo", FAST_ENV, ["--set", "n_steps=64", "--set", "batch_size=32"]),
    ("promogym/PricePromo-v1", "ppo", FAST_ENV, PPO_SMALL),
    ("promogym/PricePromo-v1", "sac", FAST_ENV, ["--set", "learning_starts=32", "--set", "batch_size=32"]),
    ("promogym/CouponAllocation-v1", "ppo", COUPON_ENV, PPO_SMALL),
    ("promogym/CouponAllocation-v1", "a2c", COUPON_ENV, []),
    ("promogym/CouponAllocation-v1", "recurrent_ppo", COUPON_ENV, ["--set", "n_steps=64", "--set", "batch_size=32"]),
    ("promogym/HillstromTargeting-v0", "maskable_ppo", HILLSTROM_ENV, PPO_SMALL),
    ("promogym/HillstromTargeting-v0", "ppo", HILLSTROM_ENV, PPO_SMALL),
    ("promogym/HillstromTargeting-v0", "a2c", HILLSTROM_ENV, []),
    ("promogym/HillstromTargeting-v0", "recurrent_ppo", HILLSTROM_ENV,
     ["--set", "n_steps=64", "--set", "batch_size=32"]),
]


BOX_OFF_POLICY = ["--set", "learning_starts=32", "--set", "batch_size=32"]
# every ✓ of the README's algorithm table not trained elsewhere in this file (DynamicPricing ppo and sac,
# CouponAllocation maskable_ppo: the tests above)
FITS += [
    ("promogym/PricePromo-v1", "a2c", FAST_ENV, []),
    ("promogym/PricePromo-v1", "td3", FAST_ENV, BOX_OFF_POLICY),
    ("promogym/PricePromo-v1", "recurrent_ppo", FAST_ENV, ["--set", "n_steps=64", "--set", "batch_size=32"]),
]


def _fresh_parameters(out, env_id: str, algo: str) -> dict:
    """The parameters the run started from: the same class, hyperparameters and seed on the same spaces."""
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    cfg = yaml.safe_load((out / "config.yml").read_text())
    venv = VecNormalize(DummyVecEnv([lambda: gym.make(env_id, config=cfg["env_config"])]))
    policy, kwargs = model_arguments(algo, cfg["hyperparams"], venv)  # the table may name a policy
    model = algo_class(algo)(policy, venv, seed=cfg["seed"], verbose=0, **kwargs)
    return {k: v.detach().clone() for k, v in model.policy.state_dict().items()}


def _trained_saved_and_playable(out, env_id: str, algo: str) -> None:
    """The run folder reloads, its final parameters moved away from where training started, and the
    reloaded policy acts inside the action space for a whole episode."""
    cfg = yaml.safe_load((out / "config.yml").read_text())
    assert cfg["env_id"] == env_id and cfg["algo"] == algo
    env = gym.make(env_id, config=cfg["env_config"])
    final = LearnedPolicy(out, env, best=False)
    trained = final.model.policy.state_dict()
    start = _fresh_parameters(out, env_id, algo)
    assert start.keys() == trained.keys()
    moved = [k for k in start if start[k].dtype.is_floating_point and not (start[k] == trained[k]).all()]
    assert moved, "training changed no parameter"
    policy = LearnedPolicy(out, env)
    actions = []

    class Watch:
        def predict(self, obs, state=None, episode_start=None, deterministic=True):
            action, state = policy.predict(obs, state=state, episode_start=episode_start, deterministic=True)
            actions.append(np.asarray(action))
            return action, state

    row = run_episode(env, Watch(), seed=0)
    assert np.isfinite(row["return"]) and row["steps"] == len(actions) >= 1
    assert all(env.action_space.contains(a.astype(env.action_space.dtype)) for a in actions)


def test_fresh_parameters_are_where_a_run_starts(tmp_path):
    """`_fresh_parameters` rebuilds a run's starting point: PPO's first checkpoint (64 steps, before its first
    update at n_steps=64) holds exactly those parameters, so "moved away" above compares against the start."""
    from stable_baselines3 import PPO

    code, out = _train(tmp_path, "ppo", "promogym/PricePromo-v1", FAST_ENV + PPO_SMALL)
    assert code == 0
    first = PPO.load(out / "checkpoints" / "model_64_steps.zip", device="cpu").policy.state_dict()
    start = _fresh_parameters(out, "promogym/PricePromo-v1", "ppo")
    assert all((first[k] == start[k]).all() for k in start)
    _trained_saved_and_playable(out, "promogym/PricePromo-v1", "ppo")


@pytest.mark.parametrize(("env_id", "algo", "env_set", "hp"), FITS)
def test_every_algorithm_trains_on_every_env_it_fits(tmp_path, env_id, algo, env_set, hp):
    code, out = _train(tmp_path, algo, env_id, [*env_set, *hp], steps=96)
    assert code == 0
    _trained_saved_and_playable(out, env_id, algo)
