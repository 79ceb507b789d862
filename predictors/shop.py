"""A shop's own logs: the schema of its three tables, their validation, and the long choice table models read.

Any shop's data enters promogym as three tables (CSV or parquet), the same layout the synthetic logs use:

* **catalog**, one row per product: ``item_id`` (integer), ``item_text`` (the words a model reads: name,
  category, brand, size, ...), ``list_price`` (the regular price, > 0); optional ``category`` (text),
  ``unit_cost`` (>= 0, when known), ``first_day`` (the day the product was first sold).
* **customers**, one row per customer: ``user_id`` (integer), ``user_text`` (profile words; no personal data).
* **visits**, one row per product shown (available) in a visit, a *long* table like the synthetic logs:
  ``visit_id``, ``user_id``, ``day`` (integer days since the start of the data; day 0 is a Monday),
  ``item_id``, ``price`` (the shelf price the customer faced, > 0), and the visit's choice as either
  ``purchased`` (1 on the bought product's row, 0 elsewhere; a visit buys at most one product or nothing) or
  ``chosen_item_id`` (the bought product's id on every row of the visit, empty for none). Optional:
  ``coupon`` (a coupon's share of the price, in [0, 1)), ``loyalty_discount`` (share in [0, 1)), ``display``,
  ``mailer``, ``coupon_available`` (0/1 promotion flags), ``propensity`` (the logging policy's probability
  of the row's offer, in (0, 1], when known), ``week``, ``store_id`` (integers) and the shop's price history
  ``price_hist_fast|mid|slow`` (EWMAs of the shelf price / list price at rates 0.5, 0.15, 0.05; computed from
  the visits when absent).

:func:`validate_shop` checks all three together and reports every problem at once (a missing column, a
wrong type, a non-finite or non-positive price, ids of the visits unknown to the catalog or the customers, a
choice outside the visit's shown products, a visit with two purchases), each naming the table, the column
and how many rows. :func:`shop_logs` joins them into the long table of :data:`SHOP_LOG_COLUMNS`, which
:func:`promogym.predictors.data.load_logs` and every conversion model read as they read synthetic logs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from promogym.envs.market.world import PRICE_HISTORY_NAMES, PRICE_HISTORY_RATES, WEEKDAYS

SHOP_FORMAT = 1
TABLES = ("catalog", "customers", "visits")
# column -> kind; kinds: id (integer), text, price (finite > 0), nonneg (finite >= 0), share ([0, 1)),
# flag (0/1), prob ((0, 1]), day (integer >= 0), positive (finite > 0)
REQUIRED: dict[str, dict[str, str]] = {
    "catalog": {"item_id": "id", "item_text": "text", "list_price": "price"},
    "customers": {"user_id": "id", "user_text": "text"},
    "visits": {"visit_id": "id", "user_id": "id", "day": "day", "item_id": "id", "price": "price"},
}
OPTIONAL: dict[str, dict[str, str]] = {
    "catalog": {"category": "text", "unit_cost": "nonneg", "first_day": "day"},
    "customers": {},
    "visits": {"purchased": "flag", "chosen_item_id": "choice", "coupon": "share", "loyalty_discount": "share",
               "display": "flag", "mailer": "flag", "coupon_available": "flag", "propensity": "prob",
               "week": "day", "store_id": "id", **dict.fromkeys(PRICE_HISTORY_NAMES, "positive")},
}
EXTRA_VISIT_COLUMNS = ("loyalty_discount", "display", "mailer", "coupon_available", "propensity", "week", "store_id")
SHOP_LOG_COLUMNS: tuple[str, ...] = (
    "day", "weekday", "visit_id", "user_id", "item_id", "user_text", "item_text", "category", "is_new_product",
    "list_price", "price", "discount", "coupon", "price_paid", "views", "coupons_last_7d", *PRICE_HISTORY_NAMES,
    "purchased",
)


class ShopDataError(ValueError):
    """A shop's tables break the schema: ``problems`` lists each problem in one line (table, column, rows)."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__(f"{len(problems)} problem(s) in the shop's tables: " + "; ".join(problems))


def _numeric(s: pd.Series) -> np.ndarray:
    return pd.to_numeric(s, errors="coerce").to_numpy(dtype=float)


def _check_column(table: str, col: str, kind: str, s: pd.Series) -> list[str]:
    """Problems of one column's values against its kind (empty when it conforms)."""
    where = f"{table}.{col}"
    if kind == "text":
        missing = int(s.isna().sum())
        blank = int((~s.isna() & (s.astype(str).str.strip() == "")).sum())
        return [f"{where}: {missing + blank} row(s) with missing or blank text"] if missing + blank else []
    if kind == "choice":  # an item id or empty; checked against the visit's rows later
        v = _numeric(s)
        bad = int((~s.isna() & ~np.isfinite(v)).sum() + (np.isfinite(v) & (v != np.round(v))).sum())
        return [f"{where}: {bad} row(s) neither an integer product id nor empty"] if bad else []
    v = _numeric(s)
    non_numeric = int((~s.isna() & np.isnan(v)).sum())
    out = [f"{where}: {non_numeric} non-numeric value(s)"] if non_numeric else []
    finite = np.isfinite(v)
    not_finite = int((~finite).sum()) - non_numeric
    if not_finite:
        out.append(f"{where}: {not_finite} missing, NaN or infinite value(s)")
    vf = v[finite]
    if kind in ("id", "day"):
        frac = int((vf != np.round(vf)).sum())
        if frac:
            out.append(f"{where}: {frac} value(s) not integers")
        if kind == "day" and (vf < 0).any():
            out.append(f"{where}: {int((vf < 0).sum())} negative value(s)")
    elif kind in ("price", "positive"):
        if (vf <= 0).any():
            out.append(f"{where}: {int((vf <= 0).sum())} value(s) <= 0 (prices must be > 0)")
    elif kind == "nonneg":
        if (vf < 0).any():
            out.append(f"{where}: {int((vf < 0).sum())} negative value(s)")
    elif kind == "share":
        bad = int(((vf < 0) | (vf >= 1)).sum())
        if bad:
            out.append(f"{where}: {bad} value(s) outside [0, 1) (a share of the price)")
    elif kind == "flag":
        bad = int((~np.isin(vf, (0, 1))).sum())
        if bad:
            out.append(f"{where}: {bad} value(s) other than 0 or 1")
    elif kind == "prob":
        bad = int(((vf <= 0) | (vf > 1)).sum())
        if bad:
            out.append(f"{where}: {bad} value(s) outside (0, 1] (a propensity)")
    return out


def validate_shop(catalog: pd.DataFrame, customers: pd.DataFrame, visits: pd.DataFrame) -> None:
    """Check the three tables against the schema; :class:`ShopDataError` listing every problem found."""
    tables = {"catalog": catalog, "customers": customers, "visits": visits}
    problems: list[str] = []
    usable: dict[str, set[str]] = {}
    for name, df in tables.items():
        if len(df) == 0:
            problems.append(f"{name}: no rows")
        missing = [c for c in REQUIRED[name] if c not in df.columns]
        if missing:
            problems.append(f"{name}: missing column(s) {', '.join(missing)} (required: {', '.join(REQUIRED[name])})")
        usable[name] = set()
        for col, kind in {**REQUIRED[name], **OPTIONAL[name]}.items():
            if col in df.columns:
                found = _check_column(name, col, kind, df[col])
                problems += found
                if not found:
                    usable[name].add(col)
    if "purchased" not in visits.columns and "chosen_item_id" not in visits.columns:
        problems.append("visits: missing the choice: a column purchased (0/1 per row) or chosen_item_id (per visit)")
    if "purchased" in visits.columns and "chosen_item_id" in visits.columns:
        problems.append("visits: give the choice once, as purchased or as chosen_item_id, not both")
    for name, key in (("catalog", "item_id"), ("customers", "user_id")):
        if key in usable[name]:
            dup = int(tables[name][key].duplicated().sum())
            if dup:
                problems.append(f"{name}.{key}: {dup} duplicated id(s)")
    for key, table in (("item_id", "catalog"), ("user_id", "customers")):
        if key in usable["visits"] and key in usable[table]:
            known = set(_numeric(tables[table][key]).astype(np.int64).tolist())
            ids = _numeric(visits[key]).astype(np.int64)
            unknown = ~np.isin(ids, np.fromiter(known, np.int64, len(known)))
            if unknown.any():
                problems.append(f"visits.{key}: {int(unknown.sum())} row(s) with ids not in the {table} "
                                f"({len(np.unique(ids[unknown]))} distinct)")
    v = usable["visits"]
    if {"visit_id", "item_id"} <= v:
        dup = int(visits.duplicated(["visit_id", "item_id"]).sum())
        if dup:
            problems.append(f"visits: {dup} row(s) repeat a product already shown in their visit")
    if {"visit_id", "user_id", "day"} <= v:
        spread = visits.groupby("visit_id")[["user_id", "day"]].nunique()
        bad = int((spread > 1).any(axis=1).sum())
        if bad:
            problems.append(f"visits: {bad} visit(s) with more than one user_id or day")
    if "visit_id" in v and "purchased" in v:
        per_visit = visits.groupby("visit_id")["purchased"].sum()
        if (per_visit > 1).any():
            problems.append(f"visits.purchased: {int((per_visit > 1).sum())} visit(s) with more than one purchase "
                            f"(a visit buys at most one product)")
    if {"visit_id", "item_id"} <= v and "chosen_item_id" in v:
        problems += _choice_problems(visits)
    if problems:
        raise ShopDataError(problems)


def _choice_problems(visits: pd.DataFrame) -> list[str]:
    chosen = _numeric(visits["chosen_item_id"])
    vid = visits["visit_id"].to_numpy()
    frame = pd.DataFrame({"visit": vid, "chosen": chosen})
    out = []
    if (frame.groupby("visit")["chosen"].nunique(dropna=False) > 1).any():
        n = int((frame.groupby("visit")["chosen"].nunique(dropna=False) > 1).sum())
        out.append(f"visits.chosen_item_id: {n} visit(s) whose rows disagree on the choice")
    hit = np.isfinite(chosen) & (chosen == _numeric(visits["item_id"]))
    has_choice = frame.assign(hit=hit, some=np.isfinite(chosen)).groupby("visit")[["hit", "some"]].any()
    outside = int((has_choice["some"] & ~has_choice["hit"]).sum())
    if outside:
        out.append(f"visits.chosen_item_id: {outside} visit(s) chose a product outside the products they were shown")
    return out


def _codes(values: pd.Series) -> Any:
    return pd.Categorical(values.astype(str))


def price_history(items: np.ndarray, period: np.ndarray, rel_price: np.ndarray, query_items: np.ndarray | None = None,
                  query_period: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The shop's own price history: for each product, EWMAs (rates :data:`PRICE_HISTORY_RATES`) of its mean shelf
    price / list price per period, over the periods *before* the queried one (1.0 before any), as the synthetic
    logs record it (updated at the end of each day). Periods are integers (days, or weeks). The queries default to
    the given rows."""
    qi = np.asarray(items if query_items is None else query_items, dtype=np.int64)
    qp = np.asarray(period if query_period is None else query_period, dtype=np.int64)
    frame = pd.DataFrame({"item": np.asarray(items, dtype=np.int64), "period": np.asarray(period, dtype=np.int64),
                          "rel": np.asarray(rel_price, dtype=float)})
    per = frame.groupby(["item", "period"], sort=True)["rel"].mean().reset_index()
    item = per["item"].to_numpy()
    rel = per["rel"].to_numpy()
    first = np.r_[True, item[1:] != item[:-1]] if len(per) else np.zeros(0, bool)
    after = {}
    for name, rate in zip(PRICE_HISTORY_NAMES, PRICE_HISTORY_RATES, strict=True):
        values = np.empty(len(per))
        prev = 1.0
        for k in range(len(per)):  # the EWMA once period k is seen
            if first[k]:
                prev = 1.0
            prev += rate * (rel[k] - prev)
            values[k] = prev
        after[name] = values
    table = per[["item", "period"]].assign(**after).sort_values("period", kind="stable")
    query = pd.DataFrame({"item": qi, "period": qp, "row": np.arange(len(qi))}).sort_values("period", kind="stable")
    hit = pd.merge_asof(query, table, on="period", by="item", allow_exact_matches=False, direction="backward")
    hit = hit.sort_values("row")
    return {name: hit[name].fillna(1.0).to_numpy(dtype=float) for name in PRICE_HISTORY_NAMES}


def shop_logs(catalog: pd.DataFrame, customers: pd.DataFrame, visits: pd.DataFrame) -> pd.DataFrame:
    """The long choice table (:data:`SHOP_LOG_COLUMNS` plus the visits' optional columns) of validated tables,
    sorted by visit: what models read. ``is_new_product`` is False (a split decides what is new)."""
    validate_shop(catalog, customers, visits)
    v = visits.reset_index(drop=True)
    cat = catalog.set_index(_numeric(catalog["item_id"]).astype(np.int64))
    cus = customers.set_index(_numeric(customers["user_id"]).astype(np.int64))
    items = _numeric(v["item_id"]).astype(np.int64)
    users = _numeric(v["user_id"]).astype(np.int64)
    day = _numeric(v["day"]).astype(np.int64)
    price = _numeric(v["price"])
    pos = cat.index.get_indexer(pd.Index(items))
    list_price = _numeric(cat["list_price"]).astype(float)[pos]
    if "purchased" in v.columns:
        purchased = _numeric(v["purchased"]).astype(np.int8)
    else:
        purchased = (_numeric(v["chosen_item_id"]) == items).astype(np.int8)
    coupon = _numeric(v["coupon"]) if "coupon" in v.columns else np.zeros(len(v))
    vid = v["visit_id"].to_numpy()
    views = v.groupby("visit_id")["item_id"].transform("size").to_numpy(dtype=np.int64)
    category = cat["category"].astype(str) if "category" in cat.columns else pd.Series("all", index=cat.index)
    out = pd.DataFrame({
        "day": day,
        "weekday": pd.Categorical.from_codes(day % 7, categories=pd.Index(WEEKDAYS)),
        "visit_id": _numeric(v["visit_id"]).astype(np.int64),
        "user_id": users,
        "item_id": items,
        "user_text": _codes(cus["user_text"].reindex(users).reset_index(drop=True)),
        "item_text": _codes(cat["item_text"].reindex(items).reset_index(drop=True)),
        "category": _codes(category.reindex(items).reset_index(drop=True)),
        "is_new_product": np.zeros(len(v), bool),
        "list_price": list_price,
        "price": price,
        "discount": np.round(1.0 - price / list_price, 4),
        "coupon": coupon,
        "price_paid": np.round(price * (1.0 - coupon), 2),
        "views": views,
        "coupons_last_7d": np.zeros(len(v), np.int64),
        "purchased": purchased,
    })
    if "unit_cost" in cat.columns:
        out.insert(list(out.columns).index("price"), "unit_cost", _numeric(cat["unit_cost"])[pos])
    hist = {n: _numeric(v[n]) for n in PRICE_HISTORY_NAMES} if all(n in v.columns for n in PRICE_HISTORY_NAMES) \
        else price_history(items, day, price / list_price)
    for name in PRICE_HISTORY_NAMES:
        out[name] = hist[name]
    for col in EXTRA_VISIT_COLUMNS:
        if col in v.columns:
            out[col] = _numeric(v[col]) if col in ("loyalty_discount", "propensity") \
                else _numeric(v[col]).astype(np.int64)
    order = np.argsort(vid, kind="stable") if not pd.Index(vid).is_monotonic_increasing else np.arange(len(v))
    return out.iloc[order].reset_index(drop=True)


def promo_sentences(df: pd.DataFrame) -> np.ndarray:
    """Per row, the promotions as words ('' when none): what the BERT hybrid's product tower reads of the offer."""
    parts = []
    for col, words in (("display", "On display in the store this week."), ("mailer", "In this week's mailer."),
                       ("coupon_available", "The household holds a coupon for it.")):
        if col in df.columns:
            parts.append(np.where(df[col].to_numpy() > 0, " " + words, ""))
    if not parts:
        return np.full(len(df), "", dtype=object)
    out = parts[0].astype(object)
    for p in parts[1:]:
        out = out + p
    return out


def with_offer_text(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with each row's promotions appended to its product text (categorical, as the logs store it)."""
    text = df["item_text"].astype(str).to_numpy(dtype=object) + promo_sentences(df)
    return df.assign(item_text=pd.Categorical(text))


def with_profile_text(df: pd.DataFrame, extra: Mapping[int, str], missing: str = "No past purchases recorded."
                      ) -> pd.DataFrame:
    """``df`` with words appended to each customer's profile text (``extra``: user id -> words; ``missing`` for
    customers without an entry), e.g. the shop's own purchase history of each household."""
    words = pd.Series(df["user_id"].to_numpy()).map(dict(extra)).fillna(missing).to_numpy().astype(object)
    text = df["user_text"].astype(str).to_numpy(dtype=object) + " " + words
    return df.assign(user_text=pd.Categorical(text))


def summarize_shop(logs: pd.DataFrame) -> dict[str, Any]:
    """Counts of a shop's long table: rows, visits, customers, products, categories, days, purchase share."""
    bought = logs.groupby("visit_id", sort=False)["purchased"].max()
    return {"rows": len(logs), "visits": int(logs["visit_id"].nunique()), "customers": int(logs["user_id"].nunique()),
            "products": int(logs["item_id"].nunique()), "categories": int(logs["category"].nunique()),
            "days": int(logs["day"].max() - logs["day"].min() + 1),
            "visits_with_purchase": float(bought.mean()),
            "mean_alternatives": float(logs.groupby("visit_id", sort=False).size().mean())}


def schema_table() -> Mapping[str, Mapping[str, tuple[str, bool]]]:
    """Per table: column -> (kind, required), for documentation and error messages."""
    return {t: {**{c: (k, True) for c, k in REQUIRED[t].items()}, **{c: (k, False) for c, k in OPTIONAL[t].items()}}
            for t in TABLES}
