"""The visit's multinomial-logit choice: likelihood, per-visit probabilities and the IIA rows."""

import numpy as np
import pandas as pd
import pytest
import torch
from torch.nn import functional as F

from promogym.envs.market.world import mnl_from_utility
from promogym.predictors.choice import (
    choice_nll,
    choice_subset_rows,
    iia_rows,
    visit_choice_proba,
    visit_codes,
    visit_layout,
)


def _nll(z, visits, y):
    codes, n = visit_codes(np.asarray(visits))
    return choice_nll(torch.as_tensor(z, dtype=torch.float64), torch.as_tensor(codes), torch.as_tensor(y), n)


def test_one_product_per_visit_is_binary_cross_entropy(rng):
    z = rng.normal(0, 3, 500)
    y = (rng.random(500) < 0.3).astype(float)
    nll = _nll(z, np.arange(500) * 7, y)
    bce = F.binary_cross_entropy_with_logits(torch.as_tensor(z), torch.as_tensor(y))
    assert float(nll) == pytest.approx(float(bce), rel=1e-6)


def test_choice_nll_matches_the_mnl_and_survives_large_logits():
    z = np.array([0.5, -1.0, 2.0, 0.1, -0.3])
    visits = np.array([4, 4, 4, 9, 9])
    y = np.array([0, 0, 1, 0, 0])
    p = visit_choice_proba(z, visits)
    expected = -(np.log(p[2]) + np.log(1 - p[3] - p[4])) / 2  # chose row 2; bought nothing
    assert float(_nll(z, visits, y)) == pytest.approx(expected, rel=1e-9)
    big = torch.tensor([800.0, 799.0, -900.0], requires_grad=True)
    loss = choice_nll(big, torch.tensor([0, 0, 1]), torch.tensor([1.0, 0.0, 0.0]))
    loss.backward()
    assert big.grad is not None and torch.isfinite(loss) and torch.isfinite(big.grad).all()
    assert float(loss.detach()) == pytest.approx(np.log1p(np.exp(-1.0)) / 2, rel=1e-5)


def test_visit_choice_proba_is_the_worlds_mnl(rng):
    n = 3000
    visits = rng.integers(0, 900, n) * 3 + 11  # unsorted, gappy ids, 1..many rows per visit
    z = rng.normal(-1, 2, n)
    p = visit_choice_proba(z, visits)
    codes, v = visit_codes(visits)
    assert (np.bincount(codes, weights=p, minlength=v) < 1).all() and (p > 0).all()
    codes, pos, width = visit_layout(visits)
    grid = np.full((v, width), -np.inf)
    grid[codes, pos] = z
    avail = np.isfinite(grid)
    world = mnl_from_utility(np.where(avail, grid, 0.0), avail)
    np.testing.assert_allclose(p, world[codes, pos], rtol=1e-10, atol=0)
    single = np.arange(5)
    np.testing.assert_allclose(visit_choice_proba(z[:5], single), 1 / (1 + np.exp(-z[:5])), rtol=1e-12)


def test_iia_rows_keep_the_chosen_row_and_visits_without_a_purchase():
    df = pd.DataFrame({"visit_id": [1, 1, 1, 2, 2, 3, 4, 4],
                       "purchased": [0, 1, 0, 0, 0, 1, 0, 0]})
    np.testing.assert_array_equal(iia_rows(df), [False, True, False, True, True, True, True, True])
    # a subset keeps a visit unless it bought a product outside the subset
    keep = np.array([True, False, True, True, False, True, True, True])
    np.testing.assert_array_equal(choice_subset_rows(df, keep), [False, False, False, True, False, True, True, True])


def _synthetic_visits(rng, visits=6000, a=0.5, b=-3.0):
    """Visits of 1-4 products with utility a + b * x; one MNL choice per visit."""
    sizes = rng.integers(1, 5, visits)
    visit = np.repeat(np.arange(visits), sizes)
    x = rng.normal(0, 0.5, len(visit))
    u = a + b * x
    p = visit_choice_proba(u, visit)
    codes, pos, width = visit_layout(visit)
    grid = np.zeros((visits, width))
    grid[codes, pos] = p
    chosen = (rng.random(visits)[:, None] > np.cumsum(grid, axis=1)).sum(axis=1)
    y = (pos == chosen[codes]).astype(float)
    return pd.DataFrame({"visit_id": visit, "x": x, "purchased": y})


def _fit(df, loss):
    theta = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    x = torch.as_tensor(df["x"].to_numpy().copy())
    y = torch.as_tensor(df["purchased"].to_numpy().copy())
    codes, n = visit_codes(df["visit_id"].to_numpy())
    idx = torch.as_tensor(codes)
    opt = torch.optim.LBFGS([theta], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        z = theta[0] + theta[1] * x
        value = choice_nll(z, idx, y, n) if loss == "choice" else F.binary_cross_entropy_with_logits(z, y)
        value.backward()
        return value

    opt.step(closure)
    return theta.detach().numpy()


def test_conditional_logit_recovers_the_price_coefficient_that_bce_on_all_rows_misses(rng):
    df = _synthetic_visits(rng)
    choice = _fit(df, "choice")
    naive = _fit(df, "bce")
    iia = _fit(df[iia_rows(df)], "bce")
    assert abs(choice[1] + 3.0) < 0.25 and abs(choice[0] - 0.5) < 0.15
    assert abs(iia[1] + 3.0) < 0.35  # binary likelihood on the IIA rows: unbiased too
    assert abs(naive[1] + 3.0) > 2 * abs(choice[1] + 3.0) and abs(naive[0] - 0.5) > 0.3


def test_shift_calibration_moves_the_level_and_keeps_effect_sizes() -> None:
    from promogym.predictors.calibration import Calibrator

    rng = np.random.default_rng(0)
    z = rng.normal(-3.0, 1.0, 200_000)
    y = (rng.random(len(z)) < 1 / (1 + np.exp(-(z - 0.5)))).astype(float)  # the model is 0.5 too high
    cal = Calibrator.fit("shift", z, y)
    assert abs(cal.bias + 0.5) < 0.05
    out = cal.logit(z)
    np.testing.assert_allclose(np.diff(out[:100]), np.diff(z[:100]), rtol=1e-9)  # differences untouched
    # temperature scaling rescales differences: what a simulator's price elasticity must not suffer
    temp = Calibrator("temperature", temperature=1.5, bias=0.0).logit(z[:100])
    assert not np.allclose(np.diff(temp), np.diff(z[:100]))
