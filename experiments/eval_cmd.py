"""`promogym eval-predictor`: score conversion models against outcomes and the truth (JSON + PNG)."""

from __future__ import annotations

import argparse
from pathlib import Path

from promogym.experiments.errors import CLIError
from promogym.experiments.paths import add_force, input_file, output_dir
from promogym.predictors.data import load_logs
from promogym.predictors.registry import SPEC_HELP, load_model, market_for_data, parse_spec


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add the ``eval-predictor`` subcommand to the CLI's subparsers."""
    p = sub.add_parser("eval-predictor", help="evaluate conversion models against the truth",
                       description="Scores models on held-out users, for seen and new products, against outcomes, "
                                   "true probabilities and the text ceiling: per offer (each row's choice "
                                   "probability within its visit) and per visit (P(buy anything), which product); "
                                   "writes metrics.json, table.md and plots.")
    p.add_argument("--model", action="append", required=True, metavar="[NAME=]SPEC",
                   help=f"a model to evaluate (repeatable): {SPEC_HELP}")
    p.add_argument("--data", required=True, help="the logs the models were fitted on")
    p.add_argument("--out", default="runs/predictor", help="output folder (default runs/predictor)")
    add_force(p)
    p.add_argument("--max-rows", type=int, default=None,
                   help="cap rows per set (sampled by whole visits), e.g. for text mode")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``promogym eval-predictor`` with the parsed ``args``; returns the exit status (CLIError for bad input)."""
    from promogym.predictors.evaluate import (
        evaluate,
        plot_calibration,
        plot_price_response,
        summary_table,
        write_report,
    )

    if args.max_rows is not None and args.max_rows < 100:
        raise CLIError(f"--max-rows must be at least 100 (rows per evaluation set), got {args.max_rows}")
    data = input_file(args.data, "--data")
    try:
        market = market_for_data(data)
        models = {}
        for item in args.model:
            name, sep, spec = item.partition("=")
            if not sep:  # named after the kind, a BERT checkpoint after its folder
                spec, parsed = item, parse_spec(item, "conversion")
                name = f"bert_{Path(parsed.path or '').name}" if parsed.kind == "bert" else parsed.kind
            models[name] = load_model(spec, market)
        df = load_logs(data)
    except (ValueError, FileNotFoundError) as exc:
        raise CLIError(str(exc)) from exc
    out = output_dir(args.out, "--out", force=args.force)
    result = evaluate(models, df, max_rows=args.max_rows)
    write_report(result, out)
    plot_calibration(result, out / "calibration.png")
    plot_price_response(models, df, market, out / "price_response.png")
    table = summary_table(result)
    (out / "table.md").write_text(table + "\n")
    print(table)
    print(f"wrote {out / 'metrics.json'}, {out / 'table.md'}, {out / 'calibration.png'}, {out / 'price_response.png'}")
    return 0
