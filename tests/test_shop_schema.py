"""A shop's own tables: the schema's validation (one clear error per problem, with counts, nothing written) and
`promogym import csv|parquet` into a shop folder that the conversion models' loader reads."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from promogym.experiments.cli import main
from promogym.predictors.data import load_logs
from promogym.predictors.shop import ShopDataError, price_history, shop_logs, validate_shop


def tables() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    catalog = pd.DataFrame({"item_id": [10, 11, 12], "item_text": ["Whole milk, 1 gallon.", "Oat milk, 1 litre.",
                                                                   "Skim milk, half gallon."],
                            "category": ["milk"] * 3, "list_price": [3.0, 4.0, 2.0]})
    customers = pd.DataFrame({"user_id": [1, 2], "user_text": ["A household of two adults.", "A single adult."]})
    visits = pd.DataFrame({
        "visit_id": [100, 100, 100, 101, 101, 102, 102],
        "user_id": [1, 1, 1, 2, 2, 1, 1],
        "day": [0, 0, 0, 3, 3, 9, 9],
        "item_id": [10, 11, 12, 10, 12, 10, 11],
        "price": [2.7, 4.0, 2.0, 3.0, 1.5, 3.0, 3.6],
        "purchased": [1, 0, 0, 0, 0, 0, 1],
        "display": [1, 0, 0, 0, 1, 0, 0],
    })
    return catalog, customers, visits


def test_valid_tables_join_into_the_long_choice_table():
    logs = shop_logs(*tables())
    assert len(logs) == 7 and logs["visit_id"].nunique() == 3
    assert logs.groupby("visit_id")["purchased"].sum().tolist() == [1, 0, 1]
    row = logs[(logs["visit_id"] == 101) & (logs["item_id"] == 12)].iloc[0]
    assert row["list_price"] == 2.0 and row["discount"] == pytest.approx(0.25) and row["display"] == 1
    assert row["user_text"] == "A single adult." and row["views"] == 2
    # the price history reads only earlier days: product 10 was at 0.9 of list on day 0, at list on day 3
    hist = logs[logs["item_id"] == 10].sort_values("day")["price_hist_fast"].to_numpy()
    assert hist == pytest.approx([1.0, 0.95, 0.975])


def test_chosen_item_id_is_an_alternative_to_purchased():
    catalog, customers, visits = tables()
    chosen = visits.groupby("visit_id")["item_id"].transform(
        lambda s: s[visits.loc[s.index, "purchased"] == 1].max() if (visits.loc[s.index, "purchased"] == 1).any()
        else np.nan)
    alt = visits.drop(columns="purchased").assign(chosen_item_id=chosen)
    assert shop_logs(catalog, customers, alt)["purchased"].tolist() == shop_logs(catalog, customers, visits)[
        "purchased"].tolist()


def test_price_history_is_before_each_period_and_per_product():
    h = price_history(np.array([1, 1, 2, 1]), np.array([0, 1, 1, 5]), np.array([0.5, 1.0, 0.8, 1.0]))
    assert h["price_hist_fast"] == pytest.approx([1.0, 0.75, 1.0, 0.875])
    assert h["price_hist_slow"][1] == pytest.approx(0.975)


@pytest.mark.parametrize(("edit", "message"), [
    (lambda c, u, v: (c, u, v.drop(columns="price")), "visits: missing column(s) price"),
    (lambda c, u, v: (c.drop(columns="item_text"), u, v), "catalog: missing column(s) item_text"),
    (lambda c, u, v: (c, u, v.assign(price=[np.nan, np.inf, 1, 1, 1, 1, 1])),
     "visits.price: 2 missing, NaN or infinite value(s)"),
    (lambda c, u, v: (c.assign(list_price=[-1.0, 0.0, 2.0]), u, v), "catalog.list_price: 2 value(s) <= 0"),
    (lambda c, u, v: (c, u, v.assign(price=["a", 1, 1, 1, 1, 1, 1])), "visits.price: 1 non-numeric value(s)"),
    (lambda c, u, v: (c, u, v.assign(item_id=[10, 11, 99, 98, 12, 10, 11])),
     "visits.item_id: 2 row(s) with ids not in the catalog (2 distinct)"),
    (lambda c, u, v: (c, u, v.assign(user_id=[1, 1, 1, 7, 7, 1, 1])),
     "visits.user_id: 2 row(s) with ids not in the customers (1 distinct)"),
    (lambda c, u, v: (c, u, v.assign(purchased=[1, 1, 0, 0, 0, 0, 1])),
     "visits.purchased: 1 visit(s) with more than one purchase"),
    (lambda c, u, v: (c, u, v.drop(columns="purchased").assign(chosen_item_id=[10, 10, 10, 11, 11, np.nan, np.nan])),
     "visits.chosen_item_id: 1 visit(s) chose a product outside the products they were shown"),
    (lambda c, u, v: (c, u, v.drop(columns="purchased")), "visits: missing the choice"),
    (lambda c, u, v: (c, u, v.assign(display=[2, 0, 0, 0, 1, 0, 0])),
     "visits.display: 1 value(s) other than 0 or 1"),
    (lambda c, u, v: (c, u, v.assign(day=[0, 0, 0, 3, 4, 9, 9])),
     "visits: 1 visit(s) with more than one user_id or day"),
    (lambda c, u, v: (c, u, v.assign(item_id=[10, 10, 12, 10, 12, 10, 11])),
     "visits: 1 row(s) repeat a product already shown in their visit"),
])
def test_each_problem_is_named_with_its_count(edit, message):
    with pytest.raises(ShopDataError) as err:
        validate_shop(*edit(*tables()))
    assert any(p.startswith(message) for p in err.value.problems), err.value.problems


def test_every_problem_is_reported_at_once():
    c, u, v = tables()
    with pytest.raises(ShopDataError) as err:
        validate_shop(c.assign(list_price=[np.nan, 1, 1]), u, v.assign(item_id=[10, 11, 99, 10, 12, 10, 11]))
    assert len(err.value.problems) == 2 and str(err.value).startswith("2 problem(s)")


def write(folder, fmt, c, u, v):
    paths = {}
    for name, df in (("catalog", c), ("customers", u), ("visits", v)):
        paths[name] = folder / f"{name}.{fmt}"
        df.to_csv(paths[name], index=False) if fmt == "csv" else df.to_parquet(paths[name], index=False)
    return ["--catalog", str(paths["catalog"]), "--customers", str(paths["customers"]), "--visits",
            str(paths["visits"])]


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_import_writes_a_shop_folder_the_models_read(tmp_path, fmt, capsys):
    out = tmp_path / "shop"
    assert main(["import", fmt, *write(tmp_path, fmt, *tables()), "--out", str(out)]) == 0
    assert "3 visits, 7 shown products" in capsys.readouterr().out
    logs = load_logs(out / "logs.parquet")
    assert len(logs) == 7 and int(logs["purchased"].sum()) == 2
    meta = json.loads((out / "shop.json").read_text())
    assert meta["kind"] == "promogym-shop" and meta["summary"]["products"] == 3
    # a second import into the shop folder needs --force; then it replaces it
    assert main(["import", fmt, *write(tmp_path, fmt, *tables()), "--out", str(out)]) == 2
    assert main(["import", fmt, *write(tmp_path, fmt, *tables()), "--out", str(out), "--force"]) == 0


def test_bad_tables_are_one_line_error_and_nothing_written(tmp_path, capsys):
    c, u, v = tables()
    v = v.assign(price=[np.nan, 1, 1, 1, 1, 1, 1], item_id=[10, 11, 12, 77, 12, 10, 11])
    out = tmp_path / "shop"
    assert main(["import", "csv", *write(tmp_path, "csv", c, u, v), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "visits.price: 1 missing" in err and "visits.item_id: 1 row(s)" in err
    assert not out.exists() and not any(p.name.startswith(".shop") for p in tmp_path.iterdir())


def test_a_folder_not_written_by_the_import_is_never_replaced(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert main(["import", "csv", *write(tmp_path, "csv", *tables()), "--out", str(out), "--force"]) == 2
    assert "holds no shop this program wrote" in capsys.readouterr().err
    assert (out / "notes.txt").read_text() == "keep me" and len(list(out.iterdir())) == 1
