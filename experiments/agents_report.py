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

DEFAULT_ENVS = ("promogym/DynamicPricing-v2", "promogym/CouponAllocation-v2", "promogym/PricePromo-v1")
# the order of report.md: the default envs, then any other env with a table in the report folder
REPORT_ORDER = (*DEFAULT_ENVS, "promogym/DynamicPricing-v1", "promogym/CouponAllocation-v1")


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
    if stats.get("learning_curves"):
        lines += ["", f"![learning curves of {env_id}]({stats['learning_curves']})"]
    return "\n".join(lines)


def learning_curves(runs: Path, env_id: str, path: Path) -> bool:
    """Each learned policy's periodic evaluations during training (mean return over the evaluation episodes
    against training steps; one thin line per seed, the mean over seeds thick), from the run folder's
    ``evaluations.npz`` files. False when the run folder has none for ``env_id``."""
    from promogym.core.plots import pyplot, save_png

    plt = pyplot()
    root = runs / "train" / short_name(env_id)
    curves: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    for f in sorted(root.glob("*/*/evaluations.npz")):
        with np.load(f, allow_pickle=False) as z:
            steps, results = z["timesteps"], z["results"]
        algo = f.parent.name.rsplit("_s", 1)[0] + ("" if f.parent.parent.name == "world" else
                                                  f"@{f.parent.parent.name}")
        curves.setdefault(algo, []).append((steps, results.mean(axis=1)))
    if not curves:
        return False
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    for k, (algo, seeds) in enumerate(sorted(curves.items())):
        colour = f"C{k}"
        for steps, mean in seeds:
            ax.plot(steps, mean, color=colour, lw=0.6, alpha=0.4)
        n = min(len(s) for s, _ in seeds)
        ax.plot(seeds[0][0][:n], np.mean([m[:n] for _, m in seeds], axis=0), color=colour, lw=2.0,
                label=f"{algo} ({len(seeds)} seeds)")
    ax.set_xlabel("training steps")
    ax.set_ylabel("mean evaluation return")
    ax.set_title(f"{short_name(env_id)}: learning curves (world)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_png(fig, path)
    return True


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
        curves = f"learning_{short_name(env_id)}.png"
        stats["learning_curves"] = curves if learning_curves(runs, env_id, out / curves) else None
        write_json(out / f"{short_name(env_id)}.json", {"env_id": env_id, "timesteps": timesteps, **stats})
        parts.append(markdown(env_id, stats, band))
    gathered = [markdown(e, json.loads((out / f"{short_name(e)}.json").read_text()), band)
                for e in REPORT_ORDER if (out / f"{short_name(e)}.json").is_file()]
    with atomic_path(out / "report.md") as tmp:
        tmp.write_text("\n\n".join(gathered) + "\n")
    return "\n\n".join(parts)


__all__ = ["DEFAULT_ENVS", "agents_config", "learning_curves", "markdown", "write_agents_report"]
