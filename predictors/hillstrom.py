"""The Hillstrom e-mail trial: loading, the fixed split, plain-language profiles and tabular features.

The MineThatData E-Mail Analytics data (Kevin Hillstrom, 2008): customers who bought in the last
twelve months were randomly sent a men's merchandise e-mail, a women's merchandise e-mail or no
e-mail (probability 1/3 each); visits, conversions and spend over the next two weeks were recorded.
``data/hillstrom.csv.zip`` holds 51,200 of the 64,000 rows (provenance in ``data/README.md``).

The split is fixed: a permutation of the file's rows by ``numpy.random.default_rng(SPLIT_SEED)``;
the first 30% (15,360 rows) are the **test** split, kept for the final evaluation only; the rest is
**train**, of which the first 20% (by a second permutation with the same seed) is **validation**, used
for every model and hyperparameter choice.
"""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

DATA_FILE = Path(__file__).resolve().parent.parent / "data" / "hillstrom.csv.zip"
DATA_SHA256 = "5613db779b12d7bcb634267a55cbb61f40893bf1d90f9acae649b97fa5fafb8e"
COLUMNS = ("recency", "history_segment", "history", "mens", "womens", "zip_code", "newbie", "channel", "segment",
           "visit", "conversion", "spend")
ARMS = ("No E-Mail", "Mens E-Mail", "Womens E-Mail")  # arm ids 0, 1, 2
ARM_NAMES = ("none", "mens", "womens")
PROPENSITY = 1.0 / 3.0
OUTCOMES = ("visit", "conversion", "spend")
SPLIT_SEED = 20080320
TEST_SHARE = 0.3
VALID_SHARE = 0.2
AREAS = ("Urban", "Surburban", "Rural")   # the file's spelling
CHANNELS = ("Web", "Phone", "Multichannel")


class DataError(ValueError):
    """The Hillstrom file is missing, corrupted or not what was expected."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_hillstrom(path: str | Path | None = None, verify_hash: bool | None = None) -> pd.DataFrame:
    """The trial as a DataFrame with an ``arm`` column (0 none, 1 men's, 2 women's) and a ``split``
    column (train / valid / test). The vendored file is checked against its sha256; any file is
    checked for its columns and values. Raises :class:`DataError` naming the file and what was expected."""
    p = Path(path) if path is not None else DATA_FILE
    if verify_hash is None:
        verify_hash = path is None
    if not p.is_file():
        raise DataError(f"{p}: file not found; expected the Hillstrom trial as a zipped CSV "
                        f"(the project ships it as data/hillstrom.csv.zip)")
    if verify_hash and (digest := _sha256(p)) != DATA_SHA256:
        raise DataError(f"{p}: sha256 {digest} does not match the vendored file's {DATA_SHA256} "
                        f"(corrupted or replaced; see data/README.md)")
    try:
        df = pd.read_csv(p, compression="zip" if zipfile.is_zipfile(p) else None)
    except (ValueError, OSError, zipfile.BadZipFile, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"{p}: cannot be read as a (zipped) CSV: {exc}") from exc
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"{p}: missing columns {missing}; expected {list(COLUMNS)}")
    bad_arm = sorted(set(df["segment"].unique()) - set(ARMS))
    if bad_arm:
        raise DataError(f"{p}: unknown segment values {bad_arm}; expected {list(ARMS)}")
    for col, allowed in (("zip_code", AREAS), ("channel", CHANNELS)):
        bad = sorted(set(df[col].unique()) - set(allowed))
        if bad:
            raise DataError(f"{p}: unknown {col} values {bad}; expected {list(allowed)}")
    for col in ("mens", "womens", "newbie", "visit", "conversion"):
        if not df[col].isin([0, 1]).all():
            raise DataError(f"{p}: column {col} must be 0/1")
    if df[["recency", "history", "spend"]].isna().any().any() or (df["history"] < 0).any() or (df["spend"] < 0).any():
        raise DataError(f"{p}: recency, history and spend must be present and non-negative")
    df = df[list(COLUMNS)].copy()
    df["arm"] = df["segment"].map({a: i for i, a in enumerate(ARMS)}).astype(np.int64)
    df["split"] = split_labels(len(df))
    return df


def split_labels(n: int) -> np.ndarray:
    """The fixed split of ``n`` rows (see the module docstring)."""
    rng = np.random.default_rng(SPLIT_SEED)
    labels = np.full(n, "train", dtype=object)
    order = rng.permutation(n)
    n_test = round(TEST_SHARE * n)
    labels[order[:n_test]] = "test"
    rest = order[n_test:]
    valid = rng.permutation(len(rest))[: round(VALID_SHARE * len(rest))]
    labels[rest[valid]] = "valid"
    return labels


# ---------------------------------------------------------------------------------------- profile texts
def _money(x: float) -> str:
    return f"${x:,.0f}"


def profile_sentences(row: pd.Series | dict) -> list[str]:
    """A customer's plain-language profile, one fact per sentence (no arm)."""
    months = int(row["recency"])
    when = "last month" if months == 1 else f"{months} months ago"
    mens, womens = int(row["mens"]), int(row["womens"])
    bought = {(1, 1): "men's and women's merchandise", (1, 0): "men's merchandise only",
              (0, 1): "women's merchandise only", (0, 0): "neither men's nor women's merchandise"}[(mens, womens)]
    area = {"Urban": "an urban", "Surburban": "a suburban", "Rural": "a rural"}[row["zip_code"]]
    channel = {"Web": "on the web", "Phone": "by phone", "Multichannel": "both on the web and by phone"}[row["channel"]]
    newbie = "A new customer this year." if int(row["newbie"]) else "A returning customer from earlier years."
    return [f"Last purchase {when}.", f"Spent {_money(float(row['history']))} in the past year.",
            f"Bought {bought}.", f"Lives in {area} area.", f"Shops {channel}.", newbie]


ARM_SENTENCES = ("Was sent no e-mail.", "Was sent the men's merchandise e-mail.",
                 "Was sent the women's merchandise e-mail.")


def profile_text(row: pd.Series | dict, arm: int | None = None) -> str:
    """The profile as one text; with ``arm``, the e-mail sent is its last sentence."""
    parts = profile_sentences(row)
    if arm is not None:
        parts.append(ARM_SENTENCES[int(arm)])
    return " ".join(parts)


# ---------------------------------------------------------------------------------------- tabular features
FEATURES = ("recency", "log_history", "mens", "womens", "newbie", "urban", "suburban", "rural", "web", "phone",
            "multichannel")


def tabular_features(df: pd.DataFrame) -> np.ndarray:
    """(rows, 11) numeric features for the baselines and the environment's observation."""
    return np.column_stack([
        df["recency"].to_numpy(float) / 12.0, np.log1p(df["history"].to_numpy(float)) / 8.0,
        df["mens"].to_numpy(float), df["womens"].to_numpy(float), df["newbie"].to_numpy(float),
        *[(df["zip_code"] == a).to_numpy(float) for a in AREAS],
        *[(df["channel"] == c).to_numpy(float) for c in CHANNELS],
    ]).astype(np.float32)


def arm_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Rows, visit and conversion rates and mean spend per arm."""
    g = df.groupby("arm")
    out = pd.DataFrame({"rows": g.size(), "visit": g["visit"].mean(), "conversion": g["conversion"].mean(),
                        "spend": g["spend"].mean()})
    out.index = [ARM_NAMES[i] for i in out.index]
    return out
