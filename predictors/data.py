"""Training data for conversion models: loading, validation and the user / new-product split."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd

from promogym.predictors.base import OFFER_COLUMNS, validate_batch
from promogym.predictors.scrub import scrub

TRAIN_COLUMNS = (*OFFER_COLUMNS, "purchased")


def load_logs(path: str | Path) -> pd.DataFrame:
    """Read logs (parquet or CSV), check them, and scrub the texts."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"data file not found: {p}")
    try:
        df = pd.read_parquet(p) if p.suffix != ".csv" else pd.read_csv(p)
    except Exception as exc:  # pyarrow raises several types for a corrupt file
        raise ValueError(f"cannot read {p} as {'CSV' if p.suffix == '.csv' else 'parquet'}: {exc}") from exc
    df = validate_batch(df, TRAIN_COLUMNS, what=str(p))
    y = pd.to_numeric(df["purchased"], errors="coerce")
    if y.isna().any() or not y.isin([0, 1]).all():
        raise ValueError(f"{p}: column purchased must hold 0 or 1")
    return scrub_texts(df)


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
    """Row masks: train / validation / test by user; new products held out of training entirely."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    val_new: np.ndarray
    test_new: np.ndarray

    def sizes(self) -> dict[str, int]:
        return {k: int(getattr(self, k).sum()) for k in ("train", "val", "test", "val_new", "test_new")}


def split_rows(df: pd.DataFrame, seed: int = 0, val_share: float = 0.1, test_share: float = 0.1) -> Split:
    """Users are assigned to train/val/test by a seeded permutation, so no user is in two parts.

    Rows of products flagged ``is_new_product`` never train: those of validation and test users form
    the cold-start sets ``val_new`` and ``test_new``.
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
    return Split(train=(row_part == 0) & ~new, val=(row_part == 1) & ~new, test=(row_part == 2) & ~new,
                 val_new=(row_part == 1) & new, test_new=(row_part == 2) & new)
