"""`promogym bench <what>`: throughput benchmarks that print figures and write JSON under results/bench/.

Each benchmark compares two things measured in the same run (a ratio), because shared machines are
noisy; the absolute figures are reported beside the ratio for the targets in the README.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from promogym.core.io import git_commit, machine_info, package_versions, write_json
from promogym.experiments.paths import add_force, output_dir


def pin_one_core() -> int | None:
    """Restrict this process to one CPU (the targets are per core); returns the CPU used."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    return cpu


def best_rate(fn: Callable[[], int], repeats: int = 5, min_seconds: float = 0.2) -> float:
    """Best items/second over ``repeats`` timings of ``fn`` (which returns the items it processed)."""
    best = 0.0
    for _ in range(repeats):
        n, start = 0, time.perf_counter()
        while True:
            n += fn()
            elapsed = time.perf_counter() - start
            if elapsed >= min_seconds:
                break
        best = max(best, n / elapsed)
    return best


def bench_world(quick: bool = False) -> dict[str, Any]:
    from promogym.envs.market import Market
    from promogym.envs.market.logs import generate_logs

    market = Market()
    rng = np.random.default_rng(0)
    n = 100_000 if quick else 1_000_000
    users = rng.integers(0, market.n_customers, n)
    items = rng.integers(0, market.n_products, n)
    price = market.catalog.list_price[items] * rng.uniform(0.8, 1.2, n)
    coupon = rng.choice([0.0, 0.05, 0.1, 0.2], n)
    state = market.initial_state()

    def batched() -> int:
        market.true_purchase_proba(users, items, price, coupon, state)
        return n

    def revealed() -> int:
        m = n // 10
        market.revealed_purchase_proba(users[:m], items[:m], price[:m], coupon[:m], state)
        return m

    def one_by_one() -> int:
        m = 2000
        for k in range(m):
            market.true_purchase_proba(users[k:k + 1], items[k:k + 1], price[k:k + 1], coupon[k:k + 1], state)
        return m

    rows = 20_000 if quick else 200_000

    def logging() -> int:
        generate_logs(market, rows, seed=1)
        return rows

    evals = best_rate(batched)
    single = best_rate(one_by_one, repeats=3)
    return {
        "proba_evals_per_s_batched": evals,
        "proba_evals_per_s_one_per_call": single,
        "ratio_batched_over_one_per_call": evals / single,
        "revealed_proba_evals_per_s": best_rate(revealed, repeats=3),
        "logged_rows_per_s": best_rate(logging, repeats=3, min_seconds=0.0),
        "batch_size": n,
        "log_rows": rows,
        "targets": {"proba_evals_per_s_batched": 5e6, "logged_rows_per_s": 2e5},
    }


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def bench_predictor(quick: bool = False) -> dict[str, Any]:
    """Fine-tuning examples/s (fp32 vs bf16), full-encoder vs cached inference offers/s, peak memory."""
    import pandas as pd
    import torch
    from torch.nn import functional as F

    from promogym.envs.market import Market
    from promogym.envs.market.logs import generate_logs
    from promogym.predictors.bert import BertConversionModel, HybridNet
    from promogym.predictors.encoder import autocast, load_encoder
    from promogym.predictors.features import numeric_features, weekday_index

    encoder_name = "tiny" if quick else "minilm"
    market = Market()
    logs = generate_logs(market, 20_000, seed=3)
    encoder, tokenizer = load_encoder(encoder_name)
    net = HybridNet(encoder)
    model = BertConversionModel(net, tokenizer, "hybrid", 64, device=torch.device("cpu"), bf16=False, segment=True)
    device = model.device

    # fine-tuning: one hybrid step encodes the batch's distinct texts with gradients
    batch = logs.iloc[:256]
    num = torch.as_tensor(numeric_features(batch))
    wd = torch.as_tensor(weekday_index(batch))
    y = torch.as_tensor(batch["purchased"].to_numpy(dtype="float32"))
    users, u_inv = np.unique(batch["user_text"].astype(str), return_inverse=True)
    items, i_inv = np.unique(batch["item_text"].astype(str), return_inverse=True)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-5)

    def train_step(bf16: bool) -> Callable[[], int]:
        def step() -> int:
            model.bf16 = bf16
            net.train()
            uh, um = model.hidden_states(list(users))
            ih, im = model.hidden_states(list(items))
            with autocast(device, bf16):
                z = net.head(net.tower("user", uh, um)[torch.as_tensor(u_inv)],
                             net.tower("item", ih, im)[torch.as_tensor(i_inv)], num, wd)
            loss = F.binary_cross_entropy_with_logits(z.float(), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            return len(batch)
        return step

    fp32 = best_rate(train_step(False), repeats=2, min_seconds=0.0)
    bf16 = best_rate(train_step(True), repeats=2, min_seconds=0.0)
    model.bf16 = False
    net.eval()

    # inference without a cache: every offer's user and product texts run through the encoder
    n_full = 256 if quick else 512
    offers = logs.iloc[:n_full]

    def full() -> int:
        model.clear_cache()
        model.predict_proba(offers)
        return n_full

    full_rate = best_rate(full, repeats=2, min_seconds=0.0)
    # cached: 10k offers over users and products already encoded; the encoder must not run
    cached_offers = pd.concat([logs] * 1).iloc[:10_000]
    model.clear_cache()
    model.predict_proba(cached_offers)
    calls = model.encoder_calls

    def cached() -> int:
        model.predict_proba(cached_offers)
        return len(cached_offers)

    cached_rate = best_rate(cached, repeats=5)
    return {
        "encoder": encoder_name,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "finetune_examples_per_s_fp32": fp32,
        "finetune_examples_per_s_bf16": bf16,
        "bf16_speedup": bf16 / fp32,
        "full_encoder_offers_per_s": full_rate,
        "cached_offers_per_s": cached_rate,
        "ratio_cached_over_full": cached_rate / full_rate,
        "encoder_calls_during_cached_predictions": model.encoder_calls - calls,
        "cache_entries": model.cache_size,
        "peak_rss_mb": _peak_rss_mb(),
        "targets": {"ratio_cached_over_full": 500.0},
    }


def bench_env(quick: bool = False) -> dict[str, Any]:
    """Env steps/s and customer decisions/s for each env x backend (world, tiny BERT, MiniLM with cache)."""
    import gymnasium as gym
    import torch

    from promogym import envs
    from promogym.envs.market import Market
    from promogym.predictors.bert import BertConversionModel, HybridNet
    from promogym.predictors.encoder import load_encoder

    torch.set_num_threads(1)
    market_cfg: dict[str, Any] = {}
    backends: dict[str, Any] = {"world": "world"}
    for name in ("tiny",) if quick else ("tiny", "minilm"):
        encoder, tokenizer = load_encoder(name)
        backends[f"bert_{name}"] = BertConversionModel(HybridNet(encoder), tokenizer, "hybrid", 64,
                                                       device=torch.device("cpu"), bf16=False, segment=True)
    Market(market_cfg)  # warm the import path
    steps = 20 if quick else 200
    results: dict[str, Any] = {}
    for env_id in envs.MARKET_ENV_IDS:
        for bname, response in backends.items():
            start = time.perf_counter()
            env = gym.make(env_id, config={"response": response, "market": market_cfg})
            setup = time.perf_counter() - start
            env.reset(seed=0)
            env.action_space.seed(0)
            actions = [env.action_space.sample() for _ in range(steps)]
            decisions, t0 = 0, time.perf_counter()
            for a in actions:
                _, _, term, trunc, info = env.step(a)
                decisions += int(info.get("visitors", len(info.get("users", ()))))
                if term or trunc:
                    env.reset()
            seconds = time.perf_counter() - t0
            results[f"{env_id}|{bname}"] = {"steps_per_s": steps / seconds, "decisions_per_s": decisions / seconds,
                                           "setup_s": setup}
    figures: dict[str, Any] = {"per_env_backend": results}
    for env_id in envs.MARKET_ENV_IDS:
        world = results[f"{env_id}|world"]["decisions_per_s"]
        short = env_id.split("/")[1]
        figures[f"{short}_world_decisions_per_s"] = world
        for bname in backends:
            if bname != "world":
                figures[f"{short}_ratio_{bname}_over_world"] = results[f"{env_id}|{bname}"]["decisions_per_s"] / world
    figures["targets"] = {f"{e.split('/')[1]}_world_decisions_per_s": 5e4 for e in envs.MARKET_ENV_IDS}
    if not quick:
        figures["targets"].update({f"{e.split('/')[1]}_ratio_bert_minilm_over_world": 0.3 for e in envs.MARKET_ENV_IDS})
    return figures


# name -> (benchmark, pinned to one core: the world's targets are per core; torch uses all cores)
BENCHES: dict[str, tuple[Callable[[bool], dict[str, Any]], bool]] = {
    "world": (bench_world, True), "predictor": (bench_predictor, False), "env": (bench_env, True)}


def run_bench(name: str, out_dir: Path, quick: bool = False) -> dict[str, Any]:
    fn, pin = BENCHES[name]
    cpu = pin_one_core() if pin else None
    figures = fn(quick)
    result = {
        "bench": name,
        "figures": figures,
        "quick": quick,
        "pinned_cpu": cpu,
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "machine": machine_info(),
        "versions": package_versions(),
    }
    write_json(out_dir / f"{name}.json", result)
    return result


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="throughput benchmarks (JSON under results/bench/)")
    p.add_argument("what", choices=sorted(BENCHES), help="what to benchmark")
    p.add_argument("--out", default="runs/bench", help="output folder (default runs/bench)")
    add_force(p)
    p.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke test")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    out = output_dir(args.out, "--out", force=args.force)
    result = run_bench(args.what, out, args.quick)
    for key, value in result["figures"].items():
        if isinstance(value, float):
            print(f"{key:<48} {value:>16,.{1 if abs(value) >= 10 else 3}f}")
        elif not isinstance(value, dict):
            print(f"{key:<40} {value:>16}")
    for key, target in result["figures"].get("targets", {}).items():
        got = result["figures"][key]
        print(f"target {key} >= {target:,.6g}: {'met' if got >= target else 'MISSED'} ({got:,.6g})")
    print(f"wrote {out / (args.what + '.json')}")
    return 0
