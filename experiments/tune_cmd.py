"""`promogym tune`: a budgeted hyperparameter search (Optuna) over the trainer's settings for one env and algorithm."""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import shlex
import sys
from pathlib import Path

from promogym.experiments import tune
from promogym.experiments.errors import CLIError, integer_arg
from promogym.experiments.paths import add_force, check_output_dir, output_dir, parse_overrides, read_marker

DESCRIPTION = (
    "Optuna search (TPE sampler seeded with --seed, median pruner) over the algorithm's hyperparameters, merged over "
    "the env's agents/hyperparams.yml entry, which is trial 0 (the baseline the search can only improve on). Each "
    "trial trains --timesteps steps from training seed --seed and is scored by the mean world return of its final "
    "model over --eval-episodes fixed evaluation seeds (the same for every trial), with evaluations every timesteps/4"
    " steps reported to the pruner. Writes <out>/<env>_<algo>.json (budget, every trial, baseline, best, provenance),"
    " <env>_<algo>.yml (the best hyperparameters as a hyperparams.yml entry), <env>_<algo>.png (history) and the "
    "study folder <env>_<algo>/ (an Optuna journal, JSON lines). Resuming: when the study folder exists the search "
    "continues there: trials already complete (or pruned, or failed) are reused and count toward --trials, a trial "
    "that was running when the command stopped runs again; rerun the same command after an interruption, or a larger "
    "--trials to extend a finished search. --force starts anew.")


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add the ``tune`` subcommand to the CLI's subparsers."""
    p = sub.add_parser("tune", help="hyperparameter search (Optuna) for an algorithm on an env",
                       description=DESCRIPTION, epilog=f"search spaces: {tune.spaces_text()}")
    p.add_argument("--env", required=True, help="env id, e.g. promogym/DynamicPricing-v2")
    p.add_argument("--algo", required=True, help="ppo | maskable_ppo | sac | td3")
    # integers are parsed in run(): a bad value is a one-line error (exit 2), not argparse's usage dump
    p.add_argument("--trials", default="12", help="trials in all, those of a resumed study included (default 12)")
    p.add_argument("--timesteps", default="30000", help="training steps per trial (default 30000)")
    p.add_argument("--eval-episodes", default="10", help="evaluation episodes per evaluation (default 10)")
    p.add_argument("--seed", default="0",
                   help="training seed of every trial and the sampler's seed; evaluation seeds are seed + 1000000 + i "
                        "(default 0)")
    p.add_argument("--jobs", default="1", help="trials run at a time, one process each (default 1; with more the "
                                               "order trials are sampled in is not reproducible)")
    p.add_argument("--env-set", action="append", default=[], metavar="KEY=VALUE", help="env config override")
    p.add_argument("--out", default="results/tune", help="output folder (default results/tune)")
    add_force(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar over trials")
    p.set_defaults(func=run)


def command_line(args: argparse.Namespace, trials: int, timesteps: int, episodes: int, seed: int) -> str:
    """The command that reproduces the search (recorded in its outputs)."""
    words = ["promogym", "tune", "--env", args.env, "--algo", args.algo, "--trials", str(trials), "--timesteps",
             str(timesteps), "--eval-episodes", str(episodes), "--seed", str(seed)]
    for pair in args.env_set:
        words += ["--env-set", pair]
    return shlex.join([*words, "--out", str(args.out)])


def run(args: argparse.Namespace) -> int:
    """Run ``promogym tune`` with the parsed ``args``; returns the exit status (CLIError for bad input)."""
    trials = integer_arg(args.trials, "--trials", 1)
    timesteps = integer_arg(args.timesteps, "--timesteps", 1)
    episodes = integer_arg(args.eval_episodes, "--eval-episodes", 1)
    seed = integer_arg(args.seed, "--seed", 0)
    jobs = integer_arg(args.jobs, "--jobs", 1)
    env_config = parse_overrides(args.env_set, "--env-set")
    if importlib.util.find_spec("optuna") is None:
        raise CLIError("promogym tune needs optuna, which is not installed: pip install promogym[tune]")
    try:
        spec = tune.TuneSpec(env_id=args.env, algo=args.algo, trials=trials, timesteps=timesteps,
                             eval_episodes=episodes, seed=seed, env_config=env_config, jobs=jobs)
        table = tune.check(spec)
    except (ValueError, TypeError) as exc:
        raise CLIError(str(exc)) from exc
    files = tune.output_files(Path(args.out), spec.name)
    marker = {"kind": "tune", "name": spec.name}
    resuming = not args.force and read_marker(files["study"]) == marker
    check_output_dir(files["study"], "study", args.force, marker)
    for key in ("json", "yml", "png"):
        if files[key].is_dir():
            raise CLIError(f"output path is a folder, expected a file: {files[key]}")
        if files[key].exists() and not (resuming or args.force):
            raise CLIError(f"output {files[key]} exists (its study folder {files['study']} does not); pass --force "
                           f"to replace it")
    study_dir = output_dir(files["study"], "study", force=args.force, holds=marker)
    with contextlib.ExitStack() as held:
        try:
            held.enter_context(tune.study_lock(study_dir))
        except ValueError as exc:
            raise CLIError(str(exc)) from exc
        if args.force:  # start anew: the journal and the results of the study this command wrote before
            tune.clear_study(study_dir)
            for key in ("json", "yml", "png"):
                files[key].unlink(missing_ok=True)
        try:
            tune.open_study(spec, study_dir, table)  # a study of other settings is refused before any training
        except ValueError as exc:
            raise CLIError(str(exc)) from exc
        result = tune.tune(spec, Path(args.out), progress=not args.no_progress and sys.stderr.isatty(),
                           command=command_line(args, trials, timesteps, episodes, seed))
    b = result["budget"]
    counts = (f"{b['trials_counted']} trial{'' if b['trials_counted'] == 1 else 's'} ({b['complete']} complete, "
              f"{b['pruned']} pruned, {b['failed']} failed)")
    if result["best"] is None:
        print(f"promogym tune: no trial completed of {counts}; see {files['json']}", file=sys.stderr)
        return 1
    best, base = result["best"], result["baseline"]
    print(f"wrote {files['json']}, {files['yml'].name}, {files['png'].name}: {counts} x {timesteps:,} steps, "
          f"{b['env_steps']['total']:,} env steps, {b['wall_seconds']:,.0f} s")
    print(f"best trial {best['number']}: {best['value']:,.2f}" + (
        "" if base is None else f" (baseline, trial {base['number']}: {base['value']:,.2f})"))
    return 0
