"""Post-hoc calibration fitted on validation data: a shift of the log-odds, temperature scaling or isotonic
regression.

``shift`` (one parameter: logit + b) corrects the level only and leaves every effect's size as the model
learned it; ``temperature`` (logit / T + b) also rescales every effect — a price elasticity included — by
1/T, which is what a simulator must not do when a model trained long enough to be over-confident gets
T > 1."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.optimize import minimize

from promogym.predictors.base import EPS, clip_proba

METHODS = ("none", "shift", "temperature", "isotonic")


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


class Calibrator:
    """Maps raw logits to calibrated probabilities; serializable to JSON."""

    def __init__(self, method: str = "none", temperature: float = 1.0, bias: float = 0.0,
                 x: list[float] | None = None, y: list[float] | None = None) -> None:
        if method not in METHODS:
            raise ValueError(f"calibration must be one of {', '.join(METHODS)}, got {method!r}")
        self.method, self.temperature, self.bias = method, float(temperature), float(bias)
        self.x = np.asarray(x or [], float)
        self.y = np.asarray(y or [], float)

    @classmethod
    def fit(cls, method: str, logits: np.ndarray, y: np.ndarray) -> Calibrator:
        """Fit ``method`` (none, shift, temperature or isotonic) on validation ``logits`` and 0/1 outcomes ``y`` by
        log-loss (isotonic: by isotonic regression)."""
        logits, y = np.asarray(logits, float), np.asarray(y, float)
        if method == "none":
            return cls()
        if method == "shift":
            def nll_shift(params: np.ndarray) -> float:
                p = clip_proba(_sigmoid(logits + params[0]))
                return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))

            res = minimize(nll_shift, np.array([0.0]), method="L-BFGS-B", bounds=[(-10.0, 10.0)])
            return cls("shift", bias=float(res.x[0]))
        if method == "temperature":
            # temperature and bias (Platt scaling on the logit): monotone, two parameters
            def nll(params: np.ndarray) -> float:
                p = clip_proba(_sigmoid(logits / params[0] + params[1]))
                return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))

            res = minimize(nll, np.array([1.0, 0.0]), method="L-BFGS-B", bounds=[(0.05, 20.0), (-10.0, 10.0)])
            best_t, best_b = float(res.x[0]), float(res.x[1])
            return cls("temperature", temperature=best_t, bias=best_b)
        from sklearn.isotonic import IsotonicRegression

        iso = IsotonicRegression(out_of_bounds="clip", y_min=1e-5, y_max=1 - 1e-5, increasing=True)
        iso.fit(logits, y)
        return cls("isotonic", x=list(iso.X_thresholds_), y=list(iso.y_thresholds_))

    def __call__(self, logits: np.ndarray) -> np.ndarray:
        logits = np.asarray(logits, float)
        if self.method == "isotonic":
            return clip_proba(np.interp(logits, self.x, self.y))
        return clip_proba(_sigmoid(logits / self.temperature + self.bias))

    def logit(self, logits: np.ndarray) -> np.ndarray:
        """The calibrated log-odds, ``log(p) - log(1 - p)`` of :meth:`__call__`'s probabilities (computed
        directly for temperature scaling, within the same clipping)."""
        if self.method == "isotonic":
            p = self(logits)
            return np.log(p) - np.log1p(-p)
        bound = float(np.log((1.0 - EPS) / EPS))
        return np.clip(np.asarray(logits, float) / self.temperature + self.bias, -bound, bound)

    def to_dict(self) -> dict[str, Any]:
        """The calibrator as a JSON-serializable dict (read back by :meth:`from_dict`)."""
        return {"method": self.method, "temperature": self.temperature, "bias": self.bias,
                "x": self.x.tolist(), "y": self.y.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Calibrator:
        """A calibrator from :meth:`to_dict`'s output."""
        return cls(d["method"], d.get("temperature", 1.0), d.get("bias", 0.0), d.get("x"), d.get("y"))
