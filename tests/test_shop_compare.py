"""The conditional logit (recovers a known price effect; cold products; JSON round trip) and `promogym shop
compare` end to end on a small simulated shop imported through the schema."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from promogym.experiments.cli import main
from promogym.predictors.clogit import ConditionalLogit

PRICE_COEF, DISPLAY_COEF = -2.5, 0.6


def simulated_shop(visits: int = 4000, seed: int = 0, products: int = 12):
    """Catalog, customers and visits of a shop whose choices follow an MNL with product effects, log price
    (coefficient -2.5) and a display (+0.6); 20 weeks, two categories, 4 to 6 products shown per visit."""
    rng = np.random.default_rng(seed)
    cat = np.arange(products) % 2
    lst = rng.uniform(1.0, 5.0, products).round(2)
    effect = rng.normal(0.0, 0.6, products) + 1.0
    catalog = pd.DataFrame({"item_id": np.arange(products) + 100,
                            "item_text": [f"Product {j}, a {'milk' if c else 'bread'} item of size {j % 3}." for j, c
                                          in enumerate(cat)],
                            "category": np.where(cat == 1, "milk", "bread"), "list_price": lst})
    customers = pd.DataFrame({"user_id": np.arange(60), "user_text": [f"A household of {1 + u % 4}." for u in
                                                                       range(60)]})
    rows = []
    for v in range(visits):
        week = 1 + v * 20 // visits
        c = rng.integers(0, 2)
        shown = rng.choice(np.flatnonzero(cat == c), int(rng.integers(4, 7)), replace=False)
        price = (lst[shown] * rng.uniform(0.7, 1.1, len(shown))).round(2)
        display = (rng.random(len(shown)) < 0.2).astype(int)
        z = effect[shown] + PRICE_COEF * np.log(price) + DISPLAY_COEF * display
        p = np.exp(z) / (1 + np.exp(z).sum())
        pick = rng.choice(len(shown) + 1, p=np.r_[p, 1 - p.sum()])
        user = int(rng.integers(0, 60))
        for k, j in enumerate(shown):
            rows.append({"visit_id": v, "user_id": user, "day": 7 * (week - 1) + int(v % 7), "week": week,
                         "item_id": int(j) + 100, "price": price[k], "display": display[k],
                         "purchased": int(k == pick)})
    return catalog, customers, pd.DataFrame(rows)


def test_conditional_logit_recovers_the_price_and_display_effects(tmp_path):
    catalog, _, visits = simulated_shop(6000)
    df = visits.merge(catalog[["item_id", "category"]], on="item_id")
    model = ConditionalLogit(ridge=0.1).fit(df)
    coef = dict(zip(["log_price", *model.features], model.coef, strict=True))
    assert coef["log_price"] == pytest.approx(PRICE_COEF, abs=0.35)
    assert coef["display"] == pytest.approx(DISPLAY_COEF, abs=0.2)
    # a product never fitted gets its category's intercept (fixed effect 0)
    cold = df.iloc[:1].assign(item_id=999)
    z = model.predict_logits(cold)[0]
    cat = model.categories[str(cold["category"].iloc[0])]
    assert z == pytest.approx(model.intercepts[cat] + model.coef[0] * np.log(cold["price"].iloc[0])
                              + model.coef[1] * cold["display"].iloc[0])
    assert not model.known(np.array([999]))[0] and model.known(np.array([100]))[0]
    # a category never fitted (or missing) gets the mean intercept; rows are scored one by one as in a batch
    mixed = df.iloc[:4].assign(category=["juice", None, df["category"].iloc[2], df["category"].iloc[3]])
    z = model.predict_logits(mixed)
    for k in range(4):
        assert z[k] == pytest.approx(model.predict_logits(mixed.iloc[[k]])[0])
    own = model.predict_logits(df.iloc[:4])
    base = own - np.array([model.intercepts[model.categories[str(c)]] for c in df["category"].iloc[:4]])
    assert z[:2] == pytest.approx(base[:2] + model.intercepts.mean()) and z[2:] == pytest.approx(own[2:])
    model.save(tmp_path / "clogit.json")
    again = ConditionalLogit.load(tmp_path / "clogit.json")
    assert np.allclose(again.predict_logits(df), model.predict_logits(df))
    (tmp_path / "bad.json").write_text(json.dumps({"kind": "other"}))
    with pytest.raises(ValueError, match="not a conditional logit"):
        ConditionalLogit.load(tmp_path / "bad.json")


def test_shop_compare_end_to_end(tmp_path, capsys):
    tables = simulated_shop(3000, seed=1)
    paths = []
    for name, df in zip(("catalog", "customers", "visits"), tables, strict=True):
        df.to_parquet(tmp_path / f"{name}.parquet", index=False)
        paths += [f"--{name}", str(tmp_path / f"{name}.parquet")]
    shop = tmp_path / "shop"
    assert main(["import", "parquet", *paths, "--out", str(shop)]) == 0
    out = tmp_path / "cmp"
    args = ["shop", "compare", "--shop", str(shop), "--out", str(out), "--train-weeks", "1-12", "--val-weeks",
            "13-15", "--test-weeks", "16-20", "--bert", "none", "--holdout-products", "0.2"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "| clogit |" in printed and "| gbdt |" in printed and "bert: not measured" in printed
    result = json.loads((out / "comparison.json").read_text())
    assert {p.name for p in out.iterdir()} >= {"comparison.json", "comparison.md", "shop_compare.png", "clogit.json"}
    assert "gbdt - clogit, LL per occasion" in printed and result["test"]["gbdt"]["ll_difference_vs_clogit"]["all"][
        "ci95"] is not None
    clogit = result["test"]["clogit"]
    assert result["sizes"]["holdout_products"] == 2 and clogit["holdout_products"]["occasions"] > 0
    assert clogit["elasticity"]["share_negative"] == 1.0 and clogit["elasticity"]["median"] < -1
    assert result["fitted"]["clogit"]["coefficients"]["log_price"] == pytest.approx(PRICE_COEF, abs=0.6)
    # a simulated display effect is a model lift above 1
    assert clogit["lifts"]["display"]["model_lift"] > 1.2
    # the model beats a constant purchase share on the held-out weeks
    test = pd.read_parquet(shop / "logs.parquet").query("week >= 16")
    share = test.groupby("visit_id")["purchased"].max().mean()
    assert clogit["ll_per_occasion"] > share * np.log(share / 5) + (1 - share) * np.log(1 - share)
    # the results folder is ours: a rerun needs --force; a folder of other files is refused
    assert main(args) == 2
    assert main([*args, "--force"]) == 0
    other = tmp_path / "other"
    other.mkdir()
    (other / "x.txt").write_text("x")
    assert main([*args[:5], str(other), *args[6:], "--force"]) == 2
    assert (other / "x.txt").read_text() == "x"


def test_the_bert_hybrid_row_and_its_backtest_with_a_tiny_encoder(tmp_path, capsys):
    tables = simulated_shop(1500, seed=2)
    paths = []
    for name, df in zip(("catalog", "customers", "visits"), tables, strict=True):
        df.to_parquet(tmp_path / f"{name}.parquet", index=False)
        paths += [f"--{name}", str(tmp_path / f"{name}.parquet")]
    shop = tmp_path / "shop"
    assert main(["import", "parquet", *paths, "--out", str(shop)]) == 0
    out, work = tmp_path / "cmp", tmp_path / "work"
    assert main(["shop", "compare", "--shop", str(shop), "--out", str(out), "--train-weeks", "1-12", "--val-weeks",
                 "13-15", "--test-weeks", "16-20", "--bert", "tiny", "--bert-epochs", "1", "--work", str(work),
                 "--bert-history"]) == 0
    result = json.loads((out / "comparison.json").read_text())
    assert set(result["test"]) == {"clogit", "gbdt", "bert", "bert_history"}
    assert result["fitted"]["bert_history"]["profile"].startswith("demographics + category purchase")
    bert = result["test"]["bert"]
    assert np.isfinite(bert["ll_per_occasion"]) and bert["ll_difference_vs_clogit"]["all"]["ci95"] is not None
    assert bert["elasticity"]["share_negative"] == 1.0  # the hybrid's head is monotone in price
    assert "| bert |" in capsys.readouterr().out
    bt = tmp_path / "bt"
    assert main(["shop", "backtest", "--shop", str(shop), "--clogit", str(out / "clogit.json"), "--bert",
                 str(work / "bert" / "model"), "--bert-history", str(work / "bert_history" / "model"), "--profiles",
                 str(out / "bert_history_profiles.json"), "--weeks", "16-20", "--occasions-per-week", "100",
                 "--out", str(bt)]) == 0
    record = json.loads((bt / "backtest.json").read_text())
    assert set(record["replay"]) == {"clogit", "bert", "bert_history"}
    assert record["responses"]["bert"]["offer_text"] is True and record["responses"]["bert_history"]["profile_words"]
    # the back-test reads the history model as the comparison scored it: the same expected purchases
    scored = result["test"]["bert_history"]["predicted_purchases"]
    assert sum(w["expected_purchases"] for w in record["replay"]["bert_history"]["weekly"].values()) == \
        pytest.approx(scored, rel=1e-6)


def test_history_profiles_say_how_often_each_category_was_bought():
    from promogym.experiments.shop_compare import _bert_rows, history_profiles
    from promogym.predictors.shop import shop_logs

    catalog, customers, visits = simulated_shop(600, seed=4)
    logs = shop_logs(catalog, customers, visits)
    profiles = history_profiles(logs)
    per = logs.groupby(["user_id", "visit_id"]).agg(category=("category", "first"), bought=("purchased", "max"))
    share = per.reset_index().groupby(["user_id", "category"])["bought"].mean()
    user = int(share.index[0][0])
    for (u, category), value in share.items():
        if u == user:
            word = "never" if value == 0 else "rarely" if value < 0.1 else "sometimes" if value < 0.3 else \
                "often" if value < 0.6 else "usually"
            assert f"{category} {word}" in profiles[user]
    rows = _bert_rows(logs[logs["user_id"] == user].head(3), profiles)
    assert rows["user_text"].astype(str).str.endswith(profiles[user]).all()
    other = _bert_rows(logs.head(2).assign(user_id=-1), profiles)
    assert other["user_text"].astype(str).str.endswith("No past purchases recorded.").all()
