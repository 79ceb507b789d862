"""A back-test of fitted choice models on a shop's held-out weeks (`promogym shop backtest`).

Two parts:

* **Replay of the logged prices.** For each held-out week, every logged occasion at the prices the shop actually
  charged: each model's expected purchases and revenue (choice probabilities x price) beside what was bought.
  Per week and in total: the relative error of purchases and revenue, and the correlation of predicted and
  observed weekly purchases. A simulator that cannot reproduce the weeks it never saw at the logged prices should
  not be trusted at other prices.
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
from promogym.predictors.choice import visit_choice_proba

BACKTEST_KIND = "promogym-shop-backtest"
MARKER_FILE = "promogym-output.json"
MULTIPLES = (0.9, 1.0, 1.1)


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


def replay(rows: pd.DataFrame, logits: Any) -> pd.DataFrame:
    """Per week: observed and expected purchases and revenue of the logged occasions at the logged prices."""
    p = visit_choice_proba(logits(rows), rows["visit_id"].to_numpy())
    price = rows["price"].to_numpy(float)
    y = rows["purchased"].to_numpy(float)
    frame = pd.DataFrame({"week": rows["week"].to_numpy(), "observed_purchases": y, "expected_purchases": p,
                          "observed_revenue": y * price, "expected_revenue": p * price})
    return frame.groupby("week").sum()


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
    result: dict[str, Any] = {"kind": BACKTEST_KIND, "shop": str(shop), "weeks": list(weeks), "command": command,
                              "occasions": int(rows["visit_id"].nunique()), "responses": {}, "replay": {},
                              "what_if": {}, "settings": {"occasions_per_week": occasions_per_week,
                                                          "cost_share": cost_share, "seed": seed,
                                                          "multiples": list(MULTIPLES)}}
    for name, (spec, offer_text, words) in responses.items():
        result["responses"][name] = {"spec": spec, "offer_text": offer_text, "profile_words": words}
        weekly = replay(rows, load_response(spec, offer_text, words))
        tot = weekly.sum()
        result["replay"][name] = {
            "weekly": {int(str(w)): {str(k): float(v) for k, v in r.items()} for w, r in weekly.iterrows()},
            "purchases_error": float(tot["expected_purchases"] / tot["observed_purchases"] - 1),
            "revenue_error": float(tot["expected_revenue"] / tot["observed_revenue"] - 1),
            "weekly_abs_error": float((weekly["expected_purchases"] / weekly["observed_purchases"] - 1).abs().mean()),
            "weekly_correlation": float(np.corrcoef(weekly["expected_purchases"], weekly["observed_purchases"])[0, 1])
            if len(weekly) > 2 else None}
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
