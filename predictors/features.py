"""Offer features shared by every conversion model: numeric features and the offer's sentence."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from promogym.envs.market.world import PRICE_HISTORY_NAMES, WEEKDAYS
from promogym.predictors.base import OPTIONAL_COLUMNS

# Numeric offer features, in this order, for the hybrid head and the baselines. The last three are the
# shelf price relative to the shop's own price history (log of shelf price / its EWMA at three rates).
HISTORY_FEATURES: tuple[str, ...] = ("log_shelf_vs_fast", "log_shelf_vs_mid", "log_shelf_vs_slow")
NUMERIC_FEATURES: tuple[str, ...] = ("log_shelf_rel", "log_paid_rel", "coupon", "has_coupon", "log_list_price",
                                     "coupons_last_7d", "weekend", *HISTORY_FEATURES)


def column(df: Mapping[str, Any] | pd.DataFrame, name: str) -> np.ndarray:
    """Column ``name`` as a float array with one value per row; an optional column the batch lacks takes its default
    from ``OPTIONAL_COLUMNS``."""
    n = len(np.asarray(df["price"]))
    if name in df:
        return np.broadcast_to(np.asarray(df[name], dtype=float), (n,))
    return np.full(n, OPTIONAL_COLUMNS[name])


def numeric_features(df: Mapping[str, Any] | pd.DataFrame) -> np.ndarray:
    """(rows, len(NUMERIC_FEATURES)) float32 array, from a DataFrame or a mapping of columns."""
    price = np.asarray(df["price"], dtype=float)
    lst = np.asarray(df["list_price"], dtype=float)
    coupon = np.asarray(df["coupon"], dtype=float)
    day = np.broadcast_to(np.asarray(df["day"], dtype=np.int64), price.shape)
    log_shelf = np.log(price / lst)
    out = np.stack([
        log_shelf,
        log_shelf + np.log1p(-coupon),
        coupon,
        (coupon > 0).astype(float),
        np.log(lst) - 3.5,
        column(df, "coupons_last_7d"),
        (day % 7 >= 5).astype(float),
        *(log_shelf - np.log(column(df, name)) for name in PRICE_HISTORY_NAMES),
    ], axis=1)
    return out.astype(np.float32)


def weekday_index(df: Mapping[str, Any] | pd.DataFrame) -> np.ndarray:
    """Day of week per row, 0..6 (day 0 is a Monday)."""
    n = len(np.asarray(df["price"]))
    return np.broadcast_to(np.asarray(df["day"], dtype=np.int64) % 7, (n,)).astype(np.int64)


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
