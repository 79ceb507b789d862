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

from typing import Any, Protocol

import numpy as np

from promogym.envs.market import Market, MarketState

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


class WorldBackend:
    """The market's true utilities."""

    name = "world"
    is_world = True

    def __init__(self, market: Market) -> None:
        self.market = market

    def logits(self, users: np.ndarray, items: np.ndarray, price: np.ndarray, coupon: np.ndarray,
               state: MarketState) -> np.ndarray:
        """The market's true utilities of the offers (see :meth:`ResponseBackend.logits`)."""
        return self.market.utility(users, items, price, coupon, state)


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

    def _offers(self, u: np.ndarray, i: np.ndarray, price: np.ndarray, coupon: np.ndarray,
                state: MarketState) -> dict[str, Any]:
        return {
            "user_id": u, "item_id": i, "list_price": self.market.catalog.list_price[i],
            "price": np.ravel(price).astype(float), "coupon": np.ravel(coupon).astype(float),
            "day": np.full(len(u), state.day), "coupons_last_7d": state.coupons_last_7d()[u],
            **state.price_features(i),
        }

    def logits(self, users: np.ndarray, items: np.ndarray, price: np.ndarray, coupon: np.ndarray,
               state: MarketState) -> np.ndarray:
        """The model's log-odds of the offers (see :meth:`ResponseBackend.logits`): its probabilities turned into
        logits, or a bound hybrid model's logits by customer and product id."""
        shape = np.shape(users)
        u, i = np.ravel(users), np.ravel(items)
        offers = self._offers(u, i, price, coupon, state)
        if self._by_id:
            return np.asarray(self.model.predict_logits_ids(u, i, offers)).reshape(shape)
        offers.update(user_text=self._user_text[u], item_text=self._item_text[i], category=self._category[i])
        p = np.clip(self.model.predict_proba(offers), _EPS, 1 - _EPS)
        return (np.log(p) - np.log1p(-p)).reshape(shape)


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
