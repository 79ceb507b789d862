"""The `promogym` command line: outputs, reproducibility and one-line errors with exit code 2."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from promogym import envs
from promogym.core.io import file_sha256
from promogym.experiments import paths
from promogym.experiments.cli import main

SMALL_WORLD = "market:\n  n_products: 40\n  n_customers: 300\n  daily_arrivals: 200\n"


@pytest.fixture
def world_file(tmp_path):
    p = tmp_path / "world.yml"
    p.write_text(SMALL_WORLD)
    return str(p)


def _one_line_error(capsys, needle):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err, err
    assert err.startswith("promogym ")


def test_data_writes_logs_and_sidecar_reproducibly(tmp_path, world_file, capsys):
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    assert main(["data", "--rows", "2000", "--seed", "4", "--out", str(a), "--world", world_file]) == 0
    out = capsys.readouterr().out
    assert "2,000 rows" in out and "purchase rate" in out
    assert main(["data", "--rows", "2000", "--seed", "4", "--out", str(b), "--world", world_file]) == 0
    assert file_sha256(a) == file_sha256(b)  # same seed, same bytes
    df = pd.read_parquet(a)
    assert len(df) == 2000 and df["user_text"].str.len().min() > 40
    meta = json.loads(a.with_suffix(".json").read_text())
    assert meta["seed"] == 4 and meta["world"]["n_products"] == 40 and meta["sha256"] == file_sha256(a)
    assert "numpy" in meta["versions"] and meta["summary"]["rows"] == 2000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "a.parquet", "b.json", "b.parquet",
                                                         "world.yml"]


@pytest.mark.parametrize(("args", "needle"), [
    (["--rows", "0"], "--rows must be between 1 and"),
    (["--rows", "-5"], "--rows must be between 1 and"),
    (["--rows", "10", "--seed", "-1"], "--seed must be >= 0"),
])
def test_data_bad_numbers(tmp_path, capsys, args, needle):
    out = tmp_path / "x.parquet"
    assert main(["data", *args, "--out", str(out)]) == 2
    _one_line_error(capsys, needle)
    assert list(tmp_path.iterdir()) == []


def test_data_missing_folder_or_folder_as_file(tmp_path, capsys):
    assert main(["data", "--rows", "10", "--out", str(tmp_path / "nope" / "x.parquet")]) == 2
    _one_line_error(capsys, "folder does not exist")
    assert main(["data", "--rows", "10", "--out", str(tmp_path)]) == 2
    _one_line_error(capsys, "is a folder")


def test_data_unwritable_path(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(paths.os, "access", lambda *a, **k: False)
    assert main(["data", "--rows", "10", "--out", str(tmp_path / "x.parquet")]) == 2
    _one_line_error(capsys, "not writable")
    assert list(tmp_path.iterdir()) == []


def test_crash_while_writing_leaves_nothing_behind(tmp_path, world_file, monkeypatch):
    def broken(self, path, *args, **kwargs):
        with open(path, "wb") as fh:
            fh.write(b"PAR1 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", broken)
    with pytest.raises(OSError, match="disk full"):
        main(["data", "--rows", "500", "--out", str(tmp_path / "x.parquet"), "--world", world_file])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["world.yml"]


def test_bad_world_file_is_named(tmp_path, capsys):
    p = tmp_path / "w.yml"
    p.write_text("market:\n  n_custmers: 10\n")
    assert main(["data", "--rows", "10", "--out", str(tmp_path / "x.parquet"), "--world", str(p)]) == 2
    _one_line_error(capsys, "n_custmers")
    p.write_text("markets: {}\n")
    assert main(["data", "--rows", "10", "--out", str(tmp_path / "x.parquet"), "--world", str(p)]) == 2
    _one_line_error(capsys, "markets")
    assert main(["data", "--rows", "10", "--out", str(tmp_path / "x.parquet"), "--world", "nope.yml"]) == 2
    _one_line_error(capsys, "not found")


def test_unknown_command_exits_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["nonsense"])
    assert exc.value.code == 2


def test_world_report_writes_table_and_plot(tmp_path, world_file, capsys):
    assert main(["world", "--world", world_file, "--out", str(tmp_path / "w")]) == 0
    report = json.loads((tmp_path / "w" / "world.json").read_text())
    assert set(report["per_type"]) == {"deal_seeker", "regular", "buys_anyway", "promo_averse", "browser"}
    assert (tmp_path / "w" / "demand_curves.png").read_bytes()[:4] == b"\x89PNG"
    assert "elasticity" in capsys.readouterr().out


def test_bench_world_quick_writes_json(tmp_path):
    # a subprocess: the benchmark pins its process to one CPU
    res = subprocess.run([sys.executable, "-m", "promogym.experiments.cli", "bench", "world", "--quick", "--out",
                          str(tmp_path)], capture_output=True, text=True, timeout=300, check=False)
    assert res.returncode == 0, res.stderr
    result = json.loads((tmp_path / "world.json").read_text())
    # structure only: timings on a shared machine are the benchmark's output, never a test's pass mark
    assert result["bench"] == "world" and result["quick"] is True and result["pinned_cpu"] is not None
    assert {"commit", "when", "machine", "versions"} <= set(result)
    figures = result["figures"]
    assert (figures["batch_size"], figures["log_rows"]) == (100_000, 20_000)    # --quick's workload
    rates = ("proba_evals_per_s_batched", "proba_evals_per_s_one_per_call", "revealed_proba_evals_per_s",
             "logged_rows_per_s")
    assert all(isinstance(figures[k], float) and np.isfinite(figures[k]) for k in rates)
    # the ratio is computed from the two measured rates of the same run
    assert figures["ratio_batched_over_one_per_call"] == pytest.approx(
        figures["proba_evals_per_s_batched"] / figures["proba_evals_per_s_one_per_call"])
    # the targets it reports against are the README's: >= 5 M evaluations/s, >= 200 k logged rows/s
    assert figures["targets"] == {"proba_evals_per_s_batched": 5e6, "logged_rows_per_s": 2e5}
    assert "logged_rows_per_s" in res.stdout


def test_bench_env_quick_runs_the_envs_named_by_env(tmp_path):
    # a subprocess: the benchmark pins its process to one CPU
    rec = "promogym/PromoRecommendation-v0"
    res = subprocess.run([sys.executable, "-m", "promogym.experiments.cli", "bench", "env", "--quick", "--env", rec,
                          "--env", rec, "--out", str(tmp_path)], capture_output=True, text=True, timeout=300,
                         check=False)
    assert res.returncode == 0, res.stderr
    result = json.loads((tmp_path / "env.json").read_text())
    assert result["bench"] == "env" and result["quick"] is True and result["pinned_cpu"] is not None
    figures = result["figures"]
    assert figures["env_ids"] == [rec] and (figures["steps"], figures["warmup_steps"]) == (20, 20)
    assert figures["market"] == {"n_customers": 500}  # quick: a small world
    runs = figures["per_env_backend"]
    assert set(runs) == {f"{rec}|{b}" for b in ("world", "bert_tiny", "bert_tiny_ensemble5")}
    # structure only (no timing is a pass mark): every visitor is shown at least one product of its category
    assert all(r["pairs_per_s"] >= r["decisions_per_s"] > 0 for r in runs.values())
    for b in ("bert_tiny", "bert_tiny_ensemble5"):
        assert figures[f"PromoRecommendation-v0_ratio_{b}_over_world"] == pytest.approx(
            runs[f"{rec}|{b}"]["decisions_per_s"] / runs[f"{rec}|world"]["decisions_per_s"])
    assert figures["targets"] == {"PromoRecommendation-v0_world_decisions_per_s": 5e4}   # no ratio target in --quick


@pytest.mark.parametrize(("args", "needle"), [
    (["env", "--env", "promogym/Nope-v0"], "unknown env id 'promogym/Nope-v0'"),
    (["env", "--env", "promogym/PromoRecommendation-v0", "--env", "promogym/HillstromTargeting-v0"],
     "unknown env id 'promogym/HillstromTargeting-v0'"),
    (["world", "--env", "promogym/PromoRecommendation-v0"], "--env applies to `bench env` only"),
])
def test_bench_bad_env_exits_2_and_writes_nothing(tmp_path, capsys, args, needle):
    assert main(["bench", *args, "--out", str(tmp_path / "b")]) == 2
    _one_line_error(capsys, needle)
    assert list(tmp_path.iterdir()) == []


def test_committed_bench_files_hold_ratios_of_their_own_figures():
    """The committed results/bench JSONs: every ratio the README quotes is the quotient of two figures of the
    same file, and the targets they carry are the README's (structure, not timings)."""
    bench = Path(__file__).resolve().parent.parent / "results" / "bench"
    world = json.loads((bench / "world.json").read_text())["figures"]
    assert world["ratio_batched_over_one_per_call"] == pytest.approx(
        world["proba_evals_per_s_batched"] / world["proba_evals_per_s_one_per_call"])
    pred = json.loads((bench / "predictor.json").read_text())["figures"]
    assert pred["ratio_cached_over_full"] == pytest.approx(
        pred["cached_offers_per_s"] / pred["full_encoder_offers_per_s"])
    assert pred["targets"]["ratio_cached_over_full"] == 500.0
    assert pred["encoder_calls_during_cached_predictions"] == 0
    env = json.loads((bench / "env.json").read_text())["figures"]
    # every market env, PromoRecommendation-v0 included, with the world >= 50 k decisions/s and MiniLM (with and
    # without the ensemble) >= 0.3 x the world as targets
    shorts = [e.split("/")[1] for e in envs.MARKET_ENV_IDS]
    assert env["env_ids"] == list(envs.MARKET_ENV_IDS)
    assert env["targets"] == {**{f"{s}_world_decisions_per_s": 5e4 for s in shorts},
                              **{f"{s}_ratio_{b}_over_world": 0.3 for s in shorts
                                 for b in ("bert_minilm", "bert_minilm_ensemble5")}}
    assert all(k in env for k in env["targets"])
    runs = env["per_env_backend"]
    for short, env_id in zip(shorts, envs.MARKET_ENV_IDS, strict=True):
        world_rate = runs[f"{env_id}|world"]["decisions_per_s"]
        assert env[f"{short}_world_decisions_per_s"] == world_rate
        for b in ("bert_tiny", "bert_minilm", "bert_minilm_ensemble5"):
            assert env[f"{short}_ratio_{b}_over_world"] == pytest.approx(runs[f"{env_id}|{b}"]["decisions_per_s"]
                                                                         / world_rate)
