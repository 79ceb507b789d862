"""`promogym export`: the exported decisions are the ones the env saw, the band and sidecar say what they should,
bad input is one line and exit 2, and nothing the command did not write is replaced."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pandas as pd
import pytest

import promogym.envs  # noqa: F401  (registers the ids)
from promogym.agents.base import run_episode
from promogym.agents.registry import PolicyContext, make_policy
from promogym.experiments.cli import main

DP, PP, CA = "promogym/DynamicPricing-v1", "promogym/PricePromo-v1", "promogym/CouponAllocation-v1"
SMALL = ["--set", "n_products=4", "--set", "horizon=7"]


def _replay(env_id: str, spec: str, config: dict, seed: int) -> list[dict]:
    """The infos of one episode played by the project's own evaluation loop."""
    env = gym.make(env_id, config=config)
    policy = make_policy(spec, env, PolicyContext(env_id, env))
    infos: list[dict] = []
    run_episode(env, policy, seed, on_step=lambda e, t, info: infos.append(info))
    return infos


def _export(tmp_path, spec, env_id, name, *extra, episodes=3, seed=5):
    out = tmp_path / name
    assert main(["export", spec, "--env", env_id, "--out", str(out), "--episodes", str(episodes), "--seed", str(seed),
                 "--no-progress", *extra]) == 0
    table = pd.read_csv(out) if out.suffix == ".csv" else pd.read_parquet(out)
    return table, json.loads((tmp_path / f"{name}.json").read_text())


@pytest.mark.parametrize("spec", ["markdown", "random"])
def test_pricing_export_holds_the_prices_the_env_set(tmp_path, spec):
    table, meta = _export(tmp_path, spec, DP, "d.csv", *SMALL)
    infos = _replay(DP, spec, {"n_products": 4, "horizon": 7}, seed=5)
    assert len(table) == 4 * len(infos) and set(table["episode_seed"]) == {5}
    for info in infos:
        day = table[table["day"] == info["day"]].sort_values("product")
        np.testing.assert_allclose(day["price"], info["prices"])
        np.testing.assert_array_equal(day["units_sold"], info["units"])
        # the per-product expectations add up to the env's own expected profit of the day
        assert day["expected_profit"].sum() == pytest.approx(info["expected_profit"], rel=1e-9)
    assert (table["expected_profit_p05"] <= table["expected_profit_mean"] + 1e-9).all()
    assert (table["expected_profit_mean"] <= table["expected_profit_p95"] + 1e-9).all()
    assert (table["band_episodes"] == 3).all()
    assert meta["kind"] == "export" and meta["policy"] == spec and meta["first_seed"] == 5 and meta["episodes"] == 3
    assert meta["env_config"]["n_products"] == 4 and "expected_profit_p95" in meta["columns"] and meta["band"]
    assert "commit" in meta and len(meta["sha256"]) == 64


def test_price_promo_export_has_the_coupon_rule_per_segment(tmp_path):
    table, _ = _export(tmp_path, "random", PP, "p.parquet", *SMALL, episodes=2)
    infos = _replay(PP, "random", {"n_products": 4, "horizon": 7}, seed=5)
    assert {"coupon_daily", "coupon_weekly", "coupon_monthly"} <= set(table.columns)
    levels = set(PP_LEVELS)
    assert set(table[["coupon_daily", "coupon_weekly", "coupon_monthly"]].to_numpy().ravel()) <= levels
    # one rule per segment and day: the same for every product of the day
    assert (table.groupby("day")[["coupon_daily", "coupon_weekly", "coupon_monthly"]].nunique() == 1).all().all()
    for info in infos:
        day = table[table["day"] == info["day"]].sort_values("product")
        np.testing.assert_allclose(day["price"], info["prices"])


PP_LEVELS = (0.0, 0.05, 0.1, 0.2)


def test_coupon_export_holds_one_row_per_customer_decision(tmp_path):
    cfg = ["--set", "cohort_size=8", "--set", "horizon=6", "--set", "budget=60"]
    table, meta = _export(tmp_path, "random", CA, "c.csv", *cfg, episodes=2)
    infos = _replay(CA, "random", {"cohort_size": 8, "horizon": 6, "budget": 60}, seed=5)
    assert len(table) == 8 * len(infos)
    for t, info in enumerate(infos):
        step = table[table["step"] == t].sort_values("position")
        np.testing.assert_array_equal(step["customer_id"], info["users"])
        np.testing.assert_allclose(step["coupon_given"], info["coupon"])
        np.testing.assert_array_equal(step["bought"], info["bought"])
        assert step["expected_profit"].sum() == pytest.approx(info["expected_profit"], rel=1e-9)
    assert (table["coupon_given"] <= table["coupon_share"]).all()
    assert table["purchase_probability"].between(0, 1).all()
    assert meta["season_return"]["p05"] <= meta["season_return"]["mean"] <= meta["season_return"]["p95"]


def test_with_business_constraints_the_request_and_the_price_set_both_show(tmp_path):
    cons = "constraints={max_daily_change: 0.05, price_endings: [0.99]}"
    table, _ = _export(tmp_path, "random", DP, "k.csv", *SMALL, "--set", cons, episodes=1)
    infos = _replay(DP, "random", {"n_products": 4, "horizon": 7,
                                   "constraints": {"max_daily_change": 0.05, "price_endings": [0.99]}}, seed=5)
    for info in infos:
        day = table[table["day"] == info["day"]].sort_values("product")
        np.testing.assert_allclose(day["price"], info["prices"])
        np.testing.assert_allclose(day["price_requested"], info["prices_requested"])
    assert (np.abs(table["price"] - table["price_requested"]) > 0.01).any()


# ---------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(("args", "needle"), [
    (["list_price", "--env", DP, "--out", "{tmp}/x.xlsx"], "must end in .csv or .parquet"),
    (["list_price", "--env", "promogym/Nope-v0", "--out", "{tmp}/x.csv"], "unknown env id"),
    (["nope", "--env", DP, "--out", "{tmp}/x.csv"], "unknown policy 'nope'"),
    (["uplift", "--env", DP, "--out", "{tmp}/x.csv"], "unknown policy 'uplift'"),
    (["list_price", "--env", DP, "--out", "{tmp}/x.csv", "--episodes", "0"], "--episodes must be between"),
    (["list_price", "--env", DP, "--out", "{tmp}/x.csv", "--seed", "-1"], "--seed must be >= 0"),
    (["list_price", "--env", DP, "--out", "{tmp}/x.csv", "--set", "horizn=3"], "horizn"),
    (["list_price", "--env", DP, "--out", "{tmp}/x.csv", "--set", "constraints={margin_flor: 0.2}"], "margin_flor"),
    (["list_price", "--env", DP, "--out", "{tmp}/x.csv", "--config", "{tmp}/list.yml"], "expected a mapping"),
    (["list_price", "--env", DP, "--out", "{tmp}/x.csv", "--config", "{tmp}/none.yml"], "--config file not found"),
    (["list_price", "--env", DP, "--out", "{tmp}/no/such/x.csv"], "folder does not exist"),
    (["{tmp}", "--env", DP, "--out", "{tmp}/x.csv"], "unknown policy"),
    (["random", "--env", "promogym/HillstromTargeting-v0", "--out", "{tmp}/x.csv"], "a training run folder"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, args, needle):
    (tmp_path / "list.yml").write_text("- 1\n- 2\n")
    code = main(["export", *[a.replace("{tmp}", str(tmp_path)) for a in args], "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.csv").exists()


def test_a_run_folder_of_another_env_is_refused(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yml").write_text(f"env_id: {CA}\nalgo: ppo\nenv_config: {{}}\n")
    code = main(["export", str(run), "--env", DP, "--out", str(tmp_path / "x.csv")])
    err = capsys.readouterr().err
    assert code == 2 and "holds an agent for" in err and len(err.strip().splitlines()) == 1


def test_refuses_to_replace_what_it_did_not_write(tmp_path, capsys):
    args = ["export", "list_price", "--env", DP, "--episodes", "1", *SMALL, "--no-progress"]
    foreign = tmp_path / "theirs.csv"
    foreign.write_text("keep me\n")
    for force in ([], ["--force"]):
        assert main([*args, "--out", str(foreign), *force]) == 2
        assert "exists" in capsys.readouterr().err
        assert foreign.read_text() == "keep me\n"
    # a table it wrote: refused without --force, replaced with it
    mine = tmp_path / "mine.csv"
    assert main([*args, "--out", str(mine)]) == 0
    assert main([*args, "--out", str(mine)]) == 2
    assert "pass --force" in capsys.readouterr().err
    assert main([*args, "--out", str(mine), "--force"]) == 0
    # ... unless someone changed it since: then it is theirs
    mine.write_text(mine.read_text() + "an edit\n")
    assert main([*args, "--out", str(mine), "--force"]) == 2
    assert "not written by promogym export" in capsys.readouterr().err
    assert mine.read_text().endswith("an edit\n")
    # a sidecar name taken by another file is refused too
    other = tmp_path / "other.csv"
    (tmp_path / "other.csv.json").write_text("{}")
    assert main([*args, "--out", str(other), "--force"]) == 2
    assert not other.exists() and (tmp_path / "other.csv.json").read_text() == "{}"
