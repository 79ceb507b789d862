"""`promogym eval-predictor`: conversion models scored against outcomes, the truth and two ceilings.

A visit views a few products and buys one of them or nothing (a multinomial logit with an outside
option). Every model's per-row probability is its visit's choice probability: its logits (the
products' utilities) turned into MNL probabilities within the row's visit
(:func:`~promogym.predictors.choice.visit_choice_proba`); a model that knows the visit's choice itself
(``predict_choice_proba``, e.g. the truth oracles) gives it directly.

On held-out users (never seen in training), per offer, for products seen in training ("seen") and
for the world's new products ("new"): AUC, log-loss, Brier, ECE, MAE/RMSE against the TRUE choice
probabilities (``true_proba``), the share of the constant-to-ceiling log-loss gap it closes, a
classification report, breakdowns per customer type, and the share of sampled price pairs where it
is monotone. Per visit, for visits of seen products only ("seen") and visits with a new product
("new"): P(buy anything) (log-loss, ECE, Brier against whether the visit bought) and which product
(among visits with a purchase and at least two viewed products: the mean log-likelihood of the chosen
product given a purchase, and the top-1 hit rate). Beside them: the Bayes-optimal figures (the true
probabilities) and the text ceiling (``revealed_proba``: the expected true probability given what the
texts and the offer reveal).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from promogym.core.io import atomic_path, write_json
from promogym.envs.market import Market
from promogym.predictors.base import ConversionModel, clip_proba
from promogym.predictors.choice import visit_choice_proba, visit_codes
from promogym.predictors.data import split_rows
from promogym.predictors.metrics import brier, ece, gap_share, log_loss, reliability, report_at_base_rate, score

PRICE_GRID = np.round(np.linspace(0.7, 1.3, 13), 3)


def eval_sets(df: pd.DataFrame, seed: int = 0) -> tuple[dict[str, pd.DataFrame], float]:
    """Held-out sets (seen / new products, held-out users) and the training base rate."""
    split = split_rows(df, seed=seed)
    sets = {"seen": df[split.test], "new": df[split.test_new]}
    return {k: v for k, v in sets.items() if len(v)}, float(df.loc[split.train, "purchased"].mean())


def choice_proba(model: ConversionModel, rows: pd.DataFrame) -> np.ndarray:
    """Per row, the model's probability that the row's visit buys this row's product: its own
    ``predict_choice_proba`` when it has one, else the MNL of its logits within each visit."""
    own = getattr(model, "predict_choice_proba", None)
    if callable(own):
        return np.asarray(own(rows), dtype=float)
    p = clip_proba(model.predict_proba(rows))
    return visit_choice_proba(np.log(p) - np.log1p(-p), rows["visit_id"].to_numpy())


def monotone_share(model: ConversionModel, rows: pd.DataFrame) -> float:
    """Share of rows whose predicted probability never rises as the shelf price rises over PRICE_GRID."""
    grid = pd.concat([rows.assign(price=rows["list_price"] * m) for m in PRICE_GRID], ignore_index=True)
    p = model.predict_proba(grid).reshape(len(PRICE_GRID), len(rows))
    return float((np.diff(p, axis=0) <= 1e-9).all(axis=0).mean())


def _held_out(df: pd.DataFrame, split_seed: int, max_rows: int | None, rng: np.random.Generator
              ) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Every row of the held-out users' visits (sampled by whole visits to at most ``max_rows`` rows per
    set) and, per set, its rows' mask in that frame."""
    split = split_rows(df, seed=split_seed)
    frame = df[split.test | split.test_new]
    new = frame["is_new_product"].to_numpy(bool) if "is_new_product" in frame else np.zeros(len(frame), bool)
    kinds = {"seen": ~new, "new": new}
    codes, n_visits = visit_codes(frame["visit_id"].to_numpy())
    chosen = {k: np.ones(n_visits, bool) for k in kinds}
    if max_rows:
        perm = rng.permutation(n_visits)
        for k, mask in kinds.items():
            in_order = np.bincount(codes, weights=mask, minlength=n_visits)[perm]
            chosen[k] = np.zeros(n_visits, bool)
            chosen[k][perm[np.cumsum(in_order) <= max_rows]] = True
    keep = (chosen["seen"] | chosen["new"])[codes]
    masks = {k: (mask & chosen[k][codes])[keep] for k, mask in kinds.items()}
    return frame[keep], {k: m for k, m in masks.items() if m.any()}


def _visit_scores(y_visit: np.ndarray, p_visit: np.ndarray, log_lik: np.ndarray, top1: np.ndarray
                  ) -> dict[str, float]:
    """P(buy anything) scored against the visits' outcomes; which product among choice visits."""
    return {"buy_log_loss": log_loss(y_visit, p_visit), "buy_ece": ece(y_visit, p_visit),
            "buy_brier": brier(y_visit, p_visit), "buy_mean_pred": float(np.mean(p_visit)),
            "buy_rate": float(np.mean(y_visit)),
            "choice_log_lik": float(np.mean(log_lik)) if len(log_lik) else float("nan"),
            "top1": float(np.mean(top1)) if len(top1) else float("nan")}


class _Visits:
    """The visits of a frame: per-visit sums and which product the choice visits bought."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self.codes, self.n = visit_codes(frame["visit_id"].to_numpy())
        self.y_row = frame["purchased"].to_numpy(float)
        self.y = np.bincount(self.codes, weights=self.y_row, minlength=self.n)
        size = np.bincount(self.codes, minlength=self.n)
        self.size = size
        # choice visits: a purchase among at least two viewed products
        self.choice = (self.y > 0) & (size >= 2)
        self.chosen_row = np.flatnonzero((self.y_row > 0) & self.choice[self.codes])

    def scores(self, p: np.ndarray, visits: np.ndarray) -> dict[str, float]:
        p = np.asarray(p, float)
        p_sum = np.bincount(self.codes, weights=p, minlength=self.n)
        best = np.full(self.n, -np.inf)
        np.maximum.at(best, self.codes, p)
        rows = self.chosen_row[visits[self.codes[self.chosen_row]]]
        v = self.codes[rows]
        # log P(the chosen product | the visit bought one of its products)
        log_lik = np.log(np.maximum(p[rows], 1e-300)) - np.log(np.maximum(p_sum[v], 1e-300))
        return _visit_scores(self.y[visits], clip_proba(p_sum[visits]), log_lik, p[rows] >= best[v])

    def uniform(self, visits: np.ndarray) -> dict[str, float]:
        v = self.codes[self.chosen_row[visits[self.codes[self.chosen_row]]]]
        return {"choice_log_lik": float(np.mean(-np.log(self.size[v]))) if len(v) else float("nan"),
                "top1": float(np.mean(1.0 / self.size[v])) if len(v) else float("nan")}


def evaluate(models: dict[str, ConversionModel], df: pd.DataFrame, split_seed: int = 0, max_rows: int | None = None,
             monotone_rows: int = 200, seed: int = 0) -> dict[str, Any]:
    """Per-offer (``sets``) and per-visit (``visits``) metrics of each model on the held-out users."""
    split = split_rows(df, seed=split_seed)
    base_rate = float(df.loc[split.train, "purchased"].mean())
    rng = np.random.default_rng(seed)
    frame, masks = _held_out(df, split_seed, max_rows, rng)
    has_truth = "true_proba" in df.columns
    out: dict[str, Any] = {"base_rate_train": base_rate, "sets": {}, "visits": {}, "predictions": {}}
    probs: dict[str, np.ndarray] = {}
    seconds: dict[str, float] = {}
    for name, model in models.items():
        t0 = time.perf_counter()
        probs[name] = choice_proba(model, frame)
        seconds[name] = time.perf_counter() - t0
    y_all = frame["purchased"].to_numpy(float)
    true_all = frame["true_proba"].to_numpy(float) if has_truth else None
    for set_name, mask in masks.items():
        rows, y = frame[mask], y_all[mask]
        true = None if true_all is None else true_all[mask]
        entry: dict[str, Any] = {"rows": len(rows), "constant_log_loss": log_loss(y, np.full(len(y), base_rate))}
        if true is not None:
            entry["bayes"] = score(y, true, true)
            entry["ceiling"] = score(y, rows["revealed_proba"].to_numpy(float), true)
        entry["models"] = {}
        out["predictions"][set_name] = {"y": y, "true": true}
        for name, model in models.items():
            p = probs[name][mask]
            m: dict[str, Any] = dict(score(y, p, true))
            m["predict_seconds"] = seconds[name] * len(rows) / len(frame)
            if true is not None:
                m["log_loss_over_ceiling"] = m["log_loss"] / entry["ceiling"]["log_loss"]
                m["log_loss_over_bayes"] = m["log_loss"] / entry["bayes"]["log_loss"]
                m["gap_share_to_ceiling"] = gap_share(m["log_loss"], entry["constant_log_loss"],
                                                      entry["ceiling"]["log_loss"])
            m["classification"] = report_at_base_rate(y, p)
            if "true_customer_type" in rows.columns:
                types = rows["true_customer_type"].astype(str).to_numpy()
                m["by_customer_type"] = {
                    str(t): {k: v for k, v in score(y[types == t], p[types == t]).items()
                             if k in ("rows", "auc", "log_loss", "mean_pred", "mean_y")}
                    for t in np.unique(types)}
            sample = rows.iloc[np.sort(rng.choice(len(rows), min(monotone_rows, len(rows)), replace=False))]
            m["monotone_share"] = monotone_share(model, sample)
            entry["models"][name] = m
            out["predictions"][set_name][name] = p
        out["sets"][set_name] = entry
    out["visits"] = _visit_metrics(frame, probs, split, df, has_truth)
    return out


def _visit_metrics(frame: pd.DataFrame, probs: dict[str, np.ndarray], split: Any, df: pd.DataFrame,
                   has_truth: bool) -> dict[str, Any]:
    """Per-visit metrics for visits of seen products only and visits with a new product."""
    vis = _Visits(frame)
    new_row = frame["is_new_product"].to_numpy(bool) if "is_new_product" in frame else np.zeros(len(frame), bool)
    has_new = np.bincount(vis.codes, weights=new_row, minlength=vis.n) > 0
    train = df[split.train]
    t_codes, t_n = visit_codes(train["visit_id"].to_numpy())
    buy_rate = float(np.mean(np.bincount(t_codes, weights=train["purchased"].to_numpy(float), minlength=t_n) > 0))
    out: dict[str, Any] = {}
    for name, visits in (("seen", ~has_new), ("new", has_new)):
        if not visits.any():
            continue
        y = vis.y[visits]
        entry: dict[str, Any] = {"visits": int(visits.sum()), "choice_visits": int((vis.choice & visits).sum()),
                                 "constant_buy_log_loss": log_loss(y, np.full(len(y), buy_rate)),
                                 "uniform": vis.uniform(visits)}
        if has_truth:
            entry["bayes"] = vis.scores(frame["true_proba"].to_numpy(float), visits)
            entry["ceiling"] = vis.scores(frame["revealed_proba"].to_numpy(float), visits)
        entry["models"] = {}
        for model_name, p in probs.items():
            m = vis.scores(p, visits)
            if has_truth:
                m["buy_log_loss_over_ceiling"] = m["buy_log_loss"] / entry["ceiling"]["buy_log_loss"]
            entry["models"][model_name] = m
        out[name] = entry
    return out


def plot_calibration(result: dict[str, Any], path: Path) -> None:
    """Draw a reliability diagram per product set of ``result`` (predicted probability against observed purchase rate,
    one curve per model) and write it as a PNG to ``path``, atomically."""
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
    """Write ``result`` without its per-row predictions to ``out/metrics.json``."""
    slim = {k: v for k, v in result.items() if k != "predictions"}
    write_json(out / "metrics.json", slim)


def _fmt(value: Any, spec: str) -> str:
    return "–" if value is None or not np.isfinite(value) else format(value, spec)


def summary_table(result: dict[str, Any]) -> str:
    """Markdown: a table per offer (one row per model and set), then a table per visit."""
    lines = ["Per offer (each row's choice probability within its visit):", "",
             "| set | model | log-loss | / ceiling | gap closed | AUC | ECE | MAE vs truth | monotone |",
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
    visits = result.get("visits") or {}
    if visits:
        lines += ["", "Per visit (P(buy anything); which product, among visits with a purchase and >= 2 views):", "",
                  "| visits | model | P(buy) log-loss | / ceiling | P(buy) ECE | mean P(buy) | buy rate "
                  "| choice log-lik | top-1 |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for set_name, entry in visits.items():
            refs = []
            ceiling_ll = entry["ceiling"]["buy_log_loss"] if "ceiling" in entry else float("nan")
            const = {"buy_log_loss": entry["constant_buy_log_loss"], **entry["uniform"]}
            for name, key in (("bayes (truth)", "bayes"), ("text ceiling", "ceiling")):
                if key in entry:
                    refs.append((name, {**entry[key], "buy_log_loss_over_ceiling":
                                        entry[key]["buy_log_loss"] / ceiling_ll}))
            label = f"{set_name} ({entry['visits']:,}; {entry['choice_visits']:,} choices)"
            for name, m in [("constant / uniform", const), *refs, *entry["models"].items()]:
                cells = [_fmt(m.get(k), f) for k, f in (
                    ("buy_log_loss", ".5f"), ("buy_log_loss_over_ceiling", ".3f"), ("buy_ece", ".4f"),
                    ("buy_mean_pred", ".4f"), ("buy_rate", ".4f"), ("choice_log_lik", ".4f"), ("top1", ".1%"))]
                lines.append(f"| {label} | {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
