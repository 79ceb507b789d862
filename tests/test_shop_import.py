"""The Complete Journey importer on a tiny panel built here in the package's own table shapes (the real data is
never needed): occasions, alternatives, inferred prices, promotion and coupon flags, and the shop folder."""

from __future__ import annotations

import json
import shlex

import numpy as np
import pandas as pd
import pytest

from promogym.experiments.shop_import import CJSettings, build_completejourney, import_completejourney
from promogym.predictors.data import load_logs

START = pd.Timestamp("2017-01-01")  # a Sunday, as the real panel's first day


def panel(seed: int = 0) -> dict[str, pd.DataFrame]:
    """Two categories of three products each, three stores, ten weeks; households 1-5 have demographics, 6 not.
    Hand-placed facts: household 1's basket 1 in store 1 week 2 buys milk 101 at 2.00 shelf with 0.50 card
    discount; milk 102 sells in store 1 week 2 at 3.00 and 3.40 (median 3.20); milk 103 never sells in store 1
    but is on a display and in the mailer there in week 2, priced by the chain (store 2, week 2: 1.50)."""
    rng = np.random.default_rng(seed)
    products = pd.DataFrame({
        "product_id": [101, 102, 103, 201, 202, 203, 301],
        "manufacturer_id": [1, 2, 3, 4, 5, 6, 7],
        "department": ["GROCERY"] * 7,
        "brand": ["National", "Private", "National", "National", "National", "Private", "National"],
        "product_category": ["MILK"] * 3 + ["BREAD"] * 3 + ["SOAP"],
        "product_type": ["WHOLE MILK", "SKIM MILK", None, "WHITE BREAD", "RYE", "BUNS", "BAR SOAP"],
        "package_size": ["1 GA", "1 GA", None, "20 OZ", "16 OZ", "8 CT", "3 CT"],
    })
    rows = []
    basket = 1000

    def add(hh, store, week, pid, qty, sales, disc, day_offset=0, b=None):
        rows.append({"household_id": hh, "store_id": store, "basket_id": b, "product_id": pid, "quantity": qty,
                     "sales_value": sales, "retail_disc": disc, "coupon_disc": 0.0, "coupon_match_disc": 0.0,
                     "week": week, "transaction_timestamp": START + pd.Timedelta(days=7 * (week - 1) + day_offset,
                                                                                 hours=10)})

    add(1, 1, 2, 101, 1, 1.50, 0.50, 1, b=1)  # shelf 2.00, card price 1.50
    add(1, 1, 2, 201, 1, 2.00, 0.00, 1, b=1)
    add(2, 1, 2, 102, 1, 3.00, 0.00, 2, b=2)
    add(3, 1, 2, 102, 2, 6.80, 0.00, 2, b=3)  # 3.40 a unit
    add(4, 2, 2, 103, 1, 1.50, 0.00, 3, b=4)
    for _ in range(400):  # background trips
        basket += 1
        hh, store, week = int(rng.integers(1, 7)), int(rng.integers(1, 4)), int(rng.integers(1, 11))
        if (store, week) == (1, 2):  # store 1's week 2 holds only the hand-placed trips
            continue
        for pid in rng.choice([101, 102, 103, 201, 202, 203, 301], size=int(rng.integers(1, 4)), replace=False):
            shelf = {101: 2.0, 102: 3.2, 103: 1.5, 201: 2.0, 202: 2.5, 203: 1.8, 301: 1.0}[int(pid)]
            disc = round(shelf * 0.2, 2) if rng.random() < 0.3 else 0.0
            add(hh, store, week, int(pid), 1, shelf - disc, disc, int(rng.integers(0, 7)), b=basket)
    transactions = pd.DataFrame(rows)
    demographics = pd.DataFrame({"household_id": [1, 2, 3, 4, 5], "age": ["45-54", "25-34", "65+", "35-44", "19-24"],
                                 "income": ["50-74K", "25-34K", "Under 15K", "100-124K", "35-49K"],
                                 "home_ownership": ["Homeowner", "Renter", None, "Homeowner", "Unknown"],
                                 "marital_status": ["Married", "Unmarried", None, "Married", "Unmarried"],
                                 "household_size": ["2", "1", "1", "4", "1"],
                                 "household_comp": ["2 Adults No Kids", "1 Adult No Kids", "1 Adult No Kids",
                                                    "2 Adults Kids", "1 Adult No Kids"],
                                 "kids_count": ["0", "0", "0", "2", "0"]})
    promotions = pd.DataFrame({"product_id": [103, 102], "store_id": [1, 1], "display_location": ["3", "0"],
                               "mailer_location": ["A", "0"], "week": [2, 2]})
    coupons = pd.DataFrame({"coupon_upc": [9, 9], "product_id": [102, 202], "campaign_id": [7, 7]})
    campaigns = pd.DataFrame({"campaign_id": [7, 7], "household_id": [2, 3]})
    descriptions = pd.DataFrame({"campaign_id": [7], "campaign_type": ["Type A"],
                                 "start_date": [START + pd.Timedelta(days=7)],
                                 "end_date": [START + pd.Timedelta(days=20)]})
    return {"transactions": transactions, "products": products, "demographics": demographics,
            "promotions": promotions, "coupons": coupons, "campaigns": campaigns,
            "campaign_descriptions": descriptions}


SETTINGS = CJSettings(categories=("MILK", "BREAD"), max_products=3, min_sales=1, min_alternatives=1,
                      availability_weeks=0, min_category_trips=1)


def test_occasions_alternatives_and_inferred_prices():
    catalog, customers, visits, counts = build_completejourney(panel(), SETTINGS)
    assert set(catalog["item_id"]) == {101, 102, 103, 201, 202, 203}  # soap is not a chosen category
    assert set(visits["user_id"]) <= {1, 2, 3, 4, 5}  # household 6 has no demographics
    # each occasion is one category's products, buys at most one, and its choice is among its alternatives
    cat = catalog.set_index("item_id")["category"]
    per = visits.assign(category=cat.reindex(visits["item_id"]).to_numpy()).groupby("visit_id")
    assert (per["category"].nunique() == 1).all() and (per["purchased"].sum() <= 1).all()
    # basket 1: household 1, store 1, week 2, bought milk 101 and bread 201 -> two occasions with purchases
    first = visits[(visits["user_id"] == 1) & (visits["week"] == 2) & (visits["store_id"] == 1)
                   & (visits["day"] == 6 + 8)]  # day 0 is the Monday six days before the first day
    milk = first[first["item_id"].isin([101, 102, 103])].set_index("item_id")
    assert milk.loc[101, "purchased"] == 1 and milk["purchased"].sum() == 1
    # prices: the store-week median shelf price less the card discount
    assert milk.loc[101, "price"] == pytest.approx(1.50) and milk.loc[101, "loyalty_discount"] == pytest.approx(0.25)
    assert milk.loc[102, "price"] == pytest.approx(3.20) and milk.loc[102, "display"] == 0
    assert milk.loc[103, "price"] == pytest.approx(1.50)  # the chain's week-2 median (no sale in store 1)
    # 103 is available in store 1 only through its promotion there, priced from the chain's week
    assert milk.loc[103, "display"] == 1 and milk.loc[103, "mailer"] == 1 and milk.loc[101, "display"] == 0
    assert counts["price_sources"]["chain_week"] >= 1
    # coupons: household 2 and 3 got campaign 7 (days 7..20 from the first day) with a coupon for 102 and 202
    flagged = visits[visits["coupon_available"] == 1]
    assert len(flagged) > 0 and set(flagged["user_id"]) <= {2, 3} and set(flagged["item_id"]) <= {102, 202}
    days = flagged["day"].to_numpy()
    assert ((days >= 6 + 7) & (days <= 6 + 20)).all()  # day 0 is the Monday before the first day (a Sunday)
    # texts read the catalog and demographics
    assert "whole milk" in catalog.set_index("item_id").loc[101, "item_text"].lower()
    assert "aged 45-54" in customers.set_index("user_id").loc[1, "user_text"]


def test_settings_drop_what_they_say_and_count_it():
    _, _, visits, counts = build_completejourney(panel(), CJSettings(
        categories=("MILK", "BREAD"), max_products=1, min_sales=1, min_alternatives=1, availability_weeks=0,
        min_category_trips=1))
    assert visits["item_id"].nunique() == 2  # one product per category
    assert counts["occasions_dropped_bought_other_product"] > 0
    _, _, wide, counts2 = build_completejourney(panel(), SETTINGS.__class__(
        **{**SETTINGS.to_dict(), "min_alternatives": 3}))
    assert wide.groupby("visit_id").size().min() >= 3 and counts2["occasions_dropped_few_alternatives"] > 0


def test_unknown_category_or_missing_column_is_refused():
    with pytest.raises(ValueError, match="unknown product categories: TOYS"):
        build_completejourney(panel(), CJSettings(categories=("MILK", "TOYS")))
    tables = panel()
    tables["transactions"] = tables["transactions"].drop(columns="retail_disc")
    with pytest.raises(ValueError, match="transactions lacks column"):
        build_completejourney(tables, SETTINGS)


def test_import_writes_a_shop_folder_in_the_schema(tmp_path):
    out = tmp_path / "cj"
    meta = import_completejourney(out, SETTINGS, tables=panel())
    assert {p.name for p in out.iterdir()} == {"catalog.parquet", "customers.parquet", "visits.parquet",
                                               "logs.parquet", "shop.json", "promogym-output.json"}
    logs = load_logs(out / "logs.parquet")
    assert len(logs) == meta["summary"]["rows"] and {"display", "mailer", "coupon_available", "week"} <= set(logs)
    saved = json.loads((out / "shop.json").read_text())
    assert saved["counts"]["transactions"] == len(panel()["transactions"]) and saved["peak_rss_gb"] > 0
    with pytest.raises(ValueError, match="pass --force"):
        import_completejourney(out, SETTINGS, tables=panel())


def test_import_command_with_its_benchmark_file(tmp_path, monkeypatch, capsys):
    from promogym.experiments import shop_import
    from promogym.experiments.cli import main

    monkeypatch.setattr(shop_import, "load_completejourney", lambda categories: panel())
    out, bench = tmp_path / "cj", tmp_path / "bench.json"
    args = ["import", "completejourney", "--out", str(out), "--categories", "MILK,BREAD", "--max-products", "3",
            "--min-sales", "1", "--min-alternatives", "1", "--availability-weeks", "0", "--bench", str(bench)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "purchase occasions" in printed and "peak RSS" in printed
    record = json.loads(bench.read_text())
    assert record["targets"] == {"seconds": 300.0, "peak_rss_gb": 8.0}
    assert record["figures"]["seconds"] > 0 and set(record["met"]) == {"seconds", "peak_rss_gb"}
    assert record["counts"]["visits"] == json.loads((out / "shop.json").read_text())["summary"]["visits"]
    assert shlex.split(record["command"]) == ["promogym", *args]  # the command as run, every option that differs
    assert main([*args[:-2]]) == 2 and "pass --force" in capsys.readouterr().err
    assert main(["import", "completejourney", "--out", str(tmp_path / "x"), "--categories", "TOYS"]) == 2
    assert "unknown product categories: TOYS" in capsys.readouterr().err and not (tmp_path / "x").exists()
