"""`promogym bench <what>`: throughput benchmarks (:mod:`promogym.experiments.bench`); `make bench` writes
them under results/bench/."""

from __future__ import annotations

import argparse

from promogym.experiments.bench import BENCHES, DEVICE_BENCHES, bench_file, run_bench
from promogym.experiments.errors import CLIError
from promogym.experiments.paths import add_force, output_dir, torch_device


def check_device(name: str, device: str) -> str:
    """The device ``bench <name>`` may run on, as a torch device string; a CLIError otherwise."""
    if device != "cpu" and name not in DEVICE_BENCHES:
        raise CLIError(f"--device applies to `bench {' / '.join(DEVICE_BENCHES)}` only, not `bench {name}`")
    return torch_device(device)


def check_envs(name: str, env_ids: list[str] | None) -> list[str] | None:
    """The env ids ``bench <name>`` runs (None: every one of ``envs.MARKET_ENV_IDS``); a CLIError for --env on
    another benchmark or an id that is not a market env."""
    if not env_ids:
        return None
    if name != "env":
        raise CLIError(f"--env applies to `bench env` only, not `bench {name}`")
    from promogym import envs

    for env_id in env_ids:
        if env_id not in envs.MARKET_ENV_IDS:
            raise CLIError(f"unknown env id {env_id!r}; choose among {', '.join(envs.MARKET_ENV_IDS)}")
    return list(dict.fromkeys(env_ids))


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add the ``bench`` subcommand to the CLI's subparsers."""
    p = sub.add_parser("bench", help="throughput benchmarks (JSON under results/bench/)")
    p.add_argument("what", choices=sorted(BENCHES), help="what to benchmark")
    p.add_argument("--out", default="runs/bench", help="output folder (default runs/bench)")
    add_force(p)
    p.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke test")
    p.add_argument("--device", default="cpu",
                   help="predictor only: cpu (default) or cuda; a GPU run writes predictor_cuda.json, with its "
                        "ratios over predictor.json when that file is in --out")
    p.add_argument("--env", action="append", default=None, metavar="ENV_ID",
                   help="env only: a market env id to run (repeatable; default: every market env)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``promogym bench`` with the parsed ``args``; returns the exit status (CLIError for bad input)."""
    device = check_device(args.what, args.device)
    env_ids = check_envs(args.what, args.env)
    out = output_dir(args.out, "--out", force=args.force)
    result = run_bench(args.what, out, args.quick, device, env_ids)
    for key, value in result["figures"].items():
        if isinstance(value, float):
            print(f"{key:<48} {value:>16,.{1 if abs(value) >= 10 else 3}f}")
        elif isinstance(value, list):
            print(f"{key:<40} {', '.join(map(str, value))}")
        elif not isinstance(value, dict):
            print(f"{key:<40} {value:>16}")
    for key, target in result["figures"].get("targets", {}).items():
        got = result["figures"][key]
        print(f"target {key} >= {target:,.6g}: {'met' if got >= target else 'MISSED'} ({got:,.6g})")
    if compared := result.get("compared_to_cpu"):
        print(f"against the CPU figures in {compared['file']}:")
        for key, ratio in compared["ratio_over_cpu"].items():
            print(f"{key + ' / cpu':<48} {ratio:>16,.2f}")
    print(f"wrote {bench_file(out, args.what, device)}")
    return 0
