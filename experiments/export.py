"""A policy's decisions over a season as a tidy table a shop's systems can read (`promogym export`).

The policy plays ``episodes`` episodes from ``seed`` (``seed``, ``seed + 1``, ...) exactly as `promogym evaluate`
plays it; the table holds the decisions of the first one (the season from ``seed``) and, on the pricing envs, an
uncertainty band over all of them:

- pricing envs (DynamicPricing, PricePromo): one row per product and day — the product (env index and catalog
  id), day, weekday, price and price / list, on PricePromo the coupon share the rule sets for each visit
  frequency segment (``coupon_daily``, ``coupon_weekly``, ``coupon_monthly``), the units sold, and the expected
  units and profit of that product-day under the env's response backend (the choice probabilities of the day's
  visitors times each offer's margin). **The band**: the product-day's expected profit on the same day of each
  of the ``episodes`` simulated seasons (other visitors, and the stock and reference prices the policy's own
  earlier decisions left): its mean and its 5% and 95% quantiles, over the episodes that reached that day. It
  is the spread of what the policy's decisions earn across seasons, not a confidence interval of the mean, and
  it leaves out the noise of the day's purchases given the visitors and any error of the response model (with
  a learned model, ``expected_profit_world`` gives the world's expectation of the same offers);
- coupon envs (CouponAllocation, HillstromTargeting): one row per customer decision — step, the customer, the
  coupon level the policy chose (index and share, or e-mail arm), what was given after the budget, and the
  expected profit and the probability of buying (= redeeming, when a coupon was given) or responding.

A sidecar JSON (``<file>.json``) records the env and its config, the policy, the seeds, the commit and package
versions, the season's return over the episodes, what each column means, and the table's sha256 (so a later
``--force`` replaces only a table this command wrote).
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pandas as pd

from promogym.agents.base import episode_steps

log = logging.getLogger(__name__)

FORMATS = {".csv": "csv", ".parquet": "parquet"}
KIND = "export"
BAND = (0.05, 0.95)

BAND_TEXT = ("the product-day's expected profit (under the env's response backend) on the same day of each "
             "simulated season (episodes seed .. seed + episodes - 1): mean and 5%/95% quantiles over the episodes "
             "that reached the day; the spread across seasons of the policy's decisions, not a confidence interval "
             "of the mean, without the purchase noise given the day's visitors or the response model's own error")

PRICING_COLUMNS = {
    "episode_seed": "the seed of the season whose decisions the row holds (--seed)",
    "day": "day of the season (0 = the first)",
    "weekday": "day of the week",
    "product": "the product's index in the env (its action position)",
    "catalog_id": "the product's id in the market's catalog",
    "list_price": "list price",
    "price": "the shelf price set (with business constraints: after the env projected the request onto them)",
    "price_requested": "the price the policy asked for (only when the env has business constraints)",
    "price_ratio": "price / list price",
    "coupon_daily": "PricePromo: coupon share for daily visitors (given while the budget can pay it)",
    "coupon_weekly": "PricePromo: coupon share for weekly visitors",
    "coupon_monthly": "PricePromo: coupon share for monthly visitors",
    "units_sold": "units sold that day in this season",
    "expected_units": "expected units of the day's visitors at these prices (the env's response backend)",
    "expected_profit": "expected profit of the product-day (backend): sum over offers of P(buy) x margin after "
                       "coupon and unit cost",
    "expected_profit_world": "the world's expected profit of the same offers (only when the backend is a model)",
    "expected_units_mean": "mean of expected_units on this day over the episodes",
    "expected_profit_mean": "mean of expected_profit on this day over the episodes (the band's centre)",
    "expected_profit_p05": "5% quantile of expected_profit on this day over the episodes",
    "expected_profit_p95": "95% quantile of expected_profit on this day over the episodes",
    "band_episodes": "episodes that reached this day (the band's sample)",
}
COUPON_COLUMNS = {
    "episode_seed": "the seed of the campaign whose decisions the row holds (--seed)",
    "step": "the cohort's step in the campaign (0 = the first)",
    "day": "day of the campaign",
    "position": "the customer's position in the cohort (coupons are paid in this order)",
    "customer_id": "the customer's id in the market",
    "visit_band": "the customer's visit frequency (daily, weekly, monthly)",
    "coupon_level": "the coupon level index the policy chose",
    "coupon_share": "the coupon share of that level",
    "coupon_given": "the share given (0 when the budget could not pay it)",
    "bought": "whether the customer bought in this campaign",
    "purchase_probability": "P(buying one of the viewed products) under the backend with the coupon given (the "
                            "redemption probability when a coupon was given)",
    "expected_profit": "expected profit of the customer's visit (backend): sum over viewed products of P(buy) x "
                       "margin after coupon and unit cost",
    "expected_profit_world": "the world's expected profit of the same offer (only when the backend is a model)",
}
TARGETING_COLUMNS = {
    "episode_seed": "the seed of the campaign whose decisions the row holds (--seed)",
    "step": "the batch's step in the campaign (0 = the first)",
    "position": "the customer's position in the batch (e-mails are sent in this order)",
    "customer_row": "the customer's row in the trial split the env draws from",
    "email_chosen": "the e-mail the policy chose (none, mens, womens)",
    "email_sent": "the e-mail sent (none when the budget was spent)",
    "response_probability": "P(the outcome) under the env's response model with the e-mail sent",
    "expected_profit": "expected outcome value minus the e-mail's cost",
}
ARMS = ("none", "mens", "womens")


def output_format(path: str | Path) -> str:
    """``csv`` or ``parquet`` from the file's suffix; ValueError for any other."""
    fmt = FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise ValueError(f"the output must end in {' or '.join(FORMATS)} (CSV or parquet), got {Path(path).name!r}")
    return fmt


def sidecar_of(path: str | Path) -> Path:
    """The sidecar JSON of an exported table: ``decisions.csv`` -> ``decisions.csv.json``."""
    p = Path(path)
    return p.with_name(p.name + ".json")


@dataclasses.dataclass
class Export:
    """An exported table and what its sidecar records."""

    table: pd.DataFrame
    meta: dict[str, Any]


def play_recorded(env: gym.Env[Any, Any], policy: Any, seed: int,
                  on_step: Callable[[int, np.ndarray, dict[str, Any]], None]) -> float:
    """One episode from ``reset(seed=seed)`` by :func:`promogym.agents.base.episode_steps`, the loop
    `promogym evaluate` plays, so the decisions are the ones it scores; ``on_step(t, action, info)`` sees each
    step's action and info. Returns the episode's return."""
    total = 0.0
    for t, (action, reward, _terminated, info) in enumerate(episode_steps(env, policy, seed)):
        total += reward
        on_step(t, action, info)
    return total


# ---------------------------------------------------------------------------------------- per family
def _per_product(u: Any, values: np.ndarray) -> np.ndarray:
    """Sum ``values`` (shaped like the last offers) over each env product's available offers."""
    n = u.config.n_products
    o = u.last_offers
    if o is None:
        return np.zeros(n)
    idx = u.env_index[o.items][o.available]
    return np.bincount(idx, weights=np.asarray(values)[o.available], minlength=n).astype(float)


def _pricing_rows(env: Any, seed: int, t: int, action: np.ndarray, info: dict[str, Any]) -> list[dict[str, Any]]:
    from promogym.envs.market import WEEKDAYS
    from promogym.envs.market.customers import VISIT_BANDS

    u = env.unwrapped
    o = u.last_offers
    prices = np.asarray(info["prices"], dtype=float)
    units = _per_product(u, o.proba) if o is not None else np.zeros(len(prices))
    profit = _per_product(u, o.proba * o.margin) if o is not None else np.zeros(len(prices))
    world = _per_product(u, o.proba_world * o.margin) if o is not None else np.zeros(len(prices))
    coupons = u.coupon_levels_from_action(action) if u.with_coupons else None
    constrained = getattr(u, "rules", None) is not None and "prices_requested" in info
    requested = np.asarray(info["prices_requested"], dtype=float) if constrained else None
    day = int(info["day"])
    rows = []
    for j in range(len(prices)):
        row: dict[str, Any] = {"episode_seed": seed, "day": day, "weekday": WEEKDAYS[day % 7], "product": j,
                               "catalog_id": int(u.products[j]), "list_price": float(u.list_price[j]),
                               "price": float(prices[j]), "price_ratio": float(prices[j] / u.list_price[j])}
        if requested is not None:
            row["price_requested"] = float(requested[j])
        if coupons is not None:
            row.update({f"coupon_{band}": float(coupons[b]) for b, band in enumerate(VISIT_BANDS)})
        row.update({"units_sold": int(info["units"][j]), "expected_units": float(units[j]),
                    "expected_profit": float(profit[j])})
        if not u.backend.is_world:
            row["expected_profit_world"] = float(world[j])
        rows.append(row)
    return rows


def _coupon_rows(env: Any, seed: int, t: int, action: np.ndarray, info: dict[str, Any]) -> list[dict[str, Any]]:
    from promogym.envs.market.customers import VISIT_BANDS

    u = env.unwrapped
    o = u.last_offers
    users = np.asarray(info["users"])
    levels = np.asarray(action, dtype=np.int64)
    p = o.proba.sum(axis=1)
    profit = (o.proba * o.margin).sum(axis=1)
    world = (o.proba_world * o.margin).sum(axis=1)
    band = u.market.customers.visit_band[users]
    day = int(info["day"])
    rows = []
    for k in range(len(users)):
        row: dict[str, Any] = {"episode_seed": seed, "step": t, "day": day, "position": k,
                               "customer_id": int(users[k]), "visit_band": VISIT_BANDS[int(band[k])],
                               "coupon_level": int(levels[k]), "coupon_share": float(u.levels[levels[k]]),
                               "coupon_given": float(info["coupon"][k]), "bought": bool(info["bought"][k]),
                               "purchase_probability": float(p[k]), "expected_profit": float(profit[k])}
        if not u.backend.is_world:
            row["expected_profit_world"] = float(world[k])
        rows.append(row)
    return rows


def _targeting_rows(env: Any, seed: int, t: int, action: np.ndarray, info: dict[str, Any]) -> list[dict[str, Any]]:
    u = env.unwrapped
    idx, sent = np.asarray(info["rows"]), np.asarray(info["arms"])
    chosen = np.asarray(action, dtype=np.int64)
    cost = u.config.email_cost
    return [{"episode_seed": seed, "step": t, "position": k, "customer_row": int(idx[k]),
             "email_chosen": ARMS[int(chosen[k])], "email_sent": ARMS[int(sent[k])],
             "response_probability": float(u.proba[idx[k], sent[k]]),
             "expected_profit": float(u.expected[idx[k], sent[k]] - (cost if sent[k] > 0 else 0.0))}
            for k in range(len(idx))]


ROWS = {"pricing": (_pricing_rows, PRICING_COLUMNS), "coupons": (_coupon_rows, COUPON_COLUMNS),
        "targeting": (_targeting_rows, TARGETING_COLUMNS)}


def _pricing_band(band_rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Per (day, product): the expected profit's mean and 5%/95% quantiles over the episodes, and the mean units."""
    df = pd.DataFrame(band_rows)
    g = df.groupby(["day", "product"])
    return pd.DataFrame({
        "expected_units_mean": g["expected_units"].mean(),
        "expected_profit_mean": g["expected_profit"].mean(),
        "expected_profit_p05": g["expected_profit"].quantile(BAND[0]),
        "expected_profit_p95": g["expected_profit"].quantile(BAND[1]),
        "band_episodes": g["episode_seed"].nunique(),
    }).reset_index()


def _quantiles(x: list[float]) -> dict[str, float]:
    a = np.asarray(x, dtype=float)
    return {"mean": float(a.mean()), "p05": float(np.quantile(a, BAND[0])), "p95": float(np.quantile(a, BAND[1]))}


# ---------------------------------------------------------------------------------------- the export
def export_decisions(env_id: str, spec: str, env_config: dict[str, Any], episodes: int, seed: int,
                     logs: str | None = None, trust: bool = False, progress: bool = False) -> Export:
    """Play policy ``spec`` (a registered name or a training run folder) on ``env_id`` with ``env_config`` (its
    ``response`` is the backend played and planned with) for ``episodes`` episodes from ``seed``; the table of
    the first episode's decisions (with the band over all of them on the pricing envs) and the sidecar's
    record. A run folder without a valid manifest is refused (ValueError) unless ``trust``."""
    from promogym.agents.registry import PolicyContext, is_run_folder, make_policy
    from promogym.core.io import git_commit, package_versions
    from promogym.envs.families import family_of

    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    family = family_of(env_id).name
    if family not in ROWS:
        raise ValueError(f"{env_id}: no decision table for env family {family!r}")
    make_rows, columns = ROWS[family]
    env = gym.make(env_id, config=env_config)
    ctx = PolicyContext(env_id, env, logs)
    policy = make_policy(spec, env, ctx, trust=trust)
    rows: list[dict[str, Any]] = []
    returns: list[float] = []
    expected: list[float] = []
    from tqdm.auto import tqdm

    for s in tqdm(range(seed, seed + episodes), desc="export", unit="episode",
                  disable=not (progress and sys.stderr.isatty())):
        # the pricing band needs every episode's product-days; the other tables hold the first episode only
        keep = family == "pricing" or s == seed
        total = 0.0

        def recorded(t: int, action: np.ndarray, info: dict[str, Any], s: int = s, keep: bool = keep) -> None:
            nonlocal total
            total += float(info.get("expected_profit", np.nan))
            if keep:
                rows.extend(make_rows(env, s, t, action, info))

        returns.append(play_recorded(env, policy, s, recorded))
        expected.append(total)
    table = pd.DataFrame(rows)
    if family == "pricing":
        band = _pricing_band(rows)
        table = table[table["episode_seed"] == seed].merge(band, on=["day", "product"], how="left")
    table = table[[c for c in columns if c in table.columns]].reset_index(drop=True)
    u: Any = env.unwrapped
    cfg = u.config.to_dict() if hasattr(u.config, "to_dict") else {}
    if not isinstance(cfg.get("response", ""), str):
        cfg["response"] = type(cfg["response"]).__name__
    meta: dict[str, Any] = {
        "kind": KIND, "env_id": env_id, "env_config": cfg, "family": family,
        "policy": spec if not is_run_folder(spec) else str(Path(spec).resolve()),
        "policy_name": getattr(policy, "name", spec) if is_run_folder(spec) else spec,
        "first_seed": seed, "episodes": episodes, "exported_seed": seed, "rows": len(table),
        "season_return": _quantiles(returns), "season_expected_profit": _quantiles(expected),
        "band": BAND_TEXT if family == "pricing" else None,
        "columns": {c: columns[c] for c in table.columns},
        "commit": git_commit(), "versions": package_versions()}
    if is_run_folder(spec):
        meta["run"] = _run_record(Path(spec))
    return Export(table, meta)


def _run_record(run: Path) -> dict[str, Any]:
    """What a training run folder records of itself (its metadata.json: algorithm, seed, steps, commit)."""
    import json

    try:
        found = json.loads((run / "metadata.json").read_text())
    except (OSError, ValueError):
        return {}
    keep = ("env_id", "algo", "seed", "timesteps", "commit", "response", "response_sha256")
    return {k: found[k] for k in keep if isinstance(found, dict) and k in found}


def write_export(result: Export, out: Path) -> Path:
    """Write the table (CSV or parquet by ``out``'s suffix) and then its sidecar, each atomically; the sidecar
    records the table's sha256. Returns the sidecar's path."""
    from promogym.core.io import atomic_path, file_sha256, write_json

    fmt = output_format(out)
    with atomic_path(out) as tmp:
        if fmt == "csv":
            result.table.to_csv(tmp, index=False)
        else:
            result.table.to_parquet(tmp, index=False)
    side = sidecar_of(out)
    write_json(side, {**result.meta, "file": out.name, "format": fmt, "sha256": file_sha256(out)})
    return side


def written_by_export(out: Path) -> bool:
    """Whether ``out`` (and its sidecar) were written by `promogym export`: the sidecar says so and, where the
    table exists, holds its current sha256."""
    import json

    from promogym.core.io import file_sha256

    try:
        side = json.loads(sidecar_of(out).read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(side, dict) or side.get("kind") != KIND or side.get("file") != out.name:
        return False
    return not out.exists() or (out.is_file() and side.get("sha256") == file_sha256(out))


__all__ = ["BAND_TEXT", "COUPON_COLUMNS", "FORMATS", "PRICING_COLUMNS", "TARGETING_COLUMNS", "Export",
           "export_decisions", "output_format", "play_recorded", "sidecar_of", "write_export", "written_by_export"]
