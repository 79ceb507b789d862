"""`promogym report <run folder>`: the policy evaluation report of an experiment.

Reads the run folder written by `promogym experiment` and writes, into ``results/<name>/`` by default:
``report.md`` (tables and plots), ``summary.json`` (every figure in the tables), ``episodes.parquet``
(the tidy episode table: one row per policy x backend x training seed x episode, with the reward
components) and ``plots/``. Everything is scored in the world unless a column says otherwise.

Statistics follow rliable's recipe: per-seed means, their mean, interquartile mean and stratified
bootstrap 95% CIs (seeds, then episodes within each); the normalized score
(R - R_best_static) / (R_oracle - R_best_static); the sim-to-real gap (each algorithm trained on the
simulator vs on the world, both scored in the world); the simulator's bias (its return for a policy
minus the world's, on the same episodes); paired A/B tests of each learned policy against the
reference baseline.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from promogym.agents.registry import reference_policy
from promogym.core.io import atomic_path, write_json
from promogym.core.plots import pyplot, save_png
from promogym.envs.constraints import BusinessConstraints
from promogym.envs.families import family_of
from promogym.experiments.ship import BIAS_BAND, decision_records, rule_text, ship_lines
from promogym.experiments.stats import (
    ab_test,
    bootstrap_ci,
    bootstrap_diff_ci,
    bootstrap_ratio_ci,
    normalized,
    summarize,
)


# ---------------------------------------------------------------------------------------- loading
def _read(path: Path, reader: Any) -> Any:
    """``reader(path)``; a missing, truncated or foreign file is a ValueError naming it."""
    try:
        return reader(path)
    except (OSError, ValueError, KeyError, TypeError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: cannot be read as what the run folder should hold ({exc})") from exc


def load_run(run: str | Path) -> dict[str, Any]:
    """The pieces of a finished run folder: config, episode table, traces, training curves, predictor metrics."""
    run = Path(run)
    stage = run / "evaluate" / "stage.json"
    if not (run / "experiment.yml").is_file() or not stage.is_file():
        raise FileNotFoundError(f"{run} is not a finished experiment run folder (no experiment.yml or "
                                f"evaluate/stage.json); run `promogym experiment` first")
    cfg = _read(run / "experiment.yml", lambda f: yaml.safe_load(f.read_text()))
    tables = _read(stage, lambda f: json.loads(f.read_text())["tables"])
    episodes = pd.concat([_read(run / f"{t}.parquet", pd.read_parquet) for t in tables], ignore_index=True)
    traces = [_read(run / f"{t}.trace.parquet", pd.read_parquet) for t in tables
              if (run / f"{t}.trace.parquet").is_file()]
    curves = []
    for f in sorted((run / "train").glob("*/*/*/evaluations.npz")):
        d = _read(f, lambda f: dict(np.load(f, allow_pickle=False)))
        on, name, env = f.parent.parent.name, f.parent.name, f.parent.parent.parent.name
        algo, _, seed = name.rpartition("_s")
        for steps, res in zip(d["timesteps"], d["results"], strict=True):
            curves.append({"env": env, "trained_on": on, "algo": algo, "train_seed": int(seed),
                           "timesteps": int(steps), "return": float(np.mean(res))})
    pred = run / "predictor"
    meta = _read(run / "run.json", lambda f: json.loads(f.read_text())) if (run / "run.json").is_file() else {}
    return {"run": run, "config": cfg, "episodes": episodes,
            "traces": pd.concat(traces, ignore_index=True) if traces else pd.DataFrame(),
            "curves": pd.DataFrame(curves),
            "predictor_metrics": _read(pred / "metrics.json", lambda f: json.loads(f.read_text()))
            if (pred / "metrics.json").is_file() else None,
            "predictor_table": (pred / "table.md").read_text() if (pred / "table.md").is_file() else "",
            "meta": meta}


# ---------------------------------------------------------------------------------------- statistics
def per_seed(df: pd.DataFrame, value: str = "return") -> np.ndarray:
    """(training seeds x episodes) matrix of one policy in one backend (one row for a baseline)."""
    wide = df.pivot_table(index="train_seed", columns="seed", values=value, aggfunc="mean")
    return wide.to_numpy()


def env_statistics(episodes: pd.DataFrame) -> dict[str, Any]:
    """Every figure of one env's tables."""
    world = episodes[episodes["backend"] == "world"]
    env_id = str(world["env_id"].iloc[0]) if "env_id" in world and len(world) else None
    policies: dict[str, Any] = {}
    order = list(dict.fromkeys(world["policy"]))
    mats = {name: per_seed(world[world["policy"] == name]) for name in order}
    for name in order:
        sub = world[world["policy"] == name].iloc[0]
        policies[name] = {**summarize(mats[name]), "trained_on": sub["trained_on"], "algo": sub["algo"],
                          "learned": sub["trained_on"] != "-"}
    means = {n: p["mean"] for n, p in policies.items()}
    ref = reference_policy(means, {n for n, p in policies.items() if p["learned"]}, env_id)
    oracle = means.get("oracle")
    for p in policies.values():
        p["vs_reference"] = p["mean"] / means[ref] - 1.0 if means[ref] else float("nan")
        if oracle is not None:
            p["share_of_oracle"] = p["mean"] / oracle
            p["normalized"] = normalized(p["mean"], means[ref], oracle)
            ci = p["ci95"]
            p["normalized_ci95"] = (normalized(ci[0], means[ref], oracle), normalized(ci[1], means[ref], oracle))
    # sim-to-real gap: the same algorithm trained on the simulator vs on the world, both scored in the world
    gaps = {}
    for algo in sorted({p["algo"] for p in policies.values() if p["learned"]}):
        w, s = f"{algo}@world", f"{algo}@sim"
        if w in mats and s in mats:
            diff = means[s] - means[w]
            gaps[algo] = {"world_trained": means[w], "sim_trained": means[s], "gap": diff,
                          "gap_ci95": bootstrap_diff_ci(mats[w], mats[s]),
                          "relative": diff / means[w] if means[w] else None}
            if oracle is not None:
                gaps[algo]["normalized_gap"] = (normalized(means[s], means[ref], oracle)
                                                - normalized(means[w], means[ref], oracle))
    # the simulator's bias: its return minus the world's, on the same (policy, training seed, episode)
    bias = {}
    sim = episodes[episodes["backend"] == "sim"]
    for name in order:
        a = world[world["policy"] == name].set_index(["train_seed", "seed"])["return"]
        b = sim[sim["policy"] == name].set_index(["train_seed", "seed"])["return"]
        both = a.index.intersection(b.index)
        if len(both) < 2:
            continue
        d = (b.loc[both] - a.loc[both]).to_frame("d").reset_index()
        mat = d.pivot_table(index="train_seed", columns="seed", values="d").to_numpy()
        bias[name] = {"sim": float(b.loc[both].mean()), "world": float(a.loc[both].mean()),
                      "bias": float(d["d"].mean()), "bias_ci95": bootstrap_ci(mat),
                      "relative": float(d["d"].mean() / a.loc[both].mean()) if a.loc[both].mean() else None}
    # the simulator's bias on each policy's own offers: in its simulated episodes, the model's expected profit of
    # the decisions made against the world's expectation of the same decisions in the same states
    offer_bias = {}
    if {"expected_profit_model", "expected_profit_world"} <= set(sim.columns):
        for name in order:
            s = sim[sim["policy"] == name].dropna(subset=["expected_profit_model", "expected_profit_world"])
            if len(s) < 2:
                continue
            point, lo, hi = bootstrap_ratio_ci(s["expected_profit_model"].to_numpy(),
                                               s["expected_profit_world"].to_numpy())
            offer_bias[name] = {"model": float(s["expected_profit_model"].mean()),
                                "world": float(s["expected_profit_world"].mean()), "bias": _finite(point),
                                "ci95": (_finite(lo), _finite(hi))}
    # A/B: each learned policy (averaged over its training seeds, per episode) against the reference
    ab = {}
    ref_ep = world[world["policy"] == ref].groupby("seed")["return"].mean()
    for name, p in policies.items():
        if not p["learned"]:
            continue
        ep = world[world["policy"] == name].groupby("seed")["return"].mean()
        both = ref_ep.index.intersection(ep.index)
        if len(both) >= 2:
            ab[name] = ab_test(ref_ep.loc[both].to_numpy(), ep.loc[both].to_numpy())
    return {"policies": policies, "reference": ref, "oracle": oracle, "episodes": int(world["seed"].nunique()),
            "sim_to_real": gaps, "simulator_bias": bias, "offer_bias": offer_bias, "ab_vs_reference": ab,
            "constraints_cost": constraints_cost(episodes)}


def _finite(x: Any) -> float | None:
    v = float(x)
    return v if np.isfinite(v) else None


def constraints_cost(episodes: pd.DataFrame) -> dict[str, Any]:
    """What an env's business constraints cost each policy: its world return with the constraints (backend
    ``world``) against the same policy on the same episode seeds with them off (``world_unconstrained``); the
    paired difference (with − without, per episode, learned policies averaged over their training seeds) with its
    95% CI. Empty when the env was not scored without its constraints."""
    from promogym.experiments.experiment import UNCONSTRAINED

    world = episodes[episodes["backend"] == "world"]
    free = episodes[episodes["backend"] == UNCONSTRAINED]
    out: dict[str, Any] = {}
    if free.empty:
        return out
    for name in dict.fromkeys(world["policy"]):
        a = world[world["policy"] == name].set_index(["train_seed", "seed"])["return"]
        b = free[free["policy"] == name].set_index(["train_seed", "seed"])["return"]
        both = a.index.intersection(b.index)
        if len(both) < 2:
            continue
        with_ep = a.loc[both].groupby(level="seed").mean()
        without_ep = b.loc[both].groupby(level="seed").mean()
        if len(with_ep) < 2:
            continue
        r = ab_test(without_ep.to_numpy(), with_ep.to_numpy())
        out[name] = {"with": r["mean_b"], "without": r["mean_a"], "diff": r["diff"], "diff_ci95": r["diff_ci"],
                     "relative": r["lift"], "relative_ci95": r["lift_ci"], "p_value": r["p_value"],
                     "episodes": r["episodes"], "seeds": int(both.get_level_values("train_seed").nunique())}
    return out


# ---------------------------------------------------------------------------------------- plots
def plot_learning_curves(curves: pd.DataFrame, env: str, path: Path) -> bool:
    """Evaluation return during training per algorithm and simulator, mean with a 95% CI band over seeds; False
    when there are no curves."""
    sub = curves[curves["env"] == env] if len(curves) else curves
    if sub.empty:
        return False
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for (algo, on), g in sub.groupby(["algo", "trained_on"]):
        wide = g.pivot_table(index="train_seed", columns="timesteps", values="return").dropna(axis=1)
        if wide.empty:
            continue
        x, m = wide.columns.to_numpy(), wide.to_numpy()
        lo_hi = np.array([bootstrap_ci(m[:, j], reps=500) for j in range(m.shape[1])])
        line = ax.plot(x, m.mean(axis=0), label=f"{algo} trained on {on} ({len(m)} seeds)")[0]
        ax.fill_between(x, lo_hi[:, 0], lo_hi[:, 1], color=line.get_color(), alpha=0.2)
    ax.set_xlabel("training steps")
    ax.set_ylabel("evaluation return (in the training simulator)")
    ax.set_title(f"{env}: learning curves (mean, 95% bootstrap CI over seeds)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_png(fig, path)
    return True


def plot_profit(stats: dict[str, Any], env: str, path: Path) -> None:
    """Profit per policy in the world: per-seed points and the mean with its 95% CI."""
    plt = pyplot()
    items = sorted(stats["policies"].items(), key=lambda kv: kv[1]["mean"])
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(items) + 1.2))
    for i, (name, p) in enumerate(items):
        color = "tab:blue" if p["learned"] else ("tab:green" if name == "oracle" else "tab:grey")
        ax.scatter(p["per_seed"], [i] * len(p["per_seed"]), s=14, color=color, alpha=0.6, zorder=3)
        lo, hi = p["ci95"]
        ax.errorbar(p["mean"], i, xerr=[[p["mean"] - lo], [hi - p["mean"]]], fmt="D", color="black", ms=4,
                    capsize=3, zorder=4)
    ax.set_yticks(range(len(items)), [n for n, _ in items], fontsize=8)
    ax.axvline(stats["policies"][stats["reference"]]["mean"], color="grey", ls=":", lw=1)
    ax.set_xlabel(f"profit per episode in the world (mean of {stats['episodes']} episodes)")
    ax.set_title(f"{env}: profit per policy\n(dots: training seeds; diamond: mean with 95% CI)", fontsize=10)
    ax.grid(alpha=0.3, axis="x")
    save_png(fig, path)


def plot_bias(stats: dict[str, Any], env: str, path: Path) -> bool:
    """The simulator's bias per policy with its 95% CI; False when no policy was scored in the simulator."""
    bias = stats["simulator_bias"]
    if not bias:
        return False
    plt = pyplot()
    names = sorted(bias, key=lambda n: bias[n]["bias"])
    fig, ax = plt.subplots(figsize=(7, 0.4 * len(names) + 1.2))
    for i, n in enumerate(names):
        b = bias[n]
        lo, hi = b["bias_ci95"]
        ax.barh(i, b["bias"], color="tab:red" if b["bias"] > 0 else "tab:blue", alpha=0.7)
        ax.errorbar(b["bias"], i, xerr=[[b["bias"] - lo], [hi - b["bias"]]], color="black", capsize=3)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_xlabel("simulator return − world return, same episodes (95% CI)")
    ax.set_title(f"{env}: the simulator's bias per policy", fontsize=10)
    ax.grid(alpha=0.3, axis="x")
    save_png(fig, path)
    return True


# ---------------------------------------------------------------------------------------- markdown
def _f(x: Any, spec: str = ",.0f") -> str:
    return "–" if x is None or (isinstance(x, float) and not np.isfinite(x)) else format(x, spec)


def md_table(header: list[str], rows: list[list[str]]) -> str:
    """A markdown table."""
    return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
                      *("| " + " | ".join(r) + " |" for r in rows)])


def _ci(ci: tuple[float, float], spec: str = ",.0f") -> str:
    return f"[{format(ci[0], spec)}, {format(ci[1], spec)}]"


def policy_table(stats: dict[str, Any]) -> str:
    """The env's main table: every policy's world profit, CI, IQM, lift over the reference, share of the oracle."""
    rows = [[f"**{name}**" if p["learned"] else name, p["trained_on"], str(p["seeds"]), f"{p['mean']:,.0f}",
             _ci(p["ci95"]), f"{p['iqm']:,.0f}", f"{p['vs_reference']:+.1%}", _f(p.get("share_of_oracle"), ".1%"),
             _f(p.get("normalized"), ".2f")]
            for name, p in sorted(stats["policies"].items(), key=lambda kv: -kv[1]["mean"])]
    return md_table(["policy", "trained on", "seeds", "mean profit", "95% CI", "IQM", "vs reference",
                     "share of oracle", "normalized"], rows)


def gap_table(stats: dict[str, Any]) -> str:
    """The sim-to-real gap per algorithm (trained on the simulator vs on the world, both scored in the world)."""
    if not stats["sim_to_real"]:
        return "_No algorithm was trained on both the simulator and the world._"
    rows = [[algo, f"{g['world_trained']:,.0f}", f"{g['sim_trained']:,.0f}", f"{g['gap']:+,.0f}",
             _ci(g["gap_ci95"], "+,.0f"), _f(g["relative"], "+.1%"), _f(g.get("normalized_gap"), "+.2f")]
            for algo, g in stats["sim_to_real"].items()]
    return md_table(["algorithm", "trained on world", "trained on simulator", "gap (sim − world)", "95% CI",
                     "relative", "normalized gap"], rows)


def bias_table(stats: dict[str, Any]) -> str:
    """The simulator's return against the world's per policy on the same episodes."""
    if not stats["simulator_bias"]:
        return "_No policy was scored in the simulator._"
    rows = [[name, f"{b['sim']:,.0f}", f"{b['world']:,.0f}", f"{b['bias']:+,.0f}", _ci(b["bias_ci95"], "+,.0f"),
             _f(b["relative"], "+.1%")]
            for name, b in sorted(stats["simulator_bias"].items(), key=lambda kv: -abs(kv[1]["bias"]))]
    return md_table(["policy", "simulator says", "world gives", "bias", "95% CI", "relative"], rows)


def ab_table(stats: dict[str, Any]) -> str:
    """Paired A/B tests of each learned policy against the reference (empty without learned policies)."""
    if not stats["ab_vs_reference"]:
        return ""
    rows = [[name, f"{r['lift']:+.2%}", _ci(r["lift_ci"], "+.2%"), f"{r['p_value']:.3g}", _f(r["episodes_needed"])]
            for name, r in stats["ab_vs_reference"].items()]
    return md_table([f"B (A = {stats['reference']})", "lift", "95% CI", "p-value", "episodes for 80% power"], rows)


def constraints_table(stats: dict[str, Any]) -> str:
    """Per policy: world profit with and without the env's constraints and the paired difference (empty when the
    env was not scored without them)."""
    cost = stats.get("constraints_cost") or {}
    if not cost:
        return ""
    rows = [[name, f"{c['with']:,.0f}", f"{c['without']:,.0f}", f"{c['diff']:+,.0f}", _ci(c["diff_ci95"], "+,.0f"),
             _f(c["relative"], "+.1%"), f"{c['p_value']:.3g}"]
            for name, c in sorted(cost.items(), key=lambda kv: kv[1]["diff"])]
    return md_table(["policy", "with constraints", "without", "difference (with − without)", "95% CI (paired)",
                     "relative", "p-value"], rows)


def constraints_section(stats: dict[str, Any], env_config: dict[str, Any]) -> list[str]:
    """The report's "What the constraints cost" lines for one env; nothing when it has no constraints."""
    table = constraints_table(stats)
    if not table:
        return []
    active = BusinessConstraints.coerce(env_config.get("constraints") or {}).active()
    said = ", ".join(f"`{k}: {v}`" for k, v in active.items())
    return ["### What the constraints cost", "",
            f"The env's business constraints ({said}) against the same policies on the same episode seeds in the "
            "world with the constraints off (common random numbers). A learned policy is the agent trained under "
            "the constraints, played without them: the cost of the constraints to that policy, not to a policy "
            "trained without them. Difference per episode, paired, learned policies averaged over their training "
            "seeds; negative: the constraints cost profit.", "", table, ""]


def ship_section(stats: dict[str, Any], band: float) -> list[str]:
    """The report's "Should we ship it?" lines for one env's learned policies (``stats["ship"]``); nothing
    without any."""
    lines = ship_lines(stats.get("ship") or {})
    if not lines:
        return []
    return ["### Should we ship it?", "", rule_text(band), "", *lines, ""]


def fidelity_section(run: Path, env_id: str, plots: Path, summary: dict[str, Any]) -> list[str]:
    """The report's lines on the predictor against the world on the env's offers (the experiment's fidelity
    stage), its plot copied into ``plots``; nothing for a run without that stage."""
    from promogym.experiments.fidelity import policy_table

    env = env_id.split("/")[-1]
    folder = run / "fidelity" / env
    stage = folder / "stage.json"
    if not stage.is_file():
        return []
    head = ["### Simulator fidelity", ""]
    skipped = _read(stage, lambda f: json.loads(f.read_text())).get("skipped")
    if skipped:
        return [*head, f"_Not measured: {skipped}._", ""]
    result = _read(folder / "fidelity.json", lambda f: json.loads(f.read_text()))
    summary["fidelity"] = {p["name"]: {k: p[k] for k in ("profit", "units", "purchase_rate")}
                           for p in result["policies"]}
    lines = [*head, "The predictor as the env's response backend, against the world on the very offers of each "
             f"policy ({result['episodes']} episode(s) each, expected values on the same states): bias = model / "
             "world − 1, 95% CI over episodes; offers in thin cells: the share in cells (visit band × favourite "
             f"category × price × coupon × price history) with fewer than {result['coverage'].get('min_rows')} "
             "logged rows. By customer type and price band: `fidelity/" + env + "/fidelity.md` in the run folder.",
             "", policy_table(result), ""]
    if (folder / "fidelity.png").is_file():
        shutil.copyfile(folder / "fidelity.png", plots / f"fidelity_{env}.png")
        lines += [f"![simulator fidelity by customer type](plots/fidelity_{env}.png)", ""]
    return lines


def _duration(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h} h {m:02d} min" if h else f"{m} min {s:02d} s"


def _trace_plot_files() -> list[str]:
    """The file stems of the trace plots of every registered env's family."""
    from promogym.envs import ENV_IDS

    return sorted({plot.file for env_id in ENV_IDS for plot in family_of(env_id).trace_plots})


def write_report(run: str | Path, out: str | Path, band: float | None = None) -> Path:
    """Compute the statistics, draw the plots, write report.md, summary.json and episodes.parquet. ``band``: the
    simulator's stated bias band of the ship rule (default: the config's ``report.bias_band``, else
    :data:`~promogym.experiments.ship.BIAS_BAND`)."""
    data = load_run(run)
    out = Path(out)
    plots = out / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    # a plot the new report does not draw must not linger; only names the report writes are removed
    ours = re.compile(r"(profit|learning|bias|calibration|fidelity|"
                      + "|".join(re.escape(p) for p in _trace_plot_files()) + r")(_.+)?\.png")
    for stale in plots.glob("*.png"):
        if ours.fullmatch(stale.name):
            stale.unlink()
    cfg, meta = data["config"], data["meta"]
    if band is None:
        band = float(((cfg.get("report") or {}).get("bias_band")) or BIAS_BAND)
    episodes = data["episodes"]
    with atomic_path(out / "episodes.parquet") as tmp:
        episodes.to_parquet(tmp, index=False)
    summary: dict[str, Any] = {"name": cfg["name"], "envs": {}, "meta": meta}
    lines = [f"# Experiment `{cfg['name']}`", ""]
    if cfg.get("description"):
        lines += [cfg["description"].strip(), ""]
    stage_s = meta.get("stage_seconds", {})
    took = meta.get("wall_seconds_total")
    machine = meta.get("machine", {})
    lines += [f"Run folder `{data['run']}`; {len(episodes):,} episodes in the tidy table (`episodes.parquet`). "
              + (f"The run took **{_duration(took)}** of wall time on {machine.get('cpus')} CPUs "
                 f"({machine.get('processor')}, {machine.get('platform')})" if took else "")
              + ("; stages (worker-seconds): " + ", ".join(f"{k} {_duration(v)}" for k, v in stage_s.items())
                 if stage_s else "") + ".", "",
              "Every figure is scored **in the world** (the ground truth) unless a column says otherwise: "
              "learned policies on the same evaluation episodes as the baselines (common random numbers), "
              "per-seed points aggregated with mean, IQM and stratified bootstrap 95% CIs. `algo@sim` was trained on "
              "the fitted predictor, `algo@world` on the world; `myopic@sim` and `best_static@sim` plan with the "
              "predictor, the other baselines plan with the world where they plan at all; the oracle plans with "
              "the world's truth. Normalized score: (R − R_ref) / (R_oracle − R_ref).", ""]
    for env_id in cfg["envs"]:
        env = env_id.split("/")[-1]
        stats = env_statistics(episodes[episodes["env_id"] == env_id])
        summary["envs"][env_id] = stats
        lines += [f"## {env_id}", "",
                  f"{stats['episodes']} evaluation episodes per policy and seed; reference `{stats['reference']}`; "
                  f"{cfg['envs'][env_id]['timesteps']:,} training steps per run.", "", policy_table(stats), ""]
        plot_profit(stats, env, plots / f"profit_{env}.png")
        lines += [f"![profit per policy](plots/profit_{env}.png)", ""]
        lines += ["### Sim-to-real gap", "", "The same algorithm trained on the simulator and on the world, both "
                  "scored in the world: what trusting the simulator costs.", "", gap_table(stats), ""]
        if plot_learning_curves(data["curves"], env, plots / f"learning_{env}.png"):
            lines += [f"![learning curves](plots/learning_{env}.png)", ""]
        lines += ["### The simulator's bias", "", "What the simulator says each policy earns against what it earns in "
                  "the world, on the same episodes (positive: the simulator flatters the policy).", "",
                  bias_table(stats), ""]
        if plot_bias(stats, env, plots / f"bias_{env}.png"):
            lines += [f"![simulator bias](plots/bias_{env}.png)", ""]
        lines += fidelity_section(Path(data["run"]), env_id, plots, summary["envs"][env_id])
        table = ab_table(stats)
        if table:
            lines += ["### A/B tests against the reference", "", "Paired by episode (learned policies averaged over "
                      "their seeds per episode).", "", table, ""]
        stats["ship"] = decision_records(stats, stats.get("fidelity"), band)
        lines += ship_section(stats, band)
        lines += constraints_section(stats, (cfg["envs"][env_id] or {}).get("config") or {})
        for plot in family_of(env_id).trace_plots:
            if plot.draw(data["traces"], env, plots / f"{plot.file}_{env}.png"):
                lines += [f"### {plot.heading}", "", f"![{plot.alt}](plots/{plot.file}_{env}.png)", ""]
    calib = Path(data["run"]) / "predictor" / "calibration.png"
    if data["predictor_table"]:
        lines += ["## The predictor (the simulator's response model)", "",
                  f"`{cfg['predictor']['kind']}` fitted on {cfg['logs']['rows']:,} logged offers; scored on "
                  "held-out users against outcomes and the world's true probabilities.", "", data["predictor_table"]]
        if calib.is_file():
            shutil.copyfile(calib, plots / "calibration.png")
            lines += ["![predictor calibration](plots/calibration.png)", ""]
    lines += ["## Reproduce", "", "```", f"promogym experiment experiments/configs/{cfg['name']}.yml", "```",
              "Rerunning skips every stage whose inputs are unchanged; `promogym report <run folder>` redraws this "
              "report.", ""]
    write_json(out / "summary.json", summary)
    with atomic_path(out / "report.md") as tmp:
        tmp.write_text("\n".join(lines))
    return out / "report.md"
