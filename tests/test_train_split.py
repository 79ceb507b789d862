"""Training on smaller batches (hyperparameter ``train_split``): the split env config, its checks, and a policy
trained one visitor a step acting on several visitors a step exactly as it acts on each alone."""

import dataclasses
import json

import gymnasium as gym
import numpy as np
import pytest
import torch as th
import yaml

import promogym.envs  # noqa: F401
from promogym.agents.per_customer import CohortLayout, widen_item_statistics
from promogym.agents.train import LearnedPolicy, TrainSpec, check_hyperparams, train
from promogym.envs.base import split_config
from promogym.experiments.cli import main

REC = "promogym/PromoRecommendation-v0"
SMALL = {"market": {"n_products": 40, "n_customers": 400, "seed": 3}, "visitors": 4, "horizon": 3,
         "steps_per_day": 2, "new_products_day": 1}


def test_a_split_serves_the_same_visitors_a_day_in_smaller_steps():
    assert split_config(REC, {"visitors": 8, "horizon": 5}, 8) == {"visitors": 1, "horizon": 5, "steps_per_day": 32}
    assert split_config(REC, {}, 4) == {"visitors": 2, "steps_per_day": 16}  # the defaults: 8 visitors, 4 steps
    assert split_config(REC, {"visitors": 6}, 1) == {"visitors": 6}


@pytest.mark.parametrize(("env_id", "config", "k", "needle"), [
    (REC, {"visitors": 6}, 4, "does not divide"),
    (REC, {}, 0, "integer >= 1"),
    ("promogym/DynamicPricing-v1", {}, 2, "declares no batch_split"),
])
def test_a_split_that_cannot_be_made_is_refused(env_id, config, k, needle):
    with pytest.raises(ValueError, match=needle):
        split_config(env_id, config, k)


@pytest.mark.parametrize(("params", "needle"), [
    ({"train_split": 0}, "integer >= 1"),
    ({"train_split": 2.0}, "integer >= 1"),
    ({"train_split": True}, "integer >= 1"),
    ({"policy": "MlpPolicy", "train_split": 2}, "needs policy per_customer"),
    ({"policy": "per_customer", "train_split": 3}, "does not divide"),
])
def test_train_split_is_checked_before_training(params, needle):
    with pytest.raises(ValueError, match=needle):
        check_hyperparams("maskable_ppo", params, REC, SMALL)


def test_the_train_command_refuses_a_split_the_env_cannot_make(tmp_path, capsys):
    code = main(["train", "--env", REC, "--algo", "maskable_ppo", "--set", "train_split=3", "--out",
                 str(tmp_path / "r"), "--no-progress"])
    assert code == 2 and "does not divide" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_statistics_of_a_smaller_batch_repeat_over_a_larger_one():
    layout = CohortLayout(n_items=6, levels=4, item_features=2, global_features=1)
    small = np.array([1.0, 2.0, 3.0, 4.0, 9.0])  # 2 items x 2 features, then the global one
    np.testing.assert_array_equal(widen_item_statistics(small, layout, 3), [1, 2, 3, 4] * 3 + [9])
    np.testing.assert_array_equal(widen_item_statistics(np.arange(13.0), layout, 1), np.arange(13.0))
    with pytest.raises(ValueError, match="not those of 6 items / 2"):
        widen_item_statistics(small, layout, 2)  # statistics of 2 items, not of 3
    with pytest.raises(ValueError, match="not those of 6 items / 4"):
        widen_item_statistics(small, layout, 4)  # 4 batches do not divide 6 items


def _actor_logits(policy: LearnedPolicy, normalized: np.ndarray, n_items: int) -> np.ndarray:
    """The run's actor network on one normalized observation of ``n_items`` items."""
    net = policy.model.policy.net
    layout, net.layout = net.layout, dataclasses.replace(net.layout, n_items=n_items)
    try:
        with th.no_grad():
            return net.forward_actor(th.as_tensor(normalized[None], dtype=th.float32)).numpy()[0]
    finally:
        net.layout = layout


SPLIT_PARAMS = {"train_split": 4, "n_steps": 48, "batch_size": 24, "n_epochs": 2}


def _spec(**changes):
    return TrainSpec(REC, "maskable_ppo", **{"seed": 0, "timesteps": 96, "env_config": SMALL, "eval_freq": 48,
                                            "eval_episodes": 1, "checkpoint_freq": 96,
                                            "hyperparams": dict(SPLIT_PARAMS), **changes})


@pytest.fixture(scope="module")
def split_run(tmp_path_factory):
    """A run trained with train_split 4 on the 4-visitor env (one visitor a step)."""
    run = tmp_path_factory.mktemp("split") / "run"
    meta = train(_spec(), run)
    assert meta["train_split"] == 4
    return run


def test_a_policy_trained_one_visitor_a_step_acts_on_each_of_several_as_on_one_alone(split_run):
    """Trained with train_split 4 (one visitor a step), the run's model plays the env's 4 visitors a step: each
    visitor's logits are those the network gives that visitor's block alone, normalized with the run's own
    statistics of the training layout (one visitor and the global features), as in training."""
    saved = yaml.safe_load((split_run / "config.yml").read_text())
    assert saved["hyperparams"]["train_split"] == 4 and saved["env_config"] == SMALL
    env = gym.make(REC, config=SMALL)
    policy = LearnedPolicy(split_run, env, best=False)
    assert policy.model.observation_space == env.observation_space
    obs, _ = env.reset(seed=1)
    action, _ = policy.predict(obs)
    assert env.action_space.contains(action.astype(env.action_space.dtype))
    stats = json.loads((split_run / "vecnormalize.json").read_text())
    mean, var = np.asarray(stats["obs_rms"]["mean"]), np.asarray(stats["obs_rms"]["var"])
    u = env.unwrapped
    block = u.item_features * u.width
    assert len(mean) == block + 8  # the training layout: one visitor, then the season left and the weekday
    assert not np.allclose(var[:block], var[:block].mean())  # statistics differ by position: a misplaced one shows
    logits = _actor_logits(policy, policy.norm.normalize_obs(obs[None].astype(np.float32))[0], 4 * u.width)
    logits = logits.reshape(4, -1)
    for k in range(4):
        own = np.concatenate([obs[k * block:(k + 1) * block], obs[4 * block:]])
        normalized = np.clip((own - mean) / np.sqrt(var + stats["epsilon"]), -stats["clip_obs"], stats["clip_obs"])
        np.testing.assert_allclose(logits[k], _actor_logits(policy, normalized, u.width), rtol=1e-5, atol=1e-5)


def test_a_split_run_acts_only_on_the_env_it_was_configured_for(split_run):
    LearnedPolicy(split_run, gym.make(REC, config=SMALL))  # the best model too
    with pytest.raises(ValueError, match="as configured in its config"):
        LearnedPolicy(split_run, gym.make(REC, config={**SMALL, "visitors": 8}))


def test_a_split_run_warm_starts_a_split_run_and_says_why_it_cannot_start_an_unsplit_one(split_run, tmp_path):
    meta = train(_spec(init_from=str(split_run), seed=1), tmp_path / "next")
    assert meta["init_from"]["path"] == str(split_run.resolve())
    with pytest.raises(ValueError, match="it trained with train_split 4, this run with 1"):
        train(_spec(init_from=str(split_run), hyperparams={**SPLIT_PARAMS, "train_split": 1}), tmp_path / "unsplit")


def test_a_tuning_trial_scores_a_split_model_on_the_env_it_trains_on():
    from promogym.agents.train import resolved_hyperparams
    from promogym.experiments import tune

    spec = tune.TuneSpec(REC, "maskable_ppo", trials=1, timesteps=96, eval_episodes=1, env_config=SMALL)
    params = resolved_hyperparams(REC, "maskable_ppo", {"n_steps": 48, "batch_size": 24, "n_epochs": 1})
    assert params["train_split"] == 8  # the table's row
    params["train_split"] = 4
    reports = []
    value, trained, eval_steps = tune.train_and_score(spec, params, lambda *a: reports.append(a) or False)
    assert value is not None and np.isfinite(value) and reports and trained == 96
    assert eval_steps == len(reports) * 3 * 2 * 4  # each score: an episode of the split env, 3 days of 2 x 4 steps
