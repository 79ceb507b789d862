"""`promogym fidelity`: a learned response model against the world on the offers policies make."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from promogym.envs import ENV_IDS, MARKET_ENV_IDS
from promogym.envs.base import Offers
from promogym.envs.families import env_class, short_name
from promogym.envs.market import Market
from promogym.envs.market.logs import generate_logs
from promogym.experiments import fidelity
from promogym.experiments.cli import main
from promogym.experiments.fidelity import (
    HISTORY_BANDS,
    PRICE_BANDS,
    NoOffersError,
    describe_cell,
    history_band,
    log_cells,
    measure_fidelity,
    offer_cells,
    price_band,
    read_logs,
)
from promogym.predictors.baselines import TruthModel

# the ids as registered (they change with a version), found by the class behind them
PRICING = next(i for i in MARKET_ENV_IDS if env_class(i).__name__ == "DynamicPricingEnv")
PRICING_NAME = short_name(PRICING)
WORLD = {"n_products": 40, "n_customers": 800, "daily_arrivals": 300, "seed": 5}
# ample stock: no stock-outs, so the world's side does not depend on which backend drove the sampled choices
ENV = {"market": WORLD, "n_products": 4, "horizon": 4, "daily_customers": 60, "initial_stock": 10_000}
SETS = ["--set", f"market={json.dumps(WORLD)}", "--set", "n_products=4", "--set", "horizon=3",
        "--set", "daily_customers=40"]


@pytest.fixture(scope="module")
def world_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4,000 logged offers of the small world, as `promogym data` writes them (parquet + sidecar)."""
    path = tmp_path_factory.mktemp("fidelity") / "logs.parquet"
    market = Market(WORLD)
    generate_logs(market, 4_000, seed=0).to_parquet(path, index=False)
    path.with_suffix(".json").write_text(json.dumps({"world": market.config.to_dict()}))
    return path


@pytest.fixture(scope="module")
def gbdt(world_logs: Path) -> Path:
    from promogym.predictors.baselines import fit_gbdt
    from promogym.predictors.data import load_logs

    out = world_logs.parent / "gbdt.skops.zip"
    fit_gbdt(load_logs(world_logs), out)
    return out


class OptimisticTruth(TruthModel):
    """The world's truth with the odds of buying doubled: a model known to over-predict."""

    name = "optimistic_truth"

    def predict_proba(self, batch):  # type: ignore[no-untyped-def]
        p = super().predict_proba(batch)
        return 2 * p / (1 + p)  # odds x 2


# ---------------------------------------------------------------------------------------- binning
def test_price_and_history_bands_on_known_numbers():
    ratios = np.array([0.6, 0.7, 0.749, 0.75, 0.8, 1.0, 1.3, 1.349, 1.35, 1.4])
    assert [PRICE_BANDS[b] for b in price_band(ratios)] == [
        "<0.65", "0.65–0.75", "0.65–0.75", "0.75–0.85", "0.75–0.85", "0.95–1.05", "1.25–1.35", "1.25–1.35", "≥1.35",
        "≥1.35"]
    gaps = np.array([-0.5, -0.05, 0.0, 0.05, 0.2])
    assert [HISTORY_BANDS[b] for b in history_band(gaps)] == [
        "<-0.10", "-0.10–-0.03", "-0.03–+0.03", "+0.03–+0.10", "≥+0.10"]


def test_logs_and_env_offers_fall_in_cells_by_one_binning(world_logs):
    """Logged rows turned into an env's offers land in exactly the cells the logs' own binning gives."""
    market = Market(WORLD)
    logs = read_logs(world_logs).iloc[:500]
    n = len(logs)
    as_offers = Offers(users=logs["user_id"].to_numpy(), items=logs["item_id"].to_numpy()[:, None],
                       price=logs["price"].to_numpy()[:, None], coupon=logs["coupon"].to_numpy(),
                       available=np.ones((n, 1), bool), proba=np.zeros((n, 1)), proba_world=np.zeros((n, 1)),
                       margin=np.zeros((n, 1)), price_hist=logs["price_hist_mid"].to_numpy()[:, None])
    from_logs, from_offers = log_cells(market, logs), offer_cells(market, as_offers)
    assert np.array_equal(from_logs, from_offers)
    assert len(np.unique(from_logs)) > 5  # the rows spread over many cells: the check compares something
    # the cells say what the rows are
    row, cell = logs.iloc[0], describe_cell(from_logs[0])
    assert cell["coupon"] == pytest.approx(row["coupon"])
    assert cell["price_band"] == PRICE_BANDS[price_band(row["price"] / row["list_price"])]
    fav = market.catalog.category[int(row["item_id"])] in market.customers.favourites[int(row["user_id"])]
    assert cell["favourite"] == fav


# ---------------------------------------------------------------------------------------- measuring
def test_the_worlds_own_truth_has_no_bias():
    """At list price the reference prices never move, so the truth model (which assumes them at list) is the
    world exactly: every bias is zero."""
    r = measure_fidelity(PRICING, TruthModel(Market(WORLD)), ["list_price"], episodes=2, env_config=ENV, reps=200)
    p = r["policies"][0]
    assert p["price_multiplier"] == 1.0 and p["offers"] > 0
    for what in ("profit", "units", "purchase_rate"):
        assert abs(p[what]["bias"]) < 1e-6, (what, p[what])
        assert p[what]["backend"] == pytest.approx(p[what]["world"], rel=1e-6)
    assert all(abs(t["profit"]["bias"]) < 1e-6 for t in p["by_type"].values() if t["profit"]["bias"] is not None)
    assert "skipped" in r["coverage"]


def test_a_model_that_over_predicts_shows_a_positive_bias_against_the_unchanged_world():
    """Backend and world kept apart: a model doubling the odds of buying is reported above the world, and the
    world's side is what the world gives on those offers (the truth model's run, same seeds, same offers)."""
    exact = measure_fidelity(PRICING, TruthModel(Market(WORLD)), ["list_price"], episodes=2, env_config=ENV,
                             reps=200)["policies"][0]
    high = measure_fidelity(PRICING, OptimisticTruth(Market(WORLD)), ["list_price"], episodes=2, env_config=ENV,
                            reps=200)["policies"][0]
    for what in ("units", "purchase_rate"):
        assert high[what]["world"] == pytest.approx(exact[what]["world"], rel=1e-9)
        assert high[what]["backend"] > 1.3 * high[what]["world"]
        assert high[what]["bias"] > 0.3 and high[what]["ci95"][0] > 0.3
    assert high["profit"]["bias"] > 0.3
    assert high["purchase_rate"]["bias"] == pytest.approx(high["units"]["bias"])  # one visitor buys one unit


def test_coverage_counts_offers_in_thin_cells(world_logs, gbdt):
    r = measure_fidelity(PRICING, f"gbdt:{gbdt}", ["list_price", "static:1.4"], episodes=1, env_config=ENV,
                         logs=world_logs, reps=100)
    cov = r["coverage"]
    assert cov["log_rows"] == 4_000 and 0 < cov["thin_share"] <= 1
    by = {p["policy"]: p for p in r["policies"]}
    # nothing was logged above 1.3 x list: every offer at 1.4 x list is in a thin cell
    assert by["static:1.4"]["coverage"]["thin_share"] == 1.0
    assert by["list_price"]["coverage"]["thin_share"] < 1.0
    assert all(c["logged_rows"] < cov["min_rows"] for c in cov["thin_cells"])
    assert by["static:1.4"]["price_multiplier"] == 1.4 and by["static:1.4"]["coupon"] == 0.0


def test_an_env_that_keeps_no_offers_is_named(monkeypatch):
    from promogym.envs import pricing

    serve = pricing._SeasonEnv._serve

    def forgetful(self, *args):  # type: ignore[no-untyped-def]
        out = serve(self, *args)
        self.last_offers = None
        return out

    monkeypatch.setattr(pricing._SeasonEnv, "_serve", forgetful)
    with pytest.raises(NoOffersError, match=f"{PRICING_NAME} keeps no offers"):
        measure_fidelity(PRICING, TruthModel(Market(WORLD)), ["list_price"], episodes=1, env_config=ENV)


def test_the_model_may_not_be_the_world():
    with pytest.raises(ValueError, match="the world itself"):
        measure_fidelity(PRICING, "world", ["list_price"], episodes=1, env_config=ENV)


def test_default_policies_span_the_env_band():
    import gymnasium as gym

    env = gym.make(PRICING, config={"price_low": 0.7, "price_high": 1.3})
    names = fidelity.default_policies(PRICING, env)
    assert names[0] == "list_price" and "best_static" in names and names[-1] == "random"
    assert "static:0.7" in names and "static:1.3" in names and "static:0.6" not in names and "static:1.4" not in names


# ---------------------------------------------------------------------------------------- the command
def _cli(gbdt: Path, out: Path, *extra: str) -> list[str]:
    return ["fidelity", "--model", f"gbdt:{gbdt}", "--env", PRICING, *SETS, "--policy", "list_price",
            "--policy", "static:0.8", "--episodes", "2", "--out", str(out), "--no-progress", *extra]


def test_the_command_writes_its_three_files_and_refuses_an_occupied_folder(world_logs, gbdt, tmp_path, capsys):
    out = tmp_path / "fid"
    assert main(_cli(gbdt, out, "--data", str(world_logs))) == 0
    printed = capsys.readouterr().out
    assert "| list_price |" in printed and "| static:0.8 |" in printed and "coverage:" in printed
    for name in ("fidelity.json", "fidelity.md", "fidelity.png"):
        assert (out / name).stat().st_size > 200
    result = json.loads((out / "fidelity.json").read_text())
    assert [p["policy"] for p in result["policies"]] == ["list_price", "static:0.8"]
    assert result["coverage"]["log_rows"] == 4_000
    md = (out / "fidelity.md").read_text()
    assert "## Per policy" in md and "## Worst cells" in md and "## Coverage" in md and "fidelity.png" in md
    # the same work again replaces its own files; other work, or a folder holding anything else, is refused
    assert main(_cli(gbdt, out, "--data", str(world_logs))) == 0
    capsys.readouterr()
    before = (out / "fidelity.json").read_bytes()
    assert main(_cli(gbdt, out, "--data", str(world_logs), "--seed", "5")) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    assert (out / "fidelity.json").read_bytes() == before
    assert main(_cli(gbdt, out, "--data", str(world_logs), "--seed", "5", "--force")) == 0
    assert json.loads((out / "fidelity.json").read_text())["seed"] == 5


def test_without_logs_coverage_is_skipped_with_a_note(gbdt, tmp_path, capsys):
    assert main(_cli(gbdt, tmp_path / "fid")) == 0
    said = capsys.readouterr().out
    assert "coverage: no logs known (pass --data)" in said
    assert "Coverage not measured" in (tmp_path / "fid" / "fidelity.md").read_text()


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(folder.rglob("*"))}


BAD = [
    ("unknown env", ["--env", "promogym/Nope-v0"], "unknown or unsupported env id"),
    ("hillstrom env", ["--env", next(i for i in ENV_IDS if i not in MARKET_ENV_IDS)], "unknown or unsupported env id"),
    ("bad model kind", ["--model", "nope:{d}/m"], "--model must be"),
    ("truth is no backend", ["--model", "truth"], "--model must be"),
    ("world is no model", ["--model", "world"], "--model world is the ground truth"),
    ("missing model file", ["--model", "gbdt:{d}/none.skops.zip"], "not found"),
    ("model not a model", ["--model", "gbdt:{d}/notes.txt"], "notes.txt"),
    ("unknown policy", ["--policy", "nope"], "unknown policy 'nope'"),
    ("coupon policy on pricing", ["--policy", "no_coupon"], "unknown policy 'no_coupon'"),
    ("static out of band", ["--policy", "static:2.5"], "price band"),
    ("episodes 0", ["--episodes", "0"], "--episodes must be between 1 and"),
    ("negative seed", ["--seed", "-1"], "--seed must be >= 0"),
    ("missing data", ["--data", "{d}/none.parquet"], "--data file not found"),
    ("data not parquet", ["--data", "{d}/notes.txt"], "cannot read"),
    ("bad env setting", ["--set", "horizon=0"], "horizon"),
    ("unknown env setting", ["--set", "colour=red"], "colour"),
    ("response set", ["--set", "response=world"], "the response backend is --model"),
    ("occupied out", ["--out", "{d}/notempty"], "exists and is not empty"),
]


@pytest.mark.parametrize(("argv", "needle"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_input_is_one_line_exit_2_and_touches_nothing(gbdt, tmp_path, capsys, argv, needle):
    d = tmp_path / "work"
    d.mkdir()
    (d / "notes.txt").write_text("someone's notes")
    (d / "notempty").mkdir()
    (d / "notempty" / "keep.txt").write_text("keep me")
    shutil.copyfile(gbdt, d / "m.skops.zip")
    before = _snapshot(d)
    args = [a.replace("{d}", str(d)) for a in argv]
    defaults = {"--model": f"gbdt:{d / 'm.skops.zip'}", "--env": PRICING, "--out": str(d / "out"), "--episodes": "1"}
    for flag, value in defaults.items():
        if flag not in args:
            args += [flag, value]
    code = main(["fidelity", *SETS, *args, "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert "\n" not in err and err.startswith("promogym fidelity: error: "), err
    assert needle in err, err
    assert _snapshot(d) == before, "the command wrote, replaced or deleted files"


# ---------------------------------------------------------------------------------------- the experiment
def test_an_experiment_measures_fidelity_per_env_and_reports_it(tmp_path, capsys):
    cfg = {"name": "fid", "logs": {"rows": 2000},
           "predictor": {"kind": "gbdt", "eval_rows": 200},
           "envs": {PRICING: {"algos": [], "timesteps": 64, "config": {"n_products": 2, "horizon": 3,
                                                                          "daily_customers": 30},
                              "baselines": ["list_price"]}},
           "train": {"seeds": 1, "simulators": ["world"]},
           "evaluate": {"episodes": 2, "trace_episodes": 0},
           "fidelity": {"episodes": 1}, "execution": {"jobs": 1}}
    path = tmp_path / "fid.yml"
    path.write_text(yaml.safe_dump(cfg))
    out, report = tmp_path / "run", tmp_path / "run" / "report"
    argv = ["experiment", str(path), "--out", str(out), "--report", str(report), "--no-progress"]
    assert main(argv) == 0
    result = json.loads((out / "fidelity" / PRICING_NAME / "fidelity.json").read_text())
    names = [p["policy"] for p in result["policies"]]
    assert names[0] == "list_price" and "best_static" in names and "static:0.6" in names and "random" not in names
    assert result["coverage"]["log_rows"] == 2000
    text = (report / "report.md").read_text()
    assert "### Simulator fidelity" in text and f"plots/fidelity_{PRICING_NAME}.png" in text
    assert (report / "plots" / f"fidelity_{PRICING_NAME}.png").stat().st_size > 1000
    summary = json.loads((report / "summary.json").read_text())
    assert "list_price" in summary["envs"][PRICING]["fidelity"]
    capsys.readouterr()
    assert main(argv) == 0
    assert f"fidelity/{PRICING_NAME}: done already" in capsys.readouterr().out
    bad = {**cfg, "fidelity": {"episodes": 0}}
    path.write_text(yaml.safe_dump(bad))
    assert main(["experiment", str(path), "--out", str(tmp_path / "run2"), "--no-report"]) == 2
    assert "fidelity" in capsys.readouterr().err


def test_the_logs_of_an_older_format_are_refused(tmp_path):
    pd.DataFrame({"user_id": [1], "item_id": [2], "price": [1.0]}).to_parquet(tmp_path / "old.parquet")
    with pytest.raises(ValueError, match="lacks column"):
        read_logs(tmp_path / "old.parquet")


def test_the_bias_and_its_bootstrap_on_known_numbers():
    from promogym.experiments.stats import bootstrap_ratio_ci

    num = np.array([[12.0, -6.0, 0.0], [12.0, -6.0, 0.0]])  # two episodes, three cells
    den = np.array([[10.0, -5.0, 0.0], [10.0, -5.0, 0.0]])
    point, lo, hi = bootstrap_ratio_ci(num, den, reps=50)
    assert point[0] == pytest.approx(0.2) and lo[0] == pytest.approx(0.2) and hi[0] == pytest.approx(0.2)
    assert point[1] == pytest.approx(-0.2)  # a larger loss than the world's is a negative bias
    assert np.isnan(point[2]) and np.isnan(lo[2])
    varied = bootstrap_ratio_ci(np.array([10.0, 14.0, 12.0]), np.array([10.0, 10.0, 10.0]), reps=500, seed=1)
    assert varied[0] == pytest.approx(0.2) and 0.0 <= varied[1] < 0.2 < varied[2] <= 0.4
