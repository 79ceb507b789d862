"""E-mail targeting on real customers of the Hillstrom trial, under an e-mail budget."""

from __future__ import annotations

import dataclasses
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from promogym.core.config import ConfigBase, param
from promogym.envs.base import OBS_BOUND, check_action, resolve_config
from promogym.envs.families import TARGETING

N_CUSTOMER_FEATURES = 11


@dataclasses.dataclass(frozen=True)
class HillstromConfig(ConfigBase):
    """Configuration of :class:`HillstromTargetingEnv`; every field is validated against its range."""

    response: Any = param(  # noqa: RUF009 (param returns a dataclasses.field)
        "cells", "response model: cells (smoothed cell means, instant), bert:<dir>, gbdt:<file>, logistic:<file>, "
                 "a kind added with promogym.predictors.registry.register_model, or an UpliftModel")
    outcome: str = param("visit", "reward outcome: visit, conversion or spend",
                         choices=("visit", "conversion", "spend"))
    email_cost: float = param(0.01, "cost of one e-mail, in units of the outcome", lo=0.0, hi=1e6)
    batch_size: int = param(32, "customers per step", lo=1, hi=4096)
    horizon: int = param(50, "steps per episode", lo=1, hi=100_000)
    budget_share: float = param(0.3, "e-mails per episode as a share of the customers it sees", lo=0.0, hi=1.0)
    split: str = param("train", "customers come from this split of the trial", choices=("train", "valid", "test"))
    sequential: bool = param(False, "walk through the split's rows in file order instead of resampling them "
                                    "(for replaying a policy on held-out customers; a last, shorter episode gets "
                                    "a proportional budget)")

    def validate(self) -> None:
        """Check that ``response`` is a valid uplift-model spec or an object with ``predict`` (ValueError otherwise)."""
        r = self.response
        if isinstance(r, str):
            from promogym.predictors.registry import check_spec

            check_spec(r, "uplift", name=f"{type(self).__name__}.response")
        elif not hasattr(r, "predict"):
            raise ValueError(f"{type(self).__name__}.response must be a string or an UpliftModel, got {r!r}")


def load_response(spec: Any, data: Any) -> Any:
    """The response model a config names: ``cells`` (fitted on ``data``'s train split), a saved model spec,
    or an UpliftModel object as it is."""
    if not isinstance(spec, str):
        return spec
    from promogym.predictors.registry import load_uplift_model

    return load_uplift_model(spec, data=data)


class HillstromTargetingEnv(gym.Env[np.ndarray, np.ndarray]):
    """Choose which e-mail (none, men's, women's) each customer of a batch gets, within an e-mail budget.

    ## Description
    Each step a batch of ``batch_size`` real customers of the Hillstrom trial is drawn (with
    replacement) from the configured split. The agent picks an arm per customer. The response model
    (fitted on the trial's train split: the BERT model, a two-model baseline, or the smoothed cell
    means) gives each customer's probability of visiting and converting under each arm; outcomes are
    sampled from it. An e-mail is sent only while the episode's budget (``budget_share`` x customers
    per episode) lasts, in batch order (``info["emails_clipped"]`` counts the others); ``action_masks()``
    forbids e-mails once the budget is spent.

    ## Action Space
    ``MultiDiscrete([3] * batch_size)``: 0 no e-mail, 1 men's, 2 women's. An action of another shape
    (after ``np.asarray``; a list is fine, nothing is flattened, broadcast or cut), with non-integer
    values (an integer-valued float array is fine), NaN, inf, or an arm outside {0, 1, 2} raises
    ValueError, and the env is left as it was. E-mails past the budget are allowed in the action but
    not sent (see ``action_masks()``).

    ## Observation Space
    ``Box(-10, 10, (11 batch_size + 2,))`` float32: per customer recency/12, log(1+spend)/8, bought men's,
    bought women's, new customer, urban/suburban/rural, web/phone/multichannel; then the share of the
    budget left and the share of steps left.

    ## Rewards
    Visits (or conversions, or spend = conversions x mean spend of a converter) minus ``email_cost`` per
    e-mail sent.

    ## Starting State
    The whole budget.

    ## Episode End
    Terminated after ``horizon`` steps (the campaign ends; the observation holds the steps left);
    truncated when a ``sequential`` walk runs out of customers.

    ## Arguments
    ``config`` with the keys of :class:`HillstromConfig`.

    ## Version History
    * v0: initial version.
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 4}  # noqa: RUF012 (Gymnasium's convention)
    family = TARGETING
    # the observation is ``batch_size`` blocks of this many features per customer, then the global features:
    # per-customer policies (:mod:`promogym.agents.per_customer`) read the layout from here
    item_features = N_CUSTOMER_FEATURES

    def __init__(self, config: Any = None, render_mode: str | None = None, **overrides: Any) -> None:
        from promogym.predictors.hillstrom import load_hillstrom, tabular_features

        self.config: HillstromConfig = resolve_config(HillstromConfig, config, overrides, render_mode,
                                                      self.metadata["render_modes"])
        self.render_mode = render_mode
        cfg = self.config
        data = load_hillstrom()
        self.model = load_response(cfg.response, data)
        self.rows = data[data["split"] == cfg.split].reset_index(drop=True)
        self.features = tabular_features(self.rows)
        outcomes = self.model.predict(self.rows)
        # per row and arm: probability of the binary outcome, and the value of that outcome
        key = "conversion" if cfg.outcome in ("conversion", "spend") else "visit"
        self.proba = outcomes[key]
        self.value = self.model.spend_per_conversion if cfg.outcome == "spend" else 1.0
        self.expected = self.proba * self.value          # (rows, 3) expected outcome per arm
        self.budget = cfg.budget_share * cfg.batch_size * cfg.horizon
        self.action_space = spaces.MultiDiscrete([3] * cfg.batch_size)
        self.observation_space = spaces.Box(-OBS_BOUND, OBS_BOUND, shape=(N_CUSTOMER_FEATURES * cfg.batch_size + 2,),
                                            dtype=np.float32)
        self._cursor, self._walked = 0, False
        self.idx = np.zeros(cfg.batch_size, dtype=np.int64)
        self.budget_left, self.t = self.budget, 0

    @classmethod
    def default_config(cls) -> dict[str, Any]:
        """The default config as a dict (the keys of :class:`HillstromConfig`)."""
        return HillstromConfig().to_dict()

    # ------------------------------------------------------------------ helpers
    def _draw(self) -> None:
        n, b = len(self.rows), self.config.batch_size
        if self.config.sequential:
            self.idx = np.arange(self._cursor, self._cursor + b) % n
            self._cursor += b
        else:
            self.idx = self.np_random.integers(0, n, size=b)

    def _obs(self) -> np.ndarray:
        cfg = self.config
        tail = [self.budget_left / self.budget if self.budget > 0 else 0.0, (cfg.horizon - self.t) / cfg.horizon]
        x = np.concatenate([self.features[self.idx].ravel(), np.asarray(tail, np.float32)])
        return np.clip(x, -OBS_BOUND, OBS_BOUND).astype(np.float32)

    def action_masks(self) -> np.ndarray:
        """Flattened (batch_size x 3): e-mails are allowed while at least one is left in the budget."""
        allowed = np.array([True, self.budget_left >= 1.0, self.budget_left >= 1.0])
        return np.tile(allowed, self.config.batch_size)

    @property
    def exhausted(self) -> bool:
        """A sequential walk has acted on every row of its split (the last step served its last rows)."""
        return self._walked

    # ------------------------------------------------------------------ gymnasium API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start a campaign: draw the first batch of customers and set the e-mail budget.

        With ``sequential``, a seed or ``options={"restart": True}`` restarts the walk at the split's first row; the
        walk's last episode gets a budget in proportion to the customers it sees. ``info["rows"]`` holds the batch's row
        indices."""
        super().reset(seed=seed)
        if seed is not None or (options or {}).get("restart"):
            self._cursor, self._walked = 0, False
        cfg = self.config
        seen = cfg.batch_size * cfg.horizon
        if cfg.sequential:  # the walk's last episode sees fewer customers, and gets a budget to match
            seen = min(seen, len(self.rows) - self._cursor)
        self.budget = cfg.budget_share * seen
        self.budget_left, self.t = self.budget, 0
        self._draw()
        return self._obs(), {"rows": self.idx.copy()}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Send each customer of the batch the arm of ``action`` (0: no e-mail), within the e-mail budget.

        E-mails beyond the budget left are not sent (``info["emails_clipped"]``); the reward is the outcome drawn for
        the batch minus ``email_cost`` per e-mail sent. Returns Gymnasium's ``(obs, reward, terminated, truncated,
        info)``."""
        cfg = self.config
        a = check_action(self, action)
        wanted = a > 0
        sent_ok = np.cumsum(wanted) <= self.budget_left + 1e-9
        arm = np.where(wanted & sent_ok, a, 0)
        clipped = int((wanted & ~sent_ok).sum())
        sent = int((arm > 0).sum())
        p = self.proba[self.idx, arm]
        hits = self.np_random.random(len(p)) < p
        gained = float(hits.sum() * self.value)
        spend = sent * cfg.email_cost
        reward = gained - spend
        self.budget_left -= sent
        self.t += 1
        info = {"components": {"revenue": gained, "cost": 0.0, "coupon_spend": spend, "units": int(hits.sum()),
                               "stockouts": 0, "budget_left": self.budget_left},
                "rows": self.idx.copy(), "arms": arm, "emails_sent": sent, "emails_clipped": clipped,
                "expected_profit": float(self.expected[self.idx, arm].sum() - spend)}
        self._walked = cfg.sequential and self._cursor >= len(self.rows)
        terminated = self.t >= cfg.horizon  # the campaign's end (steps left are in the observation)
        truncated = self._walked and not terminated  # a replay ran out of customers
        self._last = (sent, gained, reward)
        if not (terminated or truncated):
            self._draw()
        return self._obs(), float(reward), bool(terminated), bool(truncated), info

    def render(self) -> str | None:
        """With ``render_mode="ansi"``, a one-line summary of the last step (or of the campaign's start); else None."""
        if self.render_mode == "ansi":
            if self.t == 0:
                return f"campaign starts: {self.budget:,.0f} e-mails for {self.config.horizon} batches"
            sent, gained, reward = self._last
            return (f"step {self.t:>4}  e-mails {sent:>3}  {self.config.outcome} {gained:>7.2f}  "
                    f"reward {reward:>7.2f}  budget left {self.budget_left:>6.0f}")
        return None
