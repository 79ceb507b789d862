"""Every public name of the installed ``promogym`` package has a docstring (the API reference is built from them).

Public means: a module whose name does not start with ``_`` (``__main__`` skipped), and the classes, functions and
methods (properties included) defined in it whose names do not start with ``_``. Methods are those defined on the
class itself; inherited and dunder methods are skipped. The check reads the source (``ast``), so it is fast and
imports nothing but the package root. The last test builds the generated configuration page (it imports the envs).
"""

from __future__ import annotations

import ast
import importlib.util
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

_Def = ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef


def package_modules() -> dict[str, Path]:
    """Every public module of the installed packages (from pyproject's package list), name -> source file."""
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    modules: dict[str, Path] = {}
    for package in packages:
        spec = importlib.util.find_spec(package)
        assert spec is not None and spec.submodule_search_locations, f"package {package} is not importable"
        folder = Path(next(iter(spec.submodule_search_locations)))
        modules[package] = folder / "__init__.py"
        for path in sorted(folder.glob("*.py")):
            if not path.stem.startswith("_"):
                modules[f"{package}.{path.stem}"] = path
    return modules


def _skipped_accessor(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """A property's setter/deleter or a typing overload: documented by the getter or the implementation."""
    for dec in node.decorator_list:
        if isinstance(dec, ast.Attribute) and dec.attr in ("setter", "deleter"):
            return True
        name = dec.id if isinstance(dec, ast.Name) else dec.attr if isinstance(dec, ast.Attribute) else ""
        if name == "overload":
            return True
    return False


def _undocumented_members(body: list[ast.stmt], prefix: str) -> Iterator[str]:
    for node in body:
        if not isinstance(node, _Def) or node.name.startswith("_"):
            continue
        if not isinstance(node, ast.ClassDef) and _skipped_accessor(node):
            continue
        qualname = f"{prefix}{node.name}"
        if not ast.get_docstring(node):
            yield qualname
        if isinstance(node, ast.ClassDef):
            yield from _undocumented_members(node.body, f"{qualname}.")


def undocumented(module: str, source: str) -> list[str]:
    """``module:qualname`` of each public name in ``source`` without a docstring (``module`` itself if it has none)."""
    tree = ast.parse(source)
    missing = [] if ast.get_docstring(tree) else [module]
    # names under ``if TYPE_CHECKING:`` / try blocks are not definitions a user reads; only the module's top level
    missing += [f"{module}:{q}" for q in _undocumented_members(tree.body, "")]
    return missing


def test_checker_flags_undocumented_names() -> None:
    source = '''
class Documented:
    """Doc."""

    def method(self):
        """Doc."""

    def _private(self): pass

    def __repr__(self): return ""

    @property
    def size(self):
        return 1

    @size.setter
    def size(self, value):
        """Doc."""


class Bare:
    def run(self): pass

    class Inner:
        """Doc."""

        def go(self): pass


def helper(): pass


async def fetch():
    """Doc."""


def _hidden(): pass
'''
    assert undocumented("pkg.mod", source) == [
        "pkg.mod", "pkg.mod:Documented.size", "pkg.mod:Bare", "pkg.mod:Bare.run", "pkg.mod:Bare.Inner.go",
        "pkg.mod:helper",
    ]
    assert undocumented("pkg.mod", '"""Doc."""\n\ndef f():\n    """Doc."""\n') == []


def test_package_modules_cover_every_layer() -> None:
    names = package_modules()
    for expected in ("promogym", "promogym.core.config", "promogym.envs.market.world", "promogym.agents.registry",
                     "promogym.predictors.bert", "promogym.experiments.cli"):
        assert expected in names
    assert not [n for n in names if n.endswith("__main__")]


def test_every_public_name_has_a_docstring() -> None:
    missing = [name for module, path in package_modules().items() for name in undocumented(module, path.read_text())]
    if missing:
        pytest.fail(f"{len(missing)} public name(s) without a docstring:\n" + "\n".join(missing))


def test_the_config_reference_page_covers_every_registered_env():
    """`make docs` builds the environment configuration page from the registered ids' config classes (an env whose
    config has required keys, like the shop's, included)."""
    import sys

    from promogym.envs import ENV_IDS

    sys.path.insert(0, str(ROOT / "docs"))
    try:
        import hooks
    finally:
        sys.path.pop(0)
    page = hooks.config_page()
    for env_id in ENV_IDS:
        assert f"## `{env_id}`" in page
