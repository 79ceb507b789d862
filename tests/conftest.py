"""Shared fixtures: small markets and logs built once per test session."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

from promogym.envs.market import Market
from promogym.envs.market.logs import generate_logs


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


SMALL_WORLD = {"n_products": 40, "n_customers": 1500, "daily_arrivals": 600, "seed": 2}


@pytest.fixture(scope="session")
def small_logs(tmp_path_factory):
    """30k logged offers of a small world, as written by `promogym data` (parquet + sidecar)."""
    path = tmp_path_factory.mktemp("logs") / "logs.parquet"
    market = Market(SMALL_WORLD)
    generate_logs(market, 30_000, seed=0).to_parquet(path, index=False)
    path.with_suffix(".json").write_text(json.dumps({"world": market.config.to_dict()}))
    return path


TINY = {"encoder": "tiny", "head_epochs": 3, "batch_size": 1024, "lr_head": 3e-3}


@pytest.fixture(scope="session")
def tiny_model(small_logs, tmp_path_factory):
    out = tmp_path_factory.mktemp("models") / "tiny"
    from promogym.predictors.train import FitConfig, fit

    return fit(small_logs, FitConfig.from_dict(TINY), out), out


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)
