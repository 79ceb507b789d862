"""What the business constraints cost: an experiment whose env sets constraints also scores every policy on the
same episodes with them off, and the report shows the paired difference."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from promogym.experiments.cli import main
from promogym.experiments.experiment import (
    CONFIG_DIR,
    UNCONSTRAINED,
    Experiment,
    ExperimentConfig,
    unconstrained_config,
)
from promogym.experiments.report import constraints_cost

DP = "promogym/DynamicPricing-v1"
CONSTRAINTS = {"max_daily_change": 0.1, "max_weekly_changes": 2, "margin_floor": 0.2, "price_endings": [0.99, 0.49]}


def _raw(constraints: dict | None) -> dict:
    """A world-only experiment (no predictor) at smoke size."""
    config = {"n_products": 3, "horizon": 7} | ({"constraints": constraints} if constraints is not None else {})
    return {"name": "cons", "logs": {"rows": 1000},
            "envs": {DP: {"algos": ["ppo"], "timesteps": 128, "config": config,
                          "hyperparams": {"ppo": {"n_steps": 64, "batch_size": 32}},
                          "baselines": ["list_price", "random"]}},
            "train": {"seeds": 1, "simulators": ["world"], "eval_freq": 64, "eval_episodes": 1},
            "evaluate": {"episodes": 4, "trace_episodes": 1, "sim_planners": False},
            "execution": {"jobs": 1}}


@pytest.mark.parametrize(("config", "free"), [
    ({}, None), ({"constraints": {}}, None), ({"constraints": {"margin_floor": None, "price_endings": []}}, None),
    ({"horizon": 7, "constraints": {"margin_floor": 0.2}}, {"horizon": 7, "constraints": {}}),
])
def test_unconstrained_config_turns_only_the_constraints_off(config, free):
    assert unconstrained_config(config) == free


def test_every_policy_is_also_scored_without_the_constraints(tmp_path):
    def payloads(raw: dict) -> list[dict]:
        ex = Experiment(ExperimentConfig.from_dict(raw), tmp_path, progress=False, echo=lambda s: None)
        ex.ids.update(logs="logs-1")
        return ex.eval_payloads("world", ex.train_payloads("world"), tmp_path / "logs.parquet")

    plain = payloads(_raw(None))
    assert {p["backend"] for p in plain} == {"world"}
    constrained = payloads(_raw(CONSTRAINTS))
    free = [p for p in constrained if p["backend"] == UNCONSTRAINED]
    world = [p for p in constrained if p["backend"] == "world"]
    labels = ["list_price", "ppo@world", "random"]
    assert sorted(p["label"] for p in free) == sorted(p["label"] for p in world) == labels
    for p in free:
        assert p["env_config"]["constraints"] == {} and p["env_config"]["n_products"] == 3
        assert p["trace_episodes"] == 0 and p["response"] == "world"
        twin = next(w for w in world if w["label"] == p["label"])
        assert (p["first_seed"], p["episodes"], p["specs"]) == (twin["first_seed"], twin["episodes"], twin["specs"])
        assert p["key"] != twin["key"] and p["stem"] != twin["stem"]


def test_constraints_cost_is_the_paired_difference_per_episode():
    rows = []
    for seed, (w, f) in enumerate([(100, 110), (90, 104), (120, 128), (80, 95)]):
        for train_seed, shift in ((0, 0.0), (1, 2.0)):  # a learned policy: averaged over its seeds per episode
            rows += [{"policy": "ppo@world", "backend": "world", "train_seed": train_seed, "seed": seed,
                      "return": w + shift},
                     {"policy": "ppo@world", "backend": UNCONSTRAINED, "train_seed": train_seed, "seed": seed,
                      "return": f + shift}]
        rows += [{"policy": "list_price", "backend": "world", "train_seed": -1, "seed": seed, "return": 50.0 + seed},
                 {"policy": "list_price", "backend": UNCONSTRAINED, "train_seed": -1, "seed": seed,
                  "return": 50.0 + seed}]
    cost = constraints_cost(pd.DataFrame(rows))
    d = np.array([-10, -14, -8, -15], float)
    assert cost["ppo@world"]["diff"] == pytest.approx(d.mean())
    assert cost["ppo@world"]["with"] == pytest.approx(98.5) and cost["ppo@world"]["without"] == pytest.approx(110.25)
    lo, hi = cost["ppo@world"]["diff_ci95"]
    assert lo < d.mean() < hi < 0 and cost["ppo@world"]["seeds"] == 2 and cost["ppo@world"]["episodes"] == 4
    assert cost["list_price"]["diff"] == 0.0
    assert constraints_cost(pd.DataFrame(rows).query("backend == 'world'")) == {}


def test_a_constrained_experiment_reports_what_the_constraints_cost(tmp_path, capsys):
    cfg = tmp_path / "cons.yml"
    cfg.write_text(yaml.safe_dump(_raw(CONSTRAINTS)))
    out, report = tmp_path / "run", tmp_path / "report"
    assert main(["experiment", str(cfg), "--out", str(out), "--report", str(report), "--no-progress"]) == 0
    text = (report / "report.md").read_text()
    assert "### What the constraints cost" in text and "`max_daily_change: 0.1`" in text
    assert "### Should we ship it?" in text and "ppo@world: do not ship — ship" in text
    summary = json.loads((report / "summary.json").read_text())["envs"][DP]
    cost = summary["constraints_cost"]
    assert set(cost) == {"list_price", "random", "ppo@world"}
    # list prices end in .99 and keep their margin: the constraints leave list_price's seasons as they were, to the
    # cent, on the same episodes (common random numbers)
    assert cost["list_price"]["diff"] == 0.0 and cost["list_price"]["with"] == cost["list_price"]["without"]
    # random prices are moved by the constraints: its seasons differ
    assert cost["random"]["diff"] != 0.0
    episodes = pd.read_parquet(report / "episodes.parquet")
    assert set(episodes["backend"]) == {"world", UNCONSTRAINED}
    # the report's main table is scored with the constraints: the same as the world rows alone
    world = episodes[(episodes["backend"] == "world") & (episodes["policy"] == "random")]["return"].mean()
    assert summary["policies"]["random"]["mean"] == pytest.approx(world)
    assert summary["ship"]["ppo@world"]["ship"] is False


def test_the_constrained_config_is_valid_and_sets_constraints():
    cfg = ExperimentConfig.load(CONFIG_DIR / "constrained.yml")
    sec = cfg.envs[DP]
    assert unconstrained_config(dict(sec.config)) is not None
    assert cfg.report.bias_band == 0.05
