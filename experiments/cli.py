"""The `promogym` command line: one sub-command per stage of the pipeline."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from promogym.experiments import (
    agents_report_cmd,
    bench_cmd,
    data_cmd,
    eval_cmd,
    evaluate_cmd,
    experiment_cmd,
    export_cmd,
    fidelity_cmd,
    fit_cmd,
    hillstrom_cmd,
    import_cmd,
    loop_cmd,
    report_cmd,
    slates_cmd,
    train_cmd,
    tune_cmd,
    world_cmd,
)
from promogym.experiments.errors import CLIError

COMMANDS = (data_cmd, world_cmd, fit_cmd, eval_cmd, train_cmd, evaluate_cmd, fidelity_cmd, agents_report_cmd,
            experiment_cmd, export_cmd, report_cmd, hillstrom_cmd, bench_cmd, tune_cmd, loop_cmd, import_cmd,
            slates_cmd)


def build_parser() -> argparse.ArgumentParser:
    """The ``promogym`` parser: one sub-command per module of :data:`COMMANDS`."""
    parser = argparse.ArgumentParser(
        prog="promogym",
        description="A reinforcement-learning simulator for e-commerce pricing and promotions.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; a :class:`CLIError` is one line on stderr and exit code 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except CLIError as exc:
        # one line, whatever the message carries (a YAML parser's or a library's multi-line text)
        print(f"promogym {args.command}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"promogym {args.command}: interrupted; nothing half-written was kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
