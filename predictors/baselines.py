"""Baseline conversion models: gradient boosting, logistic regression, and the world's truth.

* ``GBDTConversionModel``: histogram gradient boosting on ids (target-encoded), the product's
  category and list price, and the offer's numeric features — no text.
* ``LogisticConversionModel``: logistic regression on TF-IDF words of the user and product texts,
  the offer's numeric features and their interactions with the text.
* ``TruthModel`` (the Bayes-optimal oracle) and ``RevealedTruthModel`` (the ceiling for a model that
  reads the texts and the offer) read the market's truth.
"""

from __future__ import annotations

import pickle
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from promogym.core.io import atomic_path
from promogym.envs.market import Market
from promogym.predictors.base import Batch, as_frame, clip_proba, validate_batch
from promogym.predictors.features import NUMERIC_FEATURES, numeric_features, weekday_index
from promogym.predictors.registry import register_model

PICKLE_MAGIC = "promogym-baseline-v1"


class _Pickled:
    """Save/load for sklearn-based baselines: one pickle written atomically with a schema tag."""

    name = "baseline"
    data_sha256: str | None = None  # the training data's hash, set by `promogym fit`

    def save(self, path: str | Path) -> None:
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            pickle.dump({"magic": PICKLE_MAGIC, "class": type(self).__name__, "model": self}, fh)

    @staticmethod
    def load(path: str | Path) -> Any:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"model file not found: {p}")
        with open(p, "rb") as fh:
            try:
                blob = pickle.load(fh)
            except Exception as exc:
                raise ValueError(f"{p} is not a promogym baseline model: {exc}") from exc
        if not isinstance(blob, dict) or blob.get("magic") != PICKLE_MAGIC:
            raise ValueError(f"{p} is not a promogym baseline model (schema {PICKLE_MAGIC} expected)")
        return blob["model"]


class _TargetEncoder:
    """Smoothed purchase rate per id, fitted out-of-fold on training rows; unseen ids get the prior."""

    def __init__(self, strength: float = 20.0) -> None:
        self.strength = strength
        self.table: dict[int, float] = {}
        self.prior = 0.0

    def fit_transform(self, ids: np.ndarray, y: np.ndarray, folds: int = 5, seed: int = 0) -> np.ndarray:
        self.prior = float(y.mean())
        out = np.empty(len(ids))
        fold = np.random.default_rng(seed).integers(0, folds, len(ids))
        for k in range(folds):
            fit, apply = fold != k, fold == k
            out[apply] = self._encode(ids[fit], y[fit], ids[apply])
        stats = pd.DataFrame({"id": ids, "y": y}).groupby("id")["y"].agg(["sum", "count"])
        self.table = dict(zip(stats.index.to_numpy(), ((stats["sum"] + self.strength * self.prior)
                                                       / (stats["count"] + self.strength)).to_numpy(), strict=True))
        return out

    def _encode(self, ids: np.ndarray, y: np.ndarray, query: np.ndarray) -> np.ndarray:
        stats = pd.DataFrame({"id": ids, "y": y}).groupby("id")["y"].agg(["sum", "count"])
        enc = (stats["sum"] + self.strength * self.prior) / (stats["count"] + self.strength)
        return enc.reindex(query).fillna(self.prior).to_numpy()

    def transform(self, ids: np.ndarray) -> np.ndarray:
        return pd.Series(ids).map(self.table).fillna(self.prior).to_numpy(dtype=float)


class GBDTConversionModel(_Pickled):
    """Gradient boosting on ids, product category and price, and offer features; no text."""

    name = "gbdt"

    def __init__(self, max_iter: int = 300, learning_rate: float = 0.05, seed: int = 0) -> None:
        from sklearn.ensemble import HistGradientBoostingClassifier

        self.seed = seed
        self.model = HistGradientBoostingClassifier(
            max_iter=max_iter, learning_rate=learning_rate, max_leaf_nodes=31, l2_regularization=1.0,
            early_stopping=True, validation_fraction=0.1, n_iter_no_change=20, random_state=seed)
        self.user_enc, self.item_enc = _TargetEncoder(), _TargetEncoder()
        self.categories: list[str] = []

    def _features(self, df: pd.DataFrame, user_code: np.ndarray, item_code: np.ndarray) -> np.ndarray:
        cat = pd.Categorical(df["category"].astype(str), categories=self.categories).codes if "category" in df \
            else np.full(len(df), -1)
        return np.column_stack([user_code, item_code, cat, weekday_index(df), numeric_features(df)]).astype(float)

    def fit(self, df: pd.DataFrame) -> GBDTConversionModel:
        y = df["purchased"].to_numpy(dtype=float)
        if "category" in df:
            self.categories = sorted(df["category"].astype(str).unique())
        u = self.user_enc.fit_transform(df["user_id"].to_numpy(), y, seed=self.seed)
        i = self.item_enc.fit_transform(df["item_id"].to_numpy(), y, seed=self.seed + 1)
        self.model.set_params(categorical_features=[2, 3])
        self.model.fit(self._features(df, u, i), y.astype(int))
        return self

    def predict_proba(self, batch: Batch) -> np.ndarray:
        df = validate_batch(batch, ("user_id", "item_id", "list_price", "price", "coupon", "day"))
        x = self._features(df, self.user_enc.transform(df["user_id"].to_numpy()),
                           self.item_enc.transform(df["item_id"].to_numpy()))
        return clip_proba(self.model.predict_proba(x)[:, 1])


class LogisticConversionModel(_Pickled):
    """Logistic regression on TF-IDF of both texts, offer features, and text x price interactions."""

    name = "logistic"

    def __init__(self, c: float = 1.0, max_features: int = 2000) -> None:
        self.c, self.max_features = c, max_features
        self.vectorizer: Any = None
        self.model: Any = None
        self.scale: np.ndarray | None = None

    def _design(self, df: pd.DataFrame) -> Any:
        from scipy import sparse

        num = numeric_features(df) / self.scale
        words = sparse.hstack([self.vectorizer.transform(df["user_text"].astype(str)),
                               self.vectorizer.transform(df["item_text"].astype(str))]).tocsr()
        words_by_price = words.multiply(num[:, [NUMERIC_FEATURES.index("log_paid_rel")]]).tocsr()
        words_by_coupon = words.multiply(num[:, [NUMERIC_FEATURES.index("has_coupon")]]).tocsr()
        weekday = np.eye(7)[weekday_index(df)]
        return sparse.hstack([words, words_by_price, words_by_coupon, sparse.csr_matrix(num),
                              sparse.csr_matrix(weekday)]).tocsr()

    def fit(self, df: pd.DataFrame) -> LogisticConversionModel:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression

        self.vectorizer = TfidfVectorizer(ngram_range=(1, 2), max_features=self.max_features, sublinear_tf=True)
        texts = pd.concat([df[col].astype(str).drop_duplicates() for col in ("user_text", "item_text")])
        self.vectorizer.fit(texts)
        self.scale = np.maximum(np.abs(numeric_features(df)).max(axis=0), 1e-6)
        self.model = LogisticRegression(C=self.c, max_iter=2000)
        self.model.fit(self._design(df), df["purchased"].to_numpy(dtype=int))
        return self

    def predict_proba(self, batch: Batch) -> np.ndarray:
        df = validate_batch(batch, ("user_text", "item_text", "list_price", "price", "coupon", "day"))
        return clip_proba(self.model.predict_proba(self._design(df))[:, 1])


class TruthModel:
    """The world's true purchase probability for each logged row (Bayes-optimal).

    Rows carry the market state of their moment (``reference_price``, ``fatigue``) as logged.
    """

    name = "truth"
    _revealed = False

    def __init__(self, market: Market) -> None:
        self.market = market

    def predict_proba(self, batch: Batch) -> np.ndarray:
        df = as_frame(batch)
        validate_batch(df, ("user_id", "item_id", "price", "coupon", "day"))
        ctx: dict[str, Any] = {"day": df["day"].to_numpy()}
        if "reference_price" in df:
            ctx["reference_price"] = df["reference_price"].to_numpy(dtype=float)
        if "fatigue" in df:
            ctx["fatigue"] = df["fatigue"].to_numpy(dtype=float)
        fn = self.market.revealed_purchase_proba if self._revealed else self.market.true_purchase_proba
        return clip_proba(fn(df["user_id"].to_numpy(), df["item_id"].to_numpy(), df["price"].to_numpy(dtype=float),
                             df["coupon"].to_numpy(dtype=float), ctx))


class RevealedTruthModel(TruthModel):
    """The expected true probability given what the texts and the offer reveal (the text ceiling)."""

    name = "text_ceiling"
    _revealed = True


# ---------------------------------------------------------------------------------------- registry
def _load_pickled(path: str, kind: str) -> Any:
    model = _Pickled.load(path)
    if getattr(model, "name", None) != kind:
        raise ValueError(f"{path} holds a {getattr(model, 'name', '?')} model, not {kind}")
    return model


def fit_gbdt(train: pd.DataFrame, out_path: str | Path | None = None, seed: int = 0) -> GBDTConversionModel:
    """The uniform conversion fitter of ``gbdt``: fit on ``train``, save to ``out_path`` when given."""
    model = GBDTConversionModel(seed=seed).fit(train)
    if out_path is not None:
        model.save(out_path)
    return model


def fit_logistic(train: pd.DataFrame, out_path: str | Path | None = None, seed: int = 0) -> LogisticConversionModel:
    """The uniform conversion fitter of ``logistic`` (deterministic: ``seed`` is unused)."""
    model = LogisticConversionModel().fit(train)
    if out_path is not None:
        model.save(out_path)
    return model


def _register() -> None:
    register_model("gbdt", task="conversion", load=partial(_load_pickled, kind="gbdt"), fit=fit_gbdt,
                   help="gradient boosting on ids, category and offer (a file written by `promogym fit`)")
    register_model("logistic", task="conversion", load=partial(_load_pickled, kind="logistic"), fit=fit_logistic,
                   help="logistic regression on TF-IDF of the texts and the offer (a file written by `promogym fit`)")
    register_model("truth", task="conversion", load=lambda _path, market: TruthModel(market), needs_path=False,
                   needs=("market",), aliases=("world",), oracle=True,
                   help="the world's true purchase probability (Bayes-optimal)")
    register_model("ceiling", task="conversion", load=lambda _path, market: RevealedTruthModel(market),
                   needs_path=False, needs=("market",), oracle=True,
                   help="the best a model reading the texts and the offer can do")


_register()
