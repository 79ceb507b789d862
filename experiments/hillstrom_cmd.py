"""`promogym hillstrom`: the real-data track, from response models to unbiased policy values.

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

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from promogym.core.io import machine_info, write_json
from promogym.experiments.errors import CLIError
from promogym.experiments.paths import add_force, output_dir, report_marker, run_marker
from promogym.experiments.pipeline import Pipeline, key_of

ENV_ID = "promogym/HillstromTargeting-v0"
MODEL_KINDS = ("bert", "gbdt", "logistic", "cells")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("hillstrom", help="real-data track: uplift models, RL targeting and OPE on the Hillstrom trial",
                       description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stage", choices=("all", "fit", "train", "evaluate"), default="all",
                   help="stop after this stage (finished stages are reused); evaluate = all")
    p.add_argument("--encoder", default="minilm", help="minilm (default), tiny (tests) or a local BERT folder")
    p.add_argument("--outcome", choices=("visit", "conversion", "spend"), default="visit")
    p.add_argument("--email-cost", type=float, default=0.01, help="cost of an e-mail in units of the outcome")
    p.add_argument("--budget-share", type=float, default=0.3, help="share of customers that may get an e-mail")
    p.add_argument("--seeds", type=int, default=3, help="RL training seeds")
    p.add_argument("--timesteps", type=int, default=30_000, help="RL training steps per seed")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the CIs")
    p.add_argument("--finetune-epochs", type=int, default=1, help="BERT stage-B epochs (0: frozen encoder)")
    p.add_argument("--train-rows", type=int, default=None,
                   help="fit the response models on a random sample of this many train rows (default: all)")
    p.add_argument("--runs", default="runs/hillstrom", help="models and RL runs (reused when complete)")
    p.add_argument("--out", default=None, help="report folder (default <run folder>/report)")
    add_force(p)
    p.set_defaults(func=run)


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
            TwoModelUplift(kind).fit(train, valid).save(tmp / "model.pkl")
            say(f"fitted {kind} two-model uplift in {time.perf_counter() - t0:.0f} s")

        folder = pipe.stage(f"models/{kind}", key_of("uplift", kind, data), build)
        specs[kind] = f"{kind}:{folder / 'model.pkl'}"

    def build_bert(tmp: Path) -> dict[str, Any]:
        t0 = time.perf_counter()
        BertUplift(encoder, finetune_epochs=finetune_epochs).fit(train, valid, progress=say).save(tmp)
        say(f"fitted the BERT uplift model in {time.perf_counter() - t0:.0f} s")
        return {"fit_seconds": time.perf_counter() - t0}

    bert = pipe.stage("models/bert", key_of("uplift", "bert", data, encoder, finetune_epochs), build_bert)
    specs["bert"] = f"bert:{bert}"
    return specs


# ---------------------------------------------------------------------------------------- stage 2: train
def env_config(args: argparse.Namespace) -> dict[str, Any]:
    return {"outcome": args.outcome, "email_cost": args.email_cost, "budget_share": args.budget_share}


def train_agents(pipe: Pipeline, specs: dict[str, str], args: argparse.Namespace, say: Any = print) -> list[Path]:
    """MaskablePPO on the BERT simulator, one trial per seed (the experiment's training trial)."""
    from promogym.experiments.experiment import train_trial

    payloads = []
    for seed in range(args.seeds):
        run = pipe.out / "rl" / f"maskable_ppo_s{seed}"
        settings = {"env_id": ENV_ID, "algo": "maskable_ppo", "seed": seed, "timesteps": args.timesteps,
                    "response": specs["bert"], "env_config": env_config(args),
                    "eval_freq": max(1000, args.timesteps // 10), "eval_episodes": 5, "hyperparams": {}}
        key = key_of("train", {**settings, "response": "bert"}, pipe.ids["models/bert"])
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


def evaluate(specs: dict[str, str], rl_runs: list[Path], args: argparse.Namespace, out: Path,
             say: Any = print) -> dict[str, Any]:
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
            policies[f"rl_{run.name}"] = replay(run, env_config(args), len(test))
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
    rl = [k for k in table if k.startswith("rl_")]
    if rl:
        per_seed = np.array([table[k]["ips"] for k in rl])
        table["rl_mean_over_seeds"] = {"ips": float(per_seed.mean()), "seeds": len(rl),
                                       "ips_per_seed": per_seed.tolist()}
    result = {"outcome": key, "email_cost": cost, "budget_share": args.budget_share, "test_rows": len(test),
              "train_arms": arm_summary(train).to_dict(orient="index"),
              "test_arms": arm_summary(test).to_dict(orient="index"), "uplift": uplift, "ope": table,
              "dr_outcome_model": "gbdt", "machine": machine_info()}
    plot_qini(curves, out / "qini.png")
    write_json(out / "metrics.json", result)
    return result


def plot_qini(curves: dict[str, Any], path: Path) -> None:
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
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from promogym.predictors.hillstrom import DataError

    if not 0 <= args.budget_share <= 1:
        raise CLIError(f"--budget-share must be in [0, 1], got {args.budget_share}")
    if args.seeds < 0 or args.timesteps < 1 or args.bootstrap < 10:
        raise CLIError("--seeds must be >= 0, --timesteps >= 1 and --bootstrap >= 10")
    if args.train_rows is not None and args.train_rows < 500:
        raise CLIError(f"--train-rows must be at least 500, got {args.train_rows}")
    runs = output_dir(args.runs, "--runs", force=args.force, holds=run_marker("hillstrom", "hillstrom"))
    out = output_dir(args.out or runs / "report", "--out", force=args.force, holds=report_marker(runs))
    start = time.perf_counter()
    pipe = Pipeline(runs, echo=print, jobs=max(1, args.jobs))
    try:
        specs = fit_models(pipe, args.encoder, args.finetune_epochs, args.train_rows)
        if args.stage == "fit":
            return 0
        rl_runs = train_agents(pipe, specs, args)
        if args.stage == "train":
            return 0
        settings = {"outcome": args.outcome, "email_cost": args.email_cost, "budget_share": args.budget_share,
                    "bootstrap": args.bootstrap}
        key = key_of("evaluate", settings, {name: pipe.ids[name] for name in sorted(pipe.ids)})

        def build(tmp: Path) -> None:
            evaluate(specs, rl_runs, args, tmp)

        folder = pipe.stage("evaluate", key, build)
    except DataError as exc:
        raise CLIError(str(exc)) from exc
    except (ValueError, FileNotFoundError) as exc:
        raise CLIError(str(exc)) from exc
    pipe.record_run("hillstrom", time.perf_counter() - start)
    result = json.loads((folder / "metrics.json").read_text())
    result["seconds"] = time.perf_counter() - start
    write_json(out / "metrics.json", result)
    shutil.copyfile(folder / "qini.png", out / "qini.png")
    text = markdown(result)
    (out / "report.md").write_text("## Hillstrom e-mail trial\n\n" + text + "\n\n![Qini curves](qini.png)\n")
    print(text)
    print(f"wrote {out / 'report.md'}, {out / 'metrics.json'}, {out / 'qini.png'}")
    return 0


__all__ = ["evaluate", "fit_models", "markdown", "replay", "train_agents"]
