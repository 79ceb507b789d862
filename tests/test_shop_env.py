"""The world-free env: a shop's logged visits replayed at the agent's prices with a choice model fitted on them."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pandas as pd
import pytest
from gymnasium.utils.env_checker import check_env
from test_shop_compare import simulated_shop

from promogym.envs.shop import ENV_ID, ShopPricingEnv
from promogym.experiments.cli import main
from promogym.experiments.shop_backtest import category_errors, rate_forecast, replay, top_categories
from promogym.predictors.choice import visit_choice_proba
from promogym.predictors.clogit import ConditionalLogit
from promogym.predictors.data import load_logs


def build_shop(folder: Path) -> dict:
    """A simulated shop imported into ``folder / "shop"`` with a conditional logit fitted on its logs; the env
    config that plays it."""
    paths = []
    for name, df in zip(("catalog", "customers", "visits"), simulated_shop(2500, seed=3), strict=True):
        df.to_parquet(folder / f"{name}.parquet", index=False)
        paths += [f"--{name}", str(folder / f"{name}.parquet")]
    assert main(["import", "parquet", *paths, "--out", str(folder / "shop")]) == 0
    model = ConditionalLogit(ridge=0.3).fit(load_logs(folder / "shop" / "logs.parquet"))
    model.save(folder / "clogit.json")
    return {"shop": str(folder / "shop"), "response": f"clogit:{folder / 'clogit.json'}", "occasions_per_week": 300,
            "horizon": 4}


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    return build_shop(tmp_path_factory.mktemp("shopenv"))


def test_the_env_passes_the_checker_and_is_seeded(shop):
    env = gym.make(ENV_ID, config=shop).unwrapped
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env, skip_render_check=True)
    a = np.zeros(env.action_space.shape, np.float32)
    runs = []
    for _ in range(2):
        env.reset(seed=5)
        runs.append([env.step(a)[1] for _ in range(4)])
    assert runs[0] == runs[1]
    env.reset(seed=5)
    for t in range(4):
        _, reward, terminated, truncated, info = env.step(a)
        assert not terminated and truncated == (t == 3)
    c = info["components"]
    assert reward == pytest.approx(c["revenue"] - c["cost"]) and c["units"] > 0


def test_higher_prices_sell_fewer_units_as_the_model_says(shop):
    env = ShopPricingEnv(shop)
    units, weeks = {}, set()
    for level in (-1.0, 0.0, 1.0):
        env.reset(seed=1)
        info = env.step(np.full(env.action_space.shape, level, np.float32))[4]
        units[level] = info["components"]["units"]
        weeks.add(info["week"])
    assert units[-1.0] > units[0.0] > units[1.0] and len(weeks) == 1
    # at list prices the units are the model's expected purchases of the week's logged occasions, per occasion drawn
    logs = load_logs(Path(shop["shop"]) / "logs.parquet")
    week = logs[logs["week"] == weeks.pop()]
    week = week.assign(price=week["list_price"])
    model = ConditionalLogit.load(shop["response"].split(":", 1)[1])
    per_occasion = visit_choice_proba(model.predict_logits(week), week["visit_id"].to_numpy()).sum() / week[
        "visit_id"].nunique()
    assert units[0.0] == pytest.approx(per_occasion * shop["occasions_per_week"], rel=0.1)


def test_bad_config_names_the_key(shop):
    with pytest.raises(ValueError, match="unknown ShopPricingConfig key"):
        ShopPricingEnv({**shop, "colour": 1})
    with pytest.raises(ValueError, match=r"ShopPricingConfig\.horizon"):
        ShopPricingEnv({**shop, "horizon": 0})
    with pytest.raises(ValueError, match=r"ShopPricingConfig\.response must name"):
        ShopPricingEnv({**shop, "response": ""})
    with pytest.raises(ValueError, match="holds no shop"):
        ShopPricingEnv({**shop, "shop": "/nonexistent"})


def test_backtest_replays_the_logged_weeks_and_what_if_prices(shop, tmp_path, capsys):
    out = tmp_path / "bt"
    clogit = shop["response"].split(":", 1)[1]
    args = ["shop", "backtest", "--shop", shop["shop"], "--clogit", clogit, "--weeks", "16-20",
            "--occasions-per-week", "200", "--out", str(out)]
    assert main(args) == 0
    assert "| clogit |" in capsys.readouterr().out
    result = json.loads((out / "backtest.json").read_text())
    logs = load_logs(Path(shop["shop"]) / "logs.parquet")
    held = logs[logs["week"].between(16, 20)]
    weekly = result["replay"]["clogit"]["weekly"]
    assert sorted(int(w) for w in weekly) == [16, 17, 18, 19, 20]
    assert sum(w["observed_purchases"] for w in weekly.values()) == held["purchased"].sum()
    assert abs(result["replay"]["clogit"]["purchases_error"]) < 0.15  # the model fits its own simulated shop
    # per category and week: the observed purchases, the categories by purchases, MAPE over category-weeks
    cats = result["replay"]["clogit"]["categories"]
    observed = held.groupby("category")["purchased"].sum().sort_values(ascending=False)
    assert list(cats["per_category"]) == list(observed.index)
    ape = []
    for cat, per in cats["per_category"].items():
        assert per["observed"] == observed[cat]
        assert sum(per["weekly_observed"].values()) == observed[cat]
        assert per["expected"] == pytest.approx(sum(per["weekly_expected"].values()))
        ape += [abs(per["weekly_expected"][w] / o - 1) for w, o in per["weekly_observed"].items() if o > 0]
    assert cats["mape"] == pytest.approx(np.mean(ape)) and cats["met"] == (cats["mape"] <= 0.15)
    assert cats["cells"] + cats["cells_without_purchase"] == 2 * 5
    assert 0 < cats["noise_floor_mape"] < 1
    assert (out / "backtest.png").stat().st_size > 0
    # the model-free yardsticks on the same categories: the rate of weeks 1-15, and the held-out weeks' own rates
    refs = result["references"]
    assert refs["category_rate"]["weeks"] == [1, 15]
    for ref in refs.values():  # the same cells: each category's observed purchases are the models'
        for cat, per in cats["per_category"].items():
            assert ref["per_category"][cat]["observed"] == per["observed"]
            assert ref["per_category"][cat]["weekly_observed"] == per["weekly_observed"]
    own = refs["category_rate_held_out"]["per_category"]
    assert all(v["bias"] == pytest.approx(0) for v in own.values())  # every category's total right
    assert "no model: each category's purchase rate of weeks 1-15" in (out / "backtest.md").read_text()

    units = [r["units"] for r in result["what_if"]["clogit"].values()]
    assert units[0] > units[1] > units[2]  # x0.9, x1.0, x1.1 of list price
    assert main(args) == 2 and "pass --force" in capsys.readouterr().err
    assert main(["shop", "backtest", "--shop", shop["shop"], "--out", str(tmp_path / "none")]) == 2
    assert "name at least one model" in capsys.readouterr().err


def test_category_errors_score_weekly_purchases_against_their_sampling_noise():
    """Two categories over four weeks: one predicted 10% high in every week, one exactly; the MAPE over the
    category-weeks is their mean, and an exact model of 100 purchases a week (variance 100) still shows about
    sqrt(2 / pi) x 10% = 8% from sampling noise alone."""
    idx = pd.MultiIndex.from_product([["a", "b"], [1, 2, 3, 4]], names=["category", "week"])
    frame = pd.DataFrame({"observed_purchases": 100.0, "expected_purchases": [110.0] * 4 + [100.0] * 4,
                          "purchase_variance": 100.0}, index=idx)
    errors = category_errors(frame, top_categories(frame))
    assert errors["mape"] == pytest.approx(0.05)
    assert errors["per_category"]["a"]["mape"] == pytest.approx(0.1) and errors["per_category"]["b"]["mape"] == 0
    assert errors["per_category"]["a"]["bias"] == pytest.approx(0.1)
    assert errors["categories_within_target"] == 2 and errors["met"]
    assert errors["noise_floor_mape"] == pytest.approx(0.08, abs=0.01)
    frame.loc["a", "expected_purchases"] = 150.0
    assert not category_errors(frame, ["a"])["met"]


def test_rate_forecast_buys_at_each_categorys_past_rate():
    """Occasions (visits of two rows) in two categories: the forecast of a held-out week is its occasions times the
    category's share of past occasions with a purchase; a category the past lacks takes the overall share."""
    def occasions(spec):  # (visit, week, category, bought)
        rows = []
        for visit, week, cat, bought in spec:
            rows += [{"visit_id": visit, "week": week, "category": cat, "purchased": int(bought)},
                     {"visit_id": visit, "week": week, "category": cat, "purchased": 0}]
        return pd.DataFrame(rows)

    past = occasions([(0, 1, "milk", 1), (1, 1, "milk", 0), (2, 2, "milk", 0), (3, 2, "milk", 0),
                      (4, 1, "eggs", 1), (5, 2, "eggs", 1)])
    now = occasions([(10, 3, "milk", 1), (11, 3, "milk", 1), (12, 3, "eggs", 0), (13, 3, "bread", 1)])
    frame = rate_forecast(now, past)
    assert frame.loc[("milk", 3), "expected_purchases"] == pytest.approx(2 * 0.25)
    assert frame.loc[("milk", 3), "observed_purchases"] == 2
    assert frame.loc[("eggs", 3), "expected_purchases"] == pytest.approx(1.0)
    assert frame.loc[("bread", 3), "expected_purchases"] == pytest.approx(3 / 6)  # the overall past share
    assert frame.loc[("milk", 3), "purchase_variance"] == pytest.approx(2 * 0.25 * 0.75)
    # a visit showing two categories is an occasion of each: its purchase counts in the bought product's category
    mixed = pd.DataFrame({"visit_id": [20, 20, 20], "week": 3, "category": ["milk", "milk", "eggs"],
                          "purchased": [0, 0, 1]})
    both = rate_forecast(mixed, past)
    assert both.loc[("eggs", 3), "observed_purchases"] == 1 and both.loc[("milk", 3), "observed_purchases"] == 0
    assert both.loc[("milk", 3), "expected_purchases"] == pytest.approx(0.25)
    replayed = replay(mixed.assign(price=1.0), lambda r: np.zeros(len(r)))
    assert (replayed["observed_purchases"] == both["observed_purchases"]).all()


def test_replay_counts_an_occasions_purchase_once_in_the_counts_variance():
    """Two occasions of two products each: expected purchases are the rows' probabilities, the count's variance
    the sum over occasions of P(1 - P) with P the occasion's probability of buying either product."""
    rows = pd.DataFrame({"visit_id": [0, 0, 1, 1], "week": 1, "category": "milk", "price": [1.0, 2.0, 1.0, 2.0],
                         "purchased": [1, 0, 0, 0]})
    # logits 0, 0 with the outside option: each product 1/3, the occasion buys with probability 2/3
    frame = replay(rows, lambda r: np.zeros(len(r)))
    cell = frame.loc[("milk", 1)]
    assert cell["expected_purchases"] == pytest.approx(4 / 3) and cell["observed_purchases"] == 1
    assert cell["purchase_variance"] == pytest.approx(2 * (2 / 3) * (1 / 3))
    assert cell["expected_revenue"] == pytest.approx(2 * (1 / 3 + 2 / 3))


def test_train_and_evaluate_on_the_shop_with_its_model_only(shop, tmp_path, capsys):
    """`promogym train` and `promogym evaluate` take the world-free env: the response is the shop's model (required),
    episodes are played on it alone, and the best common multiple is the best of the grid on its search episodes."""
    env_set = [f"--env-set=shop={shop['shop']}", "--env-set=occasions_per_week=100", "--env-set=horizon=4"]
    run = tmp_path / "ppo"
    train = ["train", "--env", ENV_ID, "--algo", "ppo", *env_set, "--timesteps", "64", "--set", "n_steps=32",
             "--set", "batch_size=32", "--eval-freq", "32", "--no-progress", "--out", str(run)]
    assert main(train) == 2
    assert f"{ENV_ID} has no world: --response must name the model" in capsys.readouterr().err
    assert main([*train, "--response", "world"]) == 2
    assert f"{ENV_ID} has no world: --response must name the model" in capsys.readouterr().err
    assert main([*train, "--response", shop["response"], "--env-set=response=gbdt:other.txt"]) == 2
    assert "disagree" in capsys.readouterr().err
    assert main([*train, "--response", "gbdt:/nonexistent/model.txt"]) == 2  # a missing model: one line
    assert "\n" not in capsys.readouterr().err.strip()
    assert main([*train, "--response", shop["response"], "--set", "training_reward=expected"]) == 0
    assert main(["tune", "--env", ENV_ID, "--algo", "ppo", *env_set, "--out", str(tmp_path / "tune")]) == 2
    assert "has no world to score trials in" in capsys.readouterr().err
    capsys.readouterr()
    episodes = tmp_path / "episodes.parquet"
    evaluate = ["evaluate", "--env", ENV_ID, *env_set, "--policy", "list_price", "--policy", "best_multiple",
                "--policy", "static:1.3", "--policy", "static:0.8", "--policy", str(run), "--episodes", "10",
                "--out", str(episodes)]
    assert main(evaluate) == 2 and "has no world" in capsys.readouterr().err
    assert main([*evaluate, "--response", "gbdt:/nonexistent/model.txt"]) == 2
    capsys.readouterr()
    assert main([*evaluate, f"--env-set=response={shop['response']}"]) == 0  # the config's response is the model
    table = pd.read_parquet(episodes)
    assert set(table["backend"]) == {"simulator"} and set(table["response"]) == {shop["response"]}
    assert len(table) == 5 * 10
    means = table.groupby("policy")["return"].mean()
    # seeds 0-9 are the search's episodes too: the best multiple beats (or is) every multiple of the grid
    assert means["best_multiple"] >= max(means["list_price"], means["static:1.3"], means["static:0.8"]) - 1e-9
    assert means["static:0.8"] < means["list_price"]  # 80% of list sells at a margin of 10%, not 30%
    assert main(["ab", "--env", ENV_ID, *env_set, "--response", shop["response"], "--a", "list_price", "--b",
                 "static:1.3"]) == 2
    assert "has none" in capsys.readouterr().err


def test_list_price_is_the_middle_of_a_symmetric_band(shop):
    env = ShopPricingEnv(shop)
    np.testing.assert_allclose(env.action_from_prices(env.list_price), 0.0, atol=1e-6)
    np.testing.assert_allclose(env.multiples_from_action(env.action_from_prices(env.list_price * 1.15)), 1.15)
    np.testing.assert_allclose(env.action_from_prices(env.list_price * 5), 1.0)  # clipped into the band


def test_category_prices_move_every_product_of_the_category(shop):
    env = ShopPricingEnv({**shop, "price_by": "category"})
    assert env.action_space.shape == (2,) and env.observation_space.shape == (4,)  # bread and milk
    m = env.multiples_from_action(np.array([-1.0, 1.0]))
    category = pd.read_parquet(Path(shop["shop"]) / "catalog.parquet").set_index("item_id").loc[env.items, "category"]
    assert set(m[(category == "bread").to_numpy()]) == {0.7} and set(m[(category == "milk").to_numpy()]) == {1.3}
    np.testing.assert_allclose(env.action_from_prices(env.list_price * m), [-1.0, 1.0], atol=1e-6)
    env.reset(seed=0)
    obs = env.step(np.array([-1.0, 1.0], np.float32))[0]
    np.testing.assert_allclose(obs[:2], [-0.3, 0.3], atol=1e-6)
    with pytest.raises(ValueError, match=r"ShopPricingConfig\.price_by"):
        ShopPricingEnv({**shop, "price_by": "brand"})
