"""Off-policy evaluation of a deterministic pricing policy on rows recorded by
:func:`~promogym.envs.recording.record_episode`: the gate of a closed loop, where a candidate policy replaces
the incumbent only when the logs (and, for whole seasons, the simulator corrected on the logs) say it earns more.

The target policy is called on each logged day's observation (:func:`target_multiples`) and played on the
recording's price grid (its wanted multiples of list price snapped, as :class:`~promogym.envs.recording.ExploreWrapper`
plays them, without exploration); PricePromo's coupon level per customer segment likewise. A day's prices hold
for all its visitors and a visit's outcome depends only on the prices of the products it views (and its
coupon), so each visit ``x`` with logged prices ``a`` and realized profit ``r`` gets

* the importance weight ``w = prod_j 1[played grid point of j = target's] / price_propensity_j`` over the
  visit's rows (times ``1[played coupon level = target's] / coupon_propensity`` of the visitor's segment where
  the env has coupon levels), whose expectation is 1 for every visit and any target;
* the direct term ``q(x, pi) = sum_j p_j margin_j`` at the target's prices, with ``p`` the multinomial logit
  with an outside option over the visit's viewed products of a response backend's
  :meth:`~promogym.envs.backends.ResponseBackend.row_logits` and ``margin = price (1 - coupon) - unit cost``
  (the envs' profit of a served purchase); ``q(x, a)`` likewise at the logged prices;
* the terms ``DM = q(x, pi)``, ``IPS = w r`` and ``DR = q(x, pi) + w (r - q(x, a))``.

A day's visits share its prices, so days are the independent units: each estimate is the mean over logged
days (episode, season day) of the day's summed terms, with a percentile bootstrap CI that resamples days
(:func:`ope_estimate`); two policies are compared on the same days, paired (:func:`paired_difference`), and
:func:`gate` deploys the candidate only when the one-sided lower confidence bound of its gain clears a margin.
Days without a logged visit are absent (worth 0 to every policy). Where few days support the target (a small
effective sample size of the weights, :meth:`VisitTerms.diagnostics`), the weights are heavy-tailed and the
percentile CIs of IPS and DR can be too narrow: read them with the diagnostics.

What is estimated, and what is not:

* the target's **immediate profit on the logged days' states**: the stock, reference prices, fatigue, price
  history, budget and observation of each day are those the logging policy led to. A candidate's effect on
  future states (selling out sooner or later, moving reference prices, spending the budget) and the season's
  salvage value are not included: the value is a per-day (myopic) one, a gate for policies that do not live
  off the dynamics they create. For those that do, :func:`season_difference` compares whole seasons: the
  simulator's paired seasons (which play the dynamics) plus a self-normalized correction of the simulator's
  per-visit error on each policy's own offers, scaled to a season: an estimate that leans on the simulator's
  dynamics where the per-day one leans on the logging policy's states;
* interactions between a day's visits are taken as logged: a visitor whose chosen product sold out earlier
  that day, or whose coupon the budget or a coupon cap withheld, counts as logged. ``q`` ignores within-day
  stock-outs (every viewed row was in stock at the start of the day), keeps a coupon withheld in the logs
  withheld at the target's level and gives the target's level to every other visitor;
* only policies that act on the observation alone can be evaluated (baselines that read the env's state or
  keep memory across days cannot be replayed on rows);
* the value is profit, whatever the env's ``reward`` setting (:func:`season_difference`'s simulated seasons are
  the simulator env's returns: profit when its ``reward`` is profit).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pandas as pd

from promogym.envs.backends import ResponseBackend
from promogym.envs.recording import ExploreWrapper, day_observations
from promogym.experiments.stats import bootstrap_ci
from promogym.predictors.choice import visit_choice_proba, visit_codes

ESTIMATORS: tuple[str, ...] = ("dm", "ips", "dr")
REQUIRED_COLUMNS: tuple[str, ...] = (
    "episode", "season_day", "visit_id", "user_id", "item_id", "price", "list_price", "unit_cost", "coupon",
    "coupon_level", "purchased", "price_propensity", "coupon_propensity", "observation",
)
_PRICE_TOL = 0.011  # a logged price is its grid point x list price to the cent


@dataclasses.dataclass(frozen=True, eq=False)
class TargetPlan:
    """What a target policy does on each logged day: ``days`` (episode, season_day), sorted as
    :func:`~promogym.envs.recording.day_observations` sorts them; per day and env product the snapped price
    ``multiples`` of list (on the grid), the grid ``index`` and the shelf ``prices`` the env sets for them; per
    day and customer segment the ``coupon_levels`` (shares; (days, 0) without coupons)."""

    days: pd.DataFrame
    multiples: np.ndarray
    index: np.ndarray
    prices: np.ndarray
    coupon_levels: np.ndarray


@dataclasses.dataclass(frozen=True, eq=False)
class VisitTerms:
    """One target policy's per-visit terms on logged rows (see the module docstring), visits in order of first
    appearance in the rows: ``visit_id``, ``cluster`` (the index of the visit's day in ``days``), the importance
    ``weight``, the realized profit ``reward``, ``q_target`` = q(x, pi), ``q_logged`` = q(x, a) and ``demand``:
    the profit of the visit's choice before stock-outs (its product sold out earlier that day, counted as bought
    at the logged price: what q models, since q ignores within-day stock-outs; ``reward`` where the rows do not
    record stock-outs)."""

    name: str
    days: pd.DataFrame
    visit_id: np.ndarray
    cluster: np.ndarray
    weight: np.ndarray
    reward: np.ndarray
    q_target: np.ndarray
    q_logged: np.ndarray
    demand: np.ndarray | None = None

    @property
    def choice_profit(self) -> np.ndarray:
        """Per visit, the profit of its choice before stock-outs: ``demand``, or ``reward`` where it is not
        recorded."""
        return self.reward if self.demand is None else self.demand

    def terms(self, estimator: str = "dr") -> np.ndarray:
        """Per-visit terms of ``estimator`` (``dm``, ``ips``, ``dr``, or ``logged``: the realized profit;
        ``correction``: DR's ``w (r - q(x, a))``). ValueError for another name."""
        if estimator == "dm":
            return self.q_target
        if estimator == "ips":
            return self.weight * self.reward
        if estimator == "dr":
            return self.q_target + self.weight * (self.reward - self.q_logged)
        if estimator == "correction":
            return self.weight * (self.reward - self.q_logged)
        if estimator == "logged":
            return self.reward
        raise ValueError(f"estimator must be one of {', '.join((*ESTIMATORS, 'correction', 'logged'))}, "
                         f"got {estimator!r}")

    def per_day(self, estimator: str = "dr") -> np.ndarray:
        """(days,) each logged day's sum of the visits' ``estimator`` terms (:meth:`terms`)."""
        return np.bincount(self.cluster, weights=self.terms(estimator), minlength=len(self.days))

    def diagnostics(self) -> dict[str, float]:
        """The weights' health: ``ess`` = (sum w)^2 / sum w^2 (visits a weighted mean is worth), ``ess_share``
        (per visit), ``nonzero_share`` (visits the logs support), ``max_weight``, ``mean_weight`` (1 in
        expectation)."""
        w = self.weight
        sq = float((w * w).sum())
        ess = float(w.sum()) ** 2 / sq if sq > 0 else 0.0
        n = max(len(w), 1)
        return {"ess": ess, "ess_share": ess / n, "nonzero_share": float((w > 0).mean()) if len(w) else 0.0,
                "max_weight": float(w.max()) if len(w) else 0.0, "mean_weight": float(w.mean()) if len(w) else 0.0}


@dataclasses.dataclass(frozen=True)
class GateDecision:
    """The gate's verdict: ``deploy`` the candidate (True) or keep the incumbent, the paired gain ``diff`` (per
    logged day, or per season for :func:`season_difference`), its one-sided lower confidence bound ``lcb`` at
    ``level``, the ``margin`` it had to clear and the ``reason`` in words."""

    deploy: bool
    diff: float
    lcb: float
    level: float
    margin: float
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """The decision as a JSON-ready dict."""
        return dataclasses.asdict(self)


# ---------------------------------------------------------------------------------------- checks
def _check_rows(rows: pd.DataFrame, wrapper: ExploreWrapper) -> None:
    """ValueError unless ``rows`` are recorded rows of ``wrapper``'s env with its exploration (columns, products,
    observations, grid and propensities)."""
    missing = [c for c in REQUIRED_COLUMNS if c not in rows.columns]
    if missing:
        raise ValueError(f"OPE needs rows recorded with propensities and observations "
                         f"(promogym.envs.recording.record_episode); missing column(s): {', '.join(missing)}")
    if not len(rows):
        raise ValueError("OPE: no rows to evaluate on")
    u: Any = wrapper.unwrapped
    product = u.env_index[np.asarray(rows["item_id"], np.int64)]
    if (product < 0).any():
        raise ValueError(f"rows hold products the env does not price (item ids "
                         f"{sorted(set(np.asarray(rows['item_id'])[product < 0]))[:5]}): recorded in another env")
    dim = wrapper.observation_space.shape
    day_obs = rows.drop_duplicates(["episode", "season_day"])["observation"]
    bad = next((o for o in day_obs if np.shape(o) != dim), None)
    if bad is not None:
        raise ValueError(f"rows' observations have shape {np.shape(bad)}, the env's {dim}: recorded in another env")
    grid, eps = wrapper.price_grid, wrapper.exploration.epsilon
    list_price = np.asarray(rows["list_price"], float)
    price = np.asarray(rows["price"], float)
    played = wrapper.snap(price / list_price)
    if (np.abs(price - np.round(list_price * grid[played], 2)) > _PRICE_TOL).any():
        raise ValueError(f"logged prices are off the wrapper's price grid (grid_step {wrapper.exploration.grid_step}"
                         f" over [{grid[0]}, {grid[-1]}] x list price): rows recorded with another exploration")
    _check_propensity(rows["price_propensity"], eps, len(grid), "price_propensity",
                      f"epsilon {eps} over {len(grid)} grid points")
    levels = wrapper.coupon_levels
    if len(levels):
        ceps = wrapper.exploration.coupon_eps
        if not np.isin(np.round(np.asarray(rows["coupon_level"], float), 9), np.round(levels, 9)).all():
            raise ValueError(f"rows' coupon_level values are not the env's coupon levels {tuple(levels)}")
        _check_propensity(rows["coupon_propensity"], ceps, len(levels), "coupon_propensity",
                          f"coupon epsilon {ceps} over {len(levels)} levels")
    elif not np.allclose(np.asarray(rows["coupon_propensity"], float), 1.0):
        raise ValueError("rows have coupon propensities below 1 but the env has no coupon levels: "
                         "recorded in another env")


def _check_propensity(column: pd.Series, eps: float, size: int, name: str, what: str) -> None:
    """ValueError unless each propensity is one the ε-uniform kernel gives (wanted or explored)."""
    p = np.asarray(column, float)
    ok = np.isclose(p, eps / size) | np.isclose(p, 1.0 - eps + eps / size)
    if not ok.all():
        raise ValueError(f"rows' {name} {p[~ok][0]:.6g} is none of the exploration kernel's probabilities "
                         f"({what}: {eps / size:.6g} or {1.0 - eps + eps / size:.6g}): the rows were recorded with "
                         "another exploration than the wrapper's")


def _actions(policy: Any, obs: np.ndarray, wrapper: ExploreWrapper) -> np.ndarray:
    """(days, action dim) the policy's deterministic actions on the stacked observations: one batched call, or
    one call per day for a policy that does not batch. ValueError when its action space or actions do not fit
    the env's."""
    shape = wrapper.action_space.shape
    assert shape is not None
    space = getattr(policy, "action_space", None)
    if space is not None and getattr(space, "shape", shape) != shape:
        raise ValueError(f"the policy's action space {space} differs from the env's {wrapper.action_space}: "
                         "a policy for another env")
    try:
        action = np.asarray(policy.predict(obs, deterministic=True)[0], float)
    except (ValueError, RuntimeError):  # a policy that takes one observation at a time (e.g. a learned run)
        action = np.zeros(0)
    if action.shape != (len(obs), *shape):
        action = np.stack([np.asarray(policy.predict(o, deterministic=True)[0], float) for o in obs]) \
            if len(obs) else np.zeros((0, *shape))
        if action.shape != (len(obs), *shape):
            raise ValueError(f"the policy's actions have shape {action.shape[1:]}, the env's action space "
                             f"{shape}: a policy for another env")
    if not np.isfinite(action).all():
        raise ValueError("the policy returned non-finite actions")
    return action


# ---------------------------------------------------------------------------------------- the target
def target_multiples(policy: Any, rows: pd.DataFrame, wrapper: ExploreWrapper) -> TargetPlan:
    """What deterministic ``policy`` (SB3's ``predict(obs, deterministic=True)``) does on each logged day of
    ``rows``: its action on the day's recorded observation (:func:`~promogym.envs.recording.day_observations`,
    one batched call), the wanted price multiples snapped to ``wrapper``'s grid and the env's shelf prices for
    them, and its coupon level per segment. Returns a :class:`TargetPlan`. ValueError for rows or a policy
    that do not fit ``wrapper`` (see :func:`ope_terms`)."""
    _check_rows(rows, wrapper)
    days, obs = day_observations(rows)
    action = _actions(policy, obs, wrapper)
    u: Any = wrapper.unwrapped
    cfg = u.config
    grid = wrapper.price_grid
    index = wrapper.snap(wrapper.multiples_from_action(action))
    multiples = grid[index]
    # the action the wrapper plays for a grid point, priced by the env's own mapping (to the cent)
    played = np.clip(2.0 * (multiples - cfg.price_low) / (cfg.price_high - cfg.price_low) - 1.0, -1.0, 1.0)
    prices = np.stack([u.prices_from_action(a) for a in played]) if len(played) else np.zeros(index.shape)
    levels = wrapper.coupon_levels
    coupon = levels[wrapper.level_index(action)] if len(levels) else np.zeros((len(days), 0))
    return TargetPlan(days=days, multiples=multiples, index=index, prices=prices, coupon_levels=coupon)


def ope_terms(policy: Any, rows: pd.DataFrame, wrapper: ExploreWrapper, backend: ResponseBackend,
              name: str | None = None) -> VisitTerms:
    """The per-visit OPE terms of deterministic ``policy`` on recorded ``rows`` (see the module docstring):
    ``wrapper`` is an :class:`~promogym.envs.recording.ExploreWrapper` of the env the rows were recorded in, with
    the same exploration (grid and rates), and ``backend`` the response model q's choice probabilities come
    from (:meth:`~promogym.envs.backends.ResponseBackend.row_logits`; ``WorldBackend`` for the truth). Returns
    :class:`VisitTerms` labelled ``name`` (default: the policy's class name).

    ValueError naming the problem: rows without the propensity or observation columns, rows of another env
    or another exploration (prices off the grid, propensities the kernel never gives), a policy whose action
    space or actions differ from the env's."""
    plan = target_multiples(policy, rows, wrapper)
    u: Any = wrapper.unwrapped
    market = u.market
    day = plan.days.set_index(["episode", "season_day"]).index.get_indexer(
        pd.MultiIndex.from_arrays([rows["episode"], rows["season_day"]]))
    product = u.env_index[np.asarray(rows["item_id"], np.int64)]
    list_price = np.asarray(rows["list_price"], float)
    price = np.asarray(rows["price"], float)
    unit_cost = np.asarray(rows["unit_cost"], float)
    coupon = np.asarray(rows["coupon"], float)
    codes, n_visits = visit_codes(rows["visit_id"])
    first = np.unique(codes, return_index=True)[1]

    # importance weights: the visit's products' played grid points, and its segment's coupon level
    match = wrapper.snap(price / list_price) == plan.index[day, product]
    inv = -np.log(np.asarray(rows["price_propensity"], float))
    level = np.asarray(rows["coupon_level"], float)
    target_coupon = np.zeros(len(rows))
    if len(wrapper.coupon_levels):
        segment = market.customers.visit_band[np.asarray(rows["user_id"], np.int64)]
        wanted_level = plan.coupon_levels[day, segment]
        c_match = (np.abs(wrapper.coupon_levels[None, :] - wanted_level[:, None]).argmin(axis=1)
                   == np.abs(wrapper.coupon_levels[None, :] - level[:, None]).argmin(axis=1))
        withheld = (level > 0) & (coupon == 0)  # the budget or a coupon cap kept the visitor's coupon
        target_coupon = np.where(withheld, 0.0, wanted_level)
        c_inv = -np.log(np.asarray(rows["coupon_propensity"], float))
        c_ok = c_match[first]
        c_log = c_inv[first]  # a visit's rows share its segment's coupon: counted once
    else:
        c_ok, c_log = np.ones(n_visits, bool), np.zeros(n_visits)
    misses = np.bincount(codes, weights=(~match).astype(float), minlength=n_visits)
    weight = np.where((misses == 0) & c_ok,
                      np.exp(np.bincount(codes, weights=inv, minlength=n_visits) + c_log), 0.0)

    # the direct terms: expected profit of the visit's choice at the target's and at the logged prices
    target_price = plan.prices[day, product]
    vid = rows["visit_id"]

    def q(p: np.ndarray, c: np.ndarray) -> np.ndarray:
        proba = visit_choice_proba(backend.row_logits(rows, p, c), vid)
        return np.bincount(codes, weights=proba * (p * (1.0 - c) - unit_cost), minlength=n_visits)

    served = np.asarray(rows["purchased"], float)
    unit = price * (1.0 - coupon) - unit_cost
    reward = np.bincount(codes, weights=served * unit, minlength=n_visits)
    demand = reward if "stocked_out" not in rows.columns else np.bincount(
        codes, weights=np.maximum(served, np.asarray(rows["stocked_out"], float)) * unit, minlength=n_visits)
    return VisitTerms(name=name or type(policy).__name__, days=plan.days,
                      visit_id=np.asarray(vid)[first], cluster=day[first], weight=weight, reward=reward,
                      q_target=q(target_price, target_coupon), q_logged=q(price, coupon), demand=demand)


# ---------------------------------------------------------------------------------------- estimates
def _check_level(level: float) -> None:
    if not 0.5 < level < 1.0:
        raise ValueError(f"level must be in (0.5, 1), got {level}")


def ope_estimate(terms: VisitTerms, reps: int = 2000, level: float = 0.95, seed: int = 0) -> dict[str, Any]:
    """DM, IPS and DR estimates of the target's profit per logged day (keys ``dm``, ``ips``, ``dr``), each with a
    percentile bootstrap CI over days at ``level`` (``<name>_ci``: the same resampled days for every estimator),
    per episode (``<name>_per_episode``: the sum over days / episodes), the logged policy's realized profit per
    day (``logged``), the number of ``days``, ``episodes`` and ``visits``, and the weights' diagnostics
    (:meth:`VisitTerms.diagnostics`)."""
    _check_level(level)
    n_days = len(terms.days)
    episodes = int(terms.days["episode"].nunique())
    out: dict[str, Any] = {"policy": terms.name, "days": n_days, "episodes": episodes, "visits": len(terms.weight),
                           "level": level}
    for est in (*ESTIMATORS, "logged"):
        x = terms.per_day(est)
        out[est] = float(x.mean())
        if est != "logged":
            out[f"{est}_ci"] = bootstrap_ci(x, reps=reps, level=level, seed=seed)
        out[f"{est}_per_episode"] = float(x.sum() / max(episodes, 1))
    out.update(terms.diagnostics())
    return out


def paired_difference(candidate: VisitTerms, incumbent: VisitTerms, estimator: str = "dr", level: float = 0.95,
                      reps: int = 2000, seed: int = 0) -> dict[str, Any]:
    """The candidate's gain over the incumbent in profit per logged day by ``estimator``, paired: the per-day
    differences of the two policies' terms on the same rows, days resampled jointly. Returns ``diff`` (the
    mean), ``diff_ci`` (two-sided percentile CI at ``level``), ``lcb`` (one-sided lower confidence bound at
    ``level``: the (1 - level) quantile of the same bootstrap draws), ``level``, ``estimator``, ``days`` and each
    policy's estimate (``candidate``, ``incumbent``). ValueError when the terms come from different rows."""
    _check_level(level)
    _check_paired(candidate, incumbent)
    d = candidate.per_day(estimator) - incumbent.per_day(estimator)
    # one seed: the CI and the bound come from the same resampled days
    lcb = bootstrap_ci(d, reps=reps, level=2.0 * level - 1.0, seed=seed)[0]
    return {"estimator": estimator, "diff": float(d.mean()), "diff_ci": bootstrap_ci(d, reps=reps, level=level,
                                                                                     seed=seed),
            "lcb": float(lcb), "level": level, "days": len(d),
            "candidate": float(candidate.per_day(estimator).mean()),
            "incumbent": float(incumbent.per_day(estimator).mean())}


def season_correction(terms: VisitTerms) -> dict[str, np.ndarray]:
    """Per logged episode (season), the sums the season estimate's correction is made of: ``error`` = sum of
    ``w (demand - q(x, a))`` (the simulator's error on the policy's own offers, importance weighted), ``weight`` =
    sum of ``w``, ``visits``; and ``episodes``, the episode ids (sorted)."""
    episode = terms.days["episode"].to_numpy()[terms.cluster]
    ids, e = np.unique(episode, return_inverse=True)
    n = len(ids)
    return {"episodes": ids,
            "error": np.bincount(e, weights=terms.weight * (terms.choice_profit - terms.q_logged), minlength=n),
            "weight": np.bincount(e, weights=terms.weight, minlength=n),
            "visits": np.bincount(e, minlength=n).astype(float)}


def _per_season(c: dict[str, np.ndarray], idx: np.ndarray) -> np.ndarray:
    """The self-normalized correction per season of the episodes ``idx`` ((draws, episodes) indices): the mean
    weighted error per unit of weight x the visits per season; 0 where the draw holds no weight."""
    w = c["weight"][idx].sum(axis=-1)
    err = np.divide(c["error"][idx].sum(axis=-1), w, out=np.zeros_like(w), where=w > 0)
    return err * c["visits"][idx].sum(axis=-1) / idx.shape[-1]


def season_difference(candidate: VisitTerms, incumbent: VisitTerms, sim_candidate: np.ndarray,
                      sim_incumbent: np.ndarray, level: float = 0.95, reps: int = 2000, seed: int = 0
                      ) -> dict[str, Any]:
    """The candidate's gain over the incumbent **per season**, for policies that live off the dynamics they
    create (stock kept for the peak, reference prices moved): the simulated seasons' paired difference
    (``sim_candidate`` and ``sim_incumbent``: each policy's profit in the simulator on the same seeds, which play
    the stock, seasonality and salvage value the per-day estimate leaves out) plus the paired difference of each
    policy's **correction**: the simulator's error on that policy's own offers on the logged days, ``w (demand -
    q(x, a))`` self-normalized (divided by the mean weight, as SNIPS is: unbiased only as the logs grow, far less
    noisy where few visits match the policy) and scaled to a season's visits. ``demand`` counts a choice of a
    product that had sold out as bought (the simulated seasons play stock themselves, and q models demand).

    What it rests on: the simulator's dynamics and the states the policy reaches in it (the correction is
    measured on the logged days' states, where only the logged offers that match the policy's count); a
    candidate trained on this simulator is flattered where the simulator errs beyond what the logged offers
    show. Where few visits match the candidate (``ess``, ``nonzero_share``) the correction rests on few visits,
    and on fewer purchases (``matched_purchases``): with a handful of expected purchases among them, none
    observed reads as a simulator that over-predicts by 100%, and no resample of the logged seasons shows the
    variance (each holds none): the CI is then too narrow. Read the coverage before the CI, and set a gate's
    ``min_ess``.

    Returns ``diff`` (per season), ``diff_ci`` (two-sided percentile CI at ``level``) and ``lcb`` (one-sided
    lower bound at ``level``): simulated seasons and logged episodes (a season's days share its demand, so whole
    seasons are the units; with few logged seasons the bounds are rough) resampled independently, the same draws
    for both policies; the parts ``simulated`` and ``correction``, each policy's season estimate
    (``candidate``, ``incumbent``), its ``correction_candidate`` / ``correction_incumbent``, the candidate's
    weights' ``ess`` and ``nonzero_share``, the visits that match it (``matched_visits``) and those of them with a
    purchase (``matched_purchases``), ``level``, ``days``, ``logged_seasons``, ``seasons`` (simulated per policy)
    and ``days_per_episode``. ValueError when the terms come from different rows or the simulated
    returns are not paired (same length, at least 2)."""
    _check_level(level)
    _check_paired(candidate, incumbent)
    sc, si = np.asarray(sim_candidate, float), np.asarray(sim_incumbent, float)
    if sc.shape != si.shape or sc.ndim != 1 or len(sc) < 2:
        raise ValueError(f"season_difference needs both policies' simulated returns on the same seeds (at least 2), "
                         f"got shapes {sc.shape} and {si.shape}")
    cc, ci = season_correction(candidate), season_correction(incumbent)
    n_ep = len(cc["episodes"])
    every = np.arange(n_ep)
    corr_c, corr_i = float(_per_season(cc, every)), float(_per_season(ci, every))
    sim_d = sc - si
    rng = np.random.default_rng(seed)
    ep = rng.integers(0, n_ep, (reps, n_ep))
    draws = (sim_d[rng.integers(0, len(sim_d), (reps, len(sim_d)))].mean(axis=1)
             + _per_season(cc, ep) - _per_season(ci, ep))
    a = (1.0 - level) / 2.0
    diag = candidate.diagnostics()
    matched = candidate.weight > 0
    return {"estimator": "season_dr", "diff": float(sim_d.mean()) + corr_c - corr_i,
            "diff_ci": (float(np.quantile(draws, a)), float(np.quantile(draws, 1.0 - a))),
            "lcb": float(np.quantile(draws, 1.0 - level)), "level": level, "days": len(candidate.days),
            "logged_seasons": n_ep, "seasons": len(sim_d), "days_per_episode": len(candidate.days) / max(n_ep, 1),
            "simulated": float(sim_d.mean()), "correction": corr_c - corr_i,
            "correction_candidate": corr_c, "correction_incumbent": corr_i,
            "candidate": float(sc.mean()) + corr_c, "incumbent": float(si.mean()) + corr_i,
            "ess": diag["ess"], "nonzero_share": diag["nonzero_share"],
            "matched_visits": int(matched.sum()),
            "matched_purchases": int((matched & (candidate.choice_profit != 0)).sum())}


def _check_paired(candidate: VisitTerms, incumbent: VisitTerms) -> None:
    if not (np.array_equal(candidate.visit_id, incumbent.visit_id)
            and np.array_equal(candidate.cluster, incumbent.cluster) and candidate.days.equals(incumbent.days)):
        raise ValueError("a paired comparison needs both policies' terms on the same rows (the same visits and "
                         "days)")


def decide(paired: dict[str, Any], ess: float, margin: float = 0.0, min_ess: float = 0.0,
           unit: str = "per day") -> GateDecision:
    """The gate's verdict on a paired comparison (:func:`paired_difference` or :func:`season_difference`):
    deploy the candidate only when the one-sided lower bound ``paired["lcb"]`` is above ``margin`` and the
    candidate's weights have an effective sample size ``ess`` of at least ``min_ess`` visits (below it the logs
    barely cover the candidate, and the estimate rests on the response model alone); a season estimate whose
    candidate no logged visit matches (``matched_visits`` 0: the simulator uncorrected) keeps the incumbent."""
    diff, lcb, level = paired["diff"], paired["lcb"], paired["level"]
    what = (f"{paired['estimator'].upper()} gain {unit} {diff:+.2f}, {level:.0%} lower bound {lcb:+.2f}")
    if paired.get("matched_visits") == 0:  # a season estimate with nothing to correct the simulator with
        deploy, reason = False, (f"keep the incumbent: no logged visit matches the candidate's offers, nothing "
                                 f"corrects the simulator ({what})")
    elif ess < min_ess:
        deploy, reason = False, (f"keep the incumbent: the candidate's effective sample size {ess:.1f} is below "
                                 f"{min_ess:g} visits ({what})")
    elif lcb > margin:
        deploy, reason = True, f"deploy the candidate: {what} > margin {margin:g}"
    else:
        deploy, reason = False, f"keep the incumbent: {what} <= margin {margin:g}"
    return GateDecision(deploy=deploy, diff=diff, lcb=float(lcb), level=level, margin=margin, reason=reason)


def gate(candidate_terms: VisitTerms, incumbent_terms: VisitTerms, margin: float = 0.0, level: float = 0.95, *,
         estimator: str = "dr", min_ess: float = 0.0, reps: int = 2000, seed: int = 0) -> GateDecision:
    """Deploy the candidate only when the one-sided lower ``level`` confidence bound of its paired gain per
    logged day (:func:`paired_difference`) is above ``margin``, and the candidate's weights have an effective
    sample size of at least ``min_ess`` visits (:func:`decide`); otherwise keep the incumbent. Returns a
    :class:`GateDecision`."""
    paired = paired_difference(candidate_terms, incumbent_terms, estimator=estimator, level=level, reps=reps,
                               seed=seed)
    return decide(paired, candidate_terms.diagnostics()["ess"], margin, min_ess)


__all__ = ["ESTIMATORS", "REQUIRED_COLUMNS", "GateDecision", "TargetPlan", "VisitTerms", "decide", "gate",
           "ope_estimate", "ope_terms", "paired_difference", "season_correction", "season_difference",
           "target_multiples"]
