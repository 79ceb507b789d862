"""The real-data track (`promogym hillstrom`), from response models to unbiased policy values.

Stages of the pipeline engine (``promogym.experiments.pipeline``) in the run folder, each skipped when it
finished with the same key (its settings and the ids of the stages it reads):

1. **fit** (stages ``models/bert``, ``models/gbdt``, ``models/logistic``): the BERT response model
   (MiniLM-L6 on plain-language profiles + the e-mail sent), and the two-model gradient-boosting and
   logistic baselines, on the train split; every choice on validation.
2. **train** (trials ``rl/maskable_ppo_s<seed>``): MaskablePPO on ``promogym/HillstromTargeting-v0``
   whose response is the BERT model.
3. **evaluate** (``evaluate/``) on the held-out test split (used for nothing else): Qini coefficient, AUUC and
   uplift@30% per model and e-mail; IPS, SNIPS and DR values with bootstrap CIs for the learned policy,
   uplift targeting by each model, e-mail everyone (men's), random and no e-mail, beside the value
   the BERT simulator predicts for each (the sim-to-real gap on real data); a Qini curve plot.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np

from promogym.core.io import machine_info, write_json
from promogym.experiments.pipeline import Pipeline, key_of

ENV_ID = "promogym/HillstromTargeting-v0"
MODEL_KINDS = ("bert", "gbdt", "logistic", "cells")


@dataclasses.dataclass(frozen=True)
class TrackSettings:
    """What the track's training and evaluation depend on besides the fitted models."""

    outcome: str = "visit"
    email_cost: float = 0.01
    budget_share: float = 0.3
    seeds: int = 3
    timesteps: int = 30_000
    bootstrap: int = 1000

    def env_config(self) -> dict[str, Any]:
        """The HillstromTargeting env config these settings imply (outcome, e-mail cost, budget share)."""
        return {"outcome": self.outcome, "email_cost": self.email_cost, "budget_share": self.budget_share}

    def evaluation_key(self) -> dict[str, Any]:
        """The settings the evaluation stage's result depends on (its stage key)."""
        return {"outcome": self.outcome, "email_cost": self.email_cost, "budget_share": self.budget_share,
                "bootstrap": self.bootstrap}


# ---------------------------------------------------------------------------------------- stage 1: fit
def fit_models(pipe: Pipeline, encoder: str, finetune_epochs: int, train_rows: int | None = None,
               say: Any = print) -> dict[str, str]:
    """Fit every response model, each a stage of its own (reused when fitted with the same settings);
    returns kind -> model spec."""
    from promogym.predictors.hillstrom import load_hillstrom
    from promogym.predictors.uplift import BertUplift, TwoModelUplift

    df = load_hillstrom()
    train, valid = df[df["split"] == "train"], df[df["split"] == "valid"]
    if train_rows is not None and train_rows < len(train):
        train = train.sample(n=train_rows, random_state=0)
    data = {"train_rows": len(train)}
    specs = {"cells": "cells"}
    for kind in ("gbdt", "logistic"):
        def build(tmp: Path, kind: str = kind) -> None:
            t0 = time.perf_counter()
            TwoModelUplift(kind).fit(train, valid).save(tmp / "model.skops.zip")
            say(f"fitted {kind} two-model uplift in {time.perf_counter() - t0:.0f} s")

        folder = pipe.stage(f"models/{kind}", key_of("uplift", kind, data, "model.skops.zip"), build)
        specs[kind] = f"{kind}:{folder / 'model.skops.zip'}"

    def build_bert(tmp: Path) -> dict[str, Any]:
        t0 = time.perf_counter()
        BertUplift(encoder, finetune_epochs=finetune_epochs).fit(train, valid, progress=say).save(tmp)
        say(f"fitted the BERT uplift model in {time.perf_counter() - t0:.0f} s")
        return {"fit_seconds": time.perf_counter() - t0}

    bert = pipe.stage("models/bert", key_of("uplift", "bert", data, encoder, finetune_epochs), build_bert)
    specs["bert"] = f"bert:{bert}"
    return specs


# ---------------------------------------------------------------------------------------- stage 2: train
def train_agents(pipe: Pipeline, specs: dict[str, str], args: TrackSettings) -> list[Path]:
    """MaskablePPO on the BERT simulator, one trial per seed (the experiment's training trial)."""
    from promogym.agents.train import resolved_hyperparams
    from promogym.experiments.experiment import train_trial

    payloads: list[dict[str, Any]] = []
    for seed in range(args.seeds):
        run = pipe.out / "rl" / f"maskable_ppo_s{seed}"
        settings: dict[str, Any] = {"env_id": ENV_ID, "algo": "maskable_ppo", "seed": seed, "timesteps": args.timesteps,
                    "response": specs["bert"], "env_config": args.env_config(),
                    "eval_freq": max(1000, args.timesteps // 10), "eval_episodes": 5, "hyperparams": {}}
        key = key_of("train", {**settings, "response": "bert",
                               "hyperparams": resolved_hyperparams(ENV_ID, "maskable_ppo", settings["hyperparams"])},
                     pipe.ids["models/bert"])
        payloads.append({**settings, "key": key, "dir": str(run), "record": str(run / "trial.json")})
    pipe.trials("rl", payloads, train_trial, lambda p: f"trained {p['dir']}", unit="runs")
    return [Path(p["dir"]) for p in payloads]


# ---------------------------------------------------------------------------------------- stage 3: evaluate
def replay(run: Path, cfg: dict[str, Any], rows: int) -> np.ndarray:
    """The arm a learned policy gives each test row, walking the test split in file order in episodes of
    the env's horizon (its budget renewed each episode, as in training)."""
    import gymnasium as gym

    from promogym import envs  # noqa: F401
    from promogym.agents.train import LearnedPolicy

    env = gym.make(ENV_ID, config={**cfg, "split": "test", "sequential": True})
    walk: Any = env.unwrapped
    policy = LearnedPolicy(run, env)
    arms = np.full(rows, -1)
    obs, _ = env.reset(seed=0)
    while True:
        action, _ = policy.predict(obs)
        obs, _, terminated, truncated, info = env.step(action)
        fresh = arms[info["rows"]] < 0
        arms[info["rows"][fresh]] = info["arms"][fresh]
        if walk.exhausted:
            break
        if terminated or truncated:
            obs, _ = env.reset()
    return arms


def evaluate(specs: dict[str, str], rl_runs: list[Path], args: TrackSettings, out: Path,
             say: Any = print) -> dict[str, Any]:
    """Score the fitted uplift models (``specs``: kind -> spec) and the RL runs on the test split: Qini, AUUC and uplift
    at 30% per model, outcome and e-mail; IPS and DR off-policy values of each targeting policy with bootstrap CIs and
    the BERT simulator's value beside them. Writes ``out/metrics.json`` and ``out/qini.png``; returns the metrics.
    ``say`` receives progress lines."""
    from promogym.envs.hillstrom import load_response
    from promogym.experiments.uplift_eval import budgeted_best_arm, ope, qini_curve, uplift_scores
    from promogym.predictors.hillstrom import ARM_NAMES, PROPENSITY, arm_summary, load_hillstrom

    df = load_hillstrom()
    train, test = df[df["split"] == "train"], df[df["split"] == "test"].reset_index(drop=True)
    models = {k: load_response(specs[k], df) for k in MODEL_KINDS}
    cost = args.email_cost
    email_cost = np.array([0.0, cost, cost])
    key = args.outcome
    y = test[key].to_numpy(float)
    a = test["arm"].to_numpy()
    reward = y - email_cost[a]
    preds = {k: m.predict(test) for k, m in models.items()}
    values = {k: p[key] - email_cost for k, p in preds.items()}                      # (rows, 3) per model
    train_values = {k: m.predict(train)[key] - email_cost for k, m in models.items()}

    # uplift metrics per model, e-mail and binary outcome
    uplift: dict[str, Any] = {}
    curves: dict[str, Any] = {}
    for kind, pred in preds.items():
        for outcome in ("visit", "conversion"):
            for arm in (1, 2):
                rows = (a == arm) | (a == 0)
                score = pred[outcome][rows, arm] - pred[outcome][rows, 0]
                yy, tt = test[outcome].to_numpy(float)[rows], a[rows] == arm
                uplift[f"{kind}|{outcome}|{ARM_NAMES[arm]}"] = uplift_scores(yy, score, tt)
                if outcome == "visit":
                    x, q = qini_curve(yy, score, tt)
                    curves[f"{kind}|{ARM_NAMES[arm]}"] = (x / x[-1], q / rows.sum())

    # policies on the test rows
    rng = np.random.default_rng(0)
    n = len(test)
    policies: dict[str, np.ndarray] = {
        "no_email": np.zeros(n, int), "email_all_mens": np.ones(n, int),
        "random": rng.integers(0, 3, n),  # the trial's own assignment rule
        # the targeting budget spent at random: the fair reference for the budgeted policies
        "random_at_budget": np.where(rng.random(n) < args.budget_share, rng.integers(1, 3, n), 0)}
    for kind in MODEL_KINDS:
        gains = train_values[kind][:, 1:].max(axis=1) - train_values[kind][:, 0]
        threshold = float(np.quantile(gains, 1 - args.budget_share))
        policies[f"uplift_{kind}"] = budgeted_best_arm(values[kind], args.budget_share, threshold)
    for run in rl_runs:
        if (run / "metadata.json").is_file():
            policies[f"rl_{run.name}"] = replay(run, args.env_config(), len(test))
    q_dr = values["gbdt"]
    rows_idx = np.arange(len(test))
    table: dict[str, Any] = {}
    for name, pi in policies.items():
        est = ope(pi, a, reward, PROPENSITY, q_dr, reps=args.bootstrap)
        est["bert_simulator"] = float(values["bert"][rows_idx, pi].mean())
        est["sim_to_real_gap"] = est["bert_simulator"] - est["dr"]
        table[name] = est
        say(f"{name:>24}: IPS {est['ips'] * 1000:7.1f}  DR {est['dr'] * 1000:7.1f}  BERT sim "
            f"{est['bert_simulator'] * 1000:7.1f} per 1,000 customers")
    ship = ship_verdicts(policies, table, a, reward, q_dr, args.bootstrap)
    rl = [k for k in table if k.startswith("rl_")]
    if rl:
        per_seed = np.array([table[k]["ips"] for k in rl])
        table["rl_mean_over_seeds"] = {"ips": float(per_seed.mean()), "seeds": len(rl),
                                       "ips_per_seed": per_seed.tolist()}
    result = {"outcome": key, "email_cost": cost, "budget_share": args.budget_share, "test_rows": len(test),
              "train_arms": arm_summary(train).to_dict(orient="index"),
              "test_arms": arm_summary(test).to_dict(orient="index"), "uplift": uplift, "ope": table,
              "ship": {k: d.to_dict() for k, d in ship.items()},
              "dr_outcome_model": "gbdt", "machine": machine_info()}
    plot_qini(curves, out / "qini.png")
    write_json(out / "metrics.json", result)
    return result


def ship_verdicts(policies: dict[str, np.ndarray], table: dict[str, Any], logged: np.ndarray, reward: np.ndarray,
                  q_dr: np.ndarray, reps: int) -> dict[str, Any]:
    """The "should we ship it?" verdict on each learned policy (``rl_*``) of the test split: against the best
    rule that spends the same e-mail budget without RL (random at budget or an uplift rule, the best by DR on
    this split), the paired DR difference per 1,000 customers with its bootstrap CI; the simulator's bias is
    its BERT simulator's value against DR (relative to |DR|)."""
    from promogym.experiments.ship import ship_decision
    from promogym.experiments.uplift_eval import dr_terms, paired_dr_difference
    from promogym.predictors.hillstrom import PROPENSITY

    rules = [r for r in table if r == "random_at_budget" or r.startswith("uplift_")]  # the same budget, no RL
    if not rules:
        return {}
    best = max(rules, key=lambda r: table[r]["dr"])
    base = dr_terms(policies[best], logged, reward, PROPENSITY, q_dr)
    out = {}
    for name in (k for k in policies if k.startswith("rl_")):
        diff, (lo, hi) = paired_dr_difference(dr_terms(policies[name], logged, reward, PROPENSITY, q_dr), base, reps)
        e = table[name]
        bias = e["sim_to_real_gap"] / abs(e["dr"]) if e["dr"] else None
        out[name] = ship_decision(name, best, diff * 1000, (lo * 1000, hi * 1000), bias,
                                  bias_source="BERT simulator vs DR on the test split", episodes=len(logged),
                                  unit="per 1,000 customers", sample="test customers")
    return out


def plot_qini(curves: dict[str, Any], path: Path) -> None:
    """Draw the Qini curves of each model for the men's and the women's e-mail, against random targeting, and write them
    as a PNG to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), dpi=100, sharey=True)
    for ax, arm in zip(axes, ("mens", "womens"), strict=True):
        for key, (x, q) in curves.items():
            kind, which = key.split("|")
            if which == arm:
                ax.plot(x, q, label=kind, lw=1.4)
        _x_all, q_all = next(v for k, v in curves.items() if k.split("|")[1] == arm)
        ax.plot([0, 1], [0, q_all[-1]], "k--", lw=1, label="random")
        label = {"mens": "men's", "womens": "women's"}[arm]
        ax.set_title(f"{label} e-mail vs none: Qini curve (visits, test split)", fontsize=9)
        ax.set_xlabel("share of customers targeted (by predicted uplift)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("incremental visits per customer in the split")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _ci(e: dict[str, Any], key: str) -> str:
    lo, hi = e[f"{key}_ci95"]
    return f"{e[key] * 1000:.1f} [{lo * 1000:.1f}, {hi * 1000:.1f}]"


def markdown(result: dict[str, Any]) -> str:
    """The track's report section as markdown, from :func:`evaluate`'s metrics."""
    k = result["outcome"]
    lines = [f"Test split: {result['test_rows']:,} customers never used for fitting or choosing. Outcome: {k}; "
             f"e-mail cost {result['email_cost']} per e-mail; targeting budget {result['budget_share']:.0%} of "
             "customers.", "",
             "**Uplift on held-out customers** (visit outcome; each e-mail against no e-mail; 0 = random ordering, "
             "1 = perfect)", "",
             "| model | e-mail | Qini coefficient | AUUC | uplift@30% (visit) | Qini (conversion) |",
             "|---|---|---|---|---|---|"]
    for key, s in result["uplift"].items():
        kind, outcome, arm = key.split("|")
        if outcome != "visit":
            continue
        conv = result["uplift"][f"{kind}|conversion|{arm}"]
        lines.append(f"| {kind} | {arm} | {s['qini']:.3f} | {s['auuc']:.3f} | {s['uplift_at_30']:+.4f} | "
                     f"{conv['qini']:.3f} |")
    lines += ["", f"**Policy values on the test split** ({k} minus e-mail cost, per 1,000 customers; 95% bootstrap "
              "CIs; propensity 1/3; DR with the two-model GBDT as outcome model)", "",
              "| policy | e-mailed | IPS | SNIPS | DR | BERT simulator | sim − DR |", "|---|---|---|---|---|---|---|"]
    for name, e in sorted(((n, e) for n, e in result["ope"].items() if "dr" in e), key=lambda kv: -kv[1]["dr"]):
        lines.append(f"| {name} | {e['emails_share']:.0%} | {_ci(e, 'ips')} | {_ci(e, 'snips')} | {_ci(e, 'dr')} | "
                     f"{e['bert_simulator'] * 1000:.1f} | {e['sim_to_real_gap'] * 1000:+.1f} |")
    if result.get("ship"):
        from promogym.experiments.ship import rule_text, ship_lines

        band = next(iter(result["ship"].values()))["band"]
        lines += ["", "**Should we ship it?** " + rule_text(
            band, reference="the best rule spending the same e-mail budget without RL",
            per="per test customer (DR, rows resampled jointly)"), ""]
        lines += ship_lines(result["ship"])
    return "\n".join(lines)


def run_track(runs: Path, encoder: str, finetune_epochs: int, train_rows: int | None, settings: TrackSettings,
              stop_after: str = "evaluate", jobs: int = 1) -> Path | None:
    """Every stage into the run folder ``runs``; the evaluation stage's folder (``metrics.json``, ``qini.png``),
    or None when stopped after ``fit`` or ``train``."""
    start = time.perf_counter()
    pipe = Pipeline(runs, echo=print, jobs=max(1, jobs))
    specs = fit_models(pipe, encoder, finetune_epochs, train_rows)
    if stop_after == "fit":
        return None
    rl_runs = train_agents(pipe, specs, settings)
    if stop_after == "train":
        return None
    key = key_of("evaluate", settings.evaluation_key(), {name: pipe.ids[name] for name in sorted(pipe.ids)})

    def build(tmp: Path) -> None:
        evaluate(specs, rl_runs, settings, tmp)

    folder = pipe.stage("evaluate", key, build)
    pipe.record_run("hillstrom", time.perf_counter() - start)
    return folder


__all__ = ["TrackSettings", "evaluate", "fit_models", "markdown", "replay", "run_track", "train_agents"]
