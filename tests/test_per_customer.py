"""The per-customer actor-critic (agents/per_customer.py) and its wiring into `promogym train`."""

import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch as th
import yaml
from sb3_contrib import MaskablePPO
from sb3_contrib.common.maskable.distributions import MaskableMultiCategoricalDistribution
from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy
from stable_baselines3 import PPO
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize
from torch.distributions import Categorical

from promogym.agents.per_customer import (
    MaskableFactorisedCategoricalDistribution,
    PerCustomerPolicy,
    PerCustomerPPOPolicy,
    count_parameters,
    env_item_features,
)
from promogym.agents.train import (
    LearnedPolicy,
    TrainSpec,
    check_hyperparams,
    load_hyperparams,
    model_arguments,
    train,
)
from promogym.experiments.cli import main

COUPONS = "promogym/CouponAllocation-v1"
HILLSTROM = "promogym/HillstromTargeting-v0"
SMALL_MARKET = {"n_customers": 800, "n_products": 100}
PRICING_CONFIG = {"horizon": 8, "market": SMALL_MARKET}


def _coupons(cohort: int = 8) -> gym.Env:
    return gym.make(COUPONS, config={"cohort_size": cohort, "horizon": 8, "market": SMALL_MARKET})


def _policy(env: gym.Env, **kwargs) -> PerCustomerPolicy:
    th.manual_seed(0)
    return PerCustomerPolicy(env.observation_space, env.action_space, lambda _: 3e-4,
                             item_features=env.unwrapped.item_features, **kwargs)


def _permuted(obs: np.ndarray, perm: np.ndarray, n: int, f: int) -> np.ndarray:
    """The observation with its customers' blocks in the order ``perm`` (global features unchanged)."""
    return np.concatenate([obs[: n * f].reshape(n, f)[perm].ravel(), obs[n * f:]])


def _observations(env: gym.Env, k: int = 4) -> np.ndarray:
    obs, _ = env.reset(seed=0)
    rows = [obs]
    for _ in range(k - 1):
        obs, *_ = env.step(env.action_space.sample())
        rows.append(obs)
    return np.stack(rows).astype(np.float32)


def test_logits_permute_with_the_customers_and_the_value_does_not():
    """Shapes as SB3 expects; reordering the customers reorders their logits and actions' log-probabilities
    and leaves the value unchanged. SB3's MlpPolicy on the same observations is not equivariant (the check
    can fail)."""
    env = _coupons(8)
    env.action_space.seed(0)
    n, f, levels = 8, env.unwrapped.item_features, len(env.unwrapped.levels)
    obs = _observations(env)
    perm = np.random.default_rng(1).permutation(n)
    shuffled = np.stack([_permuted(o, perm, n, f) for o in obs])
    policy = _policy(env)
    with th.no_grad():
        logits = policy.net.forward_actor(th.as_tensor(obs))
        logits_p = policy.net.forward_actor(th.as_tensor(shuffled))
        values = policy.predict_values(th.as_tensor(obs))
        values_p = policy.predict_values(th.as_tensor(shuffled))
        actions, values_f, log_prob = policy(th.as_tensor(obs))
    assert logits.shape == (4, n * levels) and values.shape == (4, 1)
    assert actions.shape == (4, n) and log_prob.shape == (4,) and values_f.shape == (4, 1)
    th.testing.assert_close(logits_p.reshape(4, n, levels), logits.reshape(4, n, levels)[:, perm])
    th.testing.assert_close(values_p, values)
    assert not th.allclose(logits.reshape(4, n, levels)[:, 0], logits.reshape(4, n, levels)[:, 1])  # per customer

    th.manual_seed(0)
    mlp = MaskableActorCriticPolicy(env.observation_space, env.action_space, lambda _: 3e-4, ortho_init=False)
    with th.no_grad():
        raw = mlp.action_net(mlp.mlp_extractor.forward_actor(th.as_tensor(obs))).reshape(4, n, levels)
        raw_p = mlp.action_net(mlp.mlp_extractor.forward_actor(th.as_tensor(shuffled))).reshape(4, n, levels)
    assert not th.allclose(raw_p, raw[:, perm], atol=1e-4)


def test_masked_levels_get_zero_probability_and_are_never_sampled():
    n, levels, batch = 8, 5, 3
    rng = np.random.default_rng(0)
    masks = rng.random((batch, n, levels)) < 0.5
    masks[..., 0] = True                                  # the envs always allow "no coupon"
    logits = th.as_tensor(rng.normal(size=(batch, n * levels)) * 3, dtype=th.float32)
    dist = MaskableFactorisedCategoricalDistribution(n, levels).proba_distribution(logits)
    dist.apply_masking(masks.reshape(batch, -1))
    probs = dist.distribution.probs.numpy()
    assert (probs[~masks] < 1e-30).all()
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
    th.manual_seed(0)
    draws = np.stack([dist.sample().numpy() for _ in range(500)])       # (500, batch, n)
    allowed = np.take_along_axis(np.broadcast_to(masks, (500, *masks.shape)), draws[..., None], -1)[..., 0]
    assert allowed.all()
    mode = dist.mode().numpy()
    assert np.take_along_axis(masks, mode[..., None], -1).all()
    assert len(np.unique(draws)) > 1                        # it does sample, not always level 0
    # the entropy ignores masked levels: it is the entropy of the allowed levels' renormalised probabilities
    z = logits.reshape(batch, n, levels).numpy().astype(np.float64)
    z = np.where(masks, z, -np.inf)
    p = np.exp(z - z.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    expected = -(np.where(masks, p * np.log(np.where(masks, p, 1.0)), 0.0)).sum((1, 2))
    np.testing.assert_allclose(dist.entropy().numpy(), expected, rtol=1e-5)
    dist.apply_masking(None)                                # the unmasked logits are restored
    assert (dist.distribution.probs.numpy()[~masks] > 0).all()


@pytest.mark.parametrize("masked", [False, True])
def test_log_prob_is_the_sum_of_independent_per_customer_log_probs(masked):
    """Against one torch Categorical per customer, and against sb3-contrib's MaskableMultiCategorical (its
    entropy too), on the same logits and masks."""
    n, levels, batch = 6, 4, 5
    rng = np.random.default_rng(2)
    logits = th.as_tensor(rng.normal(size=(batch, n * levels)), dtype=th.float32)
    masks = rng.random((batch, n * levels)) < 0.6
    masks.reshape(batch, n, levels)[..., 0] = True
    actions = th.as_tensor(rng.integers(0, levels, (batch, n)))
    if masked:  # actions the masks allow (a masked action has probability 0 anyway)
        actions = th.as_tensor(np.where(masks.reshape(batch, n, levels)[
            np.arange(batch)[:, None], np.arange(n)[None], actions.numpy()], actions.numpy(), 0))
    ours = MaskableFactorisedCategoricalDistribution(n, levels).proba_distribution(logits)
    theirs = MaskableMultiCategoricalDistribution([levels] * n).proba_distribution(logits)
    if masked:
        ours.apply_masking(masks)
        theirs.apply_masking(masks)
    one_by_one = th.zeros(batch)
    for i in range(n):
        z = logits[:, i * levels:(i + 1) * levels]
        if masked:
            z = th.where(th.as_tensor(masks[:, i * levels:(i + 1) * levels]), z, th.tensor(-1e8))
        one_by_one += Categorical(logits=z).log_prob(actions[:, i])
    th.testing.assert_close(ours.log_prob(actions), one_by_one)
    th.testing.assert_close(ours.log_prob(actions), theirs.log_prob(actions))
    th.testing.assert_close(ours.entropy(), theirs.entropy())
    assert ours.per_item_log_prob(actions).shape == (batch, n)


def test_parameter_count_does_not_grow_with_the_cohort():
    small, large = _coupons(8), _coupons(32)
    assert count_parameters(_policy(small)) == count_parameters(_policy(large))
    mlp = [count_parameters(MaskableActorCriticPolicy(e.observation_space, e.action_space, lambda _: 3e-4))
           for e in (small, large)]
    assert mlp[1] > mlp[0]                                  # what it replaces grows with the cohort
    # the critic pools: the value of a cohort and of the same cohort twice over are equal
    policy = _policy(large)
    obs = _observations(small, 2)
    n, f = 8, small.unwrapped.item_features
    doubled = np.stack([np.concatenate([np.tile(o[: n * f], 4), o[n * f:]]) for o in obs]).astype(np.float32)
    with th.no_grad():
        th.testing.assert_close(policy.predict_values(th.as_tensor(doubled)),
                                _policy(small).predict_values(th.as_tensor(obs)))


def test_bad_layouts_are_refused_with_a_clear_message():
    env = _coupons(8)
    with pytest.raises(ValueError, match="item_features"):
        PerCustomerPolicy(env.observation_space, env.action_space, lambda _: 3e-4)
    with pytest.raises(ValueError, match="fewer than 8 customers x item_features 200"):
        PerCustomerPolicy(env.observation_space, env.action_space, lambda _: 3e-4, item_features=200)
    with pytest.raises(ValueError, match="same number of levels"):
        PerCustomerPolicy(env.observation_space, gym.spaces.MultiDiscrete([5] * 7 + [4]), lambda _: 3e-4,
                          item_features=13)
    pricing = gym.make("promogym/DynamicPricing-v1", config=PRICING_CONFIG)
    with pytest.raises(ValueError, match="no per-customer observation layout"):
        env_item_features(pricing)
    hillstrom = gym.make(HILLSTROM, config={"batch_size": 4, "horizon": 8})
    assert env_item_features(hillstrom) == 11 and env_item_features(env) == 13


def _vec(cohort: int = 8) -> VecNormalize:
    return VecNormalize(DummyVecEnv([lambda: Monitor(_coupons(cohort))]), gamma=0.99)


@pytest.mark.parametrize("algo", ["maskable_ppo", "ppo"])
def test_learn_save_load_round_trip(tmp_path, algo):
    """Trains through SB3 (with observation normalization), saves, loads by the class's module path and acts
    the same; MaskablePPO never picks a masked level."""
    venv = _vec()
    params = {"policy": "per_customer", "n_steps": 128, "batch_size": 64, "n_epochs": 2,
              "policy_kwargs": {"net_arch": [16, 16]}}
    policy, kwargs = model_arguments(algo, params, venv)
    cls = MaskablePPO if algo == "maskable_ppo" else PPO
    assert policy is (PerCustomerPolicy if algo == "maskable_ppo" else PerCustomerPPOPolicy)
    model = cls(policy, venv, seed=0, verbose=0, **kwargs)
    before = {k: v.clone() for k, v in model.policy.state_dict().items()}
    model.learn(256)
    assert any(not th.equal(before[k], v) for k, v in model.policy.state_dict().items())
    model.save(tmp_path / "model.zip")
    loaded = cls.load(tmp_path / "model.zip", device="cpu")
    assert type(loaded.policy) is policy and loaded.policy.item_features == 13
    env = _coupons()
    obs, _ = env.reset(seed=3)
    for _ in range(4):
        x = venv.normalize_obs(obs[None])
        extra = {"action_masks": env.unwrapped.action_masks()[None]} if algo == "maskable_ppo" else {}
        a, _ = model.predict(x, deterministic=True, **extra)
        b, _ = loaded.predict(x, deterministic=True, **extra)
        np.testing.assert_array_equal(a, b)
        if algo == "maskable_ppo":
            assert extra["action_masks"].reshape(8, -1)[np.arange(8), a[0]].all()
        obs, *_ = env.step(a[0])


def test_hyperparams_table_selects_the_per_customer_policy():
    """The allocation envs' ppo and maskable_ppo entries name the per-customer policy; they pass the checks and
    build it with the env's layout; other entries keep the default."""
    for env_id, config in ((COUPONS, {"cohort_size": 8, "market": SMALL_MARKET}), (HILLSTROM, {"batch_size": 4})):
        for algo in ("maskable_ppo", "ppo"):
            params = load_hyperparams(env_id, algo)
            assert params["policy"] == "per_customer", (env_id, algo)
            check_hyperparams(algo, params, env_id, config)
            policy, kwargs = model_arguments(algo, params, gym.make(env_id, config=config))
            assert policy in (PerCustomerPolicy, PerCustomerPPOPolicy)
            assert kwargs["policy_kwargs"]["item_features"] == gym.make(env_id, config=config).unwrapped.item_features
            assert "policy" not in kwargs
        assert "policy" not in load_hyperparams(env_id, "a2c")
    assert model_arguments("ppo", load_hyperparams("promogym/DynamicPricing-v1", "ppo"), None)[0] == "MlpPolicy"


@pytest.mark.parametrize(("algo", "params", "env", "needle"), [
    ("sac", {"policy": "per_customer"}, None, "policy 'per_customer' trains with maskable_ppo, ppo only, not sac"),
    ("a2c", {"policy": "per_customer"}, None, "not a2c"),
    ("ppo", {"policy": "per_cust"}, None, "policy 'per_cust' is not a known policy for ppo; choose one of MlpPolicy, "
                                          "per_customer"),
    ("sac", {"policy": "per_customer"}, "promogym/DynamicPricing-v1", "not sac"),
    ("ppo", {"policy": "per_customer"}, "promogym/DynamicPricing-v1", "no per-customer observation layout"),
    ("ppo", {"policy": "per_customer", "policy_kwargs": {"item_features": 4}}, COUPONS, "the env's is 13"),
    ("ppo", {"policy": "per_customer", "policy_kwargs": {"log_std_init": -1.0}}, None,
     "policy_kwargs.log_std_init is not a setting of PerCustomerPPOPolicy"),
])
def test_check_hyperparams_rejects_what_the_policy_cannot_do(algo, params, env, needle):
    config = (PRICING_CONFIG if "Pricing" in env else {"cohort_size": 8, "market": SMALL_MARKET}) if env else None
    with pytest.raises(ValueError) as err:
        check_hyperparams(algo, params, env, config)
    assert needle in str(err.value) and "\n" not in str(err.value)  # one line


@pytest.mark.parametrize(("algo", "env", "needle"), [
    ("sac", "promogym/DynamicPricing-v1", "not sac"),
    ("ppo", "promogym/DynamicPricing-v1", "no per-customer observation layout"),
])
def test_train_command_refuses_per_customer_before_training(tmp_path, capsys, algo, env, needle):
    code = main(["train", "--env", env, "--algo", algo, "--set", "policy=per_customer", "--env-set", "horizon=8",
                 "--out", str(tmp_path / "r"), "--no-progress"])
    assert code == 2 and needle in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_a_training_run_records_its_policy_and_plays(tmp_path):
    config = {"cohort_size": 8, "horizon": 8, "budget": 20, "market": SMALL_MARKET}
    spec = TrainSpec(COUPONS, "maskable_ppo", seed=0, timesteps=128, env_config=config, eval_freq=64,
                     eval_episodes=1, checkpoint_freq=64,
                     hyperparams={"n_steps": 64, "batch_size": 32, "n_epochs": 2})
    meta = train(spec, tmp_path / "run")
    assert meta["policy"] == "per_customer"
    assert meta["policy_class"] == "promogym.agents.per_customer.PerCustomerPolicy"
    assert json.loads((tmp_path / "run" / "metadata.json").read_text())["policy"] == "per_customer"
    cfg = yaml.safe_load((tmp_path / "run" / "config.yml").read_text())
    assert cfg["hyperparams"]["policy"] == "per_customer"
    env = gym.make(COUPONS, config=config)
    learned = LearnedPolicy(tmp_path / "run", env)
    assert isinstance(learned.model.policy, PerCustomerPolicy)
    obs, _ = env.reset(seed=0)
    action, _ = learned.predict(obs)
    assert env.action_space.contains(action.astype(env.action_space.dtype))


def test_committed_policy_bench_holds_its_own_ratio():
    """results/bench/policy.json (`promogym bench policy`): the ratio is the quotient of its two measured rates,
    the per-customer policy's parameter count is the same at cohorts of 64 and 256 and MlpPolicy's is not
    (structure, not timings)."""
    figures = json.loads((Path(__file__).resolve().parents[1] / "results" / "bench" / "policy.json").read_text())[
        "figures"]
    assert figures["ratio_per_customer_over_mlp"] == pytest.approx(
        figures["per_customer_steps_per_s"] / figures["mlp_steps_per_s"])
    assert figures["per_customer_params_cohort64"] == figures["per_customer_params_cohort256"]
    assert figures["mlp_params_cohort256"] > figures["mlp_params_cohort64"]
    assert figures["targets"] == {"ratio_per_customer_over_mlp": 10.0}
