"""The policy registry: every named policy, the env families it plays, and how to build it.

A policy registers itself where it is defined::

    @register_policy("list_price", families=("pricing",), help="every product at list price", static=True)
    def _list_price(env, ctx, arg):
        return ListPrice(env)

and from then on ``promogym evaluate --policy list_price``, an experiment's ``baselines:`` and the reports
know it, with no other file edited. The registry finds the policies of this package by importing its
modules on first use, and those of other installed packages through the ``promogym.policies`` entry
point group (each entry a module to import). A policy name may carry one argument after a colon
(``static:1.1``) when it registers ``arg``. A training run folder (holding ``config.yml``) is a policy too:
the learned agent, read with its saved normalization.

What a registration declares is what the pipelines need to know:

- ``families``: the env families (:mod:`promogym.envs.families`) it can act in;
- ``default``: among the baselines an experiment scores when none are named;
- ``static``: a static rule (one decision whatever the state), as listings describe it (the reference of the
  normalized score is the best baseline not told the truth, static or not: :func:`reference_policy`);
- ``plans``: it plans with a response model, so it can also be scored planning with the simulator
  (``name@sim``);
- ``knows_truth``: it reads the world's hidden truth, so its score in a simulator means nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import math
import pkgutil
from collections.abc import Callable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import gymnasium as gym
import pandas as pd

from promogym.envs.base import probe_config
from promogym.envs.families import family_of

Factory = Callable[[gym.Env[Any, Any], "PolicyContext", str | None], Any]
ArgCheck = Callable[[gym.Env[Any, Any], float], None]
ENTRY_POINT_GROUP = "promogym.policies"


@dataclasses.dataclass(frozen=True)
class PolicyEntry:
    """One registration: a policy ``name`` for an env ``family``, its ``factory(env, ctx, arg)`` and ``help``; ``arg``
    names its numeric argument (``name:<arg>``), ``default`` whether an experiment scores it when no baselines are
    named, ``static`` whether it is a static rule, ``plans`` whether it plans with the simulator, ``searched``
    whether that planning is only a search over its own parameters scored by episode returns (black-box, as a
    learner sees the env, not reading the simulator's model), ``knows_truth``
    whether it is told the world's truth (an oracle), ``check_arg`` the validator of its argument."""

    name: str
    family: str
    factory: Factory
    help: str
    arg: str | None = None
    default: bool = True
    static: bool = False
    plans: bool = False
    knows_truth: bool = False
    searched: bool = False
    check_arg: ArgCheck | None = None

    @property
    def usage(self) -> str:
        """The spec a user writes: ``name`` or ``name:<arg>``."""
        return f"{self.name}:{self.arg}" if self.arg else self.name


_REGISTRY: dict[tuple[str, str], PolicyEntry] = {}
_discovered = False


def register_policy(name: str, *, families: tuple[str, ...], help: str, arg: str | None = None,
                    default: bool = True, static: bool = False, plans: bool = False,
                    knows_truth: bool = False, check_arg: ArgCheck | None = None,
                    searched: bool = False) -> Callable[[Factory], Factory]:
    """Decorator: register ``factory(env, ctx, arg) -> policy`` under ``name`` for each of ``families``
    (a name registered again for a family replaces the earlier entry). ``arg`` names a numeric argument
    (``name:<arg>``); ``check_arg(env, value)`` raises ValueError for a value the env cannot take."""
    if not name or ":" in name or "@" in name or "/" in name:
        raise ValueError(f"policy name {name!r} must be non-empty without ':', '@' or '/'")

    def wrap(factory: Factory) -> Factory:
        for family in families:
            _REGISTRY[(name, family)] = PolicyEntry(name, family, factory, help, arg, default, static, plans,
                                                    knows_truth, searched, check_arg)
        return factory

    return wrap


def unregister_policy(name: str, family: str | None = None) -> None:
    """Remove a registration (every family's when ``family`` is None)."""
    for key in [k for k in _REGISTRY if k[0] == name and family in (None, k[1])]:
        del _REGISTRY[key]


def _discover() -> None:
    """Import this package's modules (they register their policies) and plug-ins named by entry points."""
    global _discovered
    if _discovered:
        return
    _discovered = True
    import promogym.agents as package

    for info in pkgutil.iter_modules(package.__path__, package.__name__ + "."):
        importlib.import_module(info.name)
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        importlib.import_module(ep.value.split(":")[0])


def policies_for(env_id: str) -> list[PolicyEntry]:
    """Every policy registered for the env's family, in registration order."""
    _discover()
    family = family_of(env_id).name
    return [e for (_, fam), e in _REGISTRY.items() if fam == family]


def default_baselines(env_id: str) -> list[str]:
    """The baselines an experiment scores on this env when none are named."""
    return [e.name for e in policies_for(env_id) if e.default]


def is_run_folder(spec: str) -> bool:
    """A training run folder (a learned policy) rather than a policy name."""
    return (Path(spec) / "config.yml").is_file()


def split_spec(spec: str) -> tuple[str, str | None]:
    """Split a policy spec ``name[:arg]`` into ``(name, arg)``; ``arg`` is None without a colon."""
    name, sep, arg = spec.partition(":")
    return name, (arg if sep else None)


def entry(spec: str, env_id: str) -> PolicyEntry:
    """The registration behind a policy name on this env; ValueError naming the choices otherwise."""
    name, arg = split_spec(spec)
    known = {e.name: e for e in policies_for(env_id)}
    if name not in known:
        raise ValueError(f"unknown policy {spec!r} for {env_id}: a run folder (with config.yml) or one of "
                         f"{', '.join(e.usage for e in known.values())}")
    found = known[name]
    if (arg is None) != (found.arg is None):
        raise ValueError(f"policy {name!r} is written {found.usage}, got {spec!r}")
    return found


def check_policy(spec: str, env_id: str, env: gym.Env[Any, Any] | None = None) -> None:
    """ValueError for a name this env's family does not have, a bad argument, or a run folder of another env
    (with ``env``: also an argument this env cannot take, or a run trained on other observations)."""
    if is_run_folder(spec):
        import yaml

        try:
            run_cfg = yaml.safe_load((Path(spec) / "config.yml").read_text()) or {}
        except yaml.YAMLError as exc:
            raise ValueError(f"run folder {spec}: config.yml is not valid YAML") from exc
        run_env = run_cfg.get("env_id") if isinstance(run_cfg, dict) else None
        if run_env != env_id:
            raise ValueError(f"run folder {spec} holds an agent for {run_env}, not {env_id}")
        if env is not None:
            trained = gym.make(env_id, config=probe_config(env_id, run_cfg.get("env_config"),
                                                           run_cfg.get("response")))
            if trained.observation_space.shape != env.observation_space.shape or \
                    trained.action_space != env.action_space:
                raise ValueError(f"run folder {spec} was trained on {env_id} with other settings (observations "
                                 f"{trained.observation_space.shape}, actions {trained.action_space}); this env has "
                                 f"{env.observation_space.shape} and {env.action_space}")
        return
    found = entry(spec, env_id)
    if found.arg is not None:
        try:
            value = float(split_spec(spec)[1] or "")
        except ValueError as exc:
            raise ValueError(f"{found.usage} needs a number, got {spec!r}") from exc
        if not math.isfinite(value):
            raise ValueError(f"{found.usage} needs a finite number, got {spec!r}")
        if env is not None and found.check_arg is not None:
            found.check_arg(env, value)


def policy_help(family_names: tuple[str, ...] | None = None) -> str:
    """One line per family (default: every family with a registered policy): the policy names it has (for
    --help)."""
    _discover()
    lines = []
    for family in family_names or tuple(dict.fromkeys(fam for _, fam in _REGISTRY)):
        names = [e.usage for (_, fam), e in _REGISTRY.items() if fam == family]
        lines.append(f"{family}: {', '.join(names)}")
    return "; ".join(lines)


class PolicyContext:
    """What building a policy may need besides the env it plays in: the env id, the simulator env that
    planning policies plan with, logs (a parquet path, a DataFrame, or None: generated from the simulator's
    market when first asked for) and a cache shared by the policies built from this context."""

    def __init__(self, env_id: str, simulator_env: gym.Env[Any, Any], logs: str | pd.DataFrame | None = None,
                 search_seeds: int = 10) -> None:
        self.env_id, self.sim, self.search_seeds = env_id, simulator_env, search_seeds
        self._logs_path = logs if isinstance(logs, str) else None
        self._logs: pd.DataFrame | None = logs if isinstance(logs, pd.DataFrame) else None
        self.cache: dict[str, Any] = {}

    @property
    def simulator(self) -> Any:
        """The response backend planning policies plan with."""
        return self.sim.unwrapped.backend  # type: ignore[attr-defined]

    def make_simulator_env(self) -> gym.Env[Any, Any]:
        """A fresh env with the simulator's config (for searches that play episodes)."""
        return gym.make(self.env_id, config=self.sim.unwrapped.config)  # type: ignore[attr-defined]

    def logs(self) -> pd.DataFrame:
        """The logs policies fit on: read from the parquet path, the DataFrame given, or (when neither was given)
        100,000 rows generated from the simulator's market with seed 11, once."""
        if self._logs is None:
            if self._logs_path:
                self._logs = pd.read_parquet(self._logs_path)
            else:
                from promogym.envs.market.logs import generate_logs

                self._logs = generate_logs(self.sim.unwrapped.market, 100_000, seed=11)  # type: ignore[attr-defined]
        return self._logs

    def cached(self, key: str, compute: Callable[[], Any]) -> Any:
        """``compute()`` once per ``key`` for the policies sharing this context; later calls return the stored value."""
        if key not in self.cache:
            self.cache[key] = compute()
        return self.cache[key]


def make_policy(spec: str, env: gym.Env[Any, Any], ctx: PolicyContext, trust: bool = False) -> Any:
    """The policy a spec names (a registered name or a run folder), acting in ``env``. A run folder is loaded
    only when its manifest vouches for its files, unless ``trust`` (its pickles then run code)."""
    if is_run_folder(spec):
        from promogym.agents.train import LearnedPolicy

        policy = LearnedPolicy(spec, env, trust=trust)
        policy.name = Path(spec).name
        return policy
    found = entry(spec, ctx.env_id)
    return found.factory(env, ctx, split_spec(spec)[1])


def reference_policy(means: Mapping[str, float], learned: set[str] | frozenset[str] = frozenset(),
                     env_id: str | None = None) -> str:
    """The reference of the normalized score and the A/B tests, one rule for every report: the best-scoring
    baseline not told the truth. That excludes learned policies, oracles (``knows_truth``), policies planned on a
    simulator and scored elsewhere (``name@sim``) and planners that read the env's response model (``plans``,
    e.g. the myopic rule): what remains are rules and rules tuned by a black-box search over their parameters
    scored by episode returns (``searched``: the best constant price, the tuned markdown schedule), which see
    the env as a learner does."""
    _discover()
    entries = {n: e for (n, _), e in _REGISTRY.items()}
    if env_id:
        # an env id that is not registered (statistics of stored tables) keeps every family's entries
        with contextlib.suppress(ValueError):
            entries = {e.name: e for e in policies_for(env_id)}

    def fair(n: str) -> bool:
        e = entries.get(n)
        return n not in learned and "@" not in n and (e is None or (not e.knows_truth and (not e.plans or e.searched)))

    pool = [n for n in means if fair(n)]
    if not pool:
        raise ValueError(f"no reference among {sorted(means)}: every policy is learned, told the truth or a planner")
    return max(pool, key=lambda n: means[n])


__all__ = ["PolicyContext", "PolicyEntry", "check_policy", "default_baselines", "entry", "is_run_folder",
           "make_policy", "policies_for", "policy_help", "reference_policy", "register_policy", "unregister_policy"]
