"""`promogym slates`: display policies of PromoRecommendation-v0 in the world, and their off-policy estimates.

For each policy: its true value per visit in the world (the world's expected profit of each visitor's display,
with a bootstrap 95% CI), the same on visitors shown a new product (cold start), and the slate OPE estimates of that
value from logs of the uniform display (IPS with slate propensities and the pseudo-inverse estimator,
:mod:`promogym.experiments.slate_ope`) beside it. Planning policies (greedy) plan with ``--simulator``. Writes
slates.json and slates.md.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

ENV_ID = "promogym/PromoRecommendation-v0"
MAX_EPISODES = 10_000
DEFAULT_POLICIES = ("random", "margin", "popular", "greedy", "oracle")


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add the ``slates`` subcommand to the CLI's subparsers."""
    p = sub.add_parser("slates", help="display policies' world values per visit and their slate OPE estimates",
                       description=__doc__.split("\n\n")[1] if __doc__ else None)
    p.add_argument("--simulator", default="world", metavar="SPEC",
                   help="the response model planning policies (greedy) plan with: world (default), gbdt:<file>, "
                        "bert:<dir>")
    p.add_argument("--policy", action="append", default=None, metavar="NAME|RUN_DIR",
                   help=f"repeatable (default: {', '.join(DEFAULT_POLICIES)}); a training run folder too")
    p.add_argument("--log-episodes", type=int, default=40, help="episodes of the uniform display logged (default 40)")
    p.add_argument("--episodes", type=int, default=40, help="world episodes per policy for its true value (default 40)")
    p.add_argument("--seed", type=int, default=0, help="first logged episode's seed; the true values use seeds "
                                                       "from seed + 100000")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="env config override (repeatable)")
    p.add_argument("--out", default="runs/slates", help="output folder (default runs/slates)")
    p.add_argument("--trust", action="store_true",
                   help="load run folders even without a valid manifest.json (their pickles then run code)")
    from promogym.experiments.paths import add_force

    add_force(p)
    p.set_defaults(func=run)


def _label(spec: str) -> str:
    return Path(spec).name if Path(spec).is_dir() else spec


def run(args: argparse.Namespace) -> int:
    """Run ``promogym slates`` with the parsed ``args``; returns the exit status (CLIError for bad input)."""
    import gymnasium as gym

    from promogym.agents.registry import PolicyContext, check_policy, make_policy
    from promogym.core.io import write_json
    from promogym.envs.base import world_config
    from promogym.experiments.errors import CLIError
    from promogym.experiments.paths import check_episodes, check_output_dir, output_dir, parse_overrides
    from promogym.experiments.pipeline import key_of
    from promogym.experiments.slate_ope import record_slates, slate_estimates, true_visit_values
    from promogym.predictors.registry import check_spec

    check_episodes(args.episodes, args.seed, MAX_EPISODES)
    check_episodes(args.log_episodes, args.seed, MAX_EPISODES)
    env_config = parse_overrides(args.set, "--set")
    if "response" in env_config:
        raise CLIError("--set response=...: the display is scored in the world; name the planning model with "
                       "--simulator")
    specs = list(args.policy or DEFAULT_POLICIES)
    try:
        if args.simulator != "world":
            check_spec(args.simulator, "conversion", name="--simulator", oracles=False)
        world = gym.make(ENV_ID, config=world_config(env_config))
        sim = world if args.simulator == "world" else gym.make(ENV_ID, config={**env_config,
                                                                             "response": args.simulator})
        for spec in specs:
            check_policy(spec, ENV_ID, world)
    except (ValueError, FileNotFoundError) as exc:
        raise CLIError(str(exc)) from exc
    settings = {"simulator": args.simulator, "policies": specs, "log_episodes": args.log_episodes,
                "episodes": args.episodes, "seed": args.seed, "config": env_config}
    holds = {"kind": "slates", "name": key_of("slates", settings)}
    check_output_dir(args.out, "--out", force=args.force, holds=holds)
    start = time.perf_counter()
    try:
        ctx = PolicyContext(ENV_ID, sim)
        policies = {_label(s): make_policy(s, world, ctx, trust=args.trust) for s in specs}
        table = record_slates(world, policies, range(args.seed, args.seed + args.log_episodes))
        first = args.seed + 100_000
        rows: dict[str, Any] = {}
        for name, pol in policies.items():
            truth = true_visit_values(world, pol, range(first, first + args.episodes))
            est = slate_estimates(table, name)
            for key in ("ips", "pi"):
                lo, hi = est[key]["ci95"]
                est[key]["covers_truth"] = bool(lo <= truth["mean"] <= hi)
            rows[name] = {"spec": specs[list(policies).index(name)], "world": truth, "ope": est}
            print(f"{name}: {truth['mean']:.3f} per visit in the world; IPS {est['ips']['mean']:.3f} "
                  f"[{est['ips']['ci95'][0]:.3f}, {est['ips']['ci95'][1]:.3f}], PI {est['pi']['mean']:.3f} "
                  f"[{est['pi']['ci95'][0]:.3f}, {est['pi']['ci95'][1]:.3f}]")
    except (ValueError, FileNotFoundError) as exc:
        raise CLIError(str(exc)) from exc
    result = {"format": "promogym-slates/1", "env": ENV_ID, "settings": settings, "logged_visits": len(table),
              "logged_value": float(table["profit"].mean()), "policies": rows,
              "seconds": time.perf_counter() - start}
    out = output_dir(args.out, "--out", force=args.force, holds=holds)
    write_json(out / "slates.json", result)
    (out / "slates.md").write_text(slates_markdown(result))
    print(f"wrote {out / 'slates.json'}, {out / 'slates.md'}")
    return 0


def _ci(x: dict[str, Any]) -> str:
    lo, hi = x["ci95"]
    return "-" if lo is None else f"[{lo:.3f}, {hi:.3f}]"


def slates_markdown(result: dict[str, Any]) -> str:
    """The table of :func:`run`'s result: per policy the world's value per visit, its cold-start value and the OPE
    estimates with whether their CIs cover the truth."""
    s = result["settings"]
    lines = [f"# Display policies on {result['env']}", "",
             f"World values: {s['episodes']} episodes per policy (seeds from {s['seed'] + 100_000}); OPE: "
             f"{result['logged_visits']:,} visits of {s['log_episodes']} episodes of the uniform display (seeds from "
             f"{s['seed']}); planning policies plan with `{s['simulator']}`. Values are the world's expected profit "
             "per visit; 95% bootstrap CIs over visits.", "",
             "| policy | world value | 95% CI | visitors shown a new product | their value | IPS | IPS CI | IPS ESS "
             "| PI | PI CI | PI ESS |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in result["policies"].items():
        w, o, n = r["world"], r["ope"], r["world"]["new_products"]
        cover = {k: " ✓" if o[k]["covers_truth"] else "" for k in ("ips", "pi")}
        new_value = "-" if n["mean"] is None else f"{n['mean']:.3f}"
        lines.append(f"| {name} | {w['mean']:.3f} | {_ci(w)} | {n['share']:.1%} | "
                     f"{new_value} | {o['ips']['mean']:.3f} | {_ci(o['ips'])}"
                     f"{cover['ips']} | {o['ips']['ess']:.0f} | {o['pi']['mean']:.3f} | {_ci(o['pi'])}{cover['pi']} | "
                     f"{o['pi']['ess']:.0f} |")
    lines += ["", "✓: the estimate's CI covers the true world value. PI assumes a reward additive over the shown "
              "products; the world's multinomial logit is not (products shown together compete), so PI can be biased "
              "where IPS is not.", ""]
    return "\n".join(lines)
