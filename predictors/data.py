"""Training data for conversion models: loading, validation and the user / new-product split.

Logs hold one multinomial-logit choice per visit (``visit_id``): a visit's rows are the products it
viewed and ``purchased`` is 1 on at most one of them. Logs of the older format (an independent purchase
per row, no price history) are refused with the command that regenerates them.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from promogym.envs.market.world import PRICE_HISTORY_NAMES
from promogym.predictors.base import OFFER_COLUMNS, validate_batch
from promogym.predictors.choice import choice_subset_rows, visit_codes
from promogym.predictors.scrub import scrub

TRAIN_COLUMNS = (*OFFER_COLUMNS, "purchased", "visit_id", *PRICE_HISTORY_NAMES)


def load_logs(path: str | Path) -> pd.DataFrame:
    """Read logs (parquet or CSV), check them, and scrub the texts."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"data file not found: {p}")
    try:
        df = pd.read_parquet(p) if p.suffix != ".csv" else pd.read_csv(p)
    except Exception as exc:  # pyarrow raises several types for a corrupt file
        raise ValueError(f"cannot read {p} as {'CSV' if p.suffix == '.csv' else 'parquet'}: {exc}") from exc
    if "visit_id" not in df.columns or any(c not in df.columns for c in PRICE_HISTORY_NAMES):
        raise ValueError(f"{p} holds logs of an older format (one independent purchase per row, no price history); "
                         f"regenerate them with `promogym data --rows N --out {p}`")
    df = validate_batch(df, TRAIN_COLUMNS, what=str(p))
    y = pd.to_numeric(df["purchased"], errors="coerce")
    if y.isna().any() or not y.isin([0, 1]).all():
        raise ValueError(f"{p}: column purchased must hold 0 or 1")
    for col in PRICE_HISTORY_NAMES:
        values = pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=float)
        bad = int((~(np.isfinite(values) & (values > 0))).sum())
        if bad:
            raise ValueError(f"{p}: column {col} has {bad} row(s) not finite and > 0 (a price history is a "
                             f"positive share of the list price)")
    if df["visit_id"].isna().any():
        raise ValueError(f"{p}: column visit_id has {int(df['visit_id'].isna().sum())} missing value(s)")
    codes, n = visit_codes(df["visit_id"].to_numpy())
    per_visit = np.bincount(codes, weights=y.to_numpy(dtype=float), minlength=n)
    if (per_visit > 1).any():
        raise ValueError(f"{p}: {int((per_visit > 1).sum())} visit(s) hold more than one purchase; a visit buys "
                         f"at most one product")
    df = scrub_texts(df)
    df.attrs["world"] = read_world_config(p)
    return df


def read_world_config(data: str | Path) -> dict[str, Any] | None:
    """The world config of the market that generated a log file, from its sidecar JSON ``<data>.json``
    (``"world"``); None when there is no sidecar or it has no world."""
    side = Path(data).with_suffix(".json")
    if not side.is_file():
        return None
    try:
        meta = json.loads(side.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{side}: the logs' sidecar is not readable JSON ({exc}); regenerate the logs with "
                         f"`promogym data`") from exc
    if not isinstance(meta, dict):
        raise ValueError(f"{side}: the logs' sidecar must be a JSON object with a `world` config")
    world = meta.get("world")
    if world is not None and not isinstance(world, dict):
        raise ValueError(f"{side}: its world config must be a JSON object")
    return world


def scrub_texts(df: pd.DataFrame) -> pd.DataFrame:
    """Scrub each distinct text once (texts are categorical in the logs)."""
    df = df.copy()
    for col in ("user_text", "item_text"):
        texts = df[col].astype(str)
        mapping = {t: scrub(t) for t in texts.unique()}
        df[col] = texts.map(mapping).astype("category")
    return df


@dataclasses.dataclass(frozen=True)
class Split:
    """Row masks: train / validation / test by user; new products held out of training entirely.

    ``train`` and ``val`` are choice subsets (:func:`~promogym.predictors.choice.choice_subset_rows`): a
    visit that bought a held-out new product leaves them, the rest of each visit stays, so each visit's
    rows there are a choice set whose multinomial logit holds exactly. ``test`` and ``test_new`` keep
    every row of the test users, so an evaluation sees whole visits.
    """

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    val_new: np.ndarray
    test_new: np.ndarray

    def sizes(self) -> dict[str, int]:
        """Rows in each mask: train, val, test, val_new and test_new."""
        return {k: int(getattr(self, k).sum()) for k in ("train", "val", "test", "val_new", "test_new")}


def split_rows(df: pd.DataFrame, seed: int = 0, val_share: float = 0.1, test_share: float = 0.1) -> Split:
    """Users are assigned to train/val/test by a seeded permutation, so no user is in two parts.

    Rows of products flagged ``is_new_product`` never train: those of validation and test users form
    the cold-start sets ``val_new`` and ``test_new``. Without ``visit_id`` and ``purchased`` columns the
    training and validation masks are not restricted to choice subsets.
    """
    users = np.unique(df["user_id"].to_numpy())
    rng = np.random.default_rng(seed)
    perm = rng.permutation(users)
    n_val, n_test = round(val_share * len(users)), round(test_share * len(users))
    part = pd.Series(0, index=perm)
    part.iloc[:n_val] = 1
    part.iloc[n_val:n_val + n_test] = 2
    row_part = part.reindex(df["user_id"].to_numpy()).to_numpy()
    new = df["is_new_product"].to_numpy(dtype=bool) if "is_new_product" in df.columns else np.zeros(len(df), bool)
    train, val = (row_part == 0) & ~new, (row_part == 1) & ~new
    if "visit_id" in df.columns and "purchased" in df.columns:
        train, val = choice_subset_rows(df, train), choice_subset_rows(df, val)
    return Split(train=train, val=val, test=(row_part == 2) & ~new,
                 val_new=(row_part == 1) & new, test_new=(row_part == 2) & new)
