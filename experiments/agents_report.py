"""`promogym agents-report`: learned agents against baselines and the oracle, many seeds, in the world.

An experiment of the pipeline engine with no simulator: the logs stage (the uplift baseline's training
data), every algorithm of each env family's ``default_algos`` trained on the world with several seeds, then
every policy — learned (best evaluation checkpoint) or not — on the same evaluation episodes (common random
numbers) in the world, aggregated with mean, IQM and stratified bootstrap CIs against the reference
(:func:`promogym.agents.registry.reference_policy`). The run folder is resumable like any experiment; a
markdown table per env and its JSON go to the report folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from promogym.core.io import atomic_path, write_json
from promogym.envs.families import family_of, short_name
from promogym.experiments.experiment import ExperimentConfig
from promogym.experiments.ship import BIAS_BAND, decision_records, rule_text, ship_lines

DEFAULT_ENVS = ("promogym/DynamicPricing-v1", "promogym/PricePromo-v1", "promogym/CouponAllocation-v1")


def agents_config(env_ids: list[str], seeds: int, timesteps: int, episodes: int, jobs: int,
                  logs: str | None = None) -> ExperimentConfig:
    """The experiment behind the report: world-trained agents, world-scored policies, no predictor."""
    return ExperimentConfig.from_dict({
        "name": "agents", "description": "learned agents against baselines and the oracle, in the world",
        # the uplift baseline learns from these logs (100,000 rows of the default world, seed 11)
        "logs": {"rows": 100_000, "seed": 11, "path": logs},
        "envs": {e: {"algos": list(family_of(e).default_algos), "timesteps": timesteps} for e in env_ids},
        # 20 evaluation episodes per check: the best checkpoint is chosen on less noise (seeds apart from the
        # report's)
        "train": {"seeds": seeds, "simulators": ["world"], "eval_episodes": 20,
                  "eval_freq": max(2000, timesteps // 20)},
        "evaluate": {"episodes": episodes, "seed": 1_000_000, "trace_episodes": 0, "sim_planners": False},
        "execution": {"backend": "local", "jobs": jobs}})


def _pct(x: float | None) -> str:
    return "–" if x is None or not np.isfinite(x) else f"{x:.1%}"


def _num(x: float | None) -> str:
    return "–" if x is None or not np.isfinite(x) else f"{x:.2f}"


def markdown(env_id: str, stats: dict[str, Any], band: float = BIAS_BAND) -> str:
    """One env's table of the agents report, with the should-we-ship-it line of each learned policy its
    statistics record (``stats["ship"]``)."""
    lines = [f"### {env_id} ({stats['episodes']} evaluation episodes in the world; reference: {stats['reference']})",
             "", "| policy | seeds | mean return | 95% CI | IQM | vs reference | share of oracle | normalized |",
             "|---|---|---|---|---|---|---|---|"]
    for name, e in sorted(stats["policies"].items(), key=lambda kv: -kv[1]["mean"]):
        lo, hi = e["ci95"]
        label = name.split("@")[0] + (" (learned)" if e["learned"] else "")
        lines.append(f"| {label} | {e['seeds']} | {e['mean']:,.0f} | [{lo:,.0f}, {hi:,.0f}] | {e['iqm']:,.0f} | "
                     f"{e['vs_reference']:+.1%} | {_pct(e.get('share_of_oracle'))} | {_num(e.get('normalized'))} |")
    ship = ship_lines(stats.get("ship") or {})
    if ship:
        lines += ["", "Should we ship it? " + rule_text(band), "", *ship]
    return "\n".join(lines)


__all__ = ["agents_config", "markdown"]


def write_agents_report(runs: Path, out: Path, env_ids: list[str], timesteps: int, band: float = BIAS_BAND) -> str:
    """Per env of this invocation, the statistics of the run folder's episode tables as JSON; ``report.md``
    gathers every env whose JSON is in ``out``. Returns the markdown of this invocation's envs. ``band``: the
    simulator's stated bias band of the ship rule (the agents here are trained and scored in the world, with no
    simulator between, so no fidelity is measured and the ship line says so)."""
    from promogym.experiments.report import env_statistics, load_run

    episodes = load_run(runs)["episodes"]
    parts = []
    for env_id in env_ids:
        stats = env_statistics(episodes[episodes["env_id"] == env_id])
        stats["ship"] = decision_records(stats, None, band)
        write_json(out / f"{short_name(env_id)}.json", {"env_id": env_id, "timesteps": timesteps, **stats})
        parts.append(markdown(env_id, stats, band))
    gathered = [markdown(e, json.loads((out / f"{short_name(e)}.json").read_text()), band)
                for e in DEFAULT_ENVS if (out / f"{short_name(e)}.json").is_file()]
    with atomic_path(out / "report.md") as tmp:
        tmp.write_text("\n\n".join(gathered) + "\n")
    return "\n\n".join(parts)


__all__ = ["DEFAULT_ENVS", "agents_config", "markdown", "write_agents_report"]
