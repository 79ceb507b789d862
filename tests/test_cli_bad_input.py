"""Every bad input a clear error before work starts: exit 2, one line on stderr naming the problem, and the
folder the command was pointed at exactly as it was (nothing written, nothing overwritten, nothing deleted).

Each case is a command line run in a folder prepared with good and bad inputs (``{d}`` stands for it).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from promogym.experiments.cli import main

PRICING = "promogym/DynamicPricing-v1"
SMALL_ENV = ["--env-set", "n_products=2", "--env-set", "horizon=3", "--env-set", "daily_customers=30",
             "--env-set", "market={n_customers: 600, n_products: 60}"]
GOOD_EXPERIMENT = {"name": "bad-input", "logs": {"rows": 1000},
                   "envs": {PRICING: {"algos": [], "timesteps": 64, "config": {"n_products": 2, "horizon": 3},
                                      "baselines": ["list_price"]}},
                   "train": {"seeds": 1, "simulators": ["world"]},
                   "evaluate": {"episodes": 2, "trace_episodes": 0, "sim_planners": False},
                   "execution": {"jobs": 1}}


def _experiment(**changes: object) -> dict:
    cfg = json.loads(json.dumps(GOOD_EXPERIMENT))
    for dotted, value in changes.items():
        *path, key = dotted.split("__")
        node = cfg
        for part in path:
            node = node[part.replace("_DASH_", "-")]
        node[key] = value
    return cfg


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Good logs and every kind of bad file a user could point a command at."""
    d = tmp_path_factory.mktemp("inputs")
    assert main(["data", "--rows", "1000", "--seed", "1", "--out", str(d / "logs.parquet"), "--no-progress"]) == 0
    logs = pd.read_parquet(d / "logs.parquet")
    for name, column, value in (("inf_price", "price", np.inf), ("nan_cost", "unit_cost", np.nan)):
        bad = logs.copy()
        bad.loc[bad.index[:3], column] = value
        bad.to_parquet(d / f"{name}.parquet")
    shutil.copyfile(d / "logs.parquet", d / "badside.parquet")
    (d / "badside.json").write_text("{not json")
    (d / "garbage.parquet").write_bytes(b"PAR1 this is not a parquet file")
    (d / "world_list.yml").write_text("- 1\n- 2\n")
    (d / "world_broken.yml").write_text("market: {n_products: [\n")
    (d / "world_unknown.yml").write_text("markt: {}\n")
    (d / "world_badvalue.yml").write_text("market: {n_products: -1}\n")
    (d / "existing.parquet").write_bytes(b"someone's table")
    (d / "existing.json").write_text('{"keep": true}')
    (d / "lonely.json").write_text('{"a sidecar": "without its table"}')
    (d / "notempty").mkdir()
    (d / "notempty" / "notes.txt").write_text("someone's notes")
    (d / "dir.parquet").mkdir()
    for name, env_id, env_config in (("run_other_env", "promogym/CouponAllocation-v1", {}),
                                     ("run_other_shape", PRICING, {"n_products": 5})):
        (d / name).mkdir()
        (d / name / "config.yml").write_text(yaml.safe_dump({"env_id": env_id, "algo": "ppo",
                                                             "env_config": env_config}))
    (d / "broken_run").mkdir()
    (d / "broken_run" / "experiment.yml").write_text(yaml.safe_dump(GOOD_EXPERIMENT))
    (d / "broken_run" / "evaluate").mkdir()
    (d / "broken_run" / "evaluate" / "stage.json").write_text("{truncated")
    bad_configs = {
        "name_dotdot": _experiment(name=".."), "name_slash": _experiment(name="a/b"),
        "seeds_float": _experiment(train__seeds=1.5), "episodes_float": _experiment(evaluate__episodes=2.5),
        "jobs_float": _experiment(execution__jobs=1.5), "rows_zero": _experiment(logs__rows=0),
        "kind_truth": {**_experiment(), "predictor": {"kind": "truth"}},
        "logs_missing": _experiment(logs__path=str(d / "missing.parquet")),
        "env_unknown": {**_experiment(), "envs": {"promogym/Nope-v0": {}}},
        "algo_unknown": {**_experiment(), "envs": {PRICING: {"algos": ["ppo2"]}}},
        "baseline_other_family": {**_experiment(), "envs": {PRICING: {"algos": [], "baselines": ["uplift"]}}},
        "static_nan": {**_experiment(), "envs": {PRICING: {"algos": [], "baselines": ["static:nan"]}}},
        "hyperparam_key": {**_experiment(), "envs": {PRICING: {"algos": ["ppo"],
                                                               "hyperparams": {"ppo": {"n_stepz": 8}}}}},
        "hyperparam_value": {**_experiment(), "envs": {PRICING: {"algos": ["ppo"],
                                                                 "hyperparams": {"ppo": {"learning_rate": "abc"}}}}},
        "list": ["name", "smoke"],
    }
    for name, cfg in bad_configs.items():
        (d / f"{name}.yml").write_text(yaml.safe_dump(cfg))
    (d / "timesteps_float.yml").write_text(yaml.safe_dump(
        {**_experiment(), "envs": {PRICING: {"algos": ["ppo"], "timesteps": 64.5}}}))
    (d / "good.yml").write_text(yaml.safe_dump(_experiment()))
    return d


def snapshot(folder: Path) -> dict[str, str]:
    """Every file and folder under ``folder`` with a hash of its content."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(folder.rglob("*"))}


L = "{d}/logs.parquet"
CASES: list[tuple[str, list[str], str]] = [
    # data
    ("rows 0", ["data", "--rows", "0", "--out", "{d}/x.parquet"], "--rows must be between 1 and"),
    ("rows unbounded", ["data", "--rows", "100000000000", "--out", "{d}/x.parquet"], "--rows must be between"),
    ("data seed", ["data", "--rows", "10", "--seed", "-1", "--out", "{d}/x.parquet"], "--seed must be >= 0"),
    ("data out json", ["data", "--rows", "10", "--out", "{d}/x.json"], "--out must be a .parquet file"),
    ("data out exists", ["data", "--rows", "10", "--out", "{d}/existing.parquet"], "exists; pass --force"),
    ("data sidecar exists", ["data", "--rows", "10", "--out", "{d}/lonely.parquet"], "lonely.json exists"),
    ("data out folder", ["data", "--rows", "10", "--out", "{d}/dir.parquet"], "is a folder"),
    ("data out no parent", ["data", "--rows", "10", "--out", "{d}/nope/x.parquet"], "folder does not exist"),
    ("world file list", ["data", "--rows", "10", "--out", "{d}/x.parquet", "--world", "{d}/world_list.yml"],
     "must be a mapping"),
    ("world file broken", ["data", "--rows", "10", "--out", "{d}/x.parquet", "--world", "{d}/world_broken.yml"],
     "is not valid YAML"),
    ("world file key", ["data", "--rows", "10", "--out", "{d}/x.parquet", "--world", "{d}/world_unknown.yml"],
     "unknown key(s) markt"),
    ("world file value", ["data", "--rows", "10", "--out", "{d}/x.parquet", "--world", "{d}/world_badvalue.yml"],
     "n_products"),
    ("world file missing", ["data", "--rows", "10", "--out", "{d}/x.parquet", "--world", "{d}/none.yml"],
     "not found"),
    # world
    ("world cmd list", ["world", "--world", "{d}/world_list.yml", "--out", "{d}/w"], "must be a mapping"),
    ("world cmd out", ["world", "--out", "{d}/notempty"], "exists and is not empty"),
    # fit
    ("fit data missing", ["fit", "--data", "{d}/none.parquet", "--out", "{d}/m"], "not found"),
    ("fit device", ["fit", "--data", L, "--out", "{d}/m", "--device", "bogus"], "--device must be cpu or cuda"),
    ("fit no gpu", ["fit", "--data", L, "--out", "{d}/m", "--device", "cuda"], "no CUDA GPU"),
    ("fit seed", ["fit", "--data", L, "--out", "{d}/m", "--seed", "-1"], "--seed must be >= 0"),
    ("fit out foreign", ["fit", "--data", L, "--out", "{d}/notempty", "--force"], "not a promogym checkpoint"),
    ("fit out not empty", ["fit", "--data", L, "--out", "{d}/notempty"], "pass --resume"),
    ("fit gbdt exists", ["fit", "--kind", "gbdt", "--data", L, "--out", "{d}/existing.parquet"], "exists"),
    ("fit inf price", ["fit", "--kind", "gbdt", "--data", "{d}/inf_price.parquet", "--out", "{d}/m.bin"],
     "column price has 3 NaN, infinite"),
    ("fit nan cost", ["fit", "--kind", "gbdt", "--data", "{d}/nan_cost.parquet", "--out", "{d}/m.bin"],
     "column unit_cost has 3"),
    ("fit garbage", ["fit", "--kind", "gbdt", "--data", "{d}/garbage.parquet", "--out", "{d}/m.bin"],
     "cannot read"),
    ("fit set key", ["fit", "--data", L, "--out", "{d}/m", "--encoder", "tiny", "--set", "head_epoch=2"],
     "head_epoch"),
    # eval-predictor
    ("max rows negative", ["eval-predictor", "--model", "truth", "--data", L, "--max-rows", "-5"], "--max-rows"),
    ("max rows zero", ["eval-predictor", "--model", "truth", "--data", L, "--max-rows", "0"], "--max-rows"),
    ("model kind", ["eval-predictor", "--model", "forest:x", "--data", L, "--out", "{d}/e"], "forest"),
    ("model missing", ["eval-predictor", "--model", "gbdt:{d}/none.bin", "--data", L, "--out", "{d}/e"],
     "none.bin"),
    ("bad sidecar", ["eval-predictor", "--model", "truth", "--data", "{d}/badside.parquet", "--out", "{d}/e"],
     "badside.json"),
    ("eval out", ["eval-predictor", "--model", "truth", "--data", L, "--out", "{d}/notempty"], "--force"),
    # evaluate / ab
    ("env unknown", ["evaluate", "--env", "promogym/Nope-v0", "--policy", "list_price", "--out", "{d}/e.parquet"],
     "unknown or unsupported env id"),
    ("env hillstrom", ["evaluate", "--env", "promogym/HillstromTargeting-v0", "--policy", "random",
                       "--out", "{d}/e.parquet"], "scored off-policy"),
    ("policy unknown", ["evaluate", "--env", PRICING, *SMALL_ENV, "--policy", "nope", "--out", "{d}/e.parquet"],
     "unknown policy 'nope'"),
    ("policy family", ["evaluate", "--env", PRICING, *SMALL_ENV, "--policy", "uplift", "--out", "{d}/e.parquet"],
     "unknown policy 'uplift'"),
    ("static nan", ["evaluate", "--env", PRICING, *SMALL_ENV, "--policy", "static:nan", "--out", "{d}/e.parquet"],
     "needs a finite number"),
    ("static negative", ["evaluate", "--env", PRICING, *SMALL_ENV, "--policy", "static:-5",
                         "--out", "{d}/e.parquet"], "price band"),
    ("static text", ["evaluate", "--env", PRICING, *SMALL_ENV, "--policy", "static:abc", "--out", "{d}/e.parquet"],
     "needs a number"),
    ("static bare", ["evaluate", "--env", PRICING, *SMALL_ENV, "--policy", "static", "--out", "{d}/e.parquet"],
     "is written static:<multiplier>"),
    ("evaluate seed", ["evaluate", "--env", PRICING, *SMALL_ENV, "--policy", "list_price", "--seed", "-3",
                       "--out", "{d}/e.parquet"], "--seed must be >= 0"),
    ("evaluate episodes", ["evaluate", "--env", PRICING, *SMALL_ENV, "--policy", "list_price", "--episodes", "0",
                           "--out", "{d}/e.parquet"], "--episodes must be between"),
    ("env-set key", ["evaluate", "--env", PRICING, "--env-set", "horizn=3", "--policy", "list_price",
                     "--out", "{d}/e.parquet"], "horizn"),
    ("env-set value", ["evaluate", "--env", PRICING, "--env-set", "horizon=abc", "--policy", "list_price",
                       "--out", "{d}/e.parquet"], "horizon"),
    ("env-set form", ["evaluate", "--env", PRICING, "--env-set", "horizon", "--policy", "list_price",
                      "--out", "{d}/e.parquet"], "--env-set expects KEY=VALUE"),
    ("env-set yaml", ["evaluate", "--env", PRICING, "--env-set", "market={n_customers: [", "--policy", "list_price",
                      "--out", "{d}/e.parquet"], "--env-set market: the value is not valid YAML"),
    ("response kind", ["evaluate", "--env", PRICING, *SMALL_ENV, "--response", "forest:x", "--policy", "list_price",
                       "--out", "{d}/e.parquet"], "--response"),
    ("response oracle", ["evaluate", "--env", PRICING, *SMALL_ENV, "--response", "truth", "--policy", "list_price",
                         "--out", "{d}/e.parquet"], "truth"),
    ("evaluate out", ["evaluate", "--env", PRICING, *SMALL_ENV, "--policy", "list_price",
                      "--out", "{d}/existing.parquet"], "exists; pass --force"),
    ("evaluate logs", ["evaluate", "--env", PRICING, *SMALL_ENV, "--policy", "list_price", "--logs", "{d}/no.pq",
                       "--out", "{d}/e.parquet"], "--logs file not found"),
    ("run other env", ["evaluate", "--env", PRICING, *SMALL_ENV, "--policy", "{d}/run_other_env",
                       "--out", "{d}/e.parquet"], "holds an agent for promogym/CouponAllocation-v1"),
    ("run other shape", ["evaluate", "--env", PRICING, *SMALL_ENV, "--policy", "{d}/run_other_shape",
                         "--out", "{d}/e.parquet"], "with other settings"),
    ("ab alpha", ["ab", "--env", PRICING, *SMALL_ENV, "--a", "list_price", "--b", "static:1.1", "--alpha", "2"],
     "--alpha and --power"),
    ("ab episodes", ["ab", "--env", PRICING, *SMALL_ENV, "--a", "list_price", "--b", "static:1.1",
                     "--episodes", "1"], "--episodes must be >= 2"),
    ("ab out", ["ab", "--env", PRICING, *SMALL_ENV, "--a", "list_price", "--b", "static:1.1",
                "--out", "{d}/existing.json"], "exists; pass --force"),
    # experiment / report / agents-report
    ("name dotdot", ["experiment", "{d}/name_dotdot.yml", "--out", "{d}/r"], "name must be"),
    ("name slash", ["experiment", "{d}/name_slash.yml", "--out", "{d}/r"], "name must be"),
    ("seeds float", ["experiment", "{d}/seeds_float.yml", "--out", "{d}/r"], "seeds must be an integer"),
    ("episodes float", ["experiment", "{d}/episodes_float.yml", "--out", "{d}/r"], "episodes must be an integer"),
    ("jobs float", ["experiment", "{d}/jobs_float.yml", "--out", "{d}/r"], "jobs must be an integer"),
    ("timesteps float", ["experiment", "{d}/timesteps_float.yml", "--out", "{d}/r"], "timesteps must be an integer"),
    ("rows zero", ["experiment", "{d}/rows_zero.yml", "--out", "{d}/r"], "rows"),
    ("kind truth", ["experiment", "{d}/kind_truth.yml", "--out", "{d}/r"], "has no fitter"),
    ("logs path", ["experiment", "{d}/logs_missing.yml", "--out", "{d}/r"], "logs file not found"),
    ("env id", ["experiment", "{d}/env_unknown.yml", "--out", "{d}/r"], "unknown env id"),
    ("algo", ["experiment", "{d}/algo_unknown.yml", "--out", "{d}/r"], "unknown algorithm 'ppo2'"),
    ("baseline family", ["experiment", "{d}/baseline_other_family.yml", "--out", "{d}/r"], "unknown policy"),
    ("baseline arg", ["experiment", "{d}/static_nan.yml", "--out", "{d}/r"], "finite"),
    ("hyperparameter key", ["experiment", "{d}/hyperparam_key.yml", "--out", "{d}/r"], "'n_stepz'"),
    ("hyperparameter value", ["experiment", "{d}/hyperparam_value.yml", "--out", "{d}/r"], "learning_rate"),
    ("config list", ["experiment", "{d}/list.yml", "--out", "{d}/r"], "YAML mapping"),
    ("config missing", ["experiment", "{d}/none.yml", "--out", "{d}/r"], "not found"),
    ("experiment out", ["experiment", "{d}/good.yml", "--out", "{d}/notempty"], "--force"),
    ("experiment report", ["experiment", "{d}/good.yml", "--out", "{d}/r", "--report", "{d}/notempty"], "--force"),
    ("report not run", ["report", "{d}/notempty"], "not an experiment run folder"),
    ("report broken", ["report", "{d}/broken_run", "--out", "{d}/rep"], "stage.json"),
    ("report out", ["report", "{d}/broken_run", "--out", "{d}/notempty"], "--force"),
    ("agents env", ["agents-report", "--env", "promogym/Nope-v0", "--runs", "{d}/ar"], "unknown env id"),
    ("agents jobs", ["agents-report", "--jobs", "0", "--runs", "{d}/ar"], "--jobs"),
    ("agents logs", ["agents-report", "--logs", "{d}/no.parquet", "--runs", "{d}/ar"], "--logs file not found"),
    # hillstrom
    ("email cost", ["hillstrom", "--email-cost", "-1", "--runs", "{d}/h"], "--email-cost"),
    ("hillstrom jobs", ["hillstrom", "--jobs", "0", "--runs", "{d}/h"], "--jobs"),
    ("hillstrom encoder", ["hillstrom", "--encoder", "{d}/nonexistent", "--runs", "{d}/h"], "no BERT checkpoint"),
    ("budget share", ["hillstrom", "--budget-share", "2", "--runs", "{d}/h"], "--budget-share"),
    ("train rows", ["hillstrom", "--train-rows", "10", "--runs", "{d}/h"], "--train-rows"),
    ("hillstrom runs", ["hillstrom", "--runs", "{d}/notempty"], "--force"),
    # bench
    ("bench device", ["bench", "predictor", "--device", "bogus", "--out", "{d}/b"], "--device must be"),
    ("bench device world", ["bench", "world", "--device", "cuda", "--out", "{d}/b"], "applies to"),
    ("bench out", ["bench", "world", "--out", "{d}/notempty"], "--force"),
]


@pytest.mark.parametrize(("argv", "needle"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_clear_line_and_touches_nothing(prepared, tmp_path, capsys, argv, needle):
    d = tmp_path / "work"
    shutil.copytree(prepared, d)
    before = snapshot(d)
    code = main([a.replace("{d}", str(d)) for a in argv])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert "\n" not in err and err.startswith(f"promogym {argv[0]}: error: "), err
    assert needle in err, err
    assert snapshot(d) == before, "the command wrote, replaced or deleted files"


def test_the_case_list_is_what_the_readme_counts():
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert f"{len(CASES)} bad command lines" in text


def test_an_a_a_test_counts_its_episodes_once(tmp_path, capsys):
    out = tmp_path / "ab.json"
    assert main(["ab", "--env", PRICING, *SMALL_ENV, "--a", "list_price", "--b", "list_price", "--episodes", "4",
                 "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["episodes"] == 4 and result["diff"] == 0.0 and not result["significant"]
