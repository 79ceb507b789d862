"""Response backends: who decides whether a simulated customer buys.

A backend turns offers (customer ids, product ids, shelf prices, coupon shares, market state) into
log-odds of buying; environments feed them to a multinomial logit with an outside option over the
products a visitor views (one product: the sigmoid), the choice the logs record. A model reads what
the shop observes of the state: the day, coupons each customer received in the last 7 days and its own
price history of each product (``MarketState.price_features``), never reference prices or fatigue.
Chosen by a string — ``world`` (the ground truth) or a conversion model spec resolved by
``promogym.predictors.registry`` (``bert:<checkpoint>``, ``gbdt:<file>``, ``logistic:<file>`` or a
registered kind) — or by passing any ``ConversionModel``. A learned backend's probabilities are turned
into log-odds, so the model's logits serve the choice model unchanged, as they do for the world's
utilities.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from promogym.envs.market import Market, MarketState
from promogym.envs.market.world import PRICE_HISTORY_NAMES

if TYPE_CHECKING:
    import pandas as pd

_EPS = 1e-6


class ResponseBackend(Protocol):
    """What an environment needs of a response backend: log-odds of buying each offer.

    ``name`` labels the backend in reports; ``is_world`` is True for the ground truth only."""

    name: str
    is_world: bool

    def logits(self, users: np.ndarray, items: np.ndarray, price: np.ndarray, coupon: np.ndarray,
               state: MarketState) -> np.ndarray:
        """Log-odds of buying for each offer: customer ids ``users``, product ids ``items``, shelf ``price`` and coupon
        share ``coupon`` (arrays of one shape), on the day of ``state``. Returns an array of that shape."""

    def row_logits(self, rows: pd.DataFrame, price: np.ndarray | None = None,
                   coupon: np.ndarray | None = None) -> np.ndarray:
        """Log-odds of buying for each logged row (a market log's columns) in the row's own recorded context, at
        ``price`` and ``coupon`` (per row) in place of the logged ones (None: the logged ones). Returns (rows,)."""


def _row_offer(rows: pd.DataFrame, price: np.ndarray | None, coupon: np.ndarray | None,
               context: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Customer ids, product ids, prices and coupons of logged ``rows`` (``price`` / ``coupon`` replace the logged
    ones where given); ValueError naming the columns ``rows`` lack (of the ids, the offer and ``context``) or a
    ``price`` / ``coupon`` of another length."""
    needed = ("user_id", "item_id", *(() if price is not None else ("price",)),
              *(() if coupon is not None else ("coupon",)), *context)
    missing = [c for c in needed if c not in rows]
    if missing:
        raise ValueError(f"row_logits: rows lack the column(s) {', '.join(missing)} (market log rows needed)")
    u = np.asarray(rows["user_id"], np.int64)
    i = np.asarray(rows["item_id"], np.int64)
    out = []
    for name, given in (("price", price), ("coupon", coupon)):
        x = np.asarray(rows[name] if given is None else given, float).ravel()
        if len(x) != len(u):
            raise ValueError(f"row_logits: {name} needs one value per row ({len(u)}), got {len(x)}")
        out.append(x)
    return u, i, out[0], out[1]


class WorldBackend:
    """The market's true utilities."""

    name = "world"
    is_world = True

    def __init__(self, market: Market) -> None:
        self.market = market

    def _logits(self, users: np.ndarray, items: np.ndarray, price: np.ndarray, coupon: np.ndarray,
                context: MarketState | Mapping[str, Any]) -> np.ndarray:
        return self.market.utility(users, items, price, coupon, context)

    def logits(self, users: np.ndarray, items: np.ndarray, price: np.ndarray, coupon: np.ndarray,
               state: MarketState) -> np.ndarray:
        """The market's true utilities of the offers (see :meth:`ResponseBackend.logits`)."""
        return self._logits(users, items, price, coupon, state)

    def row_logits(self, rows: pd.DataFrame, price: np.ndarray | None = None,
                   coupon: np.ndarray | None = None) -> np.ndarray:
        """The market's true utilities of logged ``rows`` on their recorded context (``day``, and the latent
        ``reference_price`` and ``fatigue`` the logs keep) at ``price`` / ``coupon`` (see
        :meth:`ResponseBackend.row_logits`)."""
        context = ("day", "reference_price", "fatigue")
        u, i, p, c = _row_offer(rows, price, coupon, context)
        return self._logits(u, i, p, c, {k: np.asarray(rows[k]) for k in context})


class RevealedBackend(WorldBackend):
    """The log-odds of each offer's purchase probability in expectation over what neither the texts nor the offer
    nor the market state reveal (each customer's hidden taste and price-sensitivity deviation, each product's
    hidden appeal): :meth:`Market.revealed_purchase_proba` on the log-odds scale. What a perfect text model could
    plan with (the text ceiling), approximately: a multinomial logit over these log-odds treats the hidden parts
    as if drawn afresh for each product of a visit, where a customer's taste is shared by them all
    (:meth:`Market.revealed_choice_proba` integrates it per visit). Not the world: the world's products differ from
    it by their appeal."""

    name = "revealed"
    is_world = False

    def _logits(self, users: np.ndarray, items: np.ndarray, price: np.ndarray, coupon: np.ndarray,
                context: MarketState | Mapping[str, Any]) -> np.ndarray:
        p = np.clip(self.market.revealed_purchase_proba(users, items, price, coupon, context), _EPS, 1 - _EPS)
        return np.log(p) - np.log1p(-p)


class ModelBackend:
    """A learned conversion model; a BERT hybrid model is bound to the market's texts once, so a step
    costs a head pass over cached user and product embeddings."""

    is_world = False

    def __init__(self, model: Any, market: Market, name: str | None = None) -> None:
        self.model, self.market = model, market
        self.name: str = name or str(getattr(model, "name", type(model).__name__))
        self._user_text = np.asarray(market.customers.text, dtype=object)
        self._item_text = np.asarray(market.catalog.text, dtype=object)
        self._category = np.asarray(market.catalog.category_names, dtype=object)[market.catalog.category]
        self._by_id = hasattr(model, "bind") and getattr(model, "mode", None) == "hybrid"
        if self._by_id:
            model.bind(market.customers.text, market.catalog.text, market.catalog.list_price)

    def warm(self, items: np.ndarray, members: bool = False) -> None:
        """Precompute what the model can for every customer with each of ``items`` (a hybrid BERT model's
        per-pair coefficients), so that an env's first steps cost what later ones do."""
        if self._by_id and hasattr(self.model, "warm_pairs"):
            self.model.warm_pairs(items, members=members)

    @property
    def ensemble_size(self) -> int:
        """Members of the model's ensemble (0: none), whose spread measures the model's uncertainty."""
        return int(getattr(self.model, "ensemble_size", 0)) if self._by_id else 0

    def member_logits(self, users: np.ndarray, items: np.ndarray, price: np.ndarray, coupon: np.ndarray,
                      state: MarketState) -> np.ndarray:
        """(members, *users.shape) log-odds of each ensemble member (see :attr:`ensemble_size`)."""
        if not self.ensemble_size:
            raise ValueError(f"response model {self.name} has no ensemble (ensembles exist for BERT hybrid models: "
                             "`promogym fit --set ensemble=5`)")
        u, i = np.ravel(users), np.ravel(items)
        z = self.model.predict_member_logits_ids(u, i, self._offers(u, i, price, coupon, state))
        return np.asarray(z).reshape((-1, *np.shape(users)))

    def _offer_columns(self, u: np.ndarray, i: np.ndarray, price: np.ndarray, coupon: np.ndarray, day: np.ndarray,
                       coupons_last_7d: np.ndarray, history: Mapping[str, np.ndarray]) -> dict[str, Any]:
        """The offers as the model reads them (flat arrays by log column name), from what the shop observes."""
        return {
            "user_id": u, "item_id": i, "list_price": self.market.catalog.list_price[i],
            "price": np.ravel(price).astype(float), "coupon": np.ravel(coupon).astype(float),
            "day": day, "coupons_last_7d": coupons_last_7d,
            **{name: np.asarray(history[name]) for name in PRICE_HISTORY_NAMES},
        }

    def _offers(self, u: np.ndarray, i: np.ndarray, price: np.ndarray, coupon: np.ndarray,
                state: MarketState) -> dict[str, Any]:
        return self._offer_columns(u, i, price, coupon, np.full(len(u), state.day), state.coupons_last_7d()[u],
                                   state.price_features(i))

    def _score(self, u: np.ndarray, i: np.ndarray, offers: dict[str, Any]) -> np.ndarray:
        """Flat log-odds of ``offers``: a bound hybrid model's logits by id, else its probabilities as logits."""
        if self._by_id:
            return np.asarray(self.model.predict_logits_ids(u, i, offers))
        offers.update(user_text=self._user_text[u], item_text=self._item_text[i], category=self._category[i])
        p = np.clip(self.model.predict_proba(offers), _EPS, 1 - _EPS)
        return np.log(p) - np.log1p(-p)

    def logits(self, users: np.ndarray, items: np.ndarray, price: np.ndarray, coupon: np.ndarray,
               state: MarketState) -> np.ndarray:
        """The model's log-odds of the offers (see :meth:`ResponseBackend.logits`): its probabilities turned into
        logits, or a bound hybrid model's logits by customer and product id."""
        u, i = np.ravel(users), np.ravel(items)
        return self._score(u, i, self._offers(u, i, price, coupon, state)).reshape(np.shape(users))

    def row_logits(self, rows: pd.DataFrame, price: np.ndarray | None = None,
                   coupon: np.ndarray | None = None) -> np.ndarray:
        """The model's log-odds of logged ``rows`` at ``price`` / ``coupon`` (see :meth:`ResponseBackend.row_logits`):
        the offers :meth:`logits` builds from a state, read from the rows' own observable columns (``day``,
        ``coupons_last_7d``, the price-history EWMAs), never their latent reference price or fatigue."""
        u, i, p, c = _row_offer(rows, price, coupon, ("day", "coupons_last_7d", *PRICE_HISTORY_NAMES))
        history = {k: np.asarray(rows[k]) for k in PRICE_HISTORY_NAMES}
        offers = self._offer_columns(u, i, p, c, np.asarray(rows["day"], np.int64),
                                     np.asarray(rows["coupons_last_7d"]), history)
        return self._score(u, i, offers)


def check_world(model: Any, market: Market, name: str) -> None:
    """ValueError when ``model`` was fitted on logs of another world than ``market`` (its recorded
    ``world_config`` differs), naming the settings that differ on both sides. A model that records no
    world (fitted on a table without a sidecar) is accepted."""
    recorded = getattr(model, "world_config", None)
    if not recorded:
        return
    from promogym.envs.market import MarketConfig

    try:
        theirs = MarketConfig.coerce(dict(recorded)).to_dict()
    except (TypeError, ValueError) as exc:
        raise ValueError(f"response {name}: its recorded world config is not valid ({exc})") from exc
    mine = market.config.to_dict()
    diff = [k for k in mine if theirs.get(k) != mine[k]]
    if diff:
        shown = "; ".join(f"{k}: model's world {theirs.get(k)!r}, env's world {mine[k]!r}" for k in diff[:4])
        raise ValueError(f"response {name} was fitted on logs of another world than the env's ({shown}"
                         f"{'; …' if len(diff) > 4 else ''}); fit a model on logs of this world "
                         "(`promogym data --world FILE` with the env's market settings)")


def make_backend(spec: Any, market: Market) -> ResponseBackend:
    """``world``, a conversion model spec (``bert:<dir>``, ``gbdt:<file>``, ``logistic:<file>`` or any kind
    registered with ``promogym.predictors.registry.register_model``) or a ConversionModel object."""
    if isinstance(spec, str) and spec == "world":
        return WorldBackend(market)
    from promogym.predictors.registry import load_model, model_entry

    if isinstance(spec, str) and model_entry(spec, "conversion").oracle:
        raise ValueError(f"response {spec!r} is not a backend; use 'world' for the ground truth")
    try:
        model = load_model(spec, market)
    except FileNotFoundError as exc:
        raise ValueError(f"response: {exc}") from exc
    name = spec if isinstance(spec, str) else str(getattr(model, "name", type(model).__name__))
    check_world(model, market, name)
    return ModelBackend(model, market, name=name)
