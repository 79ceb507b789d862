"""Offer features shared by every conversion model: numeric features and the offer's sentence."""

from __future__ import annotations

import numpy as np
import pandas as pd

from envs.market.world import WEEKDAYS
from predictors.base import OPTIONAL_COLUMNS

# Numeric offer features, in this order, for the hybrid head and the baselines.
NUMERIC_FEATURES: tuple[str, ...] = ("log_shelf_rel", "log_paid_rel", "coupon", "has_coupon", "log_list_price",
                                     "coupons_last_7d", "weekend")


def column(df: pd.DataFrame, name: str) -> np.ndarray:
    if name in df.columns:
        return df[name].to_numpy(dtype=float)
    return np.full(len(df), OPTIONAL_COLUMNS[name])


def numeric_features(df: pd.DataFrame) -> np.ndarray:
    """(rows, len(NUMERIC_FEATURES)) float32 array."""
    price = df["price"].to_numpy(dtype=float)
    lst = df["list_price"].to_numpy(dtype=float)
    coupon = df["coupon"].to_numpy(dtype=float)
    day = df["day"].to_numpy(dtype=np.int64)
    log_shelf = np.log(price / lst)
    out = np.stack([
        log_shelf,
        log_shelf + np.log1p(-coupon),
        coupon,
        (coupon > 0).astype(float),
        np.log(lst) - 3.5,
        column(df, "coupons_last_7d"),
        (day % 7 >= 5).astype(float),
    ], axis=1)
    return out.astype(np.float32)


def weekday_index(df: pd.DataFrame) -> np.ndarray:
    return (df["day"].to_numpy(dtype=np.int64) % 7).astype(np.int64)


def offer_text(df: pd.DataFrame) -> list[str]:
    """The offer as a sentence, for the full-text mode."""
    price = df["price"].to_numpy(dtype=float)
    lst = df["list_price"].to_numpy(dtype=float)
    coupon = df["coupon"].to_numpy(dtype=float)
    day = df["day"].to_numpy(dtype=np.int64)
    recent = column(df, "coupons_last_7d")
    out = []
    for p, lp, c, d, r in zip(price, lst, coupon, day, recent, strict=True):
        change = 1.0 - p / lp
        move = f"{change:.0%} off list" if change > 0.005 else (
            f"{-change:.0%} above list" if change < -0.005 else "at list price")
        cp = f"a {c:.0%} coupon" if c > 0 else "no coupon"
        out.append(f"Offer: price {p:.2f}, list price {lp:.2f} ({move}), {cp}, on a {WEEKDAYS[d % 7]}; "
                   f"{int(r)} coupons in the last 7 days.")
    return out
