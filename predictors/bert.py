"""The BERT conversion model: user + product + offer text -> purchase probability.

Two modes:

* ``hybrid`` (default in environments): one BERT shared by a user tower and a product tower (each
  pools the token states with a mean and a few learned attention queries), joined in a small head
  that reads the offer's numeric features. The head's logit is non-increasing in price by
  construction: price enters only through ``- f(log price paid / list) - g(log shelf / list)
  - sum_h k_h(log shelf / list - log history_h)`` with ``f, g, k_h`` piecewise linear with
  non-negative slopes (one kink at list price, where loss aversion bends demand, and one where the
  shelf price passes each of the shop's recent prices: a price above them lowers demand more than
  one below raises it). Tower outputs are cached per distinct text, so the cache grows with
  users + products and a prediction over cached users and products costs a head pass only.
* ``text``: the classic recipe, user, product and offer in one sentence, mean-pooled, one MLP.

A hybrid checkpoint may carry an ensemble of extra heads (``ensemble_size``), each trained on a
bootstrap resample of the training customers over the frozen towers: their spread measures the
model's uncertainty about an offer (:meth:`BertConversionModel.predict_member_logits_ids`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F

from promogym.core.io import atomic_dir, atomic_path
from promogym.predictors.base import Batch, validate_batch
from promogym.predictors.calibration import Calibrator
from promogym.predictors.encoder import (
    autocast,
    brief,
    load_bert_folder,
    load_head_weights,
    mean_pool,
    pick_device,
)
from promogym.predictors.features import (
    HISTORY_FEATURES,
    NUMERIC_FEATURES,
    numeric_features,
    offer_text,
    weekday_index,
)
from promogym.predictors.registry import register_model
from promogym.predictors.scrub import scrub

log = logging.getLogger(__name__)

SCHEMA_VERSION = 3  # 2: price-history terms in the head, choice likelihood, ensemble heads; 3: a convex term above list
CHECKPOINT_KIND = "promogym-bert-conversion"
META_FILE = "promogym.json"
HEAD_FILE = "head.pt"
TOWER_CACHE_FILE = "tower_cache.pt"  # optional: tower embeddings of known texts (see save_tower_cache)
TOWER_CACHE_FORMAT = "promogym-tower-cache-v2"
REFIT = "refit with `promogym fit --kind bert`"
PAIR_TABLE_CELLS = 10_000_000
PREFETCH_ITEMS = 512  # up to this many bound products, a new customer's pairs with all of them are computed at once
PAIR_CHUNK = 65_536  # new pairs go through the head's MLP in chunks of at most this many rows (bounded memory)
_F = {name: i for i, name in enumerate(NUMERIC_FEATURES)}


class TowerPool(nn.Module):
    """Mean pooling plus ``queries`` learned attention pools over token states, projected to ``dim``."""

    def __init__(self, hidden: int, dim: int, queries: int, dropout: float) -> None:
        super().__init__()
        self.queries = nn.Parameter(torch.randn(queries, hidden) * 0.02)
        self.proj = nn.Sequential(nn.Linear(hidden * (queries + 1), dim), nn.LayerNorm(dim), nn.GELU(),
                                  nn.Dropout(dropout))
        self.scale = 1.0 / math.sqrt(hidden)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(rows, ``dim``) embeddings of token states ``hidden`` (rows, tokens, hidden) under ``mask`` (rows,
        tokens)."""
        hidden = hidden.float()
        scores = torch.einsum("nlh,kh->nkl", hidden, self.queries) * self.scale
        scores = scores.masked_fill(~mask.bool().unsqueeze(1), -1e4)
        pooled = torch.einsum("nkl,nlh->nkh", scores.softmax(-1), hidden).flatten(1)
        return self.proj(torch.cat([mean_pool(hidden, mask), pooled], dim=1))


class OfferHead(nn.Module):
    """Joins a user and a product embedding with the offer; monotone non-increasing in price."""

    # base, 4 price slopes, coupon effect, fatigue-free coupon effect, fatigue rate, then per history
    # feature a slope and a slope above it (both >= 0)
    N_OUT = 9 + 2 * len(HISTORY_FEATURES)  # the last: curvature of the price paid above list (>= 0)

    def __init__(self, dim: int, width: int, dropout: float) -> None:
        super().__init__()
        self.joint = nn.Sequential(nn.Linear(3 * dim + 1, width), nn.GELU(), nn.Dropout(dropout),
                                   nn.Linear(width, width), nn.GELU(), nn.Dropout(dropout))
        self.out = nn.Linear(width, self.N_OUT)
        self.weekday = nn.Embedding(7, 1)
        nn.init.zeros_(self.weekday.weight)
        with torch.no_grad():
            self.out.bias.zero_()
            self.out.bias[0] = -3.0  # start near a few-percent purchase rate

    def pair(self, user: torch.Tensor, item: torch.Tensor, log_list: torch.Tensor) -> torch.Tensor:
        """The head's offer-independent part: (rows, N_OUT) coefficients of one user-product pair:
        base logit, 4 price slopes (>= 0), coupon effect, fatigue-free coupon effect, fatigue rate (>= 0),
        2 slopes (>= 0) per price-history feature, the curvature (>= 0) of the price paid above list price."""
        o = self.out(self.joint(torch.cat([user, item, user * item, log_list.reshape(-1, 1)], 1)))
        return torch.cat([o[:, :1], F.softplus(o[:, 1:5]), o[:, 5:7], F.softplus(o[:, 7:])], dim=1)

    def forward(self, user: torch.Tensor, item: torch.Tensor, num: torch.Tensor, weekday: torch.Tensor
                ) -> torch.Tensor:
        """(rows,) purchase logits of user and product embeddings (rows, dim) with the offer's numeric features ``num``
        (rows, len(NUMERIC_FEATURES)) and ``weekday`` (rows,) in 0..6."""
        return self.combine(self.pair(user, item, num[:, _F["log_list_price"]]), num, weekday)

    def combine(self, o: torch.Tensor, num: torch.Tensor, weekday: torch.Tensor) -> torch.Tensor:
        """The logit from a pair's coefficients and the offer: monotone non-increasing in price."""
        slopes = o[:, 1:5]
        paid, shelf = num[:, _F["log_paid_rel"]], num[:, _F["log_shelf_rel"]]
        price_term = (slopes[:, 0] * paid + slopes[:, 1] * F.relu(paid)
                      + slopes[:, 2] * shelf + slopes[:, 3] * F.relu(shelf) + o[:, -1] * F.relu(paid) ** 2)
        for k, name in enumerate(HISTORY_FEATURES):  # shelf vs the shop's recent prices, loss-averse
            x = num[:, _F[name]]
            price_term = price_term + o[:, 8 + 2 * k] * x + o[:, 9 + 2 * k] * F.relu(x)
        fatigue = torch.exp(-o[:, 7] * num[:, _F["coupons_last_7d"]])
        coupon_term = num[:, _F["has_coupon"]] * (o[:, 5] * fatigue + o[:, 6])
        return o[:, 0] + self.weekday(weekday).squeeze(-1) - price_term + coupon_term

    def combine_numpy(self, o: np.ndarray, num: np.ndarray, weekday: np.ndarray) -> np.ndarray:
        """:meth:`combine` in numpy for inference (no autograd, no torch dispatch: a step of an env costs
        microseconds); ``o`` may carry leading dimensions (e.g. (members, rows, N_OUT))."""
        relu = partial(np.maximum, 0.0)
        paid, shelf = num[:, _F["log_paid_rel"]], num[:, _F["log_shelf_rel"]]
        price_term = (o[..., 1] * paid + o[..., 2] * relu(paid) + o[..., 3] * shelf + o[..., 4] * relu(shelf)
                      + o[..., -1] * relu(paid) ** 2)
        for k, name in enumerate(HISTORY_FEATURES):
            x = num[:, _F[name]]
            price_term = price_term + o[..., 8 + 2 * k] * x + o[..., 9 + 2 * k] * relu(x)
        fatigue = np.exp(-o[..., 7] * num[:, _F["coupons_last_7d"]])
        coupon_term = num[:, _F["has_coupon"]] * (o[..., 5] * fatigue + o[..., 6])
        day = self.weekday.weight.detach().cpu().numpy()[:, 0][weekday]
        return o[..., 0] + day - price_term + coupon_term


class HybridNet(nn.Module):
    """The hybrid model: a user tower and a product tower (shared encoder, own pools) whose embeddings the offer head
    joins with the offer's numeric features; ``ensemble`` extra heads over the same towers."""

    def __init__(self, encoder: Any, dim: int = 128, queries: int = 4, width: int = 256,
                 dropout: float = 0.1, ensemble: int = 0) -> None:
        super().__init__()
        hidden = encoder.config.hidden_size
        self.dim = dim
        self.encoder: Any = encoder
        self.user_pool = TowerPool(hidden, dim, queries, dropout)
        self.item_pool = TowerPool(hidden, dim, queries, dropout)
        self.head = OfferHead(dim, width, dropout)
        # extra heads over the same towers, each fitted on a bootstrap resample of the customers
        self.ensemble = nn.ModuleList(OfferHead(dim, width, dropout) for _ in range(ensemble))

    def tower(self, which: str, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(rows, ``dim``) embeddings of the ``"user"`` or ``"item"`` tower from encoder states and attention mask."""
        return (self.user_pool if which == "user" else self.item_pool)(hidden, mask)

    def members(self) -> list[OfferHead]:
        """The ensemble heads."""
        return [head for head in self.ensemble if isinstance(head, OfferHead)]


class TextNet(nn.Module):
    """The text-mode model: user, product and offer in one sentence, mean-pooled encoder states, an MLP to a logit."""

    def __init__(self, encoder: Any, width: int = 256, dropout: float = 0.1) -> None:
        super().__init__()
        self.encoder: Any = encoder
        self.mlp = nn.Sequential(nn.Dropout(dropout), nn.Linear(encoder.config.hidden_size, width), nn.GELU(),
                                 nn.Dropout(dropout), nn.Linear(width, 1))
        with torch.no_grad():
            last = self.mlp[-1]
            assert isinstance(last, nn.Linear)
            last.bias.fill_(-3.0)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(rows,) purchase logits of tokenized sentences."""
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.mlp(mean_pool(hidden.float(), attention_mask)).squeeze(-1)


_SENTENCE_END = re.compile(r"(?<=[.!?;])\s+")


def split_sentences(text: str) -> list[str]:
    """A text's sentences (at least one)."""
    return [s for s in _SENTENCE_END.split(text.strip()) if s] or [text]


def full_texts(df: pd.DataFrame) -> list[str]:
    """User, product and offer in one sentence (text mode)."""
    return [f"{u} [SEP] {i} [SEP] {o}" for u, i, o in
            zip(df["user_text"].astype(str), df["item_text"].astype(str), offer_text(df), strict=True)]


def _chunked(keys: np.ndarray, fn: Callable[[np.ndarray], torch.Tensor]) -> torch.Tensor:
    """``fn(keys)`` computed over chunks of at most ``PAIR_CHUNK`` keys and joined (one call when fewer): warming
    every customer with a whole catalog never holds the head's activations of a million pairs at once."""
    if len(keys) <= PAIR_CHUNK:
        return fn(keys)
    return torch.cat([fn(keys[start:start + PAIR_CHUNK]) for start in range(0, len(keys), PAIR_CHUNK)])


class PairMemo:
    """Per (user, product) pair, the offer-independent coefficients of one or more heads, computed once.

    Its index is a dense int32 table over users x products when that has at most ``PAIR_TABLE_CELLS``
    cells (40 MB; the default world needs 4 MB), and a sorted key array otherwise. It holds at most
    ``limit`` pairs and starts afresh when a call would exceed that.
    """

    def __init__(self, width: int, device: torch.device, cells: int) -> None:
        self.width, self.device, self.cells = width, device, cells
        self.reset()

    def reset(self) -> None:
        """Forget every memoised pair."""
        self.keys = np.zeros(0, np.int64)
        self.slots = np.zeros(0, np.int64)
        self.buf = torch.empty(0, self.width, device=self.device)
        self.count = 0
        self.table = np.full(self.cells, -1, np.int32) if 0 < self.cells <= PAIR_TABLE_CELLS else None

    def get(self, keys: np.ndarray, limit: int, compute: Callable[[np.ndarray], torch.Tensor],
            expand: Callable[[np.ndarray], np.ndarray] | None = None) -> torch.Tensor:
        """Rows of coefficients for ``keys``; ``compute(new keys)`` fills in the pairs not held yet, and
        ``expand(new keys)`` (optional) widens them to a superset worth computing in the same pass."""
        slots = self._lookup(keys)
        missing = slots < 0
        if missing.any():
            new_keys = np.unique(keys[missing])
            if expand is not None:
                wide = np.unique(expand(new_keys))
                wide = wide[self._lookup(wide) < 0]
                if self.count + len(wide) <= limit:
                    new_keys = wide
            if len(new_keys) > limit:  # more new pairs than the memo holds: computed, not memoised
                return self._gather_uncached(keys, compute)
            if self.count + len(new_keys) > limit:
                self.reset()
                return self.get(keys, limit, compute)
            coef = compute(new_keys)
            start = self.count
            if start + len(new_keys) > len(self.buf):
                grown = torch.empty(max(2 * len(self.buf), start + len(new_keys), 1024), self.width, device=self.device)
                grown[:start] = self.buf[:start]
                self.buf = grown
            self.buf[start:start + len(new_keys)] = coef
            self.count += len(new_keys)
            self._store(new_keys, np.arange(start, start + len(new_keys)))
            slots = self._lookup(keys)
        if self.device.type == "cpu":  # numpy's gather is the cheaper one for a step's few hundred rows
            return torch.from_numpy(self.buf.detach().numpy()[slots])
        return self.buf[torch.as_tensor(slots, device=self.device)]

    def _gather_uncached(self, keys: np.ndarray, compute: Callable[[np.ndarray], torch.Tensor]) -> torch.Tensor:
        uniq, inverse = np.unique(keys, return_inverse=True)
        return compute(uniq)[torch.as_tensor(inverse, device=self.device)]

    def _lookup(self, keys: np.ndarray) -> np.ndarray:
        if self.table is not None:
            return self.table[keys]
        pos = np.searchsorted(self.keys, keys)
        found = pos < len(self.keys)
        found[found] = self.keys[pos[found]] == keys[found]
        return np.where(found, self.slots[np.minimum(pos, max(len(self.slots) - 1, 0))]
                        if len(self.slots) else -1, -1)

    def _store(self, keys: np.ndarray, slots: np.ndarray) -> None:
        if self.table is not None:
            self.table[keys] = slots
            return
        at = np.searchsorted(self.keys, keys)
        self.keys = np.insert(self.keys, at, keys)
        self.slots = np.insert(self.slots, at, slots)


class BertConversionModel:
    """A fine-tuned BERT conversion model with calibrated, batched, cached inference."""

    _pairs: PairMemo      # the main head's per-pair coefficients (see _pair_coefficients)
    _members: PairMemo    # the ensemble heads', side by side

    def __init__(self, net: HybridNet | TextNet, tokenizer: Any, mode: str, max_length: int,
                 calibrator: Calibrator | None = None, meta: dict[str, Any] | None = None,
                 device: torch.device | None = None, bf16: bool | None = None, segment: bool = False) -> None:
        self.net, self.tokenizer, self.mode, self.max_length = net, tokenizer, mode, max_length
        self.segment = segment and mode == "hybrid"
        self.calibrator = calibrator or Calibrator()
        self.meta = meta or {}
        self.device = device or pick_device()
        self.bf16 = (self.device.type == "cuda") if bf16 is None else bf16
        self.name = f"bert_{mode}"
        self.net.to(self.device).eval()
        self._cache: dict[str, dict[str, int]] = {"user": {}, "item": {}}
        self._cache_rows: dict[str, list[torch.Tensor]] = {"user": [], "item": []}
        self._cache_mat: dict[str, torch.Tensor | None] = {"user": None, "item": None}
        self.encoder_calls = 0
        self._bound: tuple[torch.Tensor, torch.Tensor] | None = None
        self.pair_cache_limit = 4_000_000
        self._reset_pairs()

    # ------------------------------------------------------------------ encoding
    def tokenize(self, texts: Sequence[str], max_length: int | None = None) -> dict[str, torch.Tensor]:
        """Token ids and attention mask of ``texts`` on the model's device (padded, truncated to ``max_length``)."""
        enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=max_length or self.max_length,
                             return_tensors="pt")
        return {"input_ids": enc["input_ids"].to(self.device), "attention_mask": enc["attention_mask"].to(self.device)}

    def hidden_states(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder token states of ``texts`` (gradients follow the caller's mode).

        With sentence segmentation each distinct sentence is encoded once and a text's token states
        are its sentences' states side by side: a profile is a set of facts, so two customers
        stating the same facts get the same representation, whatever the order of the sentences,
        and a model cannot single out (and memorise) one customer by the exact wording of the whole.
        """
        if not self.segment:
            enc = self.tokenize(texts)
            self.encoder_calls += 1
            with autocast(self.device, self.bf16):
                hidden = self.net.encoder(**enc).last_hidden_state
            return hidden.float(), enc["attention_mask"]
        parts = [split_sentences(t) for t in texts]
        uniq = list(dict.fromkeys(s for p in parts for s in p))
        where = {s: i for i, s in enumerate(uniq)}
        enc = self.tokenize(uniq)
        self.encoder_calls += 1
        with autocast(self.device, self.bf16):
            hidden = self.net.encoder(**enc).last_hidden_state.float()
        lengths = enc["attention_mask"].sum(1)
        pieces = [[hidden[where[s], : lengths[where[s]]] for s in p] for p in parts]
        total = [sum(len(x) for x in ps) for ps in pieces]
        out = hidden.new_zeros(len(texts), max(total), hidden.shape[-1])
        mask = torch.zeros(len(texts), max(total), dtype=torch.long, device=hidden.device)
        for k, ps in enumerate(pieces):
            row = torch.cat(ps)
            out[k, : len(row)] = row
            mask[k, : len(row)] = 1
        return out, mask

    @torch.no_grad()
    def embed(self, which: str, texts: Sequence[str], batch_size: int = 128) -> torch.Tensor:
        """Tower embeddings of ``texts`` (hybrid mode), computed in length-sorted batches."""
        assert isinstance(self.net, HybridNet)
        order = np.argsort([len(t) for t in texts], kind="stable")
        out = torch.empty(len(texts), self.net.dim, device=self.device)
        for start in range(0, len(texts), batch_size):
            idx = order[start:start + batch_size]
            hidden, mask = self.hidden_states([texts[i] for i in idx])
            out[torch.as_tensor(idx, device=self.device)] = self.net.tower(which, hidden, mask)
        return out

    def cached(self, which: str, texts: Sequence[str]) -> torch.Tensor:
        """Tower embeddings looked up in the per-text cache; only unseen texts run the encoder."""
        index = self._cache[which]
        new = [t for t in dict.fromkeys(texts) if t not in index]
        if new:
            emb = self.embed(which, new)
            for t in new:
                index[t] = len(index)
            self._cache_mat[which] = torch.cat([*self._cache_rows[which], emb])
            self._cache_rows[which] = [self._cache_mat[which]]  # type: ignore[list-item]
        cache = self._cache_mat[which]
        assert cache is not None
        return cache[torch.as_tensor([index[t] for t in texts], device=self.device)]

    def bind(self, user_texts: Sequence[str], item_texts: Sequence[str], list_price: np.ndarray) -> None:
        """Precompute tower embeddings for every user and product id of a market (hybrid mode), so that
        :meth:`predict_logits_ids` scores offers by id without the encoder."""
        if self.mode != "hybrid":
            self._bound = None
            return
        self._bound = (self.cached("user", [scrub(t) for t in user_texts]),
                       self.cached("item", [scrub(t) for t in item_texts]))
        self._reset_pairs()
        self.net.eval()
        lp = np.asarray(list_price, dtype=float)
        self._log_list = torch.as_tensor(
            numeric_features({"price": lp, "list_price": lp, "coupon": np.zeros(len(lp)), "day": 0})[
                :, _F["log_list_price"]], device=self.device)

    @torch.no_grad()
    def predict_logits_ids(self, users: np.ndarray, items: np.ndarray, offers: Mapping[str, Any]) -> np.ndarray:
        """Calibrated log-odds (the product's utility) for offers given by bound ids (see :meth:`bind`) and
        offer columns (list_price, price, coupon, day, optionally coupons_last_7d and price_hist_*)."""
        if self._bound is None:
            raise RuntimeError("call bind(user_texts, item_texts) before predict_logits_ids")
        assert isinstance(self.net, HybridNet)
        coef = self._pair_coefficients(np.asarray(users), np.asarray(items))
        if self.device.type == "cpu":  # the head's last step in numpy: an env step's batch is small
            num_np = numeric_features(offers).astype(np.float64)
            z_np = self.net.head.combine_numpy(coef.detach().numpy().astype(np.float64), num_np, weekday_index(offers))
            return self.calibrator.logit(z_np)
        num = torch.as_tensor(numeric_features(offers), device=self.device)
        wd = torch.as_tensor(weekday_index(offers), device=self.device)
        z = self.net.head.combine(coef, num, wd)
        return self.calibrator.logit(z.float().cpu().numpy().astype(float))

    @torch.no_grad()
    def predict_member_logits_ids(self, users: np.ndarray, items: np.ndarray, offers: Mapping[str, Any]
                                  ) -> np.ndarray:
        """(ensemble_size, rows) calibrated log-odds of each ensemble head (calibrated like the main head)
        for offers given as in :meth:`predict_logits_ids`; the members' pair coefficients are memoised."""
        if self.ensemble_size == 0:
            raise ValueError("this model has no ensemble heads; refit with `--set ensemble=5` (hybrid mode)")
        if self._bound is None:
            raise RuntimeError("call bind(user_texts, item_texts) before predict_member_logits_ids")
        assert isinstance(self.net, HybridNet)
        coef = self._member_coefficients(np.asarray(users), np.asarray(items))
        n = OfferHead.N_OUT
        heads = self.net.members()
        if self.device.type == "cpu":
            num_np = numeric_features(offers).astype(np.float64)
            wd_np = weekday_index(offers)
            c = coef.detach().numpy().astype(np.float64).reshape(len(coef), len(heads), n)
            z_np = np.stack([head.combine_numpy(c[:, k], num_np, wd_np) for k, head in enumerate(heads)])
            return self.calibrator.logit(z_np)
        num = torch.as_tensor(numeric_features(offers), device=self.device)
        wd = torch.as_tensor(weekday_index(offers), device=self.device)
        z = torch.stack([head.combine(coef[:, k * n:(k + 1) * n], num, wd) for k, head in enumerate(heads)])
        return self.calibrator.logit(z.float().cpu().numpy().astype(float))

    @torch.no_grad()
    def warm_pairs(self, items: np.ndarray, members: bool = False) -> None:
        """Compute the pair coefficients of every bound customer with each of ``items`` now (e.g. an env's
        products when it is built), so that the first steps do not pay for the head's MLP."""
        if self._bound is None:
            raise RuntimeError("call bind(user_texts, item_texts) before warm_pairs")
        items = np.asarray(items, dtype=np.int64)
        n_users = min(len(self._bound[0]), self.pair_cache_limit // max(len(items), 1))  # what the memo holds
        users = np.repeat(np.arange(n_users), len(items))
        every = np.tile(items, n_users)
        self._pair_coefficients(users, every, prefetch=False)
        if members and self.ensemble_size:
            self._member_coefficients(users, every, prefetch=False)

    @property
    def ensemble_size(self) -> int:
        """How many ensemble heads the model carries (0: none)."""
        return len(self.net.ensemble) if isinstance(self.net, HybridNet) else 0

    def _pair_keys_of(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        assert self._bound is not None
        return users.astype(np.int64) * len(self._bound[1]) + items

    def _pair_inputs(self, keys: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        assert self._bound is not None
        u_mat, i_mat = self._bound
        u = torch.as_tensor(keys // len(i_mat), device=self.device)
        i = torch.as_tensor(keys % len(i_mat), device=self.device)
        return u_mat[u], i_mat[i], self._log_list[i]

    def _pair_coefficients(self, users: np.ndarray, items: np.ndarray, prefetch: bool = True) -> torch.Tensor:
        """The head's offer-independent coefficients per (user, product) pair, memoised for the pairs
        actually offered, so that a repeated pair costs a lookup instead of the head's MLP. The memo
        holds at most ``pair_cache_limit`` pairs (N_OUT floats each); see :class:`PairMemo`."""
        assert isinstance(self.net, HybridNet)
        head = self.net.head

        def compute(keys: np.ndarray) -> torch.Tensor:
            with torch.no_grad():
                return _chunked(keys, lambda k: head.pair(*self._pair_inputs(k)))

        return self._pairs.get(self._pair_keys_of(users, items), self.pair_cache_limit, compute,
                               self._every_item if prefetch else None)

    def _member_coefficients(self, users: np.ndarray, items: np.ndarray, prefetch: bool = True) -> torch.Tensor:
        """The ensemble heads' pair coefficients side by side ((rows, K * N_OUT)), memoised like the main
        head's, one batched pass over the heads per new pair (at most ``pair_cache_limit`` pairs)."""
        assert isinstance(self.net, HybridNet)
        heads = self.net.members()

        def members(keys: np.ndarray) -> torch.Tensor:
            inputs = self._pair_inputs(keys)
            return torch.cat([head.pair(*inputs) for head in heads], dim=1)

        def compute(keys: np.ndarray) -> torch.Tensor:
            with torch.no_grad():
                return _chunked(keys, members)

        return self._members.get(self._pair_keys_of(users, items), self.pair_cache_limit, compute,
                                 self._every_item if prefetch else None)

    def _every_item(self, keys: np.ndarray) -> np.ndarray:
        """The pairs of each customer in ``keys`` with every bound product, when products are few (at most
        ``PREFETCH_ITEMS``): the first time a customer is offered anything, their pairs are computed in one
        pass, so later steps with that customer cost lookups only (a coupon cohort views products of any
        category). Otherwise ``keys`` unchanged."""
        assert self._bound is not None
        n_items = len(self._bound[1])
        if n_items > PREFETCH_ITEMS:
            return keys
        users = np.unique(keys // n_items)
        return (users[:, None] * n_items + np.arange(n_items)[None, :]).ravel()

    @property
    def _pair_table(self) -> np.ndarray | None:
        return self._pairs.table

    def _reset_pairs(self) -> None:
        cells = 0 if self._bound is None else len(self._bound[0]) * len(self._bound[1])
        self._pairs = PairMemo(OfferHead.N_OUT, self.device, cells)
        self._members = PairMemo(OfferHead.N_OUT * max(self.ensemble_size, 1), self.device, cells)

    def clear_cache(self) -> None:
        """Forget the cached tower embeddings of user and product texts (recomputed on the next prediction)."""
        for which in ("user", "item"):
            self._cache[which] = {}
            self._cache_rows[which] = []
            self._cache_mat[which] = None

    @property
    def world_config(self) -> dict[str, Any] | None:
        """The world config of the logs the model was fitted on (None: unknown)."""
        world = self.meta.get("world")
        return world if isinstance(world, dict) else None

    @property
    def cache_size(self) -> int:
        """Number of user and product texts whose tower embeddings are cached."""
        return len(self._cache["user"]) + len(self._cache["item"])

    # ------------------------------------------------------------------ prediction
    @torch.no_grad()
    def predict_logits(self, batch: Batch, batch_size: int = 8192) -> np.ndarray:
        """Uncalibrated purchase logits per row (ValueError naming a missing column). Texts are scrubbed of personal
        identifiers first; a hybrid model computes each distinct text's tower embedding once (cached)."""
        df = validate_batch(batch, ("user_text", "item_text", "list_price", "price", "coupon", "day"))
        self.net.eval()
        if self.mode == "text":
            texts = [scrub(t) for t in full_texts(df)]
            out = []
            for start in range(0, len(texts), 64):
                enc = self.tokenize(texts[start:start + 64])
                self.encoder_calls += 1
                with autocast(self.device, self.bf16):
                    out.append(self.net(**enc).float().cpu())
            return torch.cat(out).numpy().astype(float)
        assert isinstance(self.net, HybridNet)
        users = self._codes(df["user_text"])
        items = self._codes(df["item_text"])
        num = torch.as_tensor(numeric_features(df), device=self.device)
        wd = torch.as_tensor(weekday_index(df), device=self.device)
        logits = []
        for start in range(0, len(df), batch_size):
            sl = slice(start, start + batch_size)
            u, i = self.cached("user", users[sl]), self.cached("item", items[sl])
            logits.append(self.net.head(u, i, num[sl], wd[sl]))
        return torch.cat(logits).float().cpu().numpy().astype(float)

    @staticmethod
    def _codes(col: pd.Series) -> list[str]:
        cat = col.astype("category")
        cleaned = np.asarray([scrub(str(t)) for t in cat.cat.categories], dtype=object)
        return list(cleaned[cat.cat.codes.to_numpy()])

    def predict_proba(self, batch: Batch) -> np.ndarray:
        """Calibrated P(purchase) per row, in (0, 1)."""
        return self.calibrator(self.predict_logits(batch))

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path, extra_meta: dict[str, Any] | None = None) -> None:
        """A `save_pretrained` encoder folder, the head's weights and promogym.json, written atomically."""
        meta = {**self.meta, **(extra_meta or {}), "kind": CHECKPOINT_KIND, "schema_version": SCHEMA_VERSION,
                "mode": self.mode, "max_length": self.max_length, "numeric_features": list(NUMERIC_FEATURES),
                "calibration": self.calibrator.to_dict(), "bf16": self.bf16, "segment": self.segment,
                "ensemble": self.ensemble_size}
        with atomic_dir(path) as tmp:
            write_model_files(self.net, self.tokenizer, meta, tmp)
        self.meta = meta

    @classmethod
    def load(cls, path: str | Path, device: str | None = None) -> BertConversionModel:
        """Read a checkpoint folder: promogym.json is checked first; the encoder is read from safetensors and
        the head with ``torch.load(weights_only=True)`` (no code runs). A missing, truncated or incomplete
        weight file raises FileNotFoundError or ValueError naming it; an unusable tower cache is ignored."""
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        p = Path(path)
        meta = read_meta(p)
        encoder, tokenizer = load_bert_folder(p / "encoder", REFIT)
        try:
            ensemble = meta.get("ensemble", 0)
            if not isinstance(ensemble, int) or isinstance(ensemble, bool) or ensemble < 0:
                raise ValueError(f"ensemble must be a count of heads, got {ensemble!r}")
            net = build_net(encoder, meta["mode"], meta.get("net", {}), ensemble=ensemble)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{p / META_FILE}: bad network settings ({brief(exc)}); {REFIT}") from exc
        load_head_weights(net, p / HEAD_FILE, REFIT)
        dev = pick_device(device)
        bf16 = bool(meta.get("bf16", False)) and dev.type == "cuda"
        model = cls(net, tokenizer, meta["mode"], meta["max_length"], Calibrator.from_dict(meta["calibration"]),
                    meta, dev, bf16, segment=bool(meta.get("segment", False)))
        cache = _read_tower_cache(p, net) if (p / TOWER_CACHE_FILE).is_file() and not bf16 else None
        for which, (texts, mat) in (cache or {}).items():
            model._cache[which] = {t: k for k, t in enumerate(texts)}
            on_device = mat.to(dev)
            model._cache_mat[which] = on_device
            model._cache_rows[which] = [on_device]
        return model

    def save_tower_cache(self, path: str | Path, user_texts: Sequence[str], item_texts: Sequence[str]) -> Path:
        """Store the tower embeddings of these texts beside the checkpoint at ``path`` (hybrid mode), so
        that loading it and binding a market with these texts skips the encoder (~17 s for 5,000
        profiles on one CPU thread). The file carries a fingerprint of the weights and of its own contents
        (texts and embeddings) and is ignored when either changed."""
        if self.mode != "hybrid":
            raise ValueError("tower caches exist in hybrid mode only")
        self.cached("user", [scrub(t) for t in user_texts])
        self.cached("item", [scrub(t) for t in item_texts])
        p = Path(path)
        entries: dict[str, tuple[list[str], torch.Tensor]] = {}
        for which in ("user", "item"):
            mat = self._cache_mat[which]
            assert mat is not None
            entries[which] = (list(self._cache[which]), mat.float().cpu().contiguous())
        data: dict[str, Any] = {"format": TOWER_CACHE_FORMAT, **entries,
                                "fingerprint": _cache_fingerprint(_weights_fingerprint(p), entries)}
        with atomic_path(p / TOWER_CACHE_FILE) as tmp:
            torch.save(data, tmp)
        return p / TOWER_CACHE_FILE


def _weights_fingerprint(path: Path) -> str:
    """sha256 over the checkpoint's weight files: a cache of embeddings is valid for these weights only."""
    h = hashlib.sha256()
    for f in sorted([path / HEAD_FILE, *(path / "encoder").glob("*.safetensors"), *(path / "encoder").glob("*.bin")]):
        if f.is_file():
            h.update(f.name.encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def _cache_fingerprint(weights: str, entries: Mapping[str, tuple[list[str], torch.Tensor]]) -> str:
    """sha256 over the weights' fingerprint and the cache's own texts and embeddings."""
    h = hashlib.sha256(weights.encode())
    for which in ("user", "item"):
        texts, mat = entries[which]
        arr = mat.detach().cpu().float().contiguous().numpy()
        h.update(json.dumps([which, texts, list(arr.shape)]).encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def _read_tower_cache(path: Path, net: HybridNet | TextNet) -> dict[str, tuple[list[str], torch.Tensor]] | None:
    """The stored tower embeddings of the checkpoint at ``path``, or None (with a logged warning) when the
    file is unreadable, malformed, or its fingerprint does not cover these weights and these contents:
    the embeddings are then computed afresh."""
    f = path / TOWER_CACHE_FILE

    def ignored(why: str) -> None:
        log.warning("%s %s; ignored (the tower embeddings are recomputed)", f, why)

    if not isinstance(net, HybridNet):
        ignored("is for hybrid checkpoints only")
        return None
    try:
        saved = torch.load(f, map_location="cpu", weights_only=True)
    except Exception as exc:
        ignored(f"is unreadable ({brief(exc)})")
        return None
    if not isinstance(saved, dict) or saved.get("format") != TOWER_CACHE_FORMAT:
        ignored(f"is not a tower cache of format {TOWER_CACHE_FORMAT}")
        return None
    entries: dict[str, tuple[list[str], torch.Tensor]] = {}
    for which in ("user", "item"):
        entry: Any = saved.get(which)
        ok = isinstance(entry, tuple | list) and len(entry) == 2
        texts, mat = entry if ok else ([], None)
        if not (ok and isinstance(texts, list) and all(isinstance(t, str) for t in texts)
                and len(set(texts)) == len(texts) and isinstance(mat, torch.Tensor) and mat.is_floating_point()
                and tuple(mat.shape) == (len(texts), net.dim)):
            ignored(f"has a malformed {which} table")
            return None
        entries[which] = (texts, mat.float())
    if saved.get("fingerprint") != _cache_fingerprint(_weights_fingerprint(path), entries):
        ignored("does not match the checkpoint's weights or its own contents")
        return None
    return entries


def build_net(encoder: Any, mode: str, net_cfg: dict[str, Any], ensemble: int = 0) -> HybridNet | TextNet:
    """The network of ``mode``; ``ensemble`` extra heads (hybrid only)."""
    if mode == "hybrid":
        return HybridNet(encoder, **net_cfg, ensemble=ensemble)
    if ensemble:
        raise ValueError("ensemble heads exist in hybrid mode only")
    if mode == "text":
        return TextNet(encoder, **{k: v for k, v in net_cfg.items() if k in ("width", "dropout")})
    raise ValueError(f"mode must be 'hybrid' or 'text', got {mode!r}")


def write_model_files(net: HybridNet | TextNet, tokenizer: Any, meta: dict[str, Any], folder: Path) -> None:
    """Encoder via save_pretrained, non-encoder weights in head.pt, metadata JSON."""
    net.encoder.save_pretrained(str(folder / "encoder"))
    tokenizer.save_pretrained(str(folder / "encoder"))
    head = {k: v.detach().cpu() for k, v in net.state_dict().items() if not k.startswith("encoder.")}
    torch.save(head, folder / HEAD_FILE)
    (folder / META_FILE).write_text(json.dumps(meta, indent=2, default=float) + "\n")


def read_meta(path: Path) -> dict[str, Any]:
    """A checkpoint folder's ``promogym.json``, checked: FileNotFoundError when the folder is missing, ValueError when
    it is not a promogym BERT checkpoint or was written with another feature schema."""
    f = path / META_FILE
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint folder not found: {path}")
    if not f.is_file():
        raise ValueError(f"{path} is not a promogym BERT checkpoint: {META_FILE} is missing")
    try:
        meta = json.loads(f.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{f}: unreadable checkpoint metadata ({brief(exc)}); {REFIT}") from exc
    if not isinstance(meta, dict):
        raise ValueError(f"{f}: checkpoint metadata must be a JSON object; {REFIT}")
    if meta.get("kind") != CHECKPOINT_KIND:
        raise ValueError(f"{path} is not a promogym BERT checkpoint (kind {meta.get('kind')!r})")
    if meta.get("schema_version") != SCHEMA_VERSION or meta.get("numeric_features") != list(NUMERIC_FEATURES):
        raise ValueError(f"{path} was written with an incompatible feature schema "
                         f"(version {meta.get('schema_version')}, features {meta.get('numeric_features')}); "
                         f"this promogym expects version {SCHEMA_VERSION} with {list(NUMERIC_FEATURES)}; {REFIT}")
    return meta


def _register() -> None:
    # the BERT fitter (promogym.predictors.train.fit) reads a log file and a FitConfig: no uniform fit here
    register_model("bert", task="conversion", load=BertConversionModel.load, placeholder="checkpoint dir",
                   help="the BERT conversion model (a folder written by `promogym fit --kind bert`)")


_register()
