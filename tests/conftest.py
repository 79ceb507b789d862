"""Shared fixtures: small markets and logs built once per test session."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

from envs.market import Market
from envs.market.logs import generate_logs


@pytest.fixture(scope="session")
def market() -> Market:
    """The default world (200 products, 5,000 customers)."""
    return Market()


@pytest.fixture(scope="session")
def small_market() -> Market:
    return Market({"n_products": 40, "n_customers": 400, "daily_arrivals": 150, "seed": 3})


@pytest.fixture(scope="session")
def logs(market: Market):
    """100k logged offers of the default world."""
    return generate_logs(market, 100_000, seed=7)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)
