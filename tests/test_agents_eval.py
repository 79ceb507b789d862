"""Statistics over seeds, coupon baselines, and the agents report on a small setting."""

import json

import gymnasium as gym
import numpy as np
import pytest
from budget_checks import MostGenerous, play_within_budget, unconstrained_spend

from promogym import envs  # noqa: F401
from promogym.agents.base import run_episode
from promogym.agents.baselines import UniformCoupon
from promogym.agents.coupons import CouponOracle, MyopicCoupons, UpliftTargeting
from promogym.envs.market import Market
from promogym.envs.market.logs import generate_logs
from promogym.experiments.stats import bootstrap_ci, iqm, normalized, summarize

COUPONS = {"market": {"n_customers": 800, "n_products": 100}, "cohort_size": 32, "horizon": 12, "budget": 60.0}


def test_iqm_bootstrap_and_normalized_score():
    x = np.array([1.0, 2.0, 3.0, 4.0, 100.0, 5.0, 6.0, 7.0])
    assert iqm(x) == pytest.approx(np.mean([3.0, 4.0, 5.0, 6.0]))
    rng = np.random.default_rng(0)
    data = rng.normal(10.0, 1.0, size=(5, 200))
    lo, hi = bootstrap_ci(data)
    assert lo < data.mean() < hi and hi - lo < 1.0
    s = summarize(data)
    assert s["seeds"] == 5 and s["ci95"][0] < s["mean"] < s["ci95"][1]
    assert normalized(15.0, 10.0, 20.0) == 0.5


@pytest.fixture(scope="module")
def coupon_logs():
    return generate_logs(Market(COUPONS["market"]), 40_000, seed=2)


def test_myopic_coupons_act_on_expected_profit():
    env = gym.make("promogym/CouponAllocation-v1", config={**COUPONS, "budget": 1e9})
    obs, _ = env.reset(seed=0)
    action = MyopicCoupons(env).predict(obs)[0]
    assert env.action_space.contains(action)
    types = env.unwrapped.market.customers.ctype[env.unwrapped.users]
    # promotion-averse customers never get a coupon from a profit-maximiser that knows the truth
    assert (action[types == 3] == 0).all()


def test_coupon_oracle_paces_the_budget_and_beats_no_coupons():
    """A budget of 60 binds (the top coupon for everyone would spend several times more over these seeds):
    the most generous rule is refused most of what it asks for, and the refusals are counted; the oracle,
    which paces the budget, gets a far larger share of what it asks for, and neither overspends."""
    env = gym.make("promogym/CouponAllocation-v1", config=COUPONS)
    seeds = range(4)
    assert unconstrained_spend("promogym/CouponAllocation-v1", COUPONS, seeds) > 60.0
    generous = play_within_budget(env, MostGenerous(env), seeds)
    assert generous.clipped > 0 and max(generous.spend) <= 60.0 + 1e-9
    oracle = play_within_budget(env, CouponOracle(env), seeds)
    assert max(oracle.spend) <= 60.0 + 1e-9 and oracle.given > 0
    assert oracle.clipped / oracle.requested < 0.75 * generous.clipped / generous.requested
    returns = [run_episode(env, CouponOracle(env), seed=s)["return"] for s in seeds]
    none = [run_episode(env, UniformCoupon(env, 0), seed=s)["return"] for s in seeds]
    assert np.mean(returns) > np.mean(none)


def test_uplift_targeting_paces_the_budget(coupon_logs):
    env = gym.make("promogym/CouponAllocation-v1", config=COUPONS)
    policy = UpliftTargeting(env, coupon_logs)
    ledger = play_within_budget(env, policy, [0])
    assert ledger.given > 0 and 0 < ledger.spend[0] <= 60.0
    generous = play_within_budget(env, MostGenerous(env), [0])
    assert generous.clipped > 0 and ledger.clipped / max(ledger.requested, 1) < generous.clipped / generous.requested
    row = run_episode(env, UpliftTargeting(env, coupon_logs), seed=0)
    assert row["coupon_spend"] == pytest.approx(ledger.spend[0])
    none = run_episode(env, UniformCoupon(env, 0), seed=0)
    assert row["units"] >= none["units"] - 3


def test_agents_report_on_coupons(tmp_path, capsys, coupon_logs):
    from promogym.experiments.cli import main

    logs = tmp_path / "logs.parquet"
    coupon_logs.to_parquet(logs)
    code = main(["agents-report", "--env", "promogym/CouponAllocation-v1", "--seeds", "1", "--timesteps", "256",
                 "--episodes", "2", "--jobs", "1", "--logs", str(logs), "--out", str(tmp_path / "rep"),
                 "--runs", str(tmp_path / "runs")])
    assert code == 0
    text = (tmp_path / "rep" / "report.md").read_text()
    assert "maskable_ppo (learned)" in text
    # one reference rule for every report: the best static coupon rule, not a targeting model
    stats = json.loads((tmp_path / "rep" / "CouponAllocation-v1.json").read_text())
    means = {name: p["mean"] for name, p in stats["policies"].items()}
    rules = ("no_coupon", "all_5pct", "all_10pct", "all_20pct")
    assert stats["reference"] == max(rules, key=means.__getitem__)
    assert f"reference: {stats['reference']}" in text
    # the run folder is the engine's: a second invocation reuses every finished stage and trial
    assert main(["agents-report", "--env", "promogym/CouponAllocation-v1", "--seeds", "1", "--timesteps", "256",
                 "--episodes", "2", "--jobs", "1", "--logs", str(logs), "--out", str(tmp_path / "rep"),
                 "--runs", str(tmp_path / "runs")]) == 0
    assert "train: done already" in capsys.readouterr().out
