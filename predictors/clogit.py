"""The conditional logit with product fixed effects: the econometrics standard for scanner-panel choice data.

A visit (purchase occasion) chooses one of its shown products or nothing with the multinomial logit of
:mod:`promogym.predictors.choice` (utility 0 for nothing) and utilities

    z_ij = a_c(j) + d_j + b_price * log(price_ij) + sum_k b_k * x_ijk

where ``a_c`` is the product's category intercept, ``d_j`` the product's fixed effect (a deviation from its
category's intercept, ridge-penalised towards 0), and ``x`` the offer's promotion features that the table
carries (``display``, ``mailer``, ``coupon_available``, ``coupon``; a loyalty discount is part of the price
paid). A product the fit never saw
(a cold start) has no fixed effect of its own: it gets ``d_j = 0``, its category's intercept (and the mean
category intercept when the category is unseen too). The penalty ``ridge * sum_j d_j^2 / visits`` is chosen by
the caller (e.g. on validation weeks). The fit maximises the likelihood per visit with L-BFGS (torch, float64).

Own-price elasticity of a product's choice probability: ``b_price * (1 - P_ij)``; negative wherever
``b_price < 0``. The model is saved as JSON (coefficients and the tables of ids), so reading it runs no code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from promogym.core.io import write_json
from promogym.predictors.base import Batch, as_frame, clip_proba
from promogym.predictors.choice import choice_nll, visit_choice_proba, visit_codes

CLOGIT_KIND = "promogym-clogit"
PROMO_FEATURES: tuple[str, ...] = ("display", "mailer", "coupon_available", "coupon")


def _lookup(values: np.ndarray, table: dict[Any, int]) -> np.ndarray:
    """``table[v]`` per value (-1 where absent), looked up once per distinct value: a step of the shop env scores
    thousands of rows of a few hundred products."""
    codes, uniques = pd.factorize(values)
    found = np.array([table.get(u.item() if isinstance(u, np.generic) else u, -1) for u in uniques], np.int64)
    return np.where(codes >= 0, found[np.maximum(codes, 0)] if len(found) else -1, -1)  # a missing value: -1


class ConditionalLogit:
    """Product fixed effects + log price + promotion features; ``predict_logits`` gives each row's utility."""

    name = "clogit"

    def __init__(self, ridge: float = 1.0, max_iter: int = 200) -> None:
        self.ridge, self.max_iter = float(ridge), int(max_iter)
        self.features: list[str] = []
        self.items: dict[int, int] = {}
        self.categories: dict[str, int] = {}
        self.fixed: np.ndarray = np.zeros(0)
        self.intercepts: np.ndarray = np.zeros(0)
        self.coef: np.ndarray = np.zeros(0)  # log price first, then self.features
        self.nll: float = float("nan")

    def _design(self, df: pd.DataFrame) -> np.ndarray:
        cols = [np.log(df["price"].to_numpy(dtype=float))]
        cols += [df[f].to_numpy(dtype=float) for f in self.features]
        return np.column_stack(cols)

    def _category_codes(self, df: pd.DataFrame) -> np.ndarray:
        if "category" not in df.columns:
            return np.zeros(len(df), np.int64)
        return _lookup(df["category"].astype(str).to_numpy(), self.categories)

    def fit(self, df: pd.DataFrame) -> ConditionalLogit:
        """Fit on whole visits of ``df`` (``visit_id``, ``item_id``, ``price``, ``purchased``, optional
        ``category`` and promotion columns)."""
        import torch

        self.features = [f for f in PROMO_FEATURES if f in df.columns and df[f].to_numpy(dtype=float).std() > 0]
        item_codes, item_uniques = pd.factorize(df["item_id"].to_numpy())
        self.items = {int(k): i for i, k in enumerate(item_uniques)}
        cats = df["category"].astype(str) if "category" in df.columns else pd.Series("all", index=df.index)
        cat_uniques = sorted(cats.unique())
        self.categories = {c: i for i, c in enumerate(cat_uniques)}
        cat_codes = cats.map(self.categories).to_numpy(np.int64)
        x = torch.as_tensor(self._design(df), dtype=torch.float64)
        scale = x.std(0).clamp_min(1e-6)
        xs = x / scale
        visit, n_visits = visit_codes(df["visit_id"].to_numpy())
        vi = torch.as_tensor(visit)
        y = torch.as_tensor(df["purchased"].to_numpy(dtype=float))
        it, ct = torch.tensor(item_codes, dtype=torch.long), torch.tensor(cat_codes, dtype=torch.long)
        d = torch.zeros(len(item_uniques), dtype=torch.float64, requires_grad=True)
        a = torch.full((len(cat_uniques),), -2.0, dtype=torch.float64, requires_grad=True)
        b = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([d, a, b], lr=1.0, max_iter=self.max_iter, line_search_fn="strong_wolfe",
                                tolerance_grad=1e-9, tolerance_change=1e-12)

        def closure() -> torch.Tensor:
            opt.zero_grad()
            z = a[ct] + d[it] + xs @ b
            loss = choice_nll(z, vi, y, n_visits) + self.ridge * (d ** 2).sum() / n_visits
            loss.backward()
            return loss

        opt.step(closure)
        with torch.no_grad():
            z = a[ct] + d[it] + xs @ b
            self.nll = float(choice_nll(z, vi, y, n_visits))
        self.fixed = d.detach().numpy().copy()
        self.intercepts = a.detach().numpy().copy()
        self.coef = (b.detach() / scale).numpy().copy()
        return self

    @property
    def price_coef(self) -> float:
        """The coefficient of log price (the elasticity of a product's utility)."""
        return float(self.coef[0])

    def known(self, items: np.ndarray) -> np.ndarray:
        """Bool per row: the product had a fixed effect fitted."""
        return np.isin(np.asarray(items), np.fromiter(self.items, np.int64, len(self.items)))

    def predict_logits(self, batch: Batch) -> np.ndarray:
        """Each row's utility; a product the fit never saw gets its category's intercept (fixed effect 0)."""
        df = as_frame(batch)
        for f in self.features:
            if f not in df.columns:
                raise ValueError(f"the conditional logit was fitted with column {f}, which the batch lacks")
        codes = _lookup(df["item_id"].to_numpy(), self.items)
        fixed = np.where(codes >= 0, self.fixed[np.maximum(codes, 0)], 0.0)
        cat = self._category_codes(df)
        intercept = np.where(cat >= 0, self.intercepts[np.maximum(cat, 0)], float(self.intercepts.mean()))
        return intercept + fixed + self._design(df) @ self.coef

    def predict_proba(self, batch: Batch) -> np.ndarray:
        """P(buy the row's product were it the only one shown): ``sigmoid(utility)``, in (0, 1)."""
        return clip_proba(1.0 / (1.0 + np.exp(-self.predict_logits(batch))))

    def choice_proba(self, batch: Batch) -> np.ndarray:
        """Per row, the probability its visit buys this row's product (the MNL over the visit's rows)."""
        df = as_frame(batch)
        return visit_choice_proba(self.predict_logits(df), df["visit_id"].to_numpy())

    def to_dict(self) -> dict[str, Any]:
        """The fitted model as plain JSON values."""
        return {"kind": CLOGIT_KIND, "ridge": self.ridge, "features": ["log_price", *self.features],
                "coef": [float(c) for c in self.coef], "items": [int(k) for k in self.items],
                "fixed_effects": [float(v) for v in self.fixed], "categories": list(self.categories),
                "intercepts": [float(v) for v in self.intercepts], "train_nll_per_visit": self.nll}

    def save(self, path: str | Path) -> None:
        """Write the model as JSON, atomically."""
        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> ConditionalLogit:
        """The model of a JSON file written by :meth:`save` (ValueError naming the file otherwise)."""
        try:
            d = json.loads(Path(path).read_text())
            if d.get("kind") != CLOGIT_KIND:
                raise ValueError(f"kind {d.get('kind')!r}")
            model = cls(ridge=float(d["ridge"]))
            model.features = [str(f) for f in d["features"][1:]]
            model.coef = np.asarray(d["coef"], dtype=float)
            model.items = {int(k): i for i, k in enumerate(d["items"])}
            model.fixed = np.asarray(d["fixed_effects"], dtype=float)
            model.categories = {str(c): i for i, c in enumerate(d["categories"])}
            model.intercepts = np.asarray(d["intercepts"], dtype=float)
            model.nll = float(d.get("train_nll_per_visit", float("nan")))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"{path} is not a conditional logit written by promogym ({exc})") from exc
        if len(model.coef) != len(model.features) + 1 or len(model.fixed) != len(model.items):
            raise ValueError(f"{path}: its coefficients do not match its features or products")
        return model
