"""MiniLM fine-tuning on a real-sized log (slow: `make test-slow`)."""

import numpy as np
import pytest

from promogym.envs.market import Market
from promogym.envs.market.logs import generate_logs
from promogym.predictors.baselines import GBDTConversionModel
from promogym.predictors.data import load_logs, split_rows
from promogym.predictors.evaluate import evaluate
from promogym.predictors.train import FitConfig, fit


@pytest.mark.slow
def test_minilm_hybrid_learns_close_to_the_text_ceiling(tmp_path):
    market = Market()
    path = tmp_path / "logs.parquet"
    generate_logs(market, 100_000, seed=5).to_parquet(path, index=False)
    model = fit(path, FitConfig.from_dict({"encoder": "minilm", "head_epochs": 6}), tmp_path / "m")
    df = load_logs(path)
    gbdt = GBDTConversionModel().fit(df[split_rows(df).train])
    res = evaluate({"bert": model, "gbdt": gbdt}, df, monotone_rows=100)
    seen, new = res["sets"]["seen"], res["sets"]["new"]
    assert seen["models"]["bert"]["log_loss_over_ceiling"] < 1.06
    assert new["models"]["bert"]["auc"] > new["models"]["gbdt"]["auc"]
    assert seen["models"]["bert"]["monotone_share"] == 1.0
    assert np.isfinite(seen["models"]["bert"]["ece"]) and seen["models"]["bert"]["ece"] < 0.02
