"""Simulator fidelity: is a learned response model right where policies act?

A conversion model scored on held-out logs can still be wrong in the states and offers a policy visits:
prices far from the logging ladder, price histories the logging policy never produced, customer types it
rarely showed a coupon. This module plays policies in an env whose response backend is the model and, after
every step, reads the step's offers (``env.unwrapped.last_offers``: each viewed product's choice probability
under the backend and under the world, on the same state and offers) to compare the two:

- expected profit (sum of probability x margin), expected units (sum of probabilities) and the purchase rate
  per visitor (P(buy anything) = the sum of a visitor's choice probabilities), overall, by customer type and
  by customer type x price band x coupon level; the bias is backend / world - 1 (a relative difference
  (backend - world) / |world| where the world's expected profit is negative), with a bootstrap 95% CI over
  episodes;
- coverage: the share of the offers in cells (visit band x favourite category or not x price band x coupon x
  price-history band) holding fewer than ``min_rows`` rows of the logs the model was fitted on. The logs and
  the env's offers are put in cells by one function, :func:`cells_of`.

The episodes of every policy start from the same seeds (common random numbers); planning policies
(``best_static``) plan with the model, as in ``promogym evaluate``.
"""

from __future__ import annotations

import itertools
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from promogym.agents.base import run_episode
from promogym.agents.registry import PolicyContext, is_run_folder, make_policy, policies_for, split_spec
from promogym.core.io import atomic_path, write_json
from promogym.core.plots import pyplot, save_png
from promogym.envs.families import family_of, short_name
from promogym.envs.market import Market
from promogym.envs.market.customers import CUSTOMER_TYPE_NAMES, VISIT_BANDS
from promogym.experiments.stats import bootstrap_ratio_ci

# shelf price / list price: the logging ladder's midpoints (0.7 ... 1.3 in steps of 0.1) and half a step beyond
# either end, so a price off the ladder (below 0.65 or above 1.35) falls in a band of its own
PRICE_BAND_EDGES: tuple[float, ...] = (0.65, 0.75, 0.85, 0.95, 1.05, 1.15, 1.25, 1.35)
# log(shelf / list) - log(the shop's mid-rate price history): how far today's price is from the recent ones
HISTORY_BAND_EDGES: tuple[float, ...] = (-0.1, -0.03, 0.03, 0.1)
MIN_LOGGED_ROWS = 100
STATIC_GRID: tuple[float, ...] = (0.6, 0.7, 0.8, 0.9, 1.1, 1.2, 1.3, 1.4)  # 1.0 is list_price
LOG_COLUMNS: tuple[str, ...] = ("user_id", "item_id", "price", "list_price", "coupon", "price_hist_mid")
_COUPON_CODES = 101  # coupon share in whole percent, 0 ... 100
_STATS = ("profit_backend", "profit_world", "units_backend", "units_world", "offers")


class NoOffersError(ValueError):
    """The env keeps no offers after a step (``last_offers`` is None), so its fidelity cannot be measured."""


def _labels(edges: Sequence[float], fmt: str) -> list[str]:
    inner = [f"{format(a, fmt)}–{format(b, fmt)}" for a, b in itertools.pairwise(edges)]
    return [f"<{format(edges[0], fmt)}", *inner, f"≥{format(edges[-1], fmt)}"]


PRICE_BANDS = _labels(PRICE_BAND_EDGES, ".2f")
HISTORY_BANDS = _labels(HISTORY_BAND_EDGES, "+.2f")


def price_band(ratio: np.ndarray) -> np.ndarray:
    """The band (index into :data:`PRICE_BANDS`) of each shelf price / list price."""
    return np.searchsorted(PRICE_BAND_EDGES, np.asarray(ratio, dtype=float), side="right")


def history_band(gap: np.ndarray) -> np.ndarray:
    """The band (index into :data:`HISTORY_BANDS`) of each log(shelf / list) - log(price history)."""
    return np.searchsorted(HISTORY_BAND_EDGES, np.asarray(gap, dtype=float), side="right")


# ---------------------------------------------------------------------------------------- coverage cells
def coverage_cells(visit_band: np.ndarray, favourite: np.ndarray, price_ratio: np.ndarray, coupon: np.ndarray,
                   price_hist: np.ndarray) -> np.ndarray:
    """One integer per offer naming its coverage cell: visit band x favourite category or not x price band x
    coupon (whole percent) x price-history band (see :func:`describe_cell`)."""
    ratio = np.asarray(price_ratio, dtype=float)
    pb = price_band(ratio)
    hb = history_band(np.log(ratio) - np.log(np.asarray(price_hist, dtype=float)))
    cp = np.clip(np.rint(np.asarray(coupon, dtype=float) * 100), 0, _COUPON_CODES - 1).astype(np.int64)
    vb = np.asarray(visit_band, dtype=np.int64)
    fav = np.asarray(favourite, dtype=bool).astype(np.int64)
    return (((vb * 2 + fav) * len(PRICE_BANDS) + pb) * _COUPON_CODES + cp) * len(HISTORY_BANDS) + hb


def describe_cell(key: int) -> dict[str, Any]:
    """The parts of a coverage cell, by name."""
    key, hb = divmod(int(key), len(HISTORY_BANDS))
    key, cp = divmod(key, _COUPON_CODES)
    key, pb = divmod(key, len(PRICE_BANDS))
    vb, fav = divmod(key, 2)
    return {"visit_band": VISIT_BANDS[vb], "favourite": bool(fav), "price_band": PRICE_BANDS[pb],
            "coupon": cp / 100, "history_band": HISTORY_BANDS[hb]}


def cells_of(market: Market, users: np.ndarray, items: np.ndarray, price: np.ndarray, list_price: np.ndarray,
             coupon: np.ndarray, price_hist: np.ndarray) -> np.ndarray:
    """The coverage cell of each offer (row-aligned arrays), logged or offered by an env: the one binning of
    both sides. Visit band and favourite categories are the customers' in ``market``."""
    users, items = np.asarray(users, dtype=np.int64), np.asarray(items, dtype=np.int64)
    cust = market.customers
    if len(users) and (users.min() < 0 or users.max() >= market.n_customers or items.min() < 0
                       or items.max() >= market.n_products):
        raise ValueError(f"offers name customers or products outside the market ({market.n_customers} customers, "
                         f"{market.n_products} products): logs of another world?")
    favourite = (cust.favourites[users] == market.catalog.category[items][:, None]).any(axis=1)
    return coverage_cells(cust.visit_band[users], favourite, np.asarray(price, float) / np.asarray(list_price, float),
                          coupon, price_hist)


def log_cells(market: Market, logs: pd.DataFrame) -> np.ndarray:
    """The coverage cell of each logged row."""
    return cells_of(market, logs["user_id"].to_numpy(), logs["item_id"].to_numpy(), logs["price"].to_numpy(float),
                    logs["list_price"].to_numpy(float), logs["coupon"].to_numpy(float),
                    logs["price_hist_mid"].to_numpy(float))


def _wide(x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A per-visitor array spread over the visitor's offers (or an offer-shaped one as it is)."""
    x = np.asarray(x)
    return np.broadcast_to(x[:, None] if x.ndim == 1 else x, shape)


def offer_cells(market: Market, offers: Any) -> np.ndarray:
    """The coverage cell of each available offer of a step (``env.unwrapped.last_offers``), in the order of
    ``offers.available``'s true entries."""
    a = np.asarray(offers.available, dtype=bool)
    items = np.asarray(offers.items)[a]
    return cells_of(market, _wide(offers.users, a.shape)[a], items, np.asarray(offers.price)[a],
                    market.catalog.list_price[items], _wide(offers.coupon, a.shape)[a],
                    np.asarray(offers.price_hist)[a])


def read_logs(path: str | Path) -> pd.DataFrame:
    """The columns of a logs parquet that coverage needs, checked (ValueError naming the problem)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"logs file not found: {p}")
    try:
        import pyarrow.parquet as pq

        names = set(pq.read_schema(p).names)
    except Exception as exc:  # pyarrow raises several types for a file that is not parquet
        raise ValueError(f"cannot read {p} as parquet: {exc}") from exc
    missing = [c for c in LOG_COLUMNS if c not in names]
    if missing:
        raise ValueError(f"{p} lacks column(s) {', '.join(missing)} (logs of an older format? regenerate them with "
                         "`promogym data`)")
    df = pd.read_parquet(p, columns=list(LOG_COLUMNS))
    for col in LOG_COLUMNS:
        values = pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=float)
        bad = ~np.isfinite(values) | ((values <= 0) if col in ("price", "list_price", "price_hist_mid") else False)
        if bad.any():
            raise ValueError(f"{p}: column {col} has {int(bad.sum())} row(s) that are not finite"
                             + (" and > 0" if col in ("price", "list_price", "price_hist_mid") else ""))
    return df


def training_logs_of(model_spec: Any) -> str | None:
    """The logs a model was fitted on, where its folder's ``promogym.json`` records them (BERT checkpoints)."""
    if not isinstance(model_spec, str):
        return None
    path = model_spec.partition(":")[2]
    meta = Path(path) / "promogym.json" if path else None
    if meta is None or not meta.is_file():
        return None
    try:
        data = json.loads(meta.read_text()).get("data")
    except (OSError, ValueError, AttributeError):
        return None
    return str(data) if data else None


# ---------------------------------------------------------------------------------------- policies
def default_policies(env_id: str, env: gym.Env[Any, Any], multipliers: Sequence[float] = STATIC_GRID,
                     random: bool = True) -> list[str]:
    """What fidelity plays by default. Pricing: list price, one price for every product at each of
    ``multipliers`` inside the env's band, the best constant price searched on the model; coupons: each rule
    giving everybody the same coupon level (none included); recommendation: the highest-margin, bestseller and
    greedy displays. Then ``random`` where the family has it."""
    family = family_of(env_id).name
    entries = {e.name: e for e in policies_for(env_id)}
    if family == "pricing":
        cfg = env.unwrapped.config  # type: ignore[attr-defined]
        out = ["list_price", *(f"static:{m:g}" for m in multipliers
                               if cfg.price_low - 1e-9 <= m <= cfg.price_high + 1e-9), "best_static"]
    elif family == "coupons":
        out = [e.name for e in entries.values() if e.static and e.arg is None]
    elif family == "recommendation":  # the displays of the rules (random: the logs' own display)
        out = ["margin", "popular", "greedy"]
    else:
        raise ValueError(f"{env_id}: fidelity has no default policies for the {family} family; name them")
    if random:
        out.append("random")
    return [s for s in out if split_spec(s)[0] in entries]


def _coupon_levels(u: Any) -> np.ndarray:
    return np.asarray(getattr(u.config, "coupon_levels", None) or (0.0,), dtype=float)


# ---------------------------------------------------------------------------------------- measuring
class _Tally:
    """Per-episode sums of one policy: per (customer type, price band, coupon level) cell the expected profit
    and units under the backend and the world and the offers; per (customer type, coupon level) the expected
    purchases and the visitors; the coverage cells of its offers; what its prices and coupons were."""

    def __init__(self, episodes: int, n_types: int, levels: np.ndarray) -> None:
        self.levels = levels
        self.shape = (n_types, len(PRICE_BANDS), len(levels))
        self.cells = np.zeros((episodes, int(np.prod(self.shape)), len(_STATS)))
        self.visitors = np.zeros((episodes, n_types * len(levels), 3))  # buy backend, buy world, visitors
        self.coverage: dict[int, int] = {}
        self.ratio_lo, self.ratio_hi, self.ratio_sum, self.n = np.inf, -np.inf, 0.0, 0
        self.coupons: set[float] = set()
        self.coupon_sum = 0.0

    def level(self, coupon: np.ndarray) -> np.ndarray:
        return np.abs(np.asarray(coupon, float)[..., None] - self.levels).argmin(axis=-1)

    def add(self, ep: int, market: Market, off: Any) -> None:
        a = np.asarray(off.available, dtype=bool)
        if a.ndim != 2:
            raise ValueError(f"offers must be shaped (visitors, products viewed), got available of shape {a.shape}")
        if a.shape[0] == 0:
            return
        users2, coupon2 = _wide(off.users, a.shape), _wide(off.coupon, a.shape).astype(float)
        items = np.asarray(off.items)
        proba = np.where(a, off.proba, 0.0)
        world = np.where(a, off.proba_world, 0.0)
        ratio = np.asarray(off.price, float) / market.catalog.list_price[items]
        ctype = market.customers.ctype
        _, n_p, n_c = self.shape
        cell = ((ctype[users2] * n_p + price_band(ratio)) * n_c + self.level(coupon2))[a]
        margin = np.asarray(off.margin, float)
        for k, w in enumerate(((proba * margin)[a], (world * margin)[a], proba[a], world[a], np.ones(int(a.sum())))):
            self.cells[ep, :, k] += np.bincount(cell, weights=w, minlength=self.cells.shape[1])
        # a visitor's type and coupon: the first offer's (a coupon is per visitor)
        vcell = ctype[users2[:, 0]] * n_c + self.level(coupon2[:, 0]) if a.shape[1] else \
            ctype[np.asarray(off.users).reshape(len(a), -1)[:, 0]] * n_c
        for k, w in enumerate((proba.sum(axis=1), world.sum(axis=1), np.ones(len(a)))):
            self.visitors[ep, :, k] += np.bincount(vcell, weights=w, minlength=self.visitors.shape[1])
        if not a.any():
            return
        keys, counts = np.unique(offer_cells(market, off), return_counts=True)
        for key, c in zip(keys.tolist(), counts.tolist(), strict=True):
            self.coverage[key] = self.coverage.get(key, 0) + c
        r, cp = ratio[a], coupon2[a]
        self.ratio_lo, self.ratio_hi = min(self.ratio_lo, float(r.min())), max(self.ratio_hi, float(r.max()))
        self.ratio_sum += float(r.sum())
        self.n += int(a.sum())
        self.coupons.update(np.unique(np.round(cp[cp > 0], 4)).tolist())
        self.coupon_sum += float(cp.sum())


def _num(x: Any) -> float | None:
    x = float(x)
    return x if np.isfinite(x) else None


def _compare(b: np.ndarray, w: np.ndarray, reps: int, seed: int, per: np.ndarray | None = None) -> dict[str, Any]:
    """Backend and world (per episode, or per unit of ``per``), the bias and its CI, of per-episode totals."""
    return _compare_many(np.asarray(b)[:, None], np.asarray(w)[:, None], reps, seed,
                         None if per is None else np.asarray(per)[:, None])[0]


def _compare_many(b: np.ndarray, w: np.ndarray, reps: int, seed: int, per: np.ndarray | None = None
                  ) -> list[dict[str, Any]]:
    """:func:`_compare` for every cell of (episodes, cells) arrays, with the same resamples."""
    point, lo, hi = bootstrap_ratio_ci(b, w, reps=reps, seed=seed)
    if per is None:
        shown_b, shown_w = b.mean(axis=0), w.mean(axis=0)
    else:
        total = per.sum(axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            shown_b, shown_w = b.sum(axis=0) / total, w.sum(axis=0) / total
    return [{"backend": _num(shown_b[k]), "world": _num(shown_w[k]), "bias": _num(point[k]),
             "ci95": [_num(lo[k]), _num(hi[k])]} for k in range(b.shape[1])]


def _cell_rows(cells: np.ndarray, shape: tuple[int, int, int], levels: np.ndarray, reps: int, seed: int
               ) -> list[dict[str, Any]]:
    """One record per (customer type, price band, coupon level) cell that holds offers."""
    offers = cells[..., 4].sum(axis=0)
    profit = _compare_many(cells[..., 0], cells[..., 1], reps, seed)
    units = _compare_many(cells[..., 2], cells[..., 3], reps, seed)
    total = offers.sum()
    rows = []
    for k in np.flatnonzero(offers > 0):
        t, p, c = np.unravel_index(k, shape)
        rows.append({"customer_type": CUSTOMER_TYPE_NAMES[t], "price_band": PRICE_BANDS[p], "coupon": float(levels[c]),
                     "offers_share": float(offers[k] / total), "profit": profit[k], "units": units[k]})
    return rows


def _uniform(t: _Tally) -> tuple[float | None, float | None]:
    """The policy's one price multiplier (every product, every day) and one coupon share (everybody given a
    coupon got the same), where it had one."""
    mult = round(t.ratio_sum / t.n, 2) if t.n and t.ratio_hi - t.ratio_lo <= 0.02 else None
    coupon = (next(iter(t.coupons)) if t.coupons else 0.0) if len(t.coupons) <= 1 and t.n else None
    return mult, coupon


def measure_fidelity(env_id: str, model_spec: Any, policies: Sequence[str] | None = None, episodes: int = 3,
                     seed: int = 0, env_config: dict[str, Any] | None = None, logs: str | Path | None = None,
                     trust: bool = False, progress: bool = False, min_rows: int = MIN_LOGGED_ROWS,
                     reps: int = 2000) -> dict[str, Any]:
    """Play ``policies`` (default: :func:`default_policies`) for ``episodes`` episodes (seeds ``seed``,
    ``seed + 1``, ...) in ``env_id`` with ``model_spec`` (a conversion model spec or object) as the response
    backend, and compare the backend with the world on every step's offers; with ``logs`` (the model's
    training logs) also measure coverage. Returns a JSON-able dict (see the module docstring). ValueError for
    an env that keeps no offers (:class:`NoOffersError`), a model that is the world, or a bad policy."""
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    config = {k: v for k, v in (env_config or {}).items() if k != "response"}
    family = family_of(env_id)
    env = gym.make(env_id, config={**config, "response": model_spec})
    u: Any = env.unwrapped
    if not hasattr(u, "last_offers") or not hasattr(u, "market"):
        raise ValueError(f"{env_id} is not a market env: it keeps no offers to compare")
    if getattr(u.backend, "is_world", False):
        raise ValueError("the response model is the world itself; fidelity compares a learned model with the world")
    market: Market = u.market
    logged = read_logs(logs) if logs is not None else None  # a bad file is refused before any episode
    specs = list(policies) if policies else default_policies(env_id, env)
    ctx = PolicyContext(env_id, env, str(logs) if logs is not None else None)  # planners plan with the model
    levels = _coupon_levels(u)
    seeds = list(range(seed, seed + episodes))
    tallies = [_Tally(episodes, len(CUSTOMER_TYPE_NAMES), levels) for _ in specs]
    names = []
    from tqdm.auto import tqdm

    show = progress and sys.stderr.isatty()
    # a step scores a few hundred offers: OpenMP fan-out (scikit-learn's tree ensembles) costs far more than it
    # saves there, over a hundred times more on a busy machine
    with threadpool_limits(1), tqdm(total=len(specs) * episodes, desc="fidelity", unit="episode",
                                    disable=not show) as bar:
        for i, spec in enumerate(specs):
            policy = make_policy(spec, env, ctx, trust=trust)
            names.append(Path(spec).name if is_run_folder(spec) else spec)
            for ep, s in enumerate(seeds):
                def hook(e: Any, t: int, info: dict[str, Any], ep: int = ep, tally: _Tally = tallies[i]) -> None:
                    off = e.unwrapped.last_offers
                    if off is None:
                        if info.get("visitors") == 0:  # nobody came: nothing offered
                            return
                        raise NoOffersError(f"{env_id} keeps no offers after a step (env.unwrapped.last_offers is "
                                            "None), so its simulator fidelity cannot be measured")
                    tally.add(ep, market, off)
                    e.unwrapped.last_offers = None  # read once: a step that offers nothing leaves None, not these

                u.last_offers = None
                run_episode(env, policy, s, on_step=hook)
                bar.update(1)
    result: dict[str, Any] = {
        "env_id": env_id, "family": family.name,
        "model": model_spec if isinstance(model_spec, str) else str(getattr(model_spec, "name",
                                                                            type(model_spec).__name__)),
        "episodes": episodes, "seed": seed, "env_config": json.loads(json.dumps(config, default=str)),
        "customer_types": list(CUSTOMER_TYPE_NAMES), "price_bands": PRICE_BANDS, "coupon_levels": levels.tolist(),
        "bias": "backend / world - 1 of per-episode totals ((backend - world) / |world| where the world's total is "
                "negative); 95% CI: percentile bootstrap over episodes",
        "policies": []}
    shape = tallies[0].shape
    for spec, name, t in zip(specs, names, tallies, strict=True):
        c = t.cells.reshape(episodes, *shape, len(_STATS))
        total, by_type = c.sum(axis=(1, 2, 3)), c.sum(axis=(2, 3))
        v = t.visitors.reshape(episodes, shape[0], shape[2], 3)
        vt, vtype = v.sum(axis=(1, 2)), v.sum(axis=2)
        mult, coupon = _uniform(t)
        profit_t = _compare_many(by_type[..., 0], by_type[..., 1], reps, seed)
        units_t = _compare_many(by_type[..., 2], by_type[..., 3], reps, seed)
        rate_t = _compare_many(vtype[..., 0], vtype[..., 1], reps, seed, per=vtype[..., 2])
        result["policies"].append({
            "policy": spec, "name": name, "price_multiplier": mult, "coupon": coupon,
            "mean_price_multiplier": _num(t.ratio_sum / t.n) if t.n else None,
            "mean_coupon": _num(t.coupon_sum / t.n) if t.n else None,
            "visitors": float(vt[:, 2].mean()), "offers": float(total[:, 4].mean()),
            "profit": _compare(total[:, 0], total[:, 1], reps, seed),
            "units": _compare(total[:, 2], total[:, 3], reps, seed),
            "purchase_rate": _compare(vt[:, 0], vt[:, 1], reps, seed, per=vt[:, 2]),
            "by_type": {name_t: {"offers_share": _num(by_type[:, k, 4].sum() / max(total[:, 4].sum(), 1)),
                                 "profit": profit_t[k], "units": units_t[k], "purchase_rate": rate_t[k]}
                        for k, name_t in enumerate(CUSTOMER_TYPE_NAMES)},
            "cells": _cell_rows(t.cells, shape, levels, reps, seed)})
    pooled = sum(t.cells for t in tallies)
    result["cells"] = _cell_rows(np.asarray(pooled), shape, levels, reps, seed)
    result["coverage"] = _coverage(market, tallies, result["policies"], logs, logged, min_rows)
    return result


def _coverage(market: Market, tallies: list[_Tally], rows: list[dict[str, Any]], logs: str | Path | None,
              df: pd.DataFrame | None, min_rows: int) -> dict[str, Any]:
    """The share of the offers in cells with fewer than ``min_rows`` logged rows (``df``, read from ``logs``), per
    policy and overall, and the thin cells the policies visit most."""
    if logs is None or df is None:
        return {"skipped": "no logs known: pass --data (the logs the model was fitted on) to measure coverage",
                "min_rows": min_rows}
    from promogym.predictors.registry import market_for_data

    log_market = market_for_data(logs) or market  # the customers of the logged world
    keys, counts = np.unique(log_cells(log_market, df), return_counts=True)
    logged = dict(zip(keys.tolist(), counts.tolist(), strict=True))
    visited: dict[int, int] = {}
    for t, row in zip(tallies, rows, strict=True):
        n = sum(t.coverage.values())
        thin = sum(c for k, c in t.coverage.items() if logged.get(k, 0) < min_rows)
        row["coverage"] = {"offers": n, "thin_offers": thin, "thin_share": _num(thin / n) if n else None}
        for k, c in t.coverage.items():
            visited[k] = visited.get(k, 0) + c
    n = sum(visited.values())
    thin_cells = sorted(((k, c) for k, c in visited.items() if logged.get(k, 0) < min_rows), key=lambda kc: -kc[1])
    return {"logs": str(logs), "log_rows": len(df), "min_rows": min_rows, "cells_logged": len(logged),
            "cells_visited": len(visited),
            "thin_share": _num(sum(c for _, c in thin_cells) / n) if n else None,
            "thin_cells": [{**describe_cell(k), "logged_rows": logged.get(k, 0), "offers_share": c / n}
                           for k, c in thin_cells[:10]]}


# ---------------------------------------------------------------------------------------- outputs
def _pct(x: float | None, spec: str = "+.1%") -> str:
    return "–" if x is None else format(round(x, 6) + 0.0, spec)  # no "-0.0%"


def _ci(ci: Sequence[float | None]) -> str:
    return "–" if None in ci else f"[{ci[0]:+.1%}, {ci[1]:+.1%}]"


def _n(x: float | None, spec: str) -> str:
    return "–" if x is None else format(x, spec)


def _table(header: list[str], rows: list[list[str]]) -> str:
    from promogym.experiments.report import md_table

    return md_table(header, rows)


def policy_table(result: dict[str, Any]) -> str:
    """Per policy: the backend's and the world's expected profit, units and purchase rate, the biases."""
    rows = []
    for p in result["policies"]:
        pr, un, rt = p["profit"], p["units"], p["purchase_rate"]
        cov = p.get("coverage")
        rows.append([p["name"], _n(pr["backend"], ",.0f"), _n(pr["world"], ",.0f"), _pct(pr["bias"]), _ci(pr["ci95"]),
                     _n(un["backend"], ",.1f"), _n(un["world"], ",.1f"), _pct(un["bias"]),
                     _pct(rt["backend"], ".2%"), _pct(rt["world"], ".2%"), _pct(rt["bias"]),
                     _pct(cov["thin_share"], ".1%") if cov else "–"])
    return _table(["policy", "profit: model", "profit: world", "profit bias", "95% CI", "units: model",
                   "units: world", "units bias", "buy rate: model", "buy rate: world", "buy rate bias",
                   "offers in thin cells"], rows)


def worst_cells(result: dict[str, Any], n: int = 10, min_share: float = 0.01) -> list[dict[str, Any]]:
    """The cells (all policies together) whose expected profit is furthest off in money (|model − world| per
    episode), among cells holding at least ``min_share`` of the offers."""
    cells = [c for c in result["cells"] if c["offers_share"] >= min_share and c["profit"]["backend"] is not None
             and c["profit"]["world"] is not None]
    return sorted(cells, key=lambda c: -abs(c["profit"]["backend"] - c["profit"]["world"]))[:n]


def cells_table(result: dict[str, Any]) -> str:
    """Markdown table of the worst cells (customer type × price band, × coupon when the env gives coupons) of a fidelity
    result: the model's and the world's profit, the bias with its 95% CI and the units bias."""
    coupons = len(result["coupon_levels"]) > 1
    rows = [[c["customer_type"], c["price_band"], *([f"{c['coupon']:.0%}"] if coupons else []),
             f"{c['offers_share']:.1%}", _n(c["profit"]["backend"], ",.1f"), _n(c["profit"]["world"], ",.1f"),
             _pct(c["profit"]["bias"]), _ci(c["profit"]["ci95"]), _pct(c["units"]["bias"])]
            for c in worst_cells(result)]
    if not rows:
        return "_No cell holds 1% of the offers._"
    return _table(["customer type", "price / list", *(["coupon"] if coupons else []), "offers",
                   "profit: model", "profit: world", "profit bias", "95% CI", "units bias"], rows)


def coverage_text(result: dict[str, Any]) -> str:
    """Markdown paragraph on how much of the policies' offers fall in cells the logs barely cover, with the thin cells
    visited most."""
    cov = result["coverage"]
    if "skipped" in cov:
        return f"_Coverage not measured: {cov['skipped']}._"
    lines = [f"Logs `{cov['logs']}` ({cov['log_rows']:,} rows, {cov['cells_logged']:,} cells). Of all the policies' "
             f"offers, **{_pct(cov['thin_share'], '.1%')}** fall in cells with fewer than {cov['min_rows']} logged "
             f"rows (cells: visit band × favourite category × price / list × coupon × price / recent price history; "
             f"{cov['cells_visited']:,} cells visited).", ""]
    if cov["thin_cells"]:
        rows = [[c["visit_band"], "yes" if c["favourite"] else "no", c["price_band"], f"{c['coupon']:.0%}",
                 c["history_band"], f"{c['logged_rows']:,}", f"{c['offers_share']:.1%}"] for c in cov["thin_cells"]]
        lines += ["The thin cells the policies visit most:", "",
                  _table(["visit band", "favourite", "price / list", "coupon", "log(price / history)", "logged rows",
                          "offers"], rows)]
    return "\n".join(lines)


def fidelity_markdown(result: dict[str, Any], plot: str | None = "fidelity.png") -> str:
    """The fidelity report of ``result`` as markdown: per-policy bias, worst cells, coverage, and the plot ``plot`` when
    given."""
    env = short_name(result["env_id"])
    lines = [f"# Simulator fidelity: `{result['model']}` on {result['env_id']}", "",
             f"{result['episodes']} episode(s) per policy from seed {result['seed']} (the same seeds for every "
             "policy), played with the model as the response backend. On every step's offers, the model's expected "
             "profit, units and purchase rate per visitor against the world's on the same states and offers. Bias: "
             "model / world − 1 (negative: the model under-predicts); 95% CI: bootstrap over episodes.", "",
             "## Per policy", "", policy_table(result), "",
             "## Worst cells", "", "Customer type × price / list"
             + (" × coupon" if len(result["coupon_levels"]) > 1 else "")
             + ": the cells whose expected profit is furthest off in money, all policies together, among cells with at "
             "least 1% of the offers (profit per episode, summed over the policies).", "",
             cells_table(result), "", "## Coverage", "", coverage_text(result), ""]
    if plot:
        lines += [f"![fidelity of {env}]({plot})", ""]
    return "\n".join(lines)


def plot_fidelity(result: dict[str, Any], path: str | Path) -> None:
    """Bias of expected profit per customer type against the one price multiplier of each uniform-price policy
    (pricing) or the one coupon level of each uniform-coupon policy (coupons), with a ±5% band; without such
    policies, each policy's bias per type."""
    plt = pyplot()
    coupons = result["family"] == "coupons"
    key = "coupon" if coupons else "price_multiplier"
    points: dict[float, dict[str, Any]] = {}
    for p in result["policies"]:
        if p.get(key) is not None:
            points.setdefault(float(p[key]), p)
    fig, ax = plt.subplots(figsize=(7.5, 4.4))
    ax.set_prop_cycle(color=plt.cm.tab10.colors)
    ax.axhspan(-5, 5, color="grey", alpha=0.15, lw=0, label="±5%")
    ax.axhline(0, color="black", lw=0.8)
    if points:
        xs = sorted(points)
        pol = [points[x] for x in xs]
        for name in result["customer_types"]:
            ys = [100 * (p["by_type"][name]["profit"]["bias"] if p["by_type"][name]["profit"]["bias"] is not None
                         else np.nan) for p in pol]
            ax.plot(xs, ys, marker="o", ms=4, lw=1.2, label=name)
        overall = np.array([100 * (p["profit"]["bias"] if p["profit"]["bias"] is not None else np.nan) for p in pol])
        lo = np.array([100 * (p["profit"]["ci95"][0] if p["profit"]["ci95"][0] is not None else np.nan) for p in pol])
        hi = np.array([100 * (p["profit"]["ci95"][1] if p["profit"]["ci95"][1] is not None else np.nan) for p in pol])
        ax.plot(xs, overall, color="black", marker="D", ms=4, lw=2, label="all customers")
        ax.fill_between(xs, lo, hi, color="black", alpha=0.12, lw=0, label="all: 95% CI")
        ax.set_xlabel("coupon share given to every customer" if coupons else
                      "price multiplier (shelf / list), the same for every product")
    else:
        names = [p["name"] for p in result["policies"]]
        width = 0.8 / max(1, len(result["customer_types"]))
        for j, name in enumerate(result["customer_types"]):
            ys = [100 * (p["by_type"][name]["profit"]["bias"] or 0.0) for p in result["policies"]]
            ax.bar(np.arange(len(names)) + j * width, ys, width, label=name)
        ax.set_xticks(np.arange(len(names)) + width * (len(result["customer_types"]) - 1) / 2, names,
                      rotation=30, ha="right", fontsize=8)
    lim = max((abs(y) for line in ax.get_lines() for y in np.asarray(line.get_ydata(), float) if np.isfinite(y)),
              default=0.0)
    if lim > 60:  # a type far off would flatten the rest: compress beyond ±20%
        ax.set_yscale("symlog", linthresh=20)
    from matplotlib.ticker import FuncFormatter, PercentFormatter

    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:+g}%" if v else "0"))
    if coupons and points:
        ax.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    ax.set_ylabel("expected profit: model / world − 1")
    ax.set_title(f"{short_name(result['env_id'])}: simulator fidelity by customer type\n({result['model']})",
                 fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    save_png(fig, Path(path))


def write_fidelity(result: dict[str, Any], out: str | Path) -> list[Path]:
    """``fidelity.json``, ``fidelity.md`` and ``fidelity.png`` in ``out`` (each written atomically)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = [out / "fidelity.json", out / "fidelity.md", out / "fidelity.png"]
    write_json(files[0], result)
    with atomic_path(files[1]) as tmp:
        tmp.write_text(fidelity_markdown(result))
    plot_fidelity(result, files[2])
    return files


__all__ = ["HISTORY_BANDS", "MIN_LOGGED_ROWS", "PRICE_BANDS", "NoOffersError", "cells_of", "coverage_cells",
           "default_policies", "describe_cell", "fidelity_markdown", "log_cells", "measure_fidelity", "offer_cells",
           "plot_fidelity", "policy_table", "read_logs", "training_logs_of", "worst_cells", "write_fidelity"]
