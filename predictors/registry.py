"""Response models by name: one registry, one spec grammar, for both model contracts.

A model spec is ``kind`` or ``kind:path`` (split at the first colon only, so a path may hold colons).
Every kind is registered for a *task*:

* ``"conversion"``: P(buy) per offer, the ``ConversionModel`` protocol (``predict_proba``); the
  synthetic market's environments and ``promogym eval-predictor`` read these.
* ``"uplift"``: potential outcomes per arm, an ``UpliftModel`` (``predict``); the Hillstrom
  environment reads these.

The same kind may exist for both tasks (``bert``, ``gbdt`` and ``logistic`` do). A kind registers
itself where its class is defined, in the style of Hugging Face's ``AutoModel.register``::

    register_model("gbdt", task="conversion", load=_load_gbdt, fit=_fit_gbdt, help="...")

``load(path, **needs)`` returns the model (``path`` is None for a kind without one; ``needs`` are the
context values the kind asked for, e.g. the ``market`` for the truth oracles). ``fit`` is the kind's
fitter, None where the project has none with the uniform signature: conversion
``fit(train_df, out_path=None, seed=0)``, uplift ``fit(train_df, valid_df, out_path=None, seed=0)``;
both return the fitted model and save it when ``out_path`` is given. ``load`` and ``fit`` may also
be ``"module:attr"`` strings, imported on first use.

The built-in kinds are discovered lazily: the first lookup of a kind imports the built-in modules of
its task one at a time, lightest first, and stops as soon as the kind is known. A ``gbdt`` or
``logistic`` conversion lookup therefore imports only ``baselines`` (no torch, about 0.3 s); looking
up ``bert``, listing every kind (``spec_help``, an error message) or any uplift kind imports torch
(about 2 s). ``response="world"`` in an environment never touches the registry.
"""

from __future__ import annotations

import dataclasses
import importlib
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from promogym.envs.market import Market
from promogym.predictors.base import ConversionModel

TASKS = ("conversion", "uplift")

# the modules that register the built-in kinds of each task, in the order discovery imports them
BUILTIN_MODULES: dict[str, tuple[str, ...]] = {
    "conversion": ("promogym.predictors.baselines", "promogym.predictors.bert"),
    "uplift": ("promogym.predictors.uplift",),
}

# what a kind may ask its loader to be given (``needs``), per task, and where a caller gets it
CONTEXT: dict[str, dict[str, str]] = {
    "conversion": {"market": "the data's sidecar JSON with its world config"},
    "uplift": {"data": "the trial's rows, to fit it on their train split"},
}

# the built-in conversion forms, for help texts built at import time (the CLI's): listing the registry
# would import torch; a test checks it against spec_help("conversion")
SPEC_HELP = "bert:<checkpoint dir> | gbdt:<file> | logistic:<file> | truth | ceiling"

_KIND = re.compile(r"[A-Za-z][A-Za-z0-9_.-]*")


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A parsed model spec: ``kind`` and ``path`` (None for a kind without one)."""

    kind: str
    path: str | None = None

    def __str__(self) -> str:
        return self.kind if self.path is None else f"{self.kind}:{self.path}"


@dataclasses.dataclass(frozen=True)
class ModelEntry:
    """One registered kind of one task."""

    kind: str
    task: str
    load: Callable[..., Any] | str
    fit: Callable[..., Any] | str | None = None
    needs_path: bool = True
    help: str = ""
    placeholder: str = "file"
    needs: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    oracle: bool = False

    @property
    def form(self) -> str:
        """How a spec of this kind is written: ``gbdt:<file>`` or ``truth``."""
        return f"{self.kind}:<{self.placeholder}>" if self.needs_path else self.kind

    @property
    def loader(self) -> Callable[..., Any]:
        """The load function (a ``"module:attr"`` entry point is imported when asked for)."""
        return _resolve(self.load)

    @property
    def fitter(self) -> Callable[..., Any] | None:
        """The fit function (resolved like :attr:`loader`), or None for a kind that cannot be fitted here."""
        return None if self.fit is None else _resolve(self.fit)


_REGISTRY: dict[tuple[str, str], ModelEntry] = {}   # (task, kind or alias) -> entry
_DISCOVERED: set[str] = set()


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")


def _resolve(target: Callable[..., Any] | str) -> Callable[..., Any]:
    """A callable, or a ``"module:attr"`` (attr may be dotted) entry point imported now."""
    if not isinstance(target, str):
        return target
    module, sep, attr = target.partition(":")
    if not sep or not module or not attr:
        raise ValueError(f"entry point must be 'module:attr', got {target!r}")
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def register_model(kind: str, *, task: str, load: Callable[..., Any] | str, fit: Callable[..., Any] | str | None = None,
                   needs_path: bool = True, help: str = "", placeholder: str = "file",
                   needs: Iterable[str] = (), aliases: Iterable[str] = (), oracle: bool = False,
                   exist_ok: bool = False) -> ModelEntry:
    """Register ``kind`` for ``task`` ("conversion" or "uplift").

    ``load(path, **needs)`` builds the model (``path`` None when ``needs_path`` is False); ``needs``
    names context the loader requires (conversion: ``market``; uplift: ``data``). ``fit`` is the
    task's uniform fitter or None. ``placeholder`` names the path in help texts (``gbdt:<file>``);
    ``aliases`` are other names of the kind; an ``oracle`` reads the world's truth and is no
    environment response backend. Registering a taken name raises unless ``exist_ok``.
    """
    _check_task(task)
    needs, aliases = tuple(needs), tuple(aliases)
    for name in (kind, *aliases):
        if not isinstance(name, str) or not _KIND.fullmatch(name):
            raise ValueError(f"model kind must be a name (letters, digits, _ . -), got {name!r}")
        if (task, name) in _REGISTRY and not exist_ok:
            raise ValueError(f"{task} model kind {name!r} is already registered "
                             f"(by {_module_of(_REGISTRY[(task, name)].load)}); pass exist_ok=True to replace it")
    unknown = [n for n in needs if n not in CONTEXT[task]]
    if unknown:
        raise ValueError(f"a {task} model can need only {', '.join(CONTEXT[task])}, got {', '.join(unknown)}")
    if not (callable(load) or isinstance(load, str)) or not (fit is None or callable(fit) or isinstance(fit, str)):
        raise TypeError("load and fit must be callables or 'module:attr' strings")
    entry = ModelEntry(kind, task, load, fit, needs_path, help, placeholder, needs, aliases, oracle)
    for name in (kind, *aliases):
        _REGISTRY[(task, name)] = entry
    return entry


def unregister_model(kind: str, task: str) -> None:
    """Remove ``kind`` (and its aliases) from ``task``; KeyError when it is not registered."""
    _check_task(task)
    entry = _REGISTRY[(task, kind)]
    for name in (entry.kind, *entry.aliases):
        _REGISTRY.pop((task, name), None)


def _module_of(target: Callable[..., Any] | str) -> str:
    return target.partition(":")[0] if isinstance(target, str) else getattr(target, "__module__", "?")


def _discover(task: str, kind: str | None = None) -> None:
    """Import the task's built-in modules (they register their kinds) until ``kind`` is known."""
    for module in BUILTIN_MODULES[task]:
        if kind is not None and (task, kind) in _REGISTRY:
            return
        if module not in _DISCOVERED:
            importlib.import_module(module)
            _DISCOVERED.add(module)


def model_entries(task: str) -> list[ModelEntry]:
    """Every kind registered for ``task`` (built-ins discovered), oracles last, kinds without a path first."""
    _check_task(task)
    _discover(task)
    entries = {id(e): e for (t, _), e in _REGISTRY.items() if t == task}.values()
    return sorted(entries, key=lambda e: (e.oracle, e.needs_path, e.kind))


def allowed_forms(task: str, oracles: bool = True) -> list[str]:
    """How each registered kind of ``task`` is written in a spec (``gbdt:<file>``, ``truth``); without the oracle kinds
    when ``oracles`` is False."""
    return [e.form for e in model_entries(task) if oracles or not e.oracle]


def spec_help(task: str, verbose: bool = False) -> str:
    """The registered forms of ``task``: ``bert:<checkpoint dir> | gbdt:<file> | ...``; ``verbose``: one
    line per kind with its help."""
    if verbose:
        return "\n".join(f"{e.form:<28} {e.help}".rstrip() for e in model_entries(task))
    return " | ".join(allowed_forms(task))


def _find(kind: str, task: str) -> ModelEntry | None:
    _check_task(task)
    if (task, kind) not in _REGISTRY:
        _discover(task, kind)
    return _REGISTRY.get((task, kind))


def parse_spec(spec: str, task: str | None = None) -> ModelSpec:
    """``"bert:/path"`` -> ``ModelSpec("bert", "/path")``, ``"world"`` -> ``ModelSpec("world")``.

    Without ``task`` only the syntax is checked; with it, the kind must be registered for the task and
    have a path exactly when it needs one. ValueError names the problem and the allowed forms.
    """
    if not isinstance(spec, str):
        raise ValueError(f"a model spec must be a string (kind or kind:path), got {type(spec).__name__}")
    kind, _, path = spec.partition(":")
    parsed = ModelSpec(kind, path or None)
    if not _KIND.fullmatch(kind):
        expected = spec_help(task) if task else "kind or kind:path"
        raise ValueError(f"model spec {spec!r} does not start with a model kind; expected {expected}")
    if task is not None:
        _check_path(parsed, _lookup(parsed, task), spec, task)
    return parsed


def _lookup(parsed: ModelSpec, task: str) -> ModelEntry:
    entry = _find(parsed.kind, task)
    if entry is None:
        raise ValueError(f"unknown model kind {parsed.kind!r}; expected {spec_help(task)}")
    return entry


def _check_path(parsed: ModelSpec, entry: ModelEntry, spec: str, task: str) -> None:
    if entry.needs_path and parsed.path is None:
        raise ValueError(f"model spec {spec!r} needs a path: {spec_help(task)}")
    if not entry.needs_path and parsed.path is not None:
        raise ValueError(f"model spec {spec!r}: {parsed.kind} takes no path; expected {spec_help(task)}")


def model_entry(spec: str | ModelSpec, task: str) -> ModelEntry:
    """The registered entry a spec (or a parsed one) names for ``task``."""
    parsed = spec if isinstance(spec, ModelSpec) else parse_spec(spec, task)
    return _lookup(parsed, task)


def _or_list(items: list[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} or {items[-1]}"


def check_spec(spec: str, task: str, *, name: str | None = None, oracles: bool = True,
               extra: Iterable[str] = (), other: str | None = None) -> ModelSpec:
    """Parse ``spec`` for ``task``; ValueError naming the allowed forms (from the registry) when it is bad.

    With ``name`` (e.g. ``"HillstromConfig.response"``) a bad kind reads "<name> must be 'a', 'b' or
    <other>, got ...", listing ``extra`` forms first (e.g. ``world``) and ``other`` last (e.g. "a
    ConversionModel"); ``oracles=False`` refuses the kinds that read the world's truth.
    """
    try:
        parsed: ModelSpec | None = parse_spec(spec)
    except ValueError:
        if name is None:
            raise
        parsed = None
    entry = None if parsed is None else _find(parsed.kind, task)
    if parsed is None or entry is None or (entry.oracle and not oracles):
        forms = [*extra, *allowed_forms(task, oracles)]
        if name is not None:
            quoted = [f"'{f}'" for f in forms] + ([other] if other else [])
            raise ValueError(f"{name} must be {_or_list(quoted)}, got {spec!r}")
        assert parsed is not None
        why = "unknown model kind {!r}" if entry is None else "model kind {!r} is not allowed here"
        raise ValueError(f"{why.format(parsed.kind)}; expected {' | '.join(forms)}")
    _check_path(parsed, entry, spec, task)
    return parsed


def load_spec(spec: str, task: str, **context: Any) -> Any:
    """Load the model ``spec`` names for ``task``; ``context`` holds what kinds may need (market, data)."""
    parsed = parse_spec(spec, task)
    entry = _lookup(parsed, task)
    missing = [n for n in entry.needs if context.get(n) is None]
    if missing:
        raise ValueError(f"model {spec!r} needs the {missing[0]} ({CONTEXT[task][missing[0]]})")
    model = entry.loader(parsed.path, **{n: context[n] for n in entry.needs})
    method = "predict_proba" if task == "conversion" else "predict"
    if not hasattr(model, method):
        raise TypeError(f"the {task} loader of {parsed.kind!r} returned a {type(model).__name__}, "
                        f"which has no {method}()")
    return model


def load_model(spec: str | ConversionModel, market: Market | None = None) -> ConversionModel:
    """Resolve a conversion model spec (or pass a ConversionModel through)."""
    if not isinstance(spec, str):
        if not isinstance(spec, ConversionModel):
            raise ValueError(f"expected a model spec ({spec_help('conversion')}) or a ConversionModel, "
                             f"got {type(spec).__name__}")
        return spec
    return load_spec(spec, "conversion", market=market)


def load_uplift_model(spec: Any, data: Any = None) -> Any:
    """Resolve an uplift model spec (``cells`` needs ``data``), or pass an UpliftModel through."""
    if not isinstance(spec, str):
        if not hasattr(spec, "predict"):
            raise ValueError(f"expected a model spec ({spec_help('uplift')}) or an UpliftModel, "
                             f"got {type(spec).__name__}")
        return spec
    check_spec(spec, "uplift", name="response model")
    return load_spec(spec, "uplift", data=data)


def market_for_data(data: str | Path) -> Market | None:
    """The market that generated a log file, from its sidecar JSON (None when there is none)."""
    from promogym.predictors.data import read_world_config

    world = read_world_config(data)
    if world is None:
        return None
    try:
        return Market(world)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{Path(data).with_suffix('.json')}: its world config is not valid: {exc}") from exc
