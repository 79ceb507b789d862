"""A back-test of fitted choice models on a shop's held-out weeks (`promogym shop backtest`).

Two parts:

* **Replay of the logged prices.** For each held-out week, every logged occasion at the prices the shop actually
  charged: each model's expected purchases and revenue (choice probabilities x price) beside what was bought.
  Per week and in total: the relative error of purchases and revenue, and the correlation of predicted and
  observed weekly purchases. Per product category and week (the ``top_categories`` with the most purchases in
  the held-out weeks): expected against observed purchases, the mean absolute percentage error over those
  category-weeks (MAPE; target <= 15%) and each category's own MAPE and bias, drawn in ``backtest.png``; beside
  it the MAPE the model would show on average if it were exactly right, from the purchases' own sampling noise
  (a category selling 20 a week cannot be predicted within 15% week by week). Two model-free forecasts are scored
  the same way, as the yardsticks a forecaster would name: each category's purchase rate per occasion in the weeks
  before the held-out ones times each week's occasions (``category_rate``: what a model must beat to have learned
  anything about the weeks from prices and promotions), and the held-out weeks' own category rates
  (``category_rate_held_out``: every category's total right, its weeks flat; what is left is the weeks' own
  movement, which no input the models read accounts for). A
  purchase is an occasion's choice of a product (the import does not model quantities), so "units" are
  purchases. A simulator that cannot reproduce the weeks it never saw at the logged prices should not be trusted
  at other prices.
* **What-if prices in the world-free env.** ``promogym/ShopPricing-v0`` run over the same weeks (from the first
  held-out week, one step a week) with every product at a fixed multiple of its list price, per model: expected
  units, revenue and profit (unit cost: the catalog's, else ``cost_share`` x list price). Where two models
  disagree about a price change, the data do not settle it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from promogym.core.io import atomic_dir, package_versions, write_json
from promogym.envs.shop import ShopPricingEnv, load_response
from promogym.predictors.choice import visit_choice_proba, visit_codes

BACKTEST_KIND = "promogym-shop-backtest"
MARKER_FILE = "promogym-output.json"
MULTIPLES = (0.9, 1.0, 1.1)
TOP_CATEGORIES = 20
TARGET_CATEGORY_MAPE = 0.15


def check_backtest_dir(out: str | Path, force: bool) -> Path:
    """The results folder: new or empty, or one a back-test wrote when ``force`` (ValueError otherwise)."""
    p = Path(out)
    if p.exists() and not p.is_dir():
        raise ValueError(f"--out {p} exists and is not a folder")
    if p.is_dir() and any(p.iterdir()):
        try:
            ours = json.loads((p / MARKER_FILE).read_text()).get("kind") == BACKTEST_KIND
        except (OSError, ValueError, AttributeError):
            ours = False
        if not ours:
            raise ValueError(f"--out {p} is not empty and holds no back-test this program wrote; choose another")
        if not force:
            raise ValueError(f"--out {p} holds a back-test; pass --force to replace it")
    if not p.parent.is_dir():
        raise ValueError(f"--out's parent folder does not exist: {p.parent}")
    return p


def row_categories(rows: pd.DataFrame) -> np.ndarray:
    """Each row's product category as text (``"all"`` when the shop's logs carry none)."""
    return rows["category"].astype(str).to_numpy() if "category" in rows.columns else np.full(len(rows), "all")


def replay(rows: pd.DataFrame, logits: Any) -> pd.DataFrame:
    """Per (category, week): observed and expected purchases and revenue of the logged occasions at the logged
    prices (one category, ``"all"``, when the shop's logs carry none), and the variance of the purchase count
    (``purchase_variance``: an occasion buys at most one product, so the sum over occasions of P(1 - P), P the
    occasion's purchase probability; each of its rows carries an equal share)."""
    visit = rows["visit_id"].to_numpy()
    p = visit_choice_proba(logits(rows), visit)
    code, _ = visit_codes(visit)
    bought = np.bincount(code, weights=p)  # each occasion's probability of buying any shown product
    share = (bought * (1 - bought) / np.bincount(code))[code]
    price = rows["price"].to_numpy(float)
    y = rows["purchased"].to_numpy(float)
    frame = pd.DataFrame({"category": row_categories(rows), "week": rows["week"].to_numpy(), "observed_purchases": y,
                          "expected_purchases": p, "purchase_variance": share, "observed_revenue": y * price,
                          "expected_revenue": p * price})
    return frame.groupby(["category", "week"]).sum()


def rate_forecast(rows: pd.DataFrame, history: pd.DataFrame) -> pd.DataFrame:
    """Per (category, week) of ``rows``: observed purchases and a model-free forecast. An occasion here is a visit's
    products of one category (a visit buys at most one product, so each buys at most once); each buys with its
    category's share of such occasions with a purchase in ``history`` (the overall share for a category ``history``
    lacks). The count's variance as in :func:`replay` (``n r (1 - r)``). The observed counts are :func:`replay`'s."""
    def occasions(df: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({"visit": df["visit_id"].to_numpy(), "category": row_categories(df),
                             "week": df["week"].to_numpy() if "week" in df.columns else 0,
                             "bought": df["purchased"].to_numpy(float)}).groupby(
            ["visit", "category"], sort=False).agg(week=("week", "first"), bought=("bought", "sum")).reset_index()

    past, now = occasions(history), occasions(rows)
    rate = now["category"].map(past.groupby("category")["bought"].mean()).fillna(past["bought"].mean()).to_numpy()
    frame = pd.DataFrame({"category": now["category"].to_numpy(), "week": now["week"].to_numpy(),
                          "observed_purchases": now["bought"].to_numpy(), "expected_purchases": rate,
                          "purchase_variance": rate * (1 - rate)})
    return frame.groupby(["category", "week"]).sum()


def top_categories(by_category: pd.DataFrame, top: int = TOP_CATEGORIES) -> list[str]:
    """The ``top`` categories with the most observed purchases (ties by name)."""
    units = by_category.groupby(level="category")["observed_purchases"].sum()
    return sorted(units.index, key=lambda c: (-units[c], c))[:top]


def category_errors(by_category: pd.DataFrame, categories: list[str]) -> dict[str, Any]:
    """Weekly purchases per category against the observed ones: MAPE over the category-weeks with a purchase
    (``mape``), the count of category-weeks without one (left out), and per category its MAPE, bias (expected
    over observed purchases, less one) and weekly series."""
    cells = by_category.loc[by_category.index.get_level_values("category").isin(categories)]
    seen = cells[cells["observed_purchases"] > 0]
    ape = (seen["expected_purchases"] / seen["observed_purchases"] - 1).abs()
    per_mape = ape.groupby(level="category").mean()
    per: dict[str, Any] = {}
    for cat in categories:
        c = cells.xs(cat, level="category")
        observed, expected = float(c["observed_purchases"].sum()), float(c["expected_purchases"].sum())
        per[cat] = {"observed": observed, "expected": expected,
                    "mape": float(per_mape[cat]) if cat in per_mape.index else None,
                    "bias": expected / observed - 1 if observed > 0 else None,
                    "weekly_observed": {int(str(w)): float(v) for w, v in c["observed_purchases"].items()},
                    "weekly_expected": {int(str(w)): float(v) for w, v in c["expected_purchases"].items()}}
    mape = float(ape.mean()) if len(ape) else None
    # the MAPE an exact model would show on average: each cell's count drawn around the model's expectation with
    # the count's variance (normal approximation, rounded), 200 draws, seeded; a draw of no purchase is left out,
    # as the MAPE leaves out category-weeks without one
    mu, sd = cells["expected_purchases"].to_numpy(), np.sqrt(cells["purchase_variance"].to_numpy())
    drawn = np.rint(mu + sd * np.random.default_rng(0).standard_normal((200, len(mu))))
    scored = drawn > 0
    floor = float(np.abs(mu / np.where(scored, drawn, 1) - 1)[scored].mean()) if scored.any() else None
    return {"mape": mape, "noise_floor_mape": floor, "cells": len(ape),
            "cells_without_purchase": int(len(cells) - len(seen)),
            "categories_within_target": int(sum(1 for v in per.values()
                                                if v["mape"] is not None and v["mape"] <= TARGET_CATEGORY_MAPE)),
            "met": None if mape is None else bool(mape <= TARGET_CATEGORY_MAPE), "per_category": per}


def backtest(shop: Path, responses: dict[str, tuple[str, bool, str]], weeks: tuple[int, int], out: Path,
             occasions_per_week: int = 5000, cost_share: float = 0.7, seed: int = 0, command: str = ""
             ) -> dict[str, Any]:
    """Run both parts for each response (name -> (spec, offer_text, profile words file)) and write ``out``
    (backtest.json, backtest.md) atomically."""
    started = time.perf_counter()
    logs = pd.read_parquet(shop / "logs.parquet")
    week = logs["week"].to_numpy() if "week" in logs.columns else logs["day"].to_numpy() // 7 + 1
    rows = logs[(week >= weeks[0]) & (week <= weeks[1])].assign(week=week[(week >= weeks[0]) & (week <= weeks[1])])
    if rows.empty:
        raise ValueError(f"{shop} has no occasion in weeks {weeks[0]}-{weeks[1]}")
    horizon = int(rows["week"].nunique())
    before = logs[week < weeks[0]].assign(week=week[week < weeks[0]])
    result: dict[str, Any] = {"kind": BACKTEST_KIND, "shop": str(shop), "weeks": list(weeks), "command": command,
                              "occasions": int(rows["visit_id"].nunique()), "responses": {}, "replay": {},
                              "what_if": {}, "settings": {"occasions_per_week": occasions_per_week,
                                                          "cost_share": cost_share, "seed": seed,
                                                          "multiples": list(MULTIPLES)},
                              "targets": {"category_weekly_mape": TARGET_CATEGORY_MAPE,
                                          "top_categories": TOP_CATEGORIES}}
    # the model-free yardsticks, on the categories every model is scored on (by observed purchases)
    held_out = rate_forecast(rows, rows)
    cats = top_categories(held_out)
    result["references"] = {
        "category_rate": None if before.empty else {
            "weeks": [int(before["week"].min()), int(before["week"].max())],
            **category_errors(rate_forecast(rows, before), cats)},
        "category_rate_held_out": {"weeks": list(weeks), **category_errors(held_out, cats)}}
    for name, (spec, offer_text, words) in responses.items():
        result["responses"][name] = {"spec": spec, "offer_text": offer_text, "profile_words": words}
        by_category = replay(rows, load_response(spec, offer_text, words))
        weekly = by_category.drop(columns="purchase_variance").groupby(level="week").sum()
        tot = weekly.sum()
        result["replay"][name] = {
            "weekly": {int(str(w)): {str(k): float(v) for k, v in r.items()} for w, r in weekly.iterrows()},
            "purchases_error": float(tot["expected_purchases"] / tot["observed_purchases"] - 1),
            "revenue_error": float(tot["expected_revenue"] / tot["observed_revenue"] - 1),
            "weekly_abs_error": float((weekly["expected_purchases"] / weekly["observed_purchases"] - 1).abs().mean()),
            "weekly_correlation": float(np.corrcoef(weekly["expected_purchases"], weekly["observed_purchases"])[0, 1])
            if len(weekly) > 2 else None,
            "categories": category_errors(by_category, cats)}
        env = ShopPricingEnv({"shop": str(shop), "response": spec, "offer_text": offer_text,
                              "profile_words": words, "first_week": weeks[0], "last_week": weeks[1], "horizon": horizon,
                              "occasions_per_week": occasions_per_week, "cost_share": cost_share})
        runs = {}
        for m in MULTIPLES:
            env.reset(seed=seed, options={"week": int(rows["week"].min())})
            action = np.full(len(env.items), 2 * (m - env.config.price_low)
                             / (env.config.price_high - env.config.price_low) - 1, np.float32)
            totals = {"units": 0.0, "revenue": 0.0, "profit": 0.0}
            for _ in range(horizon):
                _, reward, _, _, info = env.step(action)
                totals["units"] += info["components"]["units"]
                totals["revenue"] += info["components"]["revenue"]
                totals["profit"] += reward
            runs[f"{m:.2f}"] = totals
        result["what_if"][name] = runs
    result["seconds"] = round(time.perf_counter() - started, 1)
    result["versions"] = package_versions()
    text = markdown(result)
    with atomic_dir(out) as tmp:
        write_json(tmp / "backtest.json", result)
        (tmp / "backtest.md").write_text(text + "\n")
        plot_categories(result, tmp / "backtest.png")
        write_json(tmp / MARKER_FILE, {"kind": BACKTEST_KIND})
    result["markdown"] = text
    return result


def markdown(result: dict[str, Any]) -> str:
    """The back-test's two tables as markdown."""
    w = result["weeks"]
    lines = [f"Back-test on weeks {w[0]}-{w[1]} of `{result['shop']}` ({result['occasions']:,} occasions).", "",
             "Replay of the logged prices (expected against observed):", "",
             "| model | purchases: expected / observed | error | revenue: expected / observed | error | mean weekly "
             "abs. error | weekly correlation |", "|---|---|---|---|---|---|---|"]
    for name, r in result["replay"].items():
        weekly = r["weekly"].values()
        ep, op = sum(x["expected_purchases"] for x in weekly), sum(x["observed_purchases"] for x in weekly)
        er, orv = sum(x["expected_revenue"] for x in weekly), sum(x["observed_revenue"] for x in weekly)
        corr = "n/a" if r["weekly_correlation"] is None else f"{r['weekly_correlation']:.2f}"
        lines.append(f"| {name} | {ep:,.0f} / {op:,.0f} | {r['purchases_error']:+.1%} | {er:,.0f} / {orv:,.0f} | "
                     f"{r['revenue_error']:+.1%} | {r['weekly_abs_error']:.1%} | {corr} |")
    lines += category_markdown(result)
    s = result["settings"]
    lines += ["", f"What-if in `promogym/ShopPricing-v0` ({s['occasions_per_week']:,} occasions drawn a week, unit "
                  f"cost {s['cost_share']:.0%} of list price where the catalog has none), every product at a "
                  f"multiple of its list price:", "",
              "| model | " + " | ".join(f"x{m:.2f} units / revenue / profit" for m in s["multiples"]) + " |",
              "|---|" + "---|" * len(s["multiples"])]
    for name, runs in result["what_if"].items():
        cells = [f"{r['units']:,.0f} / {r['revenue']:,.0f} / {r['profit']:,.0f}" for r in runs.values()]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", f"Command: `{result['command']}`"]
    return "\n".join(lines)


def category_markdown(result: dict[str, Any]) -> list[str]:
    """Weekly purchases per category: each model's MAPE over the top categories' weeks, then per category."""
    replays = result["replay"]
    if not replays:
        return []
    first = next(iter(replays.values()))["categories"]
    cats = list(first["per_category"])
    target = result["targets"]["category_weekly_mape"]
    lines = ["", f"Weekly purchases per category, the {len(cats)} categories with the most purchases in these weeks "
                 f"(target: MAPE over category-weeks <= {target:.0%}; {first['cells']} category-weeks scored, "
                 f"{first['cells_without_purchase']} without a purchase left out):", "",
             "| model | MAPE | MAPE of an exact model (sampling noise) | categories within target | met |",
             "|---|---|---|---|---|"]
    refs = result.get("references") or {}
    named = [(name, r["categories"]) for name, r in replays.items()]
    if refs.get("category_rate"):
        w0, w1 = refs["category_rate"]["weeks"]
        named.append((f"no model: each category's purchase rate of weeks {w0}-{w1}", refs["category_rate"]))
    if refs.get("category_rate_held_out"):
        named.append(("no model: each category's own rate in these weeks (its total right, its weeks flat)",
                      refs["category_rate_held_out"]))
    for name, c in named:
        mape = "n/a" if c["mape"] is None else f"{c['mape']:.1%}"
        floor = "n/a" if c["noise_floor_mape"] is None else f"{c['noise_floor_mape']:.1%}"
        lines.append(f"| {name} | {mape} | {floor} | {c['categories_within_target']} of {len(cats)} | "
                     f"{'n/a' if c['met'] is None else 'yes' if c['met'] else 'no'} |")

    def cell(v: dict[str, Any]) -> str:
        return "n/a" if v["mape"] is None else f"{v['mape']:.1%} ({v['bias']:+.1%})"

    columns = {name: r["categories"] for name, r in replays.items()}
    if refs.get("category_rate"):
        columns["no model: rate of weeks {}-{}".format(*refs["category_rate"]["weeks"])] = refs["category_rate"]
    lines += ["", "Per category: MAPE of weekly purchases (bias of the weeks' total in brackets).", "",
              "| category | observed purchases | " + " | ".join(columns) + " |", "|---|---|" + "---|" * len(columns)]
    for cat in cats:
        lines.append(f"| {cat.lower()} | {first['per_category'][cat]['observed']:,.0f} | "
                     + " | ".join(cell(c["per_category"][cat]) for c in columns.values()) + " |")
    return lines


def plot_categories(result: dict[str, Any], path: Path) -> None:
    """Small multiples: per category, observed weekly purchases (points) and each model's expectation (lines)."""
    from promogym.core.plots import pyplot, save_png

    replays = result["replay"]
    if not replays:
        return
    cats = list(next(iter(replays.values()))["categories"]["per_category"])
    plt = pyplot()
    cols = min(5, len(cats))
    rows = -(-len(cats) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, 2.3 * rows), squeeze=False)
    for ax, cat in zip(axes.flat, cats, strict=False):
        for i, (name, r) in enumerate(replays.items()):
            per = r["categories"]["per_category"][cat]
            if i == 0:
                obs = per["weekly_observed"]
                ax.plot(list(obs), list(obs.values()), "ko", ms=3, label="observed")
            exp = per["weekly_expected"]
            ax.plot(list(exp), list(exp.values()), color=plt.cm.tab10.colors[i], lw=1.2,
                    label=f"{name} (MAPE {per['mape']:.0%})" if per["mape"] is not None else name)
        ax.set_title(cat.lower()[:28], fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=5, loc="lower left")
    for ax in list(axes.flat)[len(cats):]:
        ax.axis("off")
    w = result["weeks"]
    fig.suptitle(f"Purchases per week and category, weeks {w[0]}-{w[1]}: observed and expected at the logged prices",
                 fontsize=10)
    save_png(fig, path)
