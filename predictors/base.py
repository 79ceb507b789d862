"""The `ConversionModel` protocol and validation of the batches every model reads.

A batch is a pandas DataFrame (or a mapping of equal-length columns) with one row per offer, using
the column names of the market's logs. Every model returns purchase probabilities in (0, 1),
batched, without gradients, deterministically.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd

# Columns every conversion model may read: who, what and the offer.
OFFER_COLUMNS: tuple[str, ...] = ("user_id", "item_id", "user_text", "item_text", "list_price", "price",
                                  "coupon", "day")
# optional offer columns and their values when absent: no coupons received; a price history at list price
OPTIONAL_COLUMNS: dict[str, float] = {"coupons_last_7d": 0.0, "price_hist_fast": 1.0, "price_hist_mid": 1.0,
                                      "price_hist_slow": 1.0}
TRUTH_COLUMNS: tuple[str, ...] = ("true_proba", "revealed_proba")
# numeric columns that must be finite wherever a table carries them (a NaN or inf there poisons a fit)
FINITE_COLUMNS: tuple[str, ...] = ("price", "list_price", "coupon", "unit_cost", "day", "coupons_last_7d",
                                   "purchased", "propensity", "price_hist_fast", "price_hist_mid", "price_hist_slow")
EPS = 1e-6

Batch = pd.DataFrame | Mapping[str, Any]


@runtime_checkable
class ConversionModel(Protocol):
    """Anything that turns offers into purchase probabilities."""

    name: str

    def predict_proba(self, batch: Batch) -> np.ndarray:
        """P(purchase) per row, in (0, 1)."""
        ...


def as_frame(batch: Batch) -> pd.DataFrame:
    """``batch`` as a DataFrame (a mapping of column arrays is converted; a DataFrame is returned as is)."""
    return batch if isinstance(batch, pd.DataFrame) else pd.DataFrame(dict(batch))


def validate_batch(batch: Batch, required: tuple[str, ...] = OFFER_COLUMNS, what: str = "data") -> pd.DataFrame:
    """Check columns and values; raise ValueError naming the problem. Returns a DataFrame."""
    df = as_frame(batch)
    if len(df) == 0:
        raise ValueError(f"{what} is empty: no rows to use")
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ValueError(f"{what} is missing column(s): {', '.join(missing)}")
    for col in ("price", "list_price"):
        if col in required:
            values = pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=float)
            if not np.isfinite(values).all():
                bad = int((~np.isfinite(values)).sum())
                raise ValueError(f"{what}: column {col} has {bad} NaN, infinite or non-numeric value(s)")
            if (values <= 0).any():
                bad = int((values <= 0).sum())
                raise ValueError(f"{what}: column {col} has {bad} value(s) <= 0; prices must be > 0")
    for col in FINITE_COLUMNS:
        if col in df.columns and col not in ("price", "list_price"):
            values = pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=float)
            if not np.isfinite(values).all():
                bad = int((~np.isfinite(values)).sum())
                raise ValueError(f"{what}: column {col} has {bad} NaN, infinite or non-numeric value(s)")
    if "coupon" in required:
        coupon = pd.to_numeric(df["coupon"], errors="coerce").to_numpy(dtype=float)
        if np.isnan(coupon).any() or (coupon < 0).any() or (coupon >= 1).any():
            raise ValueError(f"{what}: column coupon must hold shares in [0, 1)")
    for col in ("user_text", "item_text"):
        if col in required and df[col].isna().any():
            raise ValueError(f"{what}: column {col} has missing text")
    return df


def clip_proba(p: np.ndarray) -> np.ndarray:
    """Probabilities as floats clipped to ``[EPS, 1 - EPS]``, so their logs and log-odds are finite."""
    return np.clip(np.asarray(p, dtype=float), EPS, 1.0 - EPS)
