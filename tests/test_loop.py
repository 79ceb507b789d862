"""The closed loop (`promogym loop`): the smoke config end to end, resumed, and its bad input refused before any
work."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from promogym.experiments.cli import main
from promogym.experiments.experiment import CONFIG_DIR
from promogym.experiments.loop import LoopConfig, fit_rows
from promogym.experiments.loop_report import gate_error

SMOKE = CONFIG_DIR / "loop_smoke.yml"


def smoke_raw(**changes):
    raw = yaml.safe_load(SMOKE.read_text())
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key] = {**raw[key], **value}
        else:
            raw[key] = value
    return raw


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("loop") / "run"
    assert main(["loop", str(SMOKE), "--out", str(out), "--no-progress"]) == 0
    return out


def test_the_smoke_loop_writes_its_report_with_every_round_of_every_variant(smoke_run):
    result = json.loads((smoke_run / "report" / "loop.json").read_text())
    cfg = LoopConfig.load(SMOKE)
    assert len(result["records"]) == cfg.loop.seeds * cfg.loop.rounds * len(cfg.loop.variants)
    assert (smoke_run / "report" / "loop.md").read_text().startswith("# Closed loop: loop_smoke")
    assert (smoke_run / "report" / "loop.png").stat().st_size > 0
    timing = result["timing"]  # from the stages' records, whatever invocations ran them
    assert timing["stage_seconds"] > 0 and timing["span_seconds"] > 0
    assert "Run time:" in (smoke_run / "report" / "loop.md").read_text()
    by = {(r["variant"], r["round"]): r for r in result["records"]}
    for r in range(1, cfg.loop.rounds + 1):
        assert by["passive", r]["gate"]["deployed"] == cfg.deploy.incumbent  # the logging policy stays
        assert by["no_gate", r]["gate"]["deployed_is_candidate"]               # the candidate always goes
        assert "fidelity_on_full" in by["passive", r]  # the passive model judged where the full loop acts
        full = by["full", r]["gate"]
        assert full["deployed"] in (full["candidate"], full["incumbent"])
        for name in ("candidate", "incumbent"):
            assert full["ope"][name]["days"] == cfg.deploy.episodes * r * 7  # every deployed day so far
    assert [t["target"] for t in result["summary"]["targets"]]  # the targets are read, met or not


def test_every_deployed_row_has_an_exact_propensity_and_the_refit_data_grows(smoke_run):
    rows = pd.read_parquet(smoke_run / "s0" / "full" / "r1" / "deploy" / "rows.parquet")
    eps, grid = 0.2, 9  # loop_smoke: epsilon 0.2 on DynamicPricing-v1's 0.6..1.4 band in steps of 0.1
    assert set(np.round(rows["price_propensity"], 9)) <= {round(1 - eps + eps / grid, 9), round(eps / grid, 9)}
    fits = [json.loads((smoke_run / p / "stage.json").read_text())
            for p in ("s0/r0/fit", "s0/full/r1/fit", "s0/full/r2/fit")]
    assert fits[0]["deployed_rows"] == 0 < fits[1]["deployed_rows"]
    assert fits[0]["rows"] < fits[1]["rows"] < fits[2]["rows"]


def test_refits_and_retraining_start_from_the_last_round(smoke_run):
    cfg = yaml.safe_load((smoke_run / "s0" / "full" / "r1" / "train" / "run" / "config.yml").read_text())
    assert cfg["init_from"] == str((smoke_run / "s0" / "r0" / "train" / "run").resolve())


def test_a_rerun_resumes_and_redoes_nothing(smoke_run, capsys):
    before = {p: p.read_text() for p in smoke_run.rglob("stage.json")}
    assert main(["loop", str(SMOKE), "--out", str(smoke_run), "--no-progress"]) == 0
    after = {p: p.read_text() for p in smoke_run.rglob("stage.json")}
    assert before == after  # every stage's id (and key) kept
    assert "done already" in capsys.readouterr().out


def test_fit_rows_count_a_sold_out_choice_as_the_demand_it_was():
    from promogym.envs.market.logs import LOG_COLUMNS

    rows = pd.DataFrame({c: np.zeros(3) for c in LOG_COLUMNS})
    rows["purchased"] = np.array([1, 0, 0], dtype=bool)
    rows["stocked_out"] = [False, True, False]
    out = fit_rows(rows)
    assert out["purchased"].tolist() == [1, 1, 0]
    assert list(out.columns) == list(LOG_COLUMNS)


def test_a_gate_error_is_a_deployed_candidate_more_than_1_percent_below_the_incumbent():
    def rec(cand, inc, deployed_candidate=True):
        return {"gate": {"deployed_is_candidate": deployed_candidate,
                         "world": {"candidate": {"mean": cand}, "incumbent": {"mean": inc}}}}

    assert gate_error(rec(98.0, 100.0))
    assert not gate_error(rec(99.5, 100.0))
    assert not gate_error(rec(50.0, 100.0, deployed_candidate=False))


def test_the_season_gate_compares_simulated_seasons_and_an_ab_only_gate_lets_the_ab_test_decide(tmp_path):
    raw = smoke_raw(gate={"estimator": "season_dr", "sim_episodes": 3, "ab_episodes": 3, "ab_only": True},
                    loop={"rounds": 1, "variants": ["full"]})
    config = tmp_path / "loop.yml"
    config.write_text(yaml.safe_dump(raw))
    assert main(["loop", str(config), "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    result = json.loads((tmp_path / "run" / "report" / "loop.json").read_text())
    (record,) = result["records"]
    ope = record["gate"]["ope"]
    season = ope["season"]
    assert season["estimator"] == "season_dr" and season["seasons"] == 3  # simulated seasons per policy
    assert season["logged_seasons"] == 2 and season["days"] == 2 * 7  # the round-0 deployment's
    assert ope["difference"]["per_episode"] == pytest.approx(season["diff"])
    assert ope["difference"]["mean"] == pytest.approx(season["diff"] / 7)  # per logged day, 7 days a season
    decision = record["gate"]["decision"]
    assert "(the OPE, not deciding: " in decision and "SEASON_DR gain per season" in decision
    ab = record["gate"]["ab"]
    assert ab["episodes"] == 3 and record["gate"]["deployed_is_candidate"] == (ab["diff_ci"][0] > 0)  # margin 0
    assert decision.startswith("deploy the candidate" if ab["diff_ci"][0] > 0 else "keep the incumbent")


def test_the_simulated_seasons_key_only_the_season_gate():
    from promogym.experiments.loop import GateSection

    assert GateSection(sim_episodes=5).key_settings() == GateSection().key_settings()  # a dr gate: not read
    assert "sim_episodes" not in GateSection().key_settings()  # run folders of dr gates keep their keys
    assert (GateSection(estimator="season_dr", sim_episodes=5).key_settings()
            != GateSection(estimator="season_dr").key_settings())
    assert "ab_only" not in GateSection().key_settings()
    assert GateSection(ab_episodes=4, ab_only=True).key_settings() != GateSection(ab_episodes=4).key_settings()


@pytest.mark.parametrize("changes, message", [
    ({"env": "promogym/CouponAllocation-v2"}, "cannot be deployed by the loop"),
    ({"deploy": {"exploration": {"epsilon": 0.0}}}, "exploration 0 gives no propensities"),
    ({"deploy": {"incumbent": "oracle"}}, "told the world's truth"),
    ({"deploy": {"incumbent": "markdown"}}, "must be a static rule"),
    ({"deploy": {"incumbent": "no_such_policy"}}, "deploy.incumbent"),
    ({"loop": {"variants": ["full", "sometimes"]}}, "variants must be distinct values"),
    ({"agent": {"algo": "dqn"}}, "agent:"),
    ({"gate": {"estimator": "season_dr", "sim_episodes": 1}}, "sim_episodes"),
    ({"gate": {"ab_only": True}}, "ab_only needs ab_episodes >= 2"),
    ({"gate": {"estimator": "season_dr"}, "env_config": {"n_products": 3, "horizon": 7, "daily_customers": 60,
                                                          "reward": "revenue"}}, "reward must be profit"),
])
def test_a_bad_loop_config_is_one_line_before_any_work(tmp_path, capsys, changes, message):
    config = tmp_path / "loop.yml"
    config.write_text(yaml.safe_dump(smoke_raw(**changes)))
    out = tmp_path / "run"
    assert main(["loop", str(config), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err, err
    assert not out.exists()  # nothing written


def test_a_refit_on_logs_of_another_world_is_refused_before_any_work(tmp_path, capsys):
    (tmp_path / "world.yml").write_text("market: {n_customers: 500}\n")
    assert main(["data", "--rows", "2000", "--seed", "0", "--out", str(tmp_path / "other.parquet"),
                 "--world", str(tmp_path / "world.yml"), "--no-progress"]) == 0
    config = tmp_path / "loop.yml"
    config.write_text(yaml.safe_dump(smoke_raw(logs={"path": str(tmp_path / "other.parquet")})))
    assert main(["loop", str(config), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "logged in another world" in err and "n_customers" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_the_smoke_loop_with_a_tiny_bert_refits_each_round_from_the_last_checkpoint(tmp_path):
    raw = smoke_raw(predictor={"kind": "bert", "encoder": "tiny", "eval_rows": 1000,
                               "fit": {"head_epochs": 2, "batch_size": 1024, "lr_head": 3e-3}},
                    loop={"rounds": 2, "seeds": 1, "variants": ["full"]})
    config = tmp_path / "loop.yml"
    config.write_text(yaml.safe_dump(raw))
    out = tmp_path / "run"
    assert main(["loop", str(config), "--out", str(out), "--no-progress"]) == 0
    previous = out / "s0" / "r0" / "fit" / "model"
    for r in (1, 2):
        model = out / "s0" / "full" / f"r{r}" / "fit" / "model"
        meta = json.loads((model / "promogym.json").read_text())
        assert meta["init_from"]["path"] == str(previous.resolve())
        previous = model
    result = json.loads((out / "report" / "loop.json").read_text())
    assert all(r["fidelity"]["profit"]["bias"] is not None for r in result["records"])


def test_stages_are_found_from_resolved_paths_when_the_run_folder_is_relative(tmp_path, monkeypatch):
    from promogym.experiments.loop import Loop

    monkeypatch.chdir(tmp_path)
    loop = Loop(LoopConfig.load(SMOKE), Path("runs/x"), echo=lambda s: None)
    run = (tmp_path / "runs" / "x" / "s0" / "r0" / "train" / "run").resolve()  # how candidates are named
    assert loop._stage_of(run.parent) == "s0/r0/train"
    assert loop._stage_of(Path("runs/x/s0/r0/deploy/rows.parquet")) == "s0/r0/deploy"


def test_a_config_round_trips_through_its_resolved_dict():
    cfg = LoopConfig.load(SMOKE)
    assert LoopConfig.from_dict(cfg.to_dict()) == cfg  # what a worker rebuilds from a seed's payload


def test_more_seeds_run_as_parallel_trials_and_keep_the_seeds_already_done(smoke_run, tmp_path, capsys):
    before = {p: p.read_text() for p in (smoke_run / "s0").rglob("stage.json")}
    config = tmp_path / "loop.yml"
    config.write_text(yaml.safe_dump(smoke_raw(loop={"seeds": 2}, execution={"jobs": 2})))
    assert main(["loop", str(config), "--out", str(smoke_run), "--no-progress"]) == 0
    assert {p: p.read_text() for p in (smoke_run / "s0").rglob("stage.json")} == before  # seed 0 not redone
    result = json.loads((smoke_run / "report" / "loop.json").read_text())
    assert sorted({r["seed"] for r in result["records"]}) == [0, 1]
    assert len(result["records"]) == 2 * 2 * 3  # seeds x rounds x variants
    assert (smoke_run / "s1" / "full" / "r2" / "fit" / "stage.json").is_file()
    run = json.loads((smoke_run / "run.json").read_text())
    assert "s1/full/r2/fit" in run["stage_seconds"]  # the workers' stages join the run's record
    assert "s1: loop seed finished" in capsys.readouterr().out
