"""`promogym experiment` and `promogym report`: the smoke experiment end to end, resumption, bad configs,
the statistics of the report and the policy-analysis notebook."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from promogym.experiments.cli import main
from promogym.experiments.experiment import CONFIG_DIR, Experiment, ExperimentConfig
from promogym.experiments.report import env_statistics
from promogym.experiments.stats import ab_test, bootstrap_ci, iqm
from promogym.experiments.trials import run_trials

SMOKE = CONFIG_DIR / "smoke.yml"
NOTEBOOK = Path(__file__).resolve().parent.parent / "experiments" / "notebooks" / "policy_analysis.ipynb"


def smoke_dict() -> dict:
    return yaml.safe_load(SMOKE.read_text())


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """The smoke experiment as `make demo` runs it (its own config file), into a temporary folder."""
    root = tmp_path_factory.mktemp("smoke")
    out, report = root / "run", root / "report"
    start = time.perf_counter()
    code = main(["experiment", str(SMOKE), "--out", str(out), "--report", str(report), "--no-progress"])
    assert code == 0
    return out, report, time.perf_counter() - start


# ---------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(("change", "needle"), [
    (lambda d: d.update(learning_rate=1), "unknown config key(s): learning_rate"),
    (lambda d: d["train"].update(seed=3), "train: unknown TrainSection key(s): seed"),
    (lambda d: d["envs"].update({"promogym/Nope-v0": {}}), "unknown env id 'promogym/Nope-v0'"),
    (lambda d: d["envs"]["promogym/DynamicPricing-v1"].update(algos=["dqn"]), "dqn cannot act"),
    (lambda d: d["envs"]["promogym/DynamicPricing-v1"].update(algos=["ppo2"]), "unknown algorithm 'ppo2'"),
    (lambda d: d["envs"]["promogym/DynamicPricing-v1"].update(config={"horizn": 3}), "horizn"),
    (lambda d: d["envs"]["promogym/DynamicPricing-v1"].update(baselines=["uplift"]),
     "baselines: unknown policy 'uplift'"),
    (lambda d: d["predictor"].update(encoder="/no/such/bert"), "encoder checkpoint not found: /no/such/bert"),
    (lambda d: d["predictor"].update(kind="forest"), "unknown model kind 'forest'"),
    (lambda d: d["predictor"].update(kind="truth"), "'truth' has no fitter"),
    (lambda d: d["predictor"].update(fit={"head_epoch": 2}), "head_epoch"),
    (lambda d: d["train"].update(simulators=["bert"]), "TrainSection.simulators"),
    (lambda d: d["execution"].update(backend="slurm"), "execution: ExecutionSection.backend"),
])
def test_a_bad_config_fails_before_any_work(tmp_path, capsys, change, needle):
    raw = smoke_dict()
    change(raw)
    cfg = tmp_path / "bad.yml"
    cfg.write_text(yaml.safe_dump(raw))
    out = tmp_path / "run"
    assert main(["experiment", str(cfg), "--out", str(out), "--no-report"]) == 2
    assert needle in capsys.readouterr().err
    assert not out.exists()


def test_a_missing_config_file_is_a_clear_error(tmp_path, capsys):
    assert main(["experiment", str(tmp_path / "none.yml"), "--out", str(tmp_path / "run")]) == 2
    assert "experiment config not found" in capsys.readouterr().err


def test_report_of_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "not an experiment run folder" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------- stage keys
def test_stage_keys_follow_their_inputs_only(tmp_path):
    """Evaluation settings do not touch training runs; a new predictor retrains only the simulator's runs."""
    def keys(raw: dict, predictor_id: str) -> tuple[dict[str, str], list[str]]:
        ex = Experiment(ExperimentConfig.from_dict(raw), tmp_path, progress=False, echo=lambda s: None)
        ex.ids.update(logs="logs-1", predictor=predictor_id)
        runs = ex.train_payloads("bert:/x")
        evals = ex.eval_payloads("bert:/x", runs, tmp_path / "logs.parquet")
        return {f"{r['on']}/{r['env_id']}/{r['seed']}": r["key"] for r in runs}, [e["key"] for e in evals]

    train0, eval0 = keys(smoke_dict(), "fit-1")
    more = smoke_dict()
    more["evaluate"]["episodes"] = 50
    train1, eval1 = keys(more, "fit-1")
    assert train1 == train0 and not set(eval1) & set(eval0)
    train2, _ = keys(smoke_dict(), "fit-2")
    changed = {k for k in train0 if train2[k] != train0[k]}
    assert changed == {k for k in train0 if k.startswith("sim/")} and changed
    longer = smoke_dict()
    longer["envs"]["promogym/DynamicPricing-v1"]["timesteps"] = 4096
    train3, _ = keys(longer, "fit-1")
    assert {k for k in train0 if train3[k] != train0[k]} == {k for k in train0 if "DynamicPricing" in k}


def test_a_changed_hyperparameter_table_row_retrains(tmp_path, monkeypatch):
    """A training stage's key holds the hyperparameters it trains with, the table's row included: editing
    agents/hyperparams.yml retrains the runs that use that row on resume instead of reusing the old agents."""
    import promogym.agents.train as train_module

    def keys() -> dict[str, str]:
        ex = Experiment(ExperimentConfig.from_dict(smoke_dict()), tmp_path, progress=False, echo=lambda s: None)
        ex.ids.update(logs="logs-1", predictor="fit-1")
        return {f"{r['on']}/{r['env_id']}/{r['algo']}/{r['seed']}": r["key"] for r in ex.train_payloads("bert:/x")}

    before = keys()
    table = train_module.load_hyperparams
    monkeypatch.setattr(train_module, "load_hyperparams", lambda env_id, algo: {
        **table(env_id, algo), **({"learning_rate": 1e-5} if "DynamicPricing" in env_id else {})})
    after = keys()
    assert {k for k in before if after[k] != before[k]} == {k for k in before if "DynamicPricing" in k}
    assert any("DynamicPricing" in k for k in before) and any("DynamicPricing" not in k for k in before)


# ---------------------------------------------------------------------------------------- trials
def _square(x: int) -> int:
    return x * x


def _fail_on_three(x: int) -> int:
    if x == 3:
        raise RuntimeError("trial 3 failed")
    return x


def test_local_trials_return_every_result_and_raise_a_failure():
    got = dict(run_trials(_square, list(range(6)), "local", jobs=2))
    assert got == {x: x * x for x in range(6)}
    with pytest.raises(RuntimeError, match="trial 3 failed"):
        list(run_trials(_fail_on_three, list(range(5)), "local", jobs=2))
    with pytest.raises(ValueError, match="unknown execution backend"):
        list(run_trials(_square, [1], "slurm"))


# ---------------------------------------------------------------------------------------- statistics
def _episodes(rows: list[tuple[str, str, str, int, np.ndarray]]) -> pd.DataFrame:
    frames = []
    for policy, backend, trained_on, train_seed, returns in rows:
        frames.append(pd.DataFrame({"policy": policy, "backend": backend, "env_id": "promogym/X-v0",
                                    "trained_on": trained_on, "algo": policy.split("@")[0] if "@" in policy else "-",
                                    "train_seed": train_seed, "seed": np.arange(len(returns)), "return": returns}))
    return pd.concat(frames, ignore_index=True)


def test_statistics_on_known_numbers():
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 1, 200)
    rows = [("best_static", "world", "-", -1, 100 + noise), ("oracle", "world", "-", -1, 120 + noise),
            ("best_static", "sim", "-", -1, 110 + noise)]
    for s in range(4):
        rows += [("ppo@world", "world", "world", s, 115 + s + noise), ("ppo@sim", "world", "sim", s, 105 + s + noise),
                 ("ppo@sim", "sim", "sim", s, 125 + s + noise)]
    stats = env_statistics(_episodes(rows))
    p = stats["policies"]
    assert stats["reference"] == "best_static"
    assert p["ppo@world"]["mean"] == pytest.approx(116.5 + noise.mean())
    assert p["ppo@world"]["normalized"] == pytest.approx(16.5 / 20, abs=1e-9)
    assert p["oracle"]["share_of_oracle"] == pytest.approx(1.0)
    gap = stats["sim_to_real"]["ppo"]
    assert gap["gap"] == pytest.approx(-10.0) and gap["gap_ci95"][1] < 0
    assert gap["normalized_gap"] == pytest.approx(-0.5)
    assert stats["simulator_bias"]["best_static"]["bias"] == pytest.approx(10.0)
    assert stats["simulator_bias"]["ppo@sim"]["bias"] == pytest.approx(20.0)
    assert "ppo@world" not in stats["simulator_bias"]  # never scored in the simulator
    ab = stats["ab_vs_reference"]["ppo@world"]
    assert ab["diff"] == pytest.approx(16.5) and ab["p_value"] < 1e-6


# ---------------------------------------------------------------------------------------- end to end
def test_smoke_experiment_writes_a_complete_report(smoke_run):
    out, report, _ = smoke_run
    text = (report / "report.md").read_text()
    for heading in ("## promogym/DynamicPricing-v1", "## promogym/CouponAllocation-v1", "### Sim-to-real gap",
                    "### The simulator's bias", "### A/B tests against the reference", "## The predictor"):
        assert heading in text
    for plot in ("profit_DynamicPricing-v1", "learning_DynamicPricing-v1", "trajectories_DynamicPricing-v1",
                 "bias_DynamicPricing-v1", "profit_CouponAllocation-v1", "coupons_CouponAllocation-v1",
                 "calibration"):
        assert (report / "plots" / f"{plot}.png").stat().st_size > 1000
        assert f"plots/{plot}.png" in text
    assert not (report / "plots" / "coupons_DynamicPricing-v1.png").exists()
    summary = json.loads((report / "summary.json").read_text())
    pricing = summary["envs"]["promogym/DynamicPricing-v1"]
    assert pricing["policies"]["ppo@world"]["seeds"] == 2 and pricing["policies"]["oracle"]["seeds"] == 1
    assert set(pricing["sim_to_real"]) == {"ppo"}
    assert "oracle" not in pricing["simulator_bias"]  # the oracle is never scored in the simulator
    # the tidy table: one row per policy x backend x training seed x episode, with the reward components
    episodes = pd.read_parquet(report / "episodes.parquet")
    cfg = smoke_dict()
    n_eps = cfg["evaluate"]["episodes"]
    per_env = episodes.groupby(["env_id", "policy", "backend", "train_seed"]).size()
    assert (per_env == n_eps).all()
    assert {"revenue", "cost", "coupon_spend", "units", "stockouts", "return"} <= set(episodes.columns)
    world = episodes[(episodes["backend"] == "world") & (episodes["env_id"] == "promogym/DynamicPricing-v1")]
    # common random numbers: every policy plays the same episode seeds
    assert world.groupby("policy")["seed"].apply(lambda s: tuple(sorted(set(s)))).nunique() == 1
    assert len(set(world["policy"])) == len(cfg["envs"]["promogym/DynamicPricing-v1"]["baselines"]) + 2 + 2
    meta = json.loads((out / "run.json").read_text())
    assert meta["wall_seconds_total"] > 0 and meta["machine"]["cpus"] >= 1


def test_the_report_is_a_recomputation_of_its_episode_table(smoke_run):
    """Every figure of the report's policy, gap, bias and A/B tables (summary.json, and the policy table's
    row in report.md) equals a recomputation from episodes.parquet: per-seed means, their mean and IQM, the
    stratified bootstrap CI with the project's seed, the reference's ratio, paired differences."""
    _, report, _ = smoke_run
    episodes = pd.read_parquet(report / "episodes.parquet")
    summary = json.loads((report / "summary.json").read_text())
    text = (report / "report.md").read_text()
    assert set(summary["envs"]) == set(episodes["env_id"]) and len(summary["envs"]) == 2
    for env_id, stats in summary["envs"].items():
        env = episodes[episodes["env_id"] == env_id]
        world, sim = env[env["backend"] == "world"], env[env["backend"] == "sim"]
        assert set(stats["policies"]) == set(world["policy"])
        assert stats["episodes"] == world["seed"].nunique()
        means = {}
        for name, p in stats["policies"].items():
            rows = world[world["policy"] == name]
            mat = rows.pivot_table(index="train_seed", columns="seed", values="return").to_numpy()
            per_seed = rows.groupby("train_seed")["return"].mean().to_numpy()
            means[name] = per_seed.mean()
            assert p["seeds"] == len(per_seed) == mat.shape[0]
            assert p["per_seed"] == pytest.approx(per_seed.tolist())
            assert p["mean"] == pytest.approx(per_seed.mean())
            assert p["iqm"] == pytest.approx(iqm(per_seed))
            assert p["ci95"] == pytest.approx(list(bootstrap_ci(mat)))
            row = (f"| {'**' + name + '**' if p['learned'] else name} | {p['trained_on']} | {len(per_seed)} | "
                   f"{per_seed.mean():,.0f} | [{p['ci95'][0]:,.0f}, {p['ci95'][1]:,.0f}] | {iqm(per_seed):,.0f} |")
            assert row in text, row
        ref = stats["reference"]
        for name, p in stats["policies"].items():
            assert p["vs_reference"] == pytest.approx(means[name] / means[ref] - 1)
            if "oracle" in means:
                assert p["share_of_oracle"] == pytest.approx(means[name] / means["oracle"])
        for algo, g in stats["sim_to_real"].items():
            assert g["gap"] == pytest.approx(means[f"{algo}@sim"] - means[f"{algo}@world"])
        assert stats["simulator_bias"], env_id
        for name, b in stats["simulator_bias"].items():
            paired = world[world["policy"] == name].merge(sim[sim["policy"] == name], on=["train_seed", "seed"],
                                                          suffixes=("_w", "_s"))
            assert b["bias"] == pytest.approx((paired["return_s"] - paired["return_w"]).mean())
            assert b["world"] == pytest.approx(paired["return_w"].mean())
        for name, r in stats["ab_vs_reference"].items():
            ref_ep = world[world["policy"] == ref].groupby("seed")["return"].mean()
            ep = world[world["policy"] == name].groupby("seed")["return"].mean().loc[ref_ep.index]
            again = ab_test(ref_ep.to_numpy(), ep.to_numpy())
            assert r["diff"] == pytest.approx(again["diff"]) and r["p_value"] == pytest.approx(again["p_value"])
            assert r["lift"] == pytest.approx((ep.mean() - ref_ep.mean()) / ref_ep.mean())


def test_a_rerun_skips_finished_stages_and_redoes_only_what_was_lost(smoke_run, capsys):
    out, report, _ = smoke_run
    capsys.readouterr()
    assert main(["experiment", str(SMOKE), "--out", str(out), "--report", str(report), "--no-progress"]) == 0
    said = capsys.readouterr().out
    for stage in ("logs: done already", "predictor: done already", "train: done already", "evaluate: done already"):
        assert stage in said
    # an interruption: one training run and one evaluation table lost
    lost_run = out / "train" / "DynamicPricing-v1" / "world" / "ppo_s1"
    shutil.rmtree(lost_run)
    (out / "evaluate" / "CouponAllocation-v1" / "world" / "no_coupon.json").unlink()
    (out / "train" / "stage.json").unlink()
    (out / "evaluate" / "stage.json").unlink()
    kept = (out / "train" / "DynamicPricing-v1" / "world" / "ppo_s0" / "model.zip").stat().st_mtime_ns
    assert main(["experiment", str(SMOKE), "--out", str(out), "--no-report", "--no-progress"]) == 0
    said = capsys.readouterr().out
    assert "train: 1 of 8 runs to do" in said
    assert (lost_run / "trial.json").is_file()
    assert (out / "train" / "DynamicPricing-v1" / "world" / "ppo_s0" / "model.zip").stat().st_mtime_ns == kept
    # the retrained run changes the learned policy's tables; the lost baseline table is redone too
    assert "CouponAllocation-v1 no_coupon in the world" in said
    assert "DynamicPricing-v1 ppo@world in the world" in said
    assert "DynamicPricing-v1 oracle in the world" not in said


def test_report_command_redraws_the_report(smoke_run, tmp_path, capsys):
    out, _, _ = smoke_run
    assert main(["report", str(out), "--out", str(tmp_path / "again")]) == 0
    assert "report:" in capsys.readouterr().out
    # the redrawn report holds the run's statistics: each env's figures recomputed from its episode table
    eps = pd.read_parquet(tmp_path / "again" / "episodes.parquet")
    summary = json.loads((tmp_path / "again" / "summary.json").read_text())
    assert set(summary["envs"]) == set(eps["env_id"]) == {"promogym/DynamicPricing-v1", "promogym/CouponAllocation-v1"}
    for env_id, stats in summary["envs"].items():
        again = env_statistics(eps[eps["env_id"] == env_id])
        assert stats["reference"] == again["reference"] and stats["episodes"] == again["episodes"]
        assert {n: p["mean"] for n, p in stats["policies"].items()} == pytest.approx(
            {n: p["mean"] for n, p in again["policies"].items()})
        assert f"## {env_id}" in (tmp_path / "again" / "report.md").read_text()
    # redrawing the same run's report is the same work; a stale plot of the report's goes, a user's file stays
    plots = tmp_path / "again" / "plots"
    (plots / "profit_Gone-v0.png").write_bytes(b"a plot an earlier report drew")
    (plots / "my_notes.png").write_bytes(b"someone's picture")
    assert main(["report", str(out), "--out", str(tmp_path / "again")]) == 0
    assert not (plots / "profit_Gone-v0.png").exists() and (plots / "my_notes.png").read_bytes() == b"someone's picture"
    # another run's report folder is not overwritten without --force
    other = tmp_path / "other"
    other.mkdir()
    (other / "report.md").write_text("another report")
    assert main(["report", str(out), "--out", str(other)]) == 2
    assert (other / "report.md").read_text() == "another report"


def test_policy_analysis_notebook_runs_on_the_smoke_experiment(smoke_run):
    import nbclient
    import nbformat

    out, _, _ = smoke_run
    nb = nbformat.read(NOTEBOOK, as_version=4)
    os.environ["PROMOGYM_RUN"], os.environ["PROMOGYM_EPISODES"] = str(out), "2"
    try:
        nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                resources={"metadata": {"path": str(NOTEBOOK.parent.parent.parent)}}).execute()
    finally:
        os.environ.pop("PROMOGYM_RUN")
        os.environ.pop("PROMOGYM_EPISODES")
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = "".join(o.get("text", "") for o in outputs)
    assert "decisions differ" in text and "reference: best_static" in text
    assert "shop back-test, clogit: purchases" in text  # the committed shop results (results/shop*)
    assert sum(1 for o in outputs if "image/png" in o.get("data", {})) >= 3


# ---------------------------------------------------------------------------------------- Ray
@pytest.mark.slow
def test_the_same_trials_run_on_a_local_ray_instance(tmp_path, capsys):
    """`--backend ray` with no address starts a local Ray and runs every trial there (pricing only, on the
    world, a GBDT predictor: the pipeline's path through Ray, at the smallest size)."""
    pytest.importorskip("ray", reason="the ray backend is tested where `promogym[ray]` is installed")
    raw = smoke_dict()
    raw["predictor"] = {"kind": "gbdt", "eval_rows": 1000}
    raw["envs"] = {"promogym/DynamicPricing-v1": {**raw["envs"]["promogym/DynamicPricing-v1"],
                                                  "baselines": ["list_price", "best_static", "myopic"]}}
    raw["train"]["simulators"] = ["world", "sim"]
    cfg = tmp_path / "ray.yml"
    cfg.write_text(yaml.safe_dump(raw))
    out, report = tmp_path / "run", tmp_path / "report"
    assert main(["experiment", str(cfg), "--out", str(out), "--report", str(report), "--backend", "ray",
                 "--jobs", "2", "--no-progress"]) == 0
    said = capsys.readouterr().out
    assert "train: 4 of 4 runs to do" in said
    summary = json.loads((report / "summary.json").read_text())
    policies = summary["envs"]["promogym/DynamicPricing-v1"]["policies"]
    assert policies["ppo@sim"]["seeds"] == 2 and "myopic@sim" in policies
    assert all((out / "train" / "DynamicPricing-v1" / on / f"ppo_s{s}" / "trial.json").is_file()
               for on in ("world", "sim") for s in (0, 1))


@pytest.mark.slow  # about 4 minutes on 2 cores: the largest single share of the default run
def test_an_interrupted_experiment_keeps_finished_trials_and_resumes(tmp_path):
    """Ctrl-C while the first training runs are in flight: nothing half-written remains, and the same
    command finishes the experiment from there."""
    import signal
    import subprocess
    import sys

    raw = smoke_dict()
    raw["logs"]["rows"] = 2000
    raw["predictor"] = {"kind": "gbdt", "eval_rows": 500}
    raw["envs"] = {"promogym/DynamicPricing-v1": {**raw["envs"]["promogym/DynamicPricing-v1"],
                                                  "baselines": ["list_price"], "timesteps": 4096}}
    raw["train"]["simulators"] = ["world"]
    raw["train"]["seeds"] = 3
    raw["execution"]["jobs"] = 1
    cfg = tmp_path / "small.yml"
    cfg.write_text(yaml.safe_dump(raw))
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "promogym.experiments.cli", "experiment", str(cfg), "--out", str(out), "--no-report",
           "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    train = out / "train" / "DynamicPricing-v1" / "world"
    deadline = time.time() + 300
    while time.time() < deadline and not (train / "ppo_s0" / "trial.json").is_file():
        time.sleep(0.2)
    assert (train / "ppo_s0" / "trial.json").is_file(), proc.communicate(timeout=60)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "interrupted" in err
    assert not list(train.glob(".*.tmp"))  # the run in flight left nothing behind
    finished = {p.name for p in train.iterdir() if (p / "trial.json").is_file()}
    assert "ppo_s0" in finished and {p.name for p in train.iterdir()} == finished
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "logs: done already" in done.stdout and "predictor: done already" in done.stdout
    assert f"train: {3 - len(finished)} of 3 runs to do" in done.stdout
    assert (out / "evaluate" / "stage.json").is_file()
