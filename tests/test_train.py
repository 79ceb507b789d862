"""`promogym train`: SB3 agents on the envs, run folders, resume, and errors before training."""

import json

import gymnasium as gym
import numpy as np
import pytest
import yaml

from promogym.agents.base import run_episode
from promogym.agents.train import LearnedPolicy
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
    env_set = ["--env-set", "cohort_size=8", "--env-set", "horizon=10", "--env-set", "budget=20",
               "--env-set", "market={n_customers: 800, n_products: 100}"]
    code, out = _train(tmp_path, "maskable_ppo", "promogym/CouponAllocation-v1", env_set + PPO_SMALL)
    assert code == 0
    cfg = yaml.safe_load((out / "config.yml").read_text())
    env = gym.make("promogym/CouponAllocation-v1", config=cfg["env_config"])
    policy = LearnedPolicy(out, env)
    for seed in range(3):
        row = run_episode(env, policy, seed)
        assert row["coupon_spend"] <= 20 + 1e-9


def test_sac_trains_on_a_box_env(tmp_path):
    code, _ = _train(tmp_path, "sac", "promogym/DynamicPricing-v1",
                     [*FAST_ENV, "--set", "learning_starts=32", "--set", "batch_size=32"], steps=96)
    assert code == 0


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


@pytest.mark.parametrize(("env_id", "algo", "env_set", "hp"), FITS)
def test_every_algorithm_trains_on_every_env_it_fits(tmp_path, env_id, algo, env_set, hp):
    code, out = _train(tmp_path, algo, env_id, [*env_set, *hp], steps=96)
    assert code == 0
    cfg = yaml.safe_load((out / "config.yml").read_text())
    env = gym.make(env_id, config=cfg["env_config"])
    row = run_episode(env, LearnedPolicy(out, env), seed=0)
    assert np.isfinite(row["return"])
