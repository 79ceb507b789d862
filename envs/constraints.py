"""Business constraints a shop lives with, enforced by the environments on every action.

A pricing team cannot put just any price in front of customers: prices may move only so far in a day and
only so often in a week, must keep a margin over unit cost, end in the shop's price endings (.99, .49), and
some products are never discounted; a customer gets at most so many coupons in a campaign. These are set
with the env config key ``constraints`` (a mapping of :class:`BusinessConstraints` keys; empty, the default,
means none) and enforced inside the env, so that every policy, baseline, planner or learned agent, plays
by them:

* **prices are projected** onto the day's feasible set (:meth:`PriceRules.project`): the wanted price is
  clipped into the band allowed today (the env's price band, the margin floor, list price for
  do-not-discount products, and at most ``max_daily_change`` from yesterday's price), then moved to the
  nearest price with an allowed ending inside that band (or kept at yesterday's price when that is
  nearer); a product that has already changed price ``max_weekly_changes`` times in the 6 days before keeps
  yesterday's price. ``info["prices_requested"]`` holds what the action asked for, ``info["prices"]`` what
  was set and ``info["constraint_adjusted"]`` how many products' prices differ from the request by more
  than a cent.
* **coupons over a customer's cap are not given** (``info["coupons_capped"]``); on CouponAllocation
  ``action_masks()`` marks them, so MaskablePPO never chooses them.

Hard rules win over soft ones: when the margin floor or a do-not-discount product needs a price further
from yesterday's than ``max_daily_change`` allows (possible only on the first day, from list price), the
floor is kept.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from promogym.core.config import ConfigBase, param

CENT = 0.005  # prices closer than half a cent are the same price (prices are set to the cent)


@dataclasses.dataclass(frozen=True)
class BusinessConstraints(ConfigBase):
    """The constraints of an env's ``constraints`` config key; every key off by default."""

    max_daily_change: float | None = param(
        None, "largest price change in a day, as a share of yesterday's price (0.1: within +-10%)", lo=0.0, hi=10.0)
    max_weekly_changes: int | None = param(
        None, "price changes allowed per product in any 7 consecutive days (0: prices never change)", lo=0, hi=7)
    margin_floor: float | None = param(
        None, "smallest margin as a share of the price: price >= unit cost / (1 - margin_floor)", lo=0.0, hi=0.95)
    price_endings: tuple[float, ...] = param(
        None, "allowed cents of a changed price (e.g. [0.99, 0.49]); empty: any cent", lo=0.0, hi=0.99,
        factory=tuple)
    no_discount: tuple[int, ...] = param(
        None, "env product indices (0 .. n_products-1) never priced below list price", lo=0, hi=10_000,
        factory=tuple)
    coupon_cap: int | None = param(
        None, "most coupons one customer can receive over an episode (the season or the campaign)", lo=0,
        hi=1_000_000)

    def validate(self) -> None:
        """Distinct do-not-discount products and whole-cent endings; ValueError naming the key."""
        if len(set(self.no_discount)) != len(self.no_discount):
            raise ValueError(f"BusinessConstraints.no_discount has repeated products: {list(self.no_discount)}")
        bad = [e for e in self.price_endings if abs(round(e * 100) - e * 100) > 1e-6]
        if bad:
            raise ValueError(f"BusinessConstraints.price_endings must be whole cents (0.99, 0.49), got {bad}")

    @property
    def prices(self) -> bool:
        """Whether any price constraint is set."""
        return (self.max_daily_change is not None or self.max_weekly_changes is not None
                or self.margin_floor is not None or bool(self.price_endings) or bool(self.no_discount))

    @property
    def coupons(self) -> bool:
        """Whether a coupon constraint is set."""
        return self.coupon_cap is not None

    def active(self) -> dict[str, Any]:
        """The keys that are set, with their values (empty: no constraints)."""
        default = BusinessConstraints().to_dict()
        return {k: v for k, v in self.to_dict().items() if v != default[k]}

    def to_dict(self) -> dict[str, Any]:
        """The keys as plain values (tuples as lists), for JSON."""
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v
                for f in dataclasses.fields(self)}


def parse_constraints(value: Any, owner: str, *, prices: bool, coupons: bool) -> BusinessConstraints:
    """``value`` (the env config's ``constraints``: a mapping or a BusinessConstraints) validated for an env that
    sets prices (``prices``) and/or gives coupons (``coupons``); ValueError naming ``owner`` and the key."""
    if isinstance(value, BusinessConstraints):
        c = value
    elif isinstance(value, Mapping):
        try:
            c = BusinessConstraints.from_dict(value)
        except ValueError as e:
            raise ValueError(f"{owner}.constraints: {e}") from None
    else:
        raise ValueError(f"{owner}.constraints must be a mapping of BusinessConstraints keys, got {value!r}")
    if c.prices and not prices:
        keys = ", ".join(k for k in c.active() if k != "coupon_cap")
        raise ValueError(f"{owner}.constraints: {keys} constrain prices, and this env sets no prices")
    if c.coupons and not coupons:
        raise ValueError(f"{owner}.constraints: coupon_cap constrains coupons, and this env gives none")
    return c


class PriceRules:
    """The price constraints of one env: the feasible band of a day and the projection onto it.

    ``list_price``, ``unit_cost`` are per env product; ``price_low``/``price_high`` the env's band as
    multiples of list price. Keeps the last 6 days' price changes (:meth:`record`) for
    ``max_weekly_changes``.
    """

    def __init__(self, constraints: BusinessConstraints, list_price: np.ndarray, unit_cost: np.ndarray,
                 price_low: float, price_high: float) -> None:
        c = self.constraints = constraints
        n = len(list_price)
        bad = [j for j in c.no_discount if j >= n]
        if bad:
            raise ValueError(f"constraints.no_discount names products {bad}; the env prices products 0..{n - 1}")
        self.list_price = np.asarray(list_price, float)
        lo = self.list_price * price_low
        if c.margin_floor is not None:
            lo = np.maximum(lo, np.asarray(unit_cost, float) / (1.0 - c.margin_floor))
        if c.no_discount:
            idx = list(c.no_discount)
            lo[idx] = np.maximum(lo[idx], self.list_price[idx])
        self.floor = np.ceil(lo * 100 - 1e-6) / 100
        self.ceiling = np.floor(self.list_price * price_high * 100 + 1e-6) / 100
        over = np.flatnonzero(self.floor > self.ceiling)
        if len(over):
            raise ValueError(f"constraints: products {over.tolist()} have no feasible price: the margin floor or "
                             f"list price ({self.floor[over].round(2).tolist()}) is above the band's top "
                             f"({self.ceiling[over].round(2).tolist()}); lower margin_floor or raise price_high")
        self.endings = np.asarray(sorted(c.price_endings), float)
        self.reset()

    def reset(self) -> None:
        """Forget the price changes of past days (a new season)."""
        self.changes = np.zeros((6, len(self.list_price)), bool)  # the last 6 days', most recent first

    def band(self, prev: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Today's (lowest, highest) allowed price per product given yesterday's prices ``prev``, and which
        products are frozen at ``prev`` (their weekly changes used up)."""
        c = self.constraints
        prev = np.asarray(prev, float)
        lo, hi = self.floor.copy(), self.ceiling.copy()
        if c.max_daily_change is not None:
            lo = np.maximum(lo, np.ceil(prev * (1 - c.max_daily_change) * 100 - 1e-6) / 100)
            hi = np.minimum(hi, np.floor(prev * (1 + c.max_daily_change) * 100 + 1e-6) / 100)
            hi = np.maximum(hi, self.floor)  # the floor is hard: it wins over the daily change
            lo = np.minimum(lo, hi)
        frozen = np.zeros(len(prev), bool)
        if c.max_weekly_changes is not None:
            ok = (prev >= self.floor - CENT) & (prev <= self.ceiling + CENT)
            # a change today makes 7 consecutive days with those of the 6 days before
            frozen = ok & (self.changes[:6].sum(axis=0) >= c.max_weekly_changes)
        return lo, hi, frozen

    def project(self, wanted: np.ndarray, prev: np.ndarray) -> np.ndarray:
        """The feasible prices nearest ``wanted`` today, given yesterday's ``prev`` (both per product)."""
        prev = np.asarray(prev, float)
        lo, hi, frozen = self.band(prev)
        p = np.clip(np.asarray(wanted, float), lo, hi)
        if len(self.endings):
            p = self._snap(p, lo, hi, prev)
        p = np.round(np.where(frozen, prev, p), 2)
        return p

    def _snap(self, p: np.ndarray, lo: np.ndarray, hi: np.ndarray, prev: np.ndarray) -> np.ndarray:
        """The price nearest ``p`` among those with an allowed ending in [lo, hi] and yesterday's price (kept
        unchanged, whatever its ending, when it lies in the band); with none in the band, the lowest allowed
        ending at or above ``lo`` (the floor is hard)."""
        e = self.endings[None, :]
        k = np.round(p[:, None] - e)
        cand = k + e
        cand = np.where(cand < lo[:, None] - 1e-9, cand + 1, cand)
        cand = np.where(cand > hi[:, None] + 1e-9, cand - 1, cand)
        inside = (cand >= lo[:, None] - 1e-9) & (cand <= hi[:, None] + 1e-9)
        dist = np.where(inside, np.abs(cand - p[:, None]), np.inf)
        keep = (prev >= lo - CENT) & (prev <= hi + CENT)
        dist_prev = np.where(keep, np.abs(prev - p), np.inf)
        best = cand[np.arange(len(p)), dist.argmin(axis=1)]
        best = np.where(dist_prev <= dist.min(axis=1), prev, best)
        none = ~np.isfinite(np.minimum(dist.min(axis=1), dist_prev))
        if none.any():  # no allowed ending in the band: the lowest one at or above the floor
            up = (np.ceil(lo[:, None] - e - 1e-9) + e).min(axis=1)
            best = np.where(none, up, best)
        return best

    def record(self, prices: np.ndarray, prev: np.ndarray) -> None:
        """Count today's price changes (``prices`` set against yesterday's ``prev``)."""
        self.changes = np.roll(self.changes, 1, axis=0)
        self.changes[0] = np.abs(np.asarray(prices, float) - np.asarray(prev, float)) > CENT


def capped(received: np.ndarray, users: np.ndarray, wanted: np.ndarray, cap: int | None) -> np.ndarray:
    """Which of the coupons ``wanted`` (> 0) for ``users`` (in arrival order) a per-customer cap refuses, given
    the coupons each customer has ``received`` so far (indexed by customer id); a customer arriving twice in
    a batch counts the coupons of their earlier visits."""
    want = np.asarray(wanted) > 0
    if cap is None or not want.any():
        return np.zeros(len(users), bool)
    users = np.asarray(users)
    order = np.argsort(users, kind="stable")
    u = users[order]
    w = want[order].astype(np.int64)
    csum = np.cumsum(w)
    start = np.r_[0, np.flatnonzero(u[1:] != u[:-1]) + 1]
    group_start = np.repeat(start, np.diff(np.r_[start, len(u)]))
    before = csum - w - np.where(group_start > 0, csum[group_start - 1], 0)  # this customer's earlier wants
    out = np.zeros(len(users), bool)
    out[order] = w.astype(bool) & (received[u] + before >= cap)
    return out
