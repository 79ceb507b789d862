"""The visit's choice: a multinomial logit over the viewed products with an outside option.

A visit views some products and buys at most one of them, with probabilities
``p_j = e^{z_j} / (1 + sum_k e^{z_k})`` (utility 0 for buying nothing; one viewed product: ``sigmoid(z)``).
A model's logit of a row is that row's utility ``z``. Here:

* :func:`choice_nll`, the conditional-logit likelihood that trains a model on whole visits;
* :func:`visit_choice_proba`, per-row choice probabilities within each visit from the logits;
* :func:`iia_rows` and :func:`choice_subset_rows`: by the MNL's independence of irrelevant
  alternatives, a visit restricted to a subset S of its products is again an MNL over S given that
  the choice fell in S (a product of S or nothing). On the rows of :func:`iia_rows` (S = the row's own
  product) ``P(purchased = 1) = sigmoid(z)`` exactly, so a binary model trained there estimates the
  utility without bias.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:  # torch is imported where the likelihood is computed: the baselines never need it
    import torch


def visit_codes(visit_ids: np.ndarray | pd.Series) -> tuple[np.ndarray, int]:
    """(per-row visit index 0..V-1, V): dense codes of any visit id column (order of first appearance)."""
    codes, uniques = pd.factorize(np.asarray(visit_ids), sort=False)
    return codes.astype(np.int64), len(uniques)


def choice_nll(logits: torch.Tensor, visit_index: torch.Tensor, y: torch.Tensor,
               n_visits: int | None = None) -> torch.Tensor:
    """Mean negative log-likelihood PER VISIT of the visits' choices under the MNL with an outside option:
    ``(-sum_rows y * z + sum_visits log(1 + sum_{j in visit} e^{z_j})) / visits``.

    ``visit_index`` (rows,) holds dense visit codes 0..V-1 (:func:`visit_codes`); ``y`` is 1 on a visit's
    chosen row, 0 elsewhere. Each visit's log-sum-exp is shifted by ``max(0, max_j z_j)``, so large
    logits never overflow. When every visit shows one product this is binary cross-entropy with logits,
    exactly (mean per visit = mean per row).
    """
    import torch

    z = logits if logits.dtype in (torch.float32, torch.float64) else logits.float()
    idx = visit_index.to(z.device).long()
    v = int(n_visits) if n_visits is not None else int(idx.max().item()) + 1 if len(idx) else 0
    shift = torch.zeros(v, dtype=z.dtype, device=z.device).scatter_reduce(
        0, idx, z.detach(), reduce="amax", include_self=True)  # max(0, max_j z_j) per visit
    centred = z - shift[idx]
    y = y.to(device=z.device, dtype=z.dtype)
    sums = torch.zeros(v, dtype=z.dtype, device=z.device).index_add(0, idx, torch.exp(centred))
    bought = torch.zeros(v, dtype=z.dtype, device=z.device).index_add(0, idx, y)
    chosen = torch.zeros(v, dtype=z.dtype, device=z.device).index_add(0, idx, y * centred)
    # log(1 + sum_j e^{z_j}) - sum_j y_j z_j, with the shift cancelled where the visit bought
    per_visit = torch.log(torch.exp(-shift) + sums) + shift * (1 - bought) - chosen
    return per_visit.sum() / max(v, 1)


def visit_choice_proba(logits: np.ndarray, visit_ids: np.ndarray | pd.Series) -> np.ndarray:
    """Per-row MNL probability of buying the row's product within its visit (outside option utility 0):
    ``e^{z_j} / (1 + sum_{k in visit} e^{z_k})``; a visit's rows sum to less than 1."""
    z = np.asarray(logits, dtype=float)
    codes, v = visit_codes(visit_ids)
    shift = np.zeros(v)
    np.maximum.at(shift, codes, z)
    e = np.exp(z - shift[codes])
    denom = np.exp(-shift) + np.bincount(codes, weights=e, minlength=v)
    return e / denom[codes]


def _visit_bought(visit_ids: np.ndarray | pd.Series, bought: np.ndarray) -> np.ndarray:
    """Per row: how many purchases its visit holds among the rows flagged ``bought``."""
    codes, v = visit_codes(visit_ids)
    return np.bincount(codes, weights=bought.astype(float), minlength=v)[codes]


def choice_subset_rows(df: pd.DataFrame | Mapping[str, Any], keep: np.ndarray) -> np.ndarray:
    """Rows of ``keep`` whose visit bought nothing outside ``keep``: each visit's kept rows are then a
    choice set whose MNL holds exactly (its choice fell in the subset), so they train without bias."""
    keep = np.asarray(keep, dtype=bool)
    bought = np.asarray(df["purchased"]).astype(bool)
    outside = _visit_bought(np.asarray(df["visit_id"]), bought & ~keep)
    return keep & (outside == 0)


def iia_rows(df: pd.DataFrame | Mapping[str, Any]) -> np.ndarray:
    """Bool mask: rows whose visit bought this row's product or nothing. On them ``P(purchased = 1)`` is
    ``sigmoid(utility)`` exactly (the MNL restricted to {this product, nothing}); every row of a visit
    without a purchase qualifies, and of a visit with one, only the chosen row."""
    bought = np.asarray(df["purchased"]).astype(bool)
    return bought | (_visit_bought(np.asarray(df["visit_id"]), bought) == 0)


def visit_layout(visit_ids: np.ndarray | pd.Series) -> tuple[np.ndarray, np.ndarray, int]:
    """(codes, positions, width): row r is cell (codes[r], positions[r]) of a (visits, width) array, so
    per-visit array functions (e.g. the world's ``choice_proba``) apply to rows of logs."""
    codes, v = visit_codes(visit_ids)
    order = np.argsort(codes, kind="stable")
    counts = np.bincount(codes, minlength=v)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    pos = np.empty(len(codes), np.int64)
    pos[order] = np.arange(len(codes)) - np.repeat(starts, counts)
    width = int(counts.max()) if v else 1
    return codes, pos, max(width, 1)
