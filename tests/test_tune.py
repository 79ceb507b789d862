"""`promogym tune`: a budgeted Optuna search whose results a user can paste into agents/hyperparams.yml, which
resumes where it stopped, and which refuses bad input before any work."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import yaml

from promogym.agents.train import check_hyperparams, load_hyperparams
from promogym.experiments import tune
from promogym.experiments.cli import main

ENV = "promogym/DynamicPricing-v1"
SMALL = ["--env-set", "n_products=2", "--env-set", "horizon=7", "--env-set", "daily_customers=30",
         "--env-set", "market={n_customers: 600, n_products: 60}"]
CONFIG = {"n_products": 2, "horizon": 7, "daily_customers": 30, "market": {"n_customers": 600, "n_products": 60}}


def _tune(out: Path, *extra: str, trials: int = 2, algo: str = "ppo") -> int:
    return main(["tune", "--env", ENV, "--algo", algo, "--trials", str(trials), "--timesteps", "128",
                 "--eval-episodes", "2", *SMALL, "--out", str(out), "--no-progress", *extra])


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 2-trial search."""
    out = tmp_path_factory.mktemp("tune")
    assert _tune(out) == 0
    return out


def test_writes_results_with_the_documented_fields(searched: Path):
    result = json.loads((searched / "DynamicPricing-v1_ppo.json").read_text())
    table = load_hyperparams(ENV, "ppo")
    budget = result["budget"]
    assert budget["trials"] == 2 and budget["timesteps_per_trial"] == 128 and budget["eval_episodes"] == 2
    assert budget["cpus"] >= 1 and budget["wall_seconds"] > 0
    # PPO collects whole rollouts: the steps used are counted, not the steps asked for
    steps = budget["env_steps"]
    assert steps["train"] == sum(t["train_steps"] for t in result["trials"]) >= 2 * 128
    assert steps["total"] == steps["train"] + steps["eval"] and steps["eval"] > 0
    assert [t["number"] for t in result["trials"]] == [0, 1]
    assert all(t["state"] in ("complete", "pruned") and isinstance(t["params"], dict) for t in result["trials"])
    first, second = result["trials"]
    # trial 0 is the table's hyperparameters, and the baseline the search reports against
    assert first["baseline"] and first["hyperparams"] == table
    assert result["baseline"] == {"number": 0, "value": first["value"], "hyperparams": table}
    # a sampled trial is merged over the table: its net width as [w, w], the policy_kwargs not searched kept
    hp = second["hyperparams"]
    assert hp["policy_kwargs"]["net_arch"] == [second["params"]["net_width"]] * 2
    assert hp["policy_kwargs"]["log_std_init"] == table["policy_kwargs"]["log_std_init"]
    assert {k: hp[k] for k in second["params"] if k != "net_width"} == {
        k: v for k, v in second["params"].items() if k != "net_width"}
    complete = [t for t in result["trials"] if t["state"] == "complete"]
    assert result["best"]["value"] == max(t["value"] for t in complete) >= first["value"]
    assert result["commit"] and "optuna" in result["versions"] and "stable-baselines3" in result["versions"]
    # the YAML is a hyperparams.yml entry of the best trial, with its budget and command in the header
    text = (searched / "DynamicPricing-v1_ppo.yml").read_text()
    entry = yaml.safe_load(text)
    assert list(entry) == [ENV] and list(entry[ENV]) == ["ppo"]
    assert entry[ENV]["ppo"] == result["best"]["hyperparams"]
    check_hyperparams("ppo", entry[ENV]["ppo"], ENV, CONFIG)
    header = [line for line in text.splitlines() if line.startswith("#")]
    assert any("budget: 2 trials" in line for line in header)
    assert any(line.startswith("# command: promogym tune --env promogym/DynamicPricing-v1") for line in header)
    assert (searched / "DynamicPricing-v1_ppo.png").stat().st_size > 0


def test_resumes_where_it_stopped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    trained: list[dict] = []
    real = tune.train_and_score

    def counting(spec, hyperparams, report):
        trained.append(dict(hyperparams))
        return real(spec, hyperparams, report)

    monkeypatch.setattr(tune, "train_and_score", counting)
    assert _tune(tmp_path, trials=1) == 0
    assert len(trained) == 1
    first = json.loads((tmp_path / "DynamicPricing-v1_ppo.json").read_text())["trials"]
    # a run killed mid-trial leaves that trial running in the journal: it is run again, not counted
    import optuna
    from optuna.storages.journal import JournalFileBackend

    storage = optuna.storages.JournalStorage(JournalFileBackend(str(tmp_path / "DynamicPricing-v1_ppo" /
                                                                    tune.JOURNAL)))
    optuna.load_study(study_name="DynamicPricing-v1_ppo", storage=storage).ask()
    assert _tune(tmp_path, trials=2) == 0
    assert len(trained) == 2  # one new trial; trial 0 reused
    result = json.loads((tmp_path / "DynamicPricing-v1_ppo.json").read_text())
    assert [t["state"] for t in result["trials"]][:2] == ["complete", "interrupted"]
    assert result["trials"][0] == first[0] and result["budget"]["trials_counted"] == 2
    assert result["trials"][2]["state"] in ("complete", "pruned") and not result["trials"][2]["baseline"]
    assert _tune(tmp_path, trials=2) == 0 and len(trained) == 2  # done: the results are written again
    assert _tune(tmp_path, "--force", trials=1) == 0 and len(trained) == 3  # --force starts anew
    result = json.loads((tmp_path / "DynamicPricing-v1_ppo.json").read_text())
    assert [t["number"] for t in result["trials"]] == [0] and result["trials"][0]["baseline"]


def _fails_in_one_line(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("promogym tune: error:") and "\n" not in err
    return err


@pytest.mark.parametrize(("changes", "needle"), [
    ({"--env": "promogym/Nope-v0"}, "unknown env id"),
    ({"--algo": "ppp"}, "unknown algorithm"),
    ({"--algo": "a2c"}, "no search space for a2c"),
    ({"--algo": "dqn"}, "cannot act in"),
    ({"--trials": "0"}, "--trials must be >= 1"),
    ({"--timesteps": "0"}, "--timesteps must be >= 1"),
    ({"--eval-episodes": "0"}, "--eval-episodes must be >= 1"),
    ({"--trials": "many"}, "--trials must be an integer"),
    ({"--env-set": "n_products=-1"}, "n_products"),
])
def test_bad_input_is_one_line_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                               changes: dict[str, str], needle: str):
    args = {"--env": ENV, "--algo": "ppo", "--trials": "2", "--timesteps": "128", "--eval-episodes": "2",
            "--out": str(tmp_path / "out"), **changes}
    argv = ["tune", *(x for kv in args.items() for x in kv), "--no-progress"]
    assert needle in _fails_in_one_line(capsys, argv)
    assert not (tmp_path / "out").exists()


def test_without_optuna_it_says_how_to_install(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "optuna" else real(name, *a))
    err = _fails_in_one_line(capsys, ["tune", "--env", ENV, "--algo", "ppo", "--out", str(tmp_path / "out")])
    assert "pip install promogym[tune]" in err and not (tmp_path / "out").exists()


def test_refuses_other_settings_and_foreign_outputs(searched: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]):
    journal = (searched / "DynamicPricing-v1_ppo" / tune.JOURNAL).read_bytes()
    err = _fails_in_one_line(capsys, ["tune", "--env", ENV, "--algo", "ppo", "--timesteps", "256", "--eval-episodes",
                                      "2", *SMALL, "--out", str(searched), "--no-progress"])
    assert "other settings (timesteps 128, not 256)" in err
    assert (searched / "DynamicPricing-v1_ppo" / tune.JOURNAL).read_bytes() == journal
    with tune.study_lock(searched / "DynamicPricing-v1_ppo"):  # another command is running this study
        err = _fails_in_one_line(capsys, ["tune", "--env", ENV, "--algo", "ppo", "--timesteps", "128",
                                          "--eval-episodes", "2", *SMALL, "--out", str(searched), "--no-progress"])
    assert "in use by another promogym tune" in err
    (tmp_path / "DynamicPricing-v1_ppo.yml").write_text("someone's file\n")
    err = _fails_in_one_line(capsys, ["tune", "--env", ENV, "--algo", "ppo", "--out", str(tmp_path)])
    assert "exists" in err and (tmp_path / "DynamicPricing-v1_ppo.yml").read_text() == "someone's file\n"


def test_search_spaces_merge_into_valid_hyperparameters():
    """Every algorithm's table merged with its space's extremes passes the trainer's checks, and every PPO batch
    size divides every rollout."""
    for algo, space in tune.SPACES.items():
        for pick in (0, -1):
            params = {k: (d.values[pick] if isinstance(d, tune.Choice) else (d.low, d.high)[pick])
                      for k, d in space.items()}
            check_hyperparams(algo, tune.hyperparams_for(load_hyperparams(ENV, algo), params))
    ppo = tune.SPACES["ppo"]
    assert all(n % b == 0 for n in ppo["n_steps"].values for b in ppo["batch_size"].values)
