"""Baseline conversion models: gradient boosting, logistic regression, and the world's truth.

* ``GBDTConversionModel``: histogram gradient boosting on ids (target-encoded), the product's
  category and list price, and the offer's numeric features — no text; monotone non-increasing in
  the shelf price (monotonic constraints on every feature that rises with it).
* ``LogisticConversionModel``: logistic regression on TF-IDF words of the user and product texts,
  the offer's numeric features and their interactions with the text.
* ``TruthModel`` (the Bayes-optimal oracle) and ``RevealedTruthModel`` (the ceiling for a model that
  reads the texts and the offer) read the market's truth.

The logs hold one multinomial-logit choice per visit; both baselines are binary classifiers fitted on
the IIA rows (:func:`~promogym.predictors.choice.iia_rows`: the visit bought this row's product or
nothing), where ``P(buy) = sigmoid(utility)`` exactly, so their logit estimates the product's utility
and a visit's choice probabilities follow from the logits of its products. Every model records the
world config of the logs it was fitted on (``world_config``: the sidecar's ``"world"``, or None).

Model files (also the uplift two-model files of ``promogym.predictors.uplift``) are zip archives that
cannot run code when read: ``promogym.json``, a manifest naming the format, its version, the task and
kind, and the wrapper's own state as JSON (feature names, seed, encoders' tables, the training data's
sha256, ...), checked before anything else is read; and ``estimators.skops``, the scikit-learn
estimators in skops's format, loaded with an explicit list of trusted types. The pipelines name them
``model.skops.zip`` (:data:`MODEL_FILE`). A file of the old pickle format is refused, never unpickled.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from promogym.core.io import atomic_path
from promogym.envs.market import Market
from promogym.predictors.base import Batch, as_frame, clip_proba, validate_batch
from promogym.predictors.choice import iia_rows, visit_layout
from promogym.predictors.features import HISTORY_FEATURES, NUMERIC_FEATURES, numeric_features, weekday_index
from promogym.predictors.registry import register_model

MODEL_FILE = "model.skops.zip"  # what the pipelines name a gbdt or logistic model file
ARCHIVE_FORMAT = "promogym-sklearn-model"
ARCHIVE_VERSION = 1
MANIFEST = "promogym.json"
ESTIMATORS = "estimators.skops"
# the types of our fitted estimators outside skops's default trust (a partial is checked with its function);
# a file holding any other type is refused before anything is built from it
TRUSTED_TYPES: tuple[str, ...] = (
    "functools.partial",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.utils.validation.check_array",
)
_OLD_FORMATS = (b"\x80", b"promogym-uplift-v1\n")  # a pickle (protocol 2+) and the old uplift files


def save_archive(path: str | Path, *, task: str, kind: str, state: Mapping[str, Any],
                 estimators: Mapping[str, Any]) -> None:
    """Write a model archive atomically: the manifest with ``state`` (JSON) and the estimators (skops)."""
    import skops.io as sio

    manifest = {"format": ARCHIVE_FORMAT, "format_version": ARCHIVE_VERSION, "task": task, "kind": kind,
                "state": dict(state), "estimators": sorted(estimators)}
    blob = sio.dumps(dict(estimators))
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(MANIFEST, json.dumps(manifest, indent=1, allow_nan=False) + "\n")
        zf.writestr(ESTIMATORS, blob)


def load_archive(path: str | Path, *, task: str, what: str, refit: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(manifest, estimators) of a model archive. The manifest's format, version and task are checked
    first; the estimators are loaded only when every type they hold is trusted. FileNotFoundError, or a
    one-line ValueError naming the file and saying how to regenerate it (``refit``)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{what} file not found: {p}")
    if not zipfile.is_zipfile(p):
        with open(p, "rb") as fh:
            old = fh.read(32).startswith(_OLD_FORMATS)
        why = "it is of the old pickle format, which is never loaded (unpickling can run code)" if old \
            else "it is no promogym model archive (another format, or truncated)"
        raise ValueError(f"{p} is not a promogym {what} file: {why}; {refit}")
    try:
        with zipfile.ZipFile(p) as zf:
            names = set(zf.namelist())
            if MANIFEST not in names or ESTIMATORS not in names:
                raise ValueError(f"{p} is not a promogym {what} file: it lacks {MANIFEST} or {ESTIMATORS}; {refit}")
            manifest = json.loads(zf.read(MANIFEST))
            if not isinstance(manifest, dict) or manifest.get("format") != ARCHIVE_FORMAT \
                    or not isinstance(manifest.get("state"), dict):
                raise ValueError(f"{p} is not a promogym {what} file (format {ARCHIVE_FORMAT} expected); {refit}")
            if manifest.get("format_version") != ARCHIVE_VERSION:
                raise ValueError(f"{p} has format version {manifest.get('format_version')!r}, this promogym reads "
                                 f"{ARCHIVE_VERSION}; {refit}")
            if manifest.get("task") != task:
                raise ValueError(f"{p} holds a model for the {manifest.get('task')} task, not the {task} task; "
                                 f"{refit}")
            blob = zf.read(ESTIMATORS)
    except ValueError:
        raise
    except Exception as exc:  # a damaged archive: bad CRC, truncated member, undecodable manifest
        raise ValueError(f"{p}: unreadable {what} file ({_brief(exc)}); {refit}") from exc
    import skops.io as sio

    try:
        untrusted = sio.get_untrusted_types(data=blob)
    except Exception as exc:
        raise ValueError(f"{p}: unreadable estimators in {ESTIMATORS} ({_brief(exc)}); {refit}") from exc
    refused = sorted(set(untrusted) - set(TRUSTED_TYPES))
    if refused:
        raise ValueError(f"{p} holds types promogym does not trust ({', '.join(refused)}); {refit}")
    try:
        estimators = sio.loads(blob, trusted=list(TRUSTED_TYPES))
    except Exception as exc:
        raise ValueError(f"{p}: unreadable estimators in {ESTIMATORS} ({_brief(exc)}); {refit}") from exc
    if not isinstance(estimators, dict) or sorted(estimators) != manifest.get("estimators"):
        raise ValueError(f"{p}: its estimators do not match its manifest; {refit}")
    return manifest, estimators


def _brief(exc: BaseException) -> str:
    first = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
    text = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _refit_hint(kind: str) -> str:
    return f"refit with `promogym fit --kind {kind} --data <logs> --out <file>`"


class _Archived:
    """Save/load of the sklearn-based baselines as a model archive (see the module docstring)."""

    name = "baseline"
    data_sha256: str | None = None  # the training data's hash, set by `promogym fit`
    world_config: dict[str, Any] | None = None  # the world config of the training logs (None: unknown)

    def _state(self) -> dict[str, Any]:
        raise NotImplementedError

    def _estimators(self) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def _restore(cls, state: dict[str, Any], estimators: dict[str, Any]) -> Any:
        raise NotImplementedError

    def save(self, path: str | Path) -> None:
        save_archive(path, task="conversion", kind=self.name,
                     state={**self._state(), "data_sha256": self.data_sha256, "world": self.world_config},
                     estimators=self._estimators())

    @staticmethod
    def load(path: str | Path, kind: str | None = None) -> Any:
        """The baseline in ``path``; with ``kind``, ValueError unless the file holds that kind."""
        manifest, estimators = load_archive(path, task="conversion", what="baseline model",
                                            refit=_refit_hint(kind or "gbdt"))
        held = manifest.get("kind")
        classes: dict[str, type[_Archived]] = {"gbdt": GBDTConversionModel, "logistic": LogisticConversionModel}
        if held not in classes:
            raise ValueError(f"{path} holds a {held!r} model, not a promogym baseline; {_refit_hint(kind or 'gbdt')}")
        if kind is not None and held != kind:
            raise ValueError(f"{path} holds a {held} model, not {kind}")
        try:
            model = classes[held]._restore(manifest["state"], estimators)
            sha = manifest["state"].get("data_sha256")
            model.data_sha256 = None if sha is None else str(sha)
            world = manifest["state"].get("world")
            if world is not None and not isinstance(world, dict):
                raise TypeError(f"world config is a {type(world).__name__}, not a mapping")
            model.world_config = world
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"{path}: malformed {held} model state ({_brief(exc)}); {_refit_hint(held)}") from exc
        return model


# numeric features that rise with the shelf price (the others do not move with it)
_PRICE_FEATURES = ("log_shelf_rel", "log_paid_rel", *HISTORY_FEATURES)


def _training_rows(df: pd.DataFrame, world: Mapping[str, Any] | None) -> tuple[pd.DataFrame, dict[str, Any] | None]:
    """The rows a binary model trains on (the IIA rows when the table has visits) and the world config
    to record: ``world`` when given, else the one :func:`~promogym.predictors.data.load_logs` attached."""
    recorded = dict(world) if world is not None else df.attrs.get("world")
    if "visit_id" in df.columns:
        df = df[iia_rows(df)]
    return df, recorded


def _check_features(state: Mapping[str, Any]) -> None:
    if state["numeric_features"] != list(NUMERIC_FEATURES):
        raise ValueError(f"written with the numeric features {state['numeric_features']}, "
                         f"this promogym has {list(NUMERIC_FEATURES)}")


def _check_type(obj: Any, cls: type, what: str) -> Any:
    if not isinstance(obj, cls):
        raise TypeError(f"{what} is a {type(obj).__name__}, not a {cls.__name__}")
    return obj


class _TargetEncoder:
    """Smoothed purchase rate per id, fitted out-of-fold on training rows; unseen ids get the prior."""

    def __init__(self, strength: float = 20.0) -> None:
        self.strength = strength
        self.table: dict[int, float] = {}
        self.prior = 0.0

    def fit_transform(self, ids: np.ndarray, y: np.ndarray, folds: int = 5, seed: int = 0,
                      groups: np.ndarray | None = None) -> np.ndarray:
        """Out-of-fold encodings of the training rows. With ``groups`` (the rows' visits) a group's rows share
        a fold: otherwise how many rows of an id another fold holds depends on its outcomes (a visit with a
        purchase keeps one IIA row, one without keeps all), and an unseen id's prior would leak them."""
        self.prior = float(y.mean())
        out = np.empty(len(ids))
        rng = np.random.default_rng(seed)
        if groups is None:
            fold = rng.integers(0, folds, len(ids))
        else:
            codes, uniques = pd.factorize(np.asarray(groups))
            fold = rng.integers(0, folds, len(uniques))[codes]
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

    def to_dict(self) -> dict[str, Any]:
        keys = list(self.table)
        return {"strength": float(self.strength), "prior": float(self.prior),
                "ids": np.asarray(keys).tolist(), "values": [float(self.table[k]) for k in keys]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> _TargetEncoder:
        enc = cls(float(d["strength"]))
        enc.prior = float(d["prior"])
        if len(d["ids"]) != len(d["values"]):
            raise ValueError("target encoder ids and values differ in length")
        enc.table = dict(zip(d["ids"], map(float, d["values"]), strict=True))
        return enc


class GBDTConversionModel(_Archived):
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

    def fit(self, df: pd.DataFrame, world: Mapping[str, Any] | None = None) -> GBDTConversionModel:
        """Fit on the IIA rows of ``df``; ``world``: the world config of the logs (default: ``df.attrs``)."""
        df, self.world_config = _training_rows(df, world)
        y = df["purchased"].to_numpy(dtype=float)
        if "category" in df:
            self.categories = sorted(df["category"].astype(str).unique())
        visits = df["visit_id"].to_numpy() if "visit_id" in df.columns else None
        u = self.user_enc.fit_transform(df["user_id"].to_numpy(), y, seed=self.seed, groups=visits)
        i = self.item_enc.fit_transform(df["item_id"].to_numpy(), y, seed=self.seed + 1, groups=visits)
        # non-increasing in every feature that rises with the shelf price, so the model is monotone in price
        self.model.set_params(categorical_features=[2, 3], monotonic_cst=[0, 0, 0, 0, *(
            -1 if f in _PRICE_FEATURES else 0 for f in NUMERIC_FEATURES)])
        self.model.fit(self._features(df, u, i), y.astype(int))
        return self

    def predict_proba(self, batch: Batch) -> np.ndarray:
        """P(purchase) per row, in (0, 1), from the rows' ids, prices, coupon and day (ValueError naming a missing
        column)."""
        df = validate_batch(batch, ("user_id", "item_id", "list_price", "price", "coupon", "day"))
        x = self._features(df, self.user_enc.transform(df["user_id"].to_numpy()),
                           self.item_enc.transform(df["item_id"].to_numpy()))
        return clip_proba(self.model.predict_proba(x)[:, 1])

    def _state(self) -> dict[str, Any]:
        return {"seed": int(self.seed), "categories": [str(c) for c in self.categories],
                "numeric_features": list(NUMERIC_FEATURES),
                "user_encoder": self.user_enc.to_dict(), "item_encoder": self.item_enc.to_dict()}

    def _estimators(self) -> dict[str, Any]:
        return {"model": self.model}

    @classmethod
    def _restore(cls, state: dict[str, Any], estimators: dict[str, Any]) -> GBDTConversionModel:
        from sklearn.ensemble import HistGradientBoostingClassifier

        _check_features(state)
        model = cls.__new__(cls)
        model.seed = int(state["seed"])
        model.categories = [str(c) for c in state["categories"]]
        model.user_enc = _TargetEncoder.from_dict(state["user_encoder"])
        model.item_enc = _TargetEncoder.from_dict(state["item_encoder"])
        model.model = _check_type(estimators["model"], HistGradientBoostingClassifier, "the gbdt estimator")
        return model


class LogisticConversionModel(_Archived):
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

    def fit(self, df: pd.DataFrame, world: Mapping[str, Any] | None = None) -> LogisticConversionModel:
        """Fit on the IIA rows of ``df``; ``world``: the world config of the logs (default: ``df.attrs``)."""
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression

        df, self.world_config = _training_rows(df, world)
        self.vectorizer = TfidfVectorizer(ngram_range=(1, 2), max_features=self.max_features, sublinear_tf=True)
        texts = pd.concat([df[col].astype(str).drop_duplicates() for col in ("user_text", "item_text")])
        self.vectorizer.fit(texts)
        self.scale = np.maximum(np.abs(numeric_features(df)).max(axis=0), 1e-6)
        self.model = LogisticRegression(C=self.c, max_iter=2000)
        self.model.fit(self._design(df), df["purchased"].to_numpy(dtype=int))
        return self

    def predict_proba(self, batch: Batch) -> np.ndarray:
        """P(purchase) per row, in (0, 1), from the rows' texts, prices, coupon and day (ValueError naming a missing
        column)."""
        df = validate_batch(batch, ("user_text", "item_text", "list_price", "price", "coupon", "day"))
        return clip_proba(self.model.predict_proba(self._design(df))[:, 1])

    def _state(self) -> dict[str, Any]:
        assert self.scale is not None, "fit the model before saving it"
        return {"c": float(self.c), "max_features": int(self.max_features),
                "numeric_features": list(NUMERIC_FEATURES), "scale": [float(v) for v in self.scale],
                "scale_dtype": str(self.scale.dtype)}

    def _estimators(self) -> dict[str, Any]:
        return {"vectorizer": self.vectorizer, "model": self.model}

    @classmethod
    def _restore(cls, state: dict[str, Any], estimators: dict[str, Any]) -> LogisticConversionModel:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression

        _check_features(state)
        model = cls(c=float(state["c"]), max_features=int(state["max_features"]))
        dtype = str(state.get("scale_dtype", "float64"))
        if dtype not in ("float32", "float64"):
            raise ValueError(f"scale dtype {dtype!r}")
        model.scale = np.asarray(state["scale"], dtype=dtype)
        if model.scale.shape != (len(NUMERIC_FEATURES),):
            raise ValueError(f"scale has shape {model.scale.shape}")
        model.vectorizer = _check_type(estimators["vectorizer"], TfidfVectorizer, "the vectorizer")
        model.model = _check_type(estimators["model"], LogisticRegression, "the logistic estimator")
        return model


class TruthModel:
    """The world's truth (Bayes-optimal): ``predict_proba`` is ``sigmoid(utility)``, the probability of
    buying the row's product were it the only one shown; ``predict_choice_proba`` the visit's choice.

    Rows carry the market state of their moment (``reference_price``, ``fatigue``) as logged.
    """

    name = "truth"
    _revealed = False

    def __init__(self, market: Market) -> None:
        self.market = market

    def predict_proba(self, batch: Batch) -> np.ndarray:
        """The world's P(purchase) per row, in (0, 1), were the row's product the only one shown, in the market state
        the row carries (the revealed variant: in expectation over what the texts do not reveal)."""
        df = as_frame(batch)
        validate_batch(df, ("user_id", "item_id", "price", "coupon", "day"))
        fn = self.market.revealed_purchase_proba if self._revealed else self.market.true_purchase_proba
        return clip_proba(fn(df["user_id"].to_numpy(), df["item_id"].to_numpy(), df["price"].to_numpy(dtype=float),
                             df["coupon"].to_numpy(dtype=float), self._context(df)))

    @staticmethod
    def _context(df: pd.DataFrame) -> dict[str, Any]:
        ctx: dict[str, Any] = {"day": df["day"].to_numpy()}
        if "reference_price" in df:
            ctx["reference_price"] = df["reference_price"].to_numpy(dtype=float)
        if "fatigue" in df:
            ctx["fatigue"] = df["fatigue"].to_numpy(dtype=float)
        return ctx

    def predict_choice_proba(self, batch: Batch) -> np.ndarray:
        """Per row, the probability that its visit (``visit_id``) buys this row's product: the world's
        multinomial logit over the visit's rows (the text ceiling: its expectation given what the texts
        and the offer reveal, by Monte Carlo over the hidden parts with a fixed seed)."""
        df = as_frame(batch)
        validate_batch(df, ("user_id", "item_id", "price", "coupon", "day", "visit_id"))
        codes, pos, width = visit_layout(df["visit_id"].to_numpy())
        shape = (int(codes.max()) + 1, width)

        def grid(values: np.ndarray, fill: float) -> np.ndarray:
            out = np.full(shape, fill, dtype=np.asarray(values).dtype)
            out[codes, pos] = values
            return out

        available = grid(np.ones(len(df), bool), False)
        ctx = {k: grid(v, v[0]) for k, v in self._context(df).items()}
        args = (grid(df["user_id"].to_numpy(np.int64), 0), grid(df["item_id"].to_numpy(np.int64), 0),
                grid(df["price"].to_numpy(float), 1.0), grid(df["coupon"].to_numpy(float), 0.0), ctx, available)
        out = self.market.revealed_choice_proba(*args) if self._revealed else self.market.choice_proba(*args)
        return clip_proba(out[codes, pos])


class RevealedTruthModel(TruthModel):
    """The expected true probability given what the texts and the offer reveal (the text ceiling)."""

    name = "text_ceiling"
    _revealed = True


# ---------------------------------------------------------------------------------------- registry
def _load_archived(path: str, kind: str) -> Any:
    return _Archived.load(path, kind)


def fit_gbdt(train: pd.DataFrame, out_path: str | Path | None = None, seed: int = 0,
             world: Mapping[str, Any] | None = None) -> GBDTConversionModel:
    """The uniform conversion fitter of ``gbdt``: fit on ``train``, save to ``out_path`` when given; ``world``
    is the logs' world config to record (default: the one ``load_logs`` attached to ``train``)."""
    model = GBDTConversionModel(seed=seed).fit(train, world=world)
    if out_path is not None:
        model.save(out_path)
    return model


def fit_logistic(train: pd.DataFrame, out_path: str | Path | None = None, seed: int = 0,
                 world: Mapping[str, Any] | None = None) -> LogisticConversionModel:
    """The uniform conversion fitter of ``logistic`` (deterministic: ``seed`` is unused); ``world`` as in
    :func:`fit_gbdt`."""
    model = LogisticConversionModel().fit(train, world=world)
    if out_path is not None:
        model.save(out_path)
    return model


def _register() -> None:
    register_model("gbdt", task="conversion", load=partial(_load_archived, kind="gbdt"), fit=fit_gbdt,
                   help="gradient boosting on ids, category and offer (a file written by `promogym fit`)")
    register_model("logistic", task="conversion", load=partial(_load_archived, kind="logistic"), fit=fit_logistic,
                   help="logistic regression on TF-IDF of the texts and the offer (a file written by `promogym fit`)")
    register_model("truth", task="conversion", load=lambda _path, market: TruthModel(market), needs_path=False,
                   needs=("market",), aliases=("world",), oracle=True,
                   help="the world's true purchase probability (Bayes-optimal)")
    register_model("ceiling", task="conversion", load=lambda _path, market: RevealedTruthModel(market),
                   needs_path=False, needs=("market",), oracle=True,
                   help="the best a model reading the texts and the offer can do")


_register()
