"""MkDocs hooks: the package laid out as installed for mkdocstrings, module lists and the env config page.

* ``promogym`` maps its subpackages onto top-level folders (``promogym.envs`` is ``envs/``, see pyproject's
  ``package-dir``); griffe reads sources from folders, so the build lays out a tree of links as installed
  under ``build/docs-src/`` and mkdocstrings reads it (``paths`` in ``mkdocs.yml``).
* ``<!-- api-modules: PACKAGE -->`` in a page becomes one ``::: module`` block per module of PACKAGE
  (the package itself first), so a new module appears in the reference without editing a page.
* ``<!-- env-config -->`` becomes the tables of every registered env's config keys, generated from the
  config dataclasses' ``param`` metadata (name, default, allowed values, doc), and of every config class
  nested in them (``market``: MarketConfig, and any other ConfigBase named by a key's type or doc).

``python docs/hooks.py`` prints the generated config page.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import importlib.util
import inspect
import re
import tomllib
import typing
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SOURCE_TREE = ROOT / "build" / "docs-src"


def _packages() -> dict[str, Path]:
    """Every installed package (pyproject's package list) and its source folder."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapped = setuptools.get("package-dir", {})
    out: dict[str, Path] = {}
    for package in setuptools["packages"]:
        if package in mapped:
            out[package] = ROOT / mapped[package]
        else:
            parent, _, name = package.rpartition(".")
            out[package] = (out[parent] / name) if parent else ROOT / package
    return out


def modules_of(package: str) -> list[str]:
    """The package and its public modules (not subpackages), in file-name order."""
    folder = _packages()[package]
    return [package] + [f"{package}.{p.stem}" for p in sorted(folder.glob("*.py"))
                        if not p.stem.startswith("_")]


def build_source_tree() -> None:
    """Lay out the packages as installed (a tree of links under ``build/docs-src``) for griffe."""
    for package, folder in sorted(_packages().items()):
        target = SOURCE_TREE.joinpath(*package.split("."))
        target.mkdir(parents=True, exist_ok=True)
        for path in folder.glob("*.py"):
            link = target / path.name
            if link.is_symlink() and link.resolve() == path.resolve():
                continue
            link.unlink(missing_ok=True)
            link.symlink_to(path.resolve())
    # a module removed from the sources leaves a dangling link: drop it
    for link in SOURCE_TREE.rglob("*.py"):
        if link.is_symlink() and not link.exists():
            link.unlink()


# ----- env config tables -------------------------------------------------------------------------------------


def _config_classes() -> tuple[dict[str, type], list[type]]:
    """(registered env id -> its config class, every ConfigBase subclass defined in promogym.envs)."""
    from promogym.core.config import ConfigBase

    envs = importlib.import_module("promogym.envs")
    defined: list[type] = []
    for package in _packages():
        if package == "promogym.envs" or package.startswith("promogym.envs."):
            for name in modules_of(package):
                module = importlib.import_module(name)
                defined += [c for c in vars(module).values() if isinstance(c, type) and issubclass(c, ConfigBase)
                            and c is not ConfigBase and c.__module__ == name]
    env_configs: dict[str, type] = {}
    for env_id, entry_point in envs.ENV_IDS.items():
        module_name, _, attr = entry_point.partition(":")
        env_class = getattr(importlib.import_module(module_name), attr)
        env_configs[env_id] = _env_config_class(env_class, ConfigBase, defined)
    return env_configs, defined


def _env_config_class(env_class: type, base: type, candidates: list[type]) -> type:
    """An env's config class: its ``config_class``, else the config whose defaults are its ``default_config()``."""
    config_class = getattr(env_class, "config_class", None)
    if isinstance(config_class, type) and issubclass(config_class, base):
        return config_class
    defaults = env_class.default_config()  # type: ignore[attr-defined]
    matches = [c for c in candidates if _defaults(c) == defaults]
    if len(matches) != 1:
        raise TypeError(f"{env_class.__name__}: {len(matches)} config classes match its default_config()")
    return matches[0]


def _defaults(config_class: type) -> dict[str, Any] | None:
    """A config class's defaults, or None when its defaults are not a valid config (required keys, e.g. a shop)."""
    try:
        return config_class().to_dict()  # type: ignore[no-any-return]
    except ValueError:
        return None


def _nested(config_class: type, candidates: list[type]) -> dict[str, type]:
    """Keys of ``config_class`` that hold another config: the ConfigBase named by the key's type or its doc."""
    hints = typing.get_type_hints(config_class)
    out: dict[str, type] = {}
    for f in dataclasses.fields(config_class):
        text = f"{hints.get(f.name, '')} {f.metadata.get('doc', '')}"
        for c in candidates:
            if c is not config_class and re.search(rf"\b{c.__name__}\b", text):
                out[f.name] = c
    return out


def _cell(value: Any) -> str:
    text = str(value).replace("|", "\\|").replace("\n", " ")
    return text.replace("<", "&lt;").replace(">", "&gt;")


def _default(value: Any) -> str:
    return f"`{list(value) if isinstance(value, tuple) else value!r}`"


def _table(config_class: type, nested: dict[str, type]) -> list[str]:
    lines = ["| key | default | allowed | description |", "|---|---|---|---|"]
    for name, default, allowed, doc in config_class.parameter_table():  # type: ignore[attr-defined]
        allowed = "any value (checked by the config)" if allowed == "any value" else allowed
        if name in nested:
            allowed = f"a mapping of [{nested[name].__name__}](#{nested[name].__name__.lower()}) keys"
        lines.append(f"| `{name}` | {_cell(_default(default))} | {_cell(allowed)} | {_cell(doc)} |")
    return lines


def _summary(config_class: type) -> str:
    """The class's own docstring's first paragraph (not the signature dataclasses writes when there is none)."""
    doc = inspect.cleandoc(config_class.__dict__.get("__doc__") or "")
    if doc.startswith(f"{config_class.__name__}("):
        return ""
    return doc.split("\n\n")[0].replace("\n", " ")


def config_page() -> str:
    """The markdown of every registered env's config keys and of the configs nested in them."""
    from promogym.envs.market import MarketConfig

    env_configs, candidates = _config_classes()
    if MarketConfig not in candidates:
        candidates.append(MarketConfig)
    out: list[str] = []
    shown: list[type] = []
    for env_id, config_class in env_configs.items():
        nested = _nested(config_class, candidates)
        out += [f"## `{env_id}`", "",
                f"Config class: `{config_class.__module__}.{config_class.__name__}`. {_summary(config_class)}", "",
                *_table(config_class, nested), ""]
        shown += [c for c in nested.values() if c not in shown]
    out += ["## Nested configs", "",
            "Keys whose value is a mapping of another config's keys (unknown keys and out-of-range values are "
            "rejected the same way).", ""]
    while shown:
        config_class = shown.pop(0)
        nested = _nested(config_class, candidates)
        out += [f"### {config_class.__name__}", "",
                f"`{config_class.__module__}.{config_class.__name__}`. {_summary(config_class)}", "",
                *_table(config_class, nested), ""]
        shown += [c for c in nested.values() if c not in shown and c is not config_class]
    return "\n".join(out)


# ----- MkDocs events -----------------------------------------------------------------------------------------


def on_startup(command: str, dirty: bool) -> None:
    """Lay out the installed-layout tree before mkdocstrings looks for the package."""
    build_source_tree()


def _defined_names(package: str) -> list[str]:
    """Public classes and functions defined in a package's ``__init__`` (not those it re-exports)."""
    tree = ast.parse((_packages()[package] / "__init__.py").read_text())
    return [n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
            and not n.name.startswith("_")]


def _api_blocks(package: str) -> str:
    """``::: module`` blocks of a package and its modules; the package shows only what it defines itself, so a
    re-exported name is documented once, in its module."""
    own = _defined_names(package)
    blocks = [f"::: {package}\n    options:\n      members: {own if own else 'false'}"]
    return "\n\n".join(blocks + [f"::: {name}" for name in modules_of(package)[1:]])


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """Expand the ``api-modules`` and ``env-config`` markers."""
    markdown = re.sub(r"<!-- api-modules: ([\w.]+) -->", lambda m: _api_blocks(m.group(1)), markdown)
    if "<!-- env-config -->" in markdown:
        markdown = markdown.replace("<!-- env-config -->", config_page())
    return markdown


if __name__ == "__main__":
    print(config_page())
