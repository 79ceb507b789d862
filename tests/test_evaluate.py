"""`promogym evaluate` and `promogym ab`: tidy episode tables, world scoring, paired A/B tests."""

import json

import numpy as np
import pandas as pd
import pytest

from promogym.experiments.cli import main
from promogym.experiments.stats import ab_test

FAST = ["--env-set", "market={n_customers: 800, n_products: 100}", "--env-set", "horizon=6",
        "--env-set", "daily_customers=60", "--env-set", "initial_stock=15", "--env-set", "n_products=4"]


def test_evaluate_writes_one_row_per_policy_and_episode(tmp_path, capsys):
    out = tmp_path / "ep.parquet"
    args = ["evaluate", "--env", "promogym/DynamicPricing-v1", "--policy", "list_price", "--policy", "static:1.1",
            "--policy", "myopic", "--episodes", "4", *FAST]
    assert main([*args, "--out", str(out)]) == 0
    df = pd.read_parquet(out)
    assert len(df) == 12 and set(df["backend"]) == {"world"}
    assert {"policy", "seed", "return", "revenue", "cost", "coupon_spend", "units", "stockouts"} <= set(df.columns)
    assert sorted(df["seed"].unique()) == [0, 1, 2, 3]  # common random numbers across policies
    again = tmp_path / "again.parquet"
    assert main([*args, "--out", str(again)]) == 0
    pd.testing.assert_frame_equal(df, pd.read_parquet(again))  # same seeds, same table
    assert "list_price" in capsys.readouterr().out


def test_evaluate_on_a_learned_simulator_is_scored_in_the_world_too(tmp_path, tiny_model, capsys):
    from conftest import SMALL_WORLD

    _, ckpt = tiny_model
    out = tmp_path / "ep.parquet"
    market = "market={" + ", ".join(f"{k}: {v}" for k, v in SMALL_WORLD.items()) + "}"
    assert main(["evaluate", "--env", "promogym/DynamicPricing-v1", "--response", f"bert:{ckpt}", "--policy",
                 "list_price", "--policy", "myopic", "--episodes", "3", "--out", str(out), "--env-set", market,
                 "--env-set", "n_products=4", "--env-set", "horizon=5", "--env-set", "daily_customers=60"]) == 0
    df = pd.read_parquet(out)
    assert set(df["backend"]) == {"simulator", "world"} and len(df) == 12
    assert set(df.loc[df["backend"] == "simulator", "response"]) == {f"bert:{ckpt}"}
    assert "sim_minus_world" in capsys.readouterr().out


def test_ab_reports_lift_ci_p_value_and_episodes_needed(tmp_path, capsys):
    out = tmp_path / "ab.json"
    assert main(["ab", "--env", "promogym/DynamicPricing-v1", "--a", "list_price", "--b", "static:0.6",
                 "--episodes", "12", "--out", str(out), *FAST]) == 0
    res = json.loads(out.read_text())
    lo, hi = res["lift_ci"]
    assert lo <= res["lift"] <= hi and 0 <= res["p_value"] <= 1 and res["episodes"] == 12
    assert res["mean_b"] < res["mean_a"]  # deep discounts lose money
    assert "episodes needed" in capsys.readouterr().out


def test_ab_statistics_on_known_differences():
    rng = np.random.default_rng(0)
    a = rng.normal(100, 10, 400)
    b = a + 2.0 + rng.normal(0, 5, 400)  # paired: common noise cancels
    res = ab_test(a, b)
    assert res["diff_ci"][0] < 2.0 < res["diff_ci"][1] and res["significant"]
    # the sample size formula: ((z_0.975 + z_0.8) * sd / diff)^2 ~ (2.80 * 5 / 2)^2 ~ 49
    assert 35 < res["episodes_needed"] < 65
    same = ab_test(a, a.copy())
    assert same["diff"] == 0 and same["p_value"] == 1.0 and not same["significant"]
    with pytest.raises(ValueError, match="paired"):
        ab_test(a, b[:-1])


@pytest.mark.parametrize("args, needle", [
    (["evaluate", "--env", "promogym/Nope-v0", "--policy", "list_price"], "unknown or unsupported env id"),
    (["evaluate", "--env", "promogym/DynamicPricing-v1", "--policy", "magic"], "unknown policy 'magic'"),
    (["evaluate", "--env", "promogym/CouponAllocation-v1", "--policy", "list_price"], "unknown policy"),
    (["evaluate", "--env", "promogym/DynamicPricing-v1", "--policy", "static:cheap"], "needs a number"),
    (["evaluate", "--env", "promogym/DynamicPricing-v1", "--policy", "list_price", "--env-set", "horizon=-1"],
     "horizon"),
    (["ab", "--env", "promogym/DynamicPricing-v1", "--a", "list_price", "--b", "random", "--episodes", "1"],
     "paired test"),
])
def test_bad_requests_fail_before_any_episode(args, needle, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing may be written even by mistake
    assert main(args) == 2
    assert needle in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_a_run_folder_of_another_env_is_refused(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yml").write_text("env_id: promogym/CouponAllocation-v1\n")
    assert main(["evaluate", "--env", "promogym/DynamicPricing-v1", "--policy", str(run), "--out",
                 str(tmp_path / "e.parquet")]) == 2
    assert "holds an agent for promogym/CouponAllocation-v1" in capsys.readouterr().err


def test_evaluate_coupon_policies(tmp_path):
    """`all_20pct` tries to overspend a budget of 30 (with the budget out of reach it spends more on these
    seeds); in the table every episode stays within the budget, and each row's return is its components'."""
    env_set = ["--env-set", "market={n_customers: 800, n_products: 100}", "--env-set", "cohort_size=8",
               "--env-set", "horizon=6"]
    out, free = tmp_path / "c.parquet", tmp_path / "free.parquet"
    assert main(["evaluate", "--env", "promogym/CouponAllocation-v1", "--policy", "no_coupon", "--policy", "myopic",
                 "--policy", "oracle", "--policy", "all_20pct", "--episodes", "2", "--out", str(out), *env_set,
                 "--env-set", "budget=30"]) == 0
    assert main(["evaluate", "--env", "promogym/CouponAllocation-v1", "--policy", "all_20pct", "--episodes", "2",
                 "--out", str(free), *env_set, "--env-set", "budget=1e9"]) == 0
    df, unconstrained = pd.read_parquet(out), pd.read_parquet(free)
    assert unconstrained["coupon_spend"].max() > 30               # the budget binds for all_20pct
    assert len(df) == 8 and (df["coupon_spend"] <= 30 + 1e-9).all()
    assert all(sorted(seeds) == [0, 1] for _, seeds in df.groupby("policy")["seed"])
    greedy = df[df["policy"] == "all_20pct"]
    assert greedy["coupon_spend"].sum() > 0                       # it was given what the budget could pay
    assert (df.loc[df["policy"] == "no_coupon", "coupon_spend"] == 0).all()
    np.testing.assert_allclose(df["return"], df["revenue"] - df["cost"] - df["coupon_spend"], atol=1e-6)
