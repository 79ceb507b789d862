"""Run independent trials (one training run, one policy's evaluation) in parallel.

``local`` (default) uses a process pool on this machine; ``ray`` sends the same picklable trials to a
Ray cluster (``pip install 'promogym[ray]'``): the cluster at ``address`` (``auto`` or
``ray://host:10001``), or a local Ray instance when no address is given. Results are yielded as trials
finish, so the caller can record each one at once: an interruption loses only the trials in flight.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

BACKENDS = ("local", "ray")


def _single_threaded(fn: Callable[[Any], Any], payload: Any) -> Any:
    """Run one trial with one torch thread: parallel trials must not oversubscribe the cores."""
    import torch

    torch.set_num_threads(1)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return fn(payload)


def run_trials(fn: Callable[[Any], Any], payloads: Sequence[Any], backend: str = "local", jobs: int = 2,
               address: str | None = None) -> Iterator[tuple[Any, Any]]:
    """Yield ``(payload, fn(payload))`` as each trial finishes; a failing trial raises at once."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown execution backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if not payloads:
        return
    if backend == "ray":
        yield from _ray(fn, payloads, jobs, address)
        return
    if jobs <= 1:
        for p in payloads:
            yield p, fn(p)
        return
    pool = cf.ProcessPoolExecutor(max_workers=jobs)
    try:
        futures = {pool.submit(_single_threaded, fn, p): p for p in payloads}
        for fut in cf.as_completed(futures):
            yield futures[fut], fut.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def ray_available() -> bool:
    """Whether Ray can be imported (the ``ray`` extra is installed)."""
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


def _ray(fn: Callable[[Any], Any], payloads: Sequence[Any], jobs: int, address: str | None
         ) -> Iterator[tuple[Any, Any]]:
    try:
        import ray
    except ImportError as exc:
        raise ValueError("the ray backend needs Ray: pip install 'promogym[ray]'") from exc
    started_here = not ray.is_initialized()
    if started_here:
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
        if address:
            kwargs["address"] = address
        else:
            kwargs["num_cpus"] = max(1, jobs)
        ray.init(**kwargs)
    try:
        remote = ray.remote(num_cpus=1, max_retries=0)(_single_threaded)
        pending = {remote.remote(fn, p): p for p in payloads}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                yield pending.pop(ref), ray.get(ref)
    finally:
        if started_here:
            ray.shutdown()


__all__ = ["BACKENDS", "ray_available", "run_trials"]
