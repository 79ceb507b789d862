"""Throughput benchmarks (`promogym bench <what>`): figures printed and written as JSON.

Each benchmark compares two things measured in the same run (a ratio), because shared machines are
noisy; the absolute figures are reported beside the ratio for the targets in the README.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from promogym.core.io import git_commit, machine_info, package_versions, write_json


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


def device_rate(fn: Callable[[], int], device: Any, repeats: int, min_seconds: float, warmup: int = 0) -> float:
    """``best_rate`` of ``fn`` on a torch device, after ``warmup`` untimed calls; on CUDA every call ends with
    ``torch.cuda.synchronize()``, since kernels run asynchronously."""
    call = _synchronized(fn, device) if device.type == "cuda" else fn
    for _ in range(warmup):
        call()
    return best_rate(call, repeats=repeats, min_seconds=min_seconds)


def _synchronized(fn: Callable[[], int], device: Any) -> Callable[[], int]:
    import torch

    def call() -> int:
        n = fn()
        torch.cuda.synchronize(device)
        return n
    return call


def bench_world(quick: bool = False) -> dict[str, Any]:
    """Throughput of the ground-truth world: true purchase probabilities per second in one batch and one offer per call
    (and their ratio), revealed probabilities per second and logged rows per second (``quick``: smaller sizes)."""
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


def bench_predictor(quick: bool = False, device_name: str = "cpu") -> dict[str, Any]:
    """Fine-tuning examples/s (fp32 vs bf16), full-encoder vs cached inference offers/s, peak memory.

    On CPU the timings are short and unwarmed, as for the committed figures; on CUDA each timing runs for at
    least a second after warm-up calls, and the peak GPU memory and a 4,096-offer uncached batch are added."""
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
    model = BertConversionModel(net, tokenizer, "hybrid", 64, device=torch.device(device_name), bf16=False,
                                segment=True)
    device = model.device
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    repeats, min_seconds, warmup = (3, 1.0, 3) if cuda else (2, 0.0, 0)

    # fine-tuning: one hybrid step encodes the batch's distinct texts with gradients
    batch = logs.iloc[:256]
    num = torch.as_tensor(numeric_features(batch), device=device)
    wd = torch.as_tensor(weekday_index(batch), device=device)
    y = torch.as_tensor(batch["purchased"].to_numpy(dtype="float32"), device=device)
    users, u_inv = np.unique(batch["user_text"].astype(str), return_inverse=True)
    items, i_inv = np.unique(batch["item_text"].astype(str), return_inverse=True)
    u_idx, i_idx = torch.as_tensor(u_inv, device=device), torch.as_tensor(i_inv, device=device)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-5)

    def train_step(bf16: bool) -> Callable[[], int]:
        def step() -> int:
            model.bf16 = bf16
            net.train()
            uh, um = model.hidden_states(list(users))
            ih, im = model.hidden_states(list(items))
            with autocast(device, bf16):
                z = net.head(net.tower("user", uh, um)[u_idx], net.tower("item", ih, im)[i_idx], num, wd)
            loss = F.binary_cross_entropy_with_logits(z.float(), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            return len(batch)
        return step

    fp32 = device_rate(train_step(False), device, repeats, min_seconds, warmup)
    bf16 = device_rate(train_step(True), device, repeats, min_seconds, warmup)
    model.bf16 = False
    net.eval()

    # inference without a cache: every offer's user and product texts run through the encoder
    def full_rate(n_offers: int) -> float:
        offers = logs.iloc[:n_offers]

        def full() -> int:
            model.clear_cache()
            model.predict_proba(offers)
            return n_offers

        return device_rate(full, device, repeats, min_seconds, min(warmup, 1))

    full = full_rate(256 if quick else 512)
    # cached: 10k offers over users and products already encoded; the encoder must not run
    cached_offers = pd.concat([logs] * 1).iloc[:10_000]
    model.clear_cache()
    model.predict_proba(cached_offers)
    calls = model.encoder_calls

    def cached() -> int:
        model.predict_proba(cached_offers)
        return len(cached_offers)

    cached_rate = device_rate(cached, device, 5, max(min_seconds, 0.2), min(warmup, 1))
    figures: dict[str, Any] = {
        "encoder": encoder_name,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "finetune_examples_per_s_fp32": fp32,
        "finetune_examples_per_s_bf16": bf16,
        "bf16_speedup": bf16 / fp32,
        "full_encoder_offers_per_s": full,
        "cached_offers_per_s": cached_rate,
        "ratio_cached_over_full": cached_rate / full,
        "encoder_calls_during_cached_predictions": model.encoder_calls - calls,
        "cache_entries": model.cache_size,
        "peak_rss_mb": _peak_rss_mb(),
        "targets": {"ratio_cached_over_full": 500.0},
    }
    if cuda:  # a larger uncached batch (512 offers leave the GPU mostly idle), then the peak memory
        figures["full_encoder_offers_per_s_4096_offers"] = full_rate(4096)
        figures.update(gpu=torch.cuda.get_device_name(device), cuda=torch.version.cuda,
                       tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
                       peak_gpu_memory_mb=torch.cuda.max_memory_allocated(device) / 2**20)
    figures["timing"] = {"repeats": repeats, "min_seconds": min_seconds, "cached_repeats": 5,
                         "cached_min_seconds": max(min_seconds, 0.2), "warmup_training_steps": warmup,
                         "warmup_inference_calls": min(warmup, 1), "cuda_synchronize_each_call": cuda}
    return figures


def bench_env(quick: bool = False, env_ids: Sequence[str] | None = None) -> dict[str, Any]:
    """Env steps/s and customer decisions/s for each env x backend: the world, a tiny BERT, MiniLM (towers
    cached) and MiniLM with a 5-head ensemble scored every step (``uncertainty_penalty`` on). Each run
    first plays ``warmup`` untimed steps, as a training run's first steps fill the model's per-pair memo,
    then times ``steps`` steps of random actions. A customer decision is a visitor (pricing, recommendation)
    or a cohort member (coupons); where an env reports the products it ``shown`` each visitor
    (PromoRecommendation), the (visitor, shown product) pairs the backend scored are counted too
    (``pairs_per_s``). ``env_ids``: the envs to run (default: every one of ``envs.MARKET_ENV_IDS``). ``quick``
    (a check that the benchmark runs, not a measurement): a tiny BERT, 20 + 20 steps and a world of 500 customers,
    so an env that memoises every customer's pairs when it is built does a tenth of the default world's work."""
    import gymnasium as gym
    import torch

    from promogym import envs
    from promogym.envs.market import Market
    from promogym.predictors.bert import BertConversionModel, HybridNet
    from promogym.predictors.encoder import load_encoder

    torch.set_num_threads(1)
    market_cfg: dict[str, Any] = {"n_customers": 500} if quick else {}
    backends: dict[str, tuple[Any, dict[str, Any]]] = {"world": ("world", {})}
    for name in ("tiny",) if quick else ("tiny", "minilm"):
        encoder, tokenizer = load_encoder(name)
        backends[f"bert_{name}"] = (BertConversionModel(HybridNet(encoder), tokenizer, "hybrid", 64,
                                                        device=torch.device("cpu"), bf16=False, segment=True), {})
    name = "tiny" if quick else "minilm"
    encoder, tokenizer = load_encoder(name)
    backends[f"bert_{name}_ensemble5"] = (
        BertConversionModel(HybridNet(encoder, ensemble=5), tokenizer, "hybrid", 64, device=torch.device("cpu"),
                            bf16=False, segment=True), {"uncertainty_penalty": 1.0})
    Market(market_cfg)  # warm the import path
    steps, warmup = (20, 20) if quick else (200, 1000)
    env_ids = list(envs.MARKET_ENV_IDS if env_ids is None else env_ids)
    unknown = [e for e in env_ids if e not in envs.MARKET_ENV_IDS]
    if unknown:
        raise ValueError(f"unknown env id {unknown[0]!r}; choose among {', '.join(envs.MARKET_ENV_IDS)}")
    results: dict[str, Any] = {}
    for env_id in env_ids:
        for bname, (response, extra) in backends.items():
            start = time.perf_counter()
            env = gym.make(env_id, config={"response": response, "market": market_cfg, **extra})
            setup = time.perf_counter() - start
            env.reset(seed=0)
            env.action_space.seed(0)
            for _ in range(warmup):
                _, _, term, trunc, _ = env.step(env.action_space.sample())
                if term or trunc:
                    env.reset()
            actions = [env.action_space.sample() for _ in range(steps)]
            decisions, pairs, t0 = 0, 0, time.perf_counter()
            for a in actions:
                _, _, term, trunc, info = env.step(a)
                decisions += int(info.get("visitors", len(info.get("users", ()))))
                if "shown" in info:
                    pairs += int((np.asarray(info["shown"]) >= 0).sum())
                if term or trunc:
                    env.reset()
            seconds = time.perf_counter() - t0
            results[f"{env_id}|{bname}"] = {"steps_per_s": steps / seconds, "decisions_per_s": decisions / seconds,
                                           "setup_s": setup}
            if "shown" in info:
                results[f"{env_id}|{bname}"]["pairs_per_s"] = pairs / seconds
    figures: dict[str, Any] = {"per_env_backend": results, "env_ids": env_ids, "steps": steps,
                               "warmup_steps": warmup, "market": market_cfg}
    for env_id in env_ids:
        world = results[f"{env_id}|world"]["decisions_per_s"]
        short = env_id.split("/")[1]
        figures[f"{short}_world_decisions_per_s"] = world
        for bname in backends:
            if bname != "world":
                figures[f"{short}_ratio_{bname}_over_world"] = results[f"{env_id}|{bname}"]["decisions_per_s"] / world
    figures["targets"] = {f"{e.split('/')[1]}_world_decisions_per_s": 5e4 for e in env_ids}
    if not quick:
        for e in env_ids:
            for bname in ("bert_minilm", "bert_minilm_ensemble5"):
                figures["targets"][f"{e.split('/')[1]}_ratio_{bname}_over_world"] = 0.3
    return figures


POLICY_BENCH_ENV = "promogym/CouponAllocation-v1"
# the MlpPolicy side of `bench policy`: the hyperparameter table's MaskablePPO settings with the policy and widths
# the table gave before it switched to the per-customer policy
MLP_BASELINE: dict[str, Any] = {"policy": "MlpPolicy", "policy_kwargs": {"net_arch": [256, 256]}}


def bench_policy(quick: bool = False) -> dict[str, Any]:
    """Training steps/s of MaskablePPO on CouponAllocation-v1 (world backend, default config: cohorts of 64) with
    SB3's MlpPolicy and with the per-customer policy (:mod:`promogym.agents.per_customer`), the same seed and
    hyperparameters (agents/hyperparams.yml) apart from the policy, and their ratio, on one core and one torch
    thread; each first trains ``warmup`` untimed steps, then ``steps`` timed ones (several updates of
    ``n_steps``). Also the share of the time spent in updates (the rest: rollouts, env steps included), and each
    policy's parameter count at cohorts of 64 and 256."""
    import gymnasium as gym
    import torch
    from sb3_contrib import MaskablePPO
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    from promogym import envs  # noqa: F401 (registers the env ids)
    from promogym.agents.per_customer import count_parameters
    from promogym.agents.train import load_hyperparams, model_arguments

    # one thread, as bench env: per-core figures, and on a shared machine a second OpenMP thread waiting for a busy
    # core made MlpPolicy's updates up to 100x slower at random (an inflated, irreproducible ratio)
    torch.set_num_threads(1)
    table = load_hyperparams(POLICY_BENCH_ENV, "maskable_ppo")
    n_steps = 256 if quick else 1024
    steps, warmup = (2 * n_steps, n_steps) if quick else (4 * n_steps, n_steps)
    setups = {"mlp": {**table, **MLP_BASELINE, "n_steps": n_steps},
              "per_customer": {**table, "policy": "per_customer", "n_steps": n_steps}}

    def vec(config: dict[str, Any]) -> Any:
        return VecNormalize(DummyVecEnv([lambda: Monitor(gym.make(POLICY_BENCH_ENV, config=config))]), gamma=0.99)

    figures: dict[str, Any] = {}
    for name, params in setups.items():
        train_env = vec({"response": "world"})
        policy, kwargs = model_arguments("maskable_ppo", params, train_env)
        model = MaskablePPO(policy, train_env, seed=0, verbose=0, **kwargs)
        model.learn(warmup)
        update_seconds = [0.0]
        update = model.train

        def timed_update(update: Callable[[], None] = update, acc: list[float] = update_seconds) -> None:
            t0 = time.perf_counter()
            update()
            acc[0] += time.perf_counter() - t0

        model.train = timed_update  # type: ignore[method-assign]
        start = time.perf_counter()
        model.learn(steps, reset_num_timesteps=False)
        seconds = time.perf_counter() - start
        figures[f"{name}_steps_per_s"] = steps / seconds
        figures[f"{name}_update_share"] = update_seconds[0] / seconds
        for cohort in (64, 256):
            env = vec({"response": "world", "cohort_size": cohort})
            policy, kwargs = model_arguments("maskable_ppo", params, env)
            figures[f"{name}_params_cohort{cohort}"] = count_parameters(
                MaskablePPO(policy, env, seed=0, verbose=0, **kwargs).policy)
    figures["ratio_per_customer_over_mlp"] = figures["per_customer_steps_per_s"] / figures["mlp_steps_per_s"]
    figures.update(env_id=POLICY_BENCH_ENV, timed_steps=steps, warmup_steps=warmup, n_steps=n_steps,
                   threads=torch.get_num_threads(),
                   widths={n: (p.get("policy_kwargs") or {}).get("net_arch") for n, p in setups.items()},
                   targets={"ratio_per_customer_over_mlp": 10.0})
    return figures


# name -> (benchmark, pinned to one core: the world's targets are per core; torch uses all cores)
BENCHES: dict[str, tuple[Callable[..., dict[str, Any]], bool]] = {
    "world": (bench_world, True), "predictor": (bench_predictor, False), "env": (bench_env, True),
    "policy": (bench_policy, True)}
DEVICE_BENCHES = ("predictor",)  # the benchmarks that take --device
RATIO_KEYS = ("finetune_examples_per_s_fp32", "finetune_examples_per_s_bf16", "full_encoder_offers_per_s",
              "cached_offers_per_s")


def bench_file(out_dir: Path, name: str, device: str = "cpu") -> Path:
    """``<name>.json`` on the CPU, ``<name>_cuda.json`` on a GPU, so the two can sit side by side."""
    kind = device.split(":")[0]
    return out_dir / (f"{name}.json" if kind == "cpu" else f"{name}_{kind}.json")


def compare_to_cpu(cpu_file: Path, figures: dict[str, Any], quick: bool) -> dict[str, Any] | None:
    """Device-over-CPU ratios of the throughput figures, against the CPU run in ``cpu_file`` when it exists
    and measured the same workload (same encoder, same --quick)."""
    try:
        cpu = json.loads(cpu_file.read_text())
    except (OSError, ValueError):
        return None
    cpu_fig = cpu.get("figures", {})
    if cpu.get("quick") != quick or cpu_fig.get("encoder") != figures.get("encoder"):
        return None
    return {"file": str(cpu_file), "cpu_commit": cpu.get("commit"), "cpu_when": cpu.get("when"),
            "cpu_machine": cpu.get("machine"), "cpu_threads": cpu_fig.get("threads"),
            "ratio_over_cpu": {k: figures[k] / cpu_fig[k] for k in RATIO_KEYS if cpu_fig.get(k)}}


def run_bench(name: str, out_dir: Path, quick: bool = False, device: str = "cpu",
              env_ids: Sequence[str] | None = None) -> dict[str, Any]:
    """Run benchmark ``name`` of ``BENCHES`` (pinned to one core where it asks) and write its figures, with the commit,
    machine and package versions, to its JSON file in ``out_dir``; a device run is compared with the CPU figures found
    there; ``env_ids`` (``env`` only): the envs to run, default all. Returns what was written."""
    fn, pin = BENCHES[name]
    commit = git_commit()  # the code measured, before a long measurement
    cpu = pin_one_core() if pin else None
    extra: tuple[Any, ...] = (device,) if name in DEVICE_BENCHES else (env_ids,) if name == "env" else ()
    figures = fn(quick, *extra)
    result = {
        "bench": name,
        "figures": figures,
        "quick": quick,
        "pinned_cpu": cpu,
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "commit": commit,
        "machine": machine_info(),
        "versions": package_versions(),
    }
    out, cpu_out = bench_file(out_dir, name, device), bench_file(out_dir, name)
    if out != cpu_out:
        result["compared_to_cpu"] = compare_to_cpu(cpu_out, figures, quick)  # None when there is none
    write_json(out, result)
    return result
