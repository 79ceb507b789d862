"""Metrics of a conversion model against outcomes and, where known, against the true probabilities."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import classification_report, roc_auc_score

from promogym.predictors.base import clip_proba


def log_loss(y: np.ndarray, p: np.ndarray) -> float:
    """Mean binary cross-entropy of probabilities ``p`` for 0/1 outcomes ``y``, in nats (``p`` clipped to (0, 1))."""
    p = clip_proba(p)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def brier(y: np.ndarray, p: np.ndarray) -> float:
    """Mean squared error of probabilities ``p`` for 0/1 outcomes ``y``."""
    return float(np.mean((np.asarray(p, float) - y) ** 2))


def auc(y: np.ndarray, p: np.ndarray) -> float:
    """Area under the ROC curve; NaN when ``y`` holds a single class."""
    return float(roc_auc_score(y, p)) if 0 < np.sum(y) < len(y) else float("nan")


def ece(y: np.ndarray, p: np.ndarray, bins: int = 20) -> float:
    """Expected calibration error over equal-mass bins (purchase probabilities crowd near zero, so
    equal-width bins would put almost every row in the first bin)."""
    p = np.asarray(p, float)
    order = np.argsort(p, kind="stable")
    total = 0.0
    for idx in np.array_split(order, bins):
        if len(idx):
            total += len(idx) * abs(p[idx].mean() - y[idx].mean())
    return total / len(p)


def reliability(y: np.ndarray, p: np.ndarray, bins: int = 15) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean prediction, observed rate and count per equal-mass bin (for calibration plots)."""
    order = np.argsort(p, kind="stable")
    parts = [idx for idx in np.array_split(order, bins) if len(idx)]
    return (np.array([p[i].mean() for i in parts]), np.array([y[i].mean() for i in parts]),
            np.array([len(i) for i in parts]))


def score(y: np.ndarray, p: np.ndarray, true_p: np.ndarray | None = None) -> dict[str, float]:
    """AUC, log-loss, Brier, ECE; MAE and RMSE against the true probabilities when given."""
    y = np.asarray(y, dtype=float)
    out = {"rows": float(len(y)), "positives": float(y.sum()), "auc": auc(y, p), "log_loss": log_loss(y, p),
           "brier": brier(y, p), "ece": ece(y, p), "mean_pred": float(np.mean(p)), "mean_y": float(y.mean())}
    if true_p is not None:
        err = np.asarray(p, float) - true_p
        out["mae_true"] = float(np.mean(np.abs(err)))
        out["rmse_true"] = float(np.sqrt(np.mean(err ** 2)))
    return out


def gap_share(model_ll: float, constant_ll: float, ceiling_ll: float) -> float:
    """Share of the log-loss gap between a constant predictor and the ceiling that a model closes."""
    gap = constant_ll - ceiling_ll
    return float((constant_ll - model_ll) / gap) if gap > 0 else float("nan")


def report_at_base_rate(y: np.ndarray, p: np.ndarray) -> dict[str, Any]:
    """Classification report with the threshold that flags as many rows as there are purchases."""
    y = np.asarray(y, dtype=int)
    k = max(int(y.sum()), 1)
    threshold = float(np.sort(p)[-k])
    pred = (p >= threshold).astype(int)
    rep = classification_report(y, pred, output_dict=True, zero_division=0, target_names=["no purchase", "purchase"])
    return {"threshold": threshold, "report": rep}
