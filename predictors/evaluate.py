"""`promogym eval-predictor`: conversion models scored against outcomes, the truth and two ceilings.

On held-out users (never seen in training) for products seen in training ("seen") and for the
world's new products ("new"), each model gets AUC, log-loss, Brier, ECE, MAE/RMSE against the TRUE
probabilities, the share of the constant-to-ceiling log-loss gap it closes, a classification report,
breakdowns per customer type, and the share of sampled price pairs where it is monotone. Beside
them: the Bayes-optimal figures (true probabilities) and the text ceiling (the expected true
probability given what the texts and the offer reveal).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from promogym.core.io import atomic_path, write_json
from promogym.envs.market import Market
from promogym.predictors.base import ConversionModel
from promogym.predictors.data import split_rows
from promogym.predictors.metrics import gap_share, log_loss, reliability, report_at_base_rate, score

PRICE_GRID = np.round(np.linspace(0.7, 1.3, 13), 3)


def eval_sets(df: pd.DataFrame, seed: int = 0) -> tuple[dict[str, pd.DataFrame], float]:
    """Held-out sets (seen / new products, held-out users) and the training base rate."""
    split = split_rows(df, seed=seed)
    sets = {"seen": df[split.test], "new": df[split.test_new]}
    return {k: v for k, v in sets.items() if len(v)}, float(df.loc[split.train, "purchased"].mean())


def monotone_share(model: ConversionModel, rows: pd.DataFrame) -> float:
    """Share of rows whose predicted probability never rises as the shelf price rises over PRICE_GRID."""
    grid = pd.concat([rows.assign(price=rows["list_price"] * m) for m in PRICE_GRID], ignore_index=True)
    p = model.predict_proba(grid).reshape(len(PRICE_GRID), len(rows))
    return float((np.diff(p, axis=0) <= 1e-9).all(axis=0).mean())


def evaluate(models: dict[str, ConversionModel], df: pd.DataFrame, split_seed: int = 0, max_rows: int | None = None,
             monotone_rows: int = 200, seed: int = 0) -> dict[str, Any]:
    sets, base_rate = eval_sets(df, split_seed)
    rng = np.random.default_rng(seed)
    if max_rows:
        sets = {k: v.iloc[np.sort(rng.choice(len(v), min(max_rows, len(v)), replace=False))] for k, v in sets.items()}
    has_truth = "true_proba" in df.columns
    out: dict[str, Any] = {"base_rate_train": base_rate, "sets": {}, "predictions": {}}
    for set_name, rows in sets.items():
        y = rows["purchased"].to_numpy(float)
        entry: dict[str, Any] = {"rows": len(rows), "constant_log_loss": log_loss(y, np.full(len(y), base_rate))}
        if has_truth:
            entry["bayes"] = score(y, rows["true_proba"].to_numpy(), rows["true_proba"].to_numpy())
            entry["ceiling"] = score(y, rows["revealed_proba"].to_numpy(), rows["true_proba"].to_numpy())
        entry["models"] = {}
        out["predictions"][set_name] = {"y": y, "true": rows["true_proba"].to_numpy() if has_truth else None}
        for name, model in models.items():
            t0 = time.perf_counter()
            p = model.predict_proba(rows)
            seconds = time.perf_counter() - t0
            m: dict[str, Any] = dict(score(y, p, rows["true_proba"].to_numpy() if has_truth else None))
            m["predict_seconds"] = seconds
            if has_truth:
                m["log_loss_over_ceiling"] = m["log_loss"] / entry["ceiling"]["log_loss"]
                m["log_loss_over_bayes"] = m["log_loss"] / entry["bayes"]["log_loss"]
                m["gap_share_to_ceiling"] = gap_share(m["log_loss"], entry["constant_log_loss"],
                                                      entry["ceiling"]["log_loss"])
            m["classification"] = report_at_base_rate(y, p)
            if "true_customer_type" in rows.columns:
                m["by_customer_type"] = {
                    str(t): {k: v for k, v in score(y[mask], p[mask]).items()
                             if k in ("rows", "auc", "log_loss", "mean_pred", "mean_y")}
                    for t in rows["true_customer_type"].astype(str).unique()
                    for mask in [rows["true_customer_type"].astype(str).to_numpy() == t]}
            sample = rows.iloc[np.sort(rng.choice(len(rows), min(monotone_rows, len(rows)), replace=False))]
            m["monotone_share"] = monotone_share(model, sample)
            entry["models"][name] = m
            out["predictions"][set_name][name] = p
        out["sets"][set_name] = entry
    return out


def plot_calibration(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = list(result["predictions"])
    fig, axes = plt.subplots(1, len(sets), figsize=(5.5 * len(sets), 4.6), squeeze=False)
    for ax, set_name in zip(axes[0], sets, strict=True):
        preds = result["predictions"][set_name]
        y = preds["y"]
        top = 0.0
        for name, p in preds.items():
            if name in ("y", "true") or p is None:
                continue
            mp, rate, _ = reliability(y, p)
            ax.plot(mp * 100, rate * 100, marker="o", ms=3, label=name)
            top = max(top, mp.max() * 100, rate.max() * 100)
        ax.plot([0, top], [0, top], color="grey", ls=":", lw=1)
        ax.set_xlabel("predicted purchase probability (%)")
        ax.set_ylabel("observed purchase rate (%)")
        ax.set_title(f"Calibration, held-out users, {set_name} products")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def plot_price_response(models: dict[str, ConversionModel], df: pd.DataFrame, market: Market | None, path: Path,
                        n_pairs: int = 6, seed: int = 0) -> None:
    """Predicted vs true purchase probability across shelf prices for sample user-product pairs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets, _ = eval_sets(df)
    rows = pd.concat(list(sets.values()))
    rng = np.random.default_rng(seed)
    pick = rows.iloc[rng.choice(len(rows), n_pairs, replace=False)].assign(coupon=0.0, coupons_last_7d=0)
    grid = np.linspace(0.6, 1.5, 31)
    fig, axes = plt.subplots(2, (n_pairs + 1) // 2, figsize=(4.2 * ((n_pairs + 1) // 2), 7.2), squeeze=False)
    for ax, (_, row) in zip(axes.flat, pick.iterrows(), strict=False):
        frame = pd.DataFrame([row] * len(grid)).assign(price=row["list_price"] * grid)
        if market is not None:
            true = market.true_purchase_proba(frame["user_id"].to_numpy(), frame["item_id"].to_numpy(),
                                              frame["price"].to_numpy(float), np.zeros(len(grid)),
                                              {"day": frame["day"].to_numpy()})
            ax.plot(grid, true * 100, color="black", lw=2.2, label="truth")
            ceiling = market.revealed_purchase_proba(frame["user_id"].to_numpy(), frame["item_id"].to_numpy(),
                                                     frame["price"].to_numpy(float), np.zeros(len(grid)),
                                                     {"day": frame["day"].to_numpy()})
            ax.plot(grid, ceiling * 100, color="black", lw=1.2, ls="--", label="text ceiling")
        for name, model in models.items():
            if name in ("truth", "ceiling"):
                continue
            ax.plot(grid, model.predict_proba(frame) * 100, label=name)
        ax.set_title(f"{row['true_customer_type']}, {row['category']}", fontsize=9)
        ax.set_xlabel("shelf price / list price")
        ax.set_ylabel("P(purchase) %")
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=7)
    fig.suptitle("Price response: predicted vs true (no coupon, reference = list price)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def write_report(result: dict[str, Any], out: Path) -> None:
    slim = {k: v for k, v in result.items() if k != "predictions"}
    write_json(out / "metrics.json", slim)


def _fmt(value: Any, spec: str) -> str:
    return "–" if value is None or not np.isfinite(value) else format(value, spec)


def summary_table(result: dict[str, Any]) -> str:
    """A markdown table: one row per model and set."""
    lines = ["| set | model | log-loss | / ceiling | gap closed | AUC | ECE | MAE vs truth | monotone |",
             "|---|---|---|---|---|---|---|---|---|"]
    for set_name, entry in result["sets"].items():
        refs = []
        if "ceiling" in entry:
            ceiling_ll = entry["ceiling"]["log_loss"]
            for name, key in (("bayes (truth)", "bayes"), ("text ceiling", "ceiling")):
                m = dict(entry[key])
                m["log_loss_over_ceiling"] = m["log_loss"] / ceiling_ll
                m["gap_share_to_ceiling"] = gap_share(m["log_loss"], entry["constant_log_loss"], ceiling_ll)
                refs.append((name, m))
        const = {"log_loss": entry["constant_log_loss"], "auc": 0.5, "ece": float("nan")}
        for name, m in [("constant (train rate)", const), *refs, *entry["models"].items()]:
            cells = [_fmt(m.get(k), f) for k, f in (("log_loss", ".5f"), ("log_loss_over_ceiling", ".3f"),
                                                     ("gap_share_to_ceiling", ".1%"), ("auc", ".4f"), ("ece", ".4f"),
                                                     ("mae_true", ".4f"), ("monotone_share", ".0%"))]
            lines.append(f"| {set_name} | {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
