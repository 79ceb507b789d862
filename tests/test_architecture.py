"""The structure users and extenders rely on: one namespace, layers that point down, registries that make a
new policy a change in one place."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from promogym.agents.baselines import StaticPrice
from promogym.agents.registry import register_policy, unregister_policy
from promogym.experiments.cli import main

ROOT = Path(__file__).resolve().parents[1]
# import name -> folder (the package-dir mapping of pyproject.toml)
FOLDERS = {"promogym": ROOT / "promogym", "promogym.envs": ROOT / "envs", "promogym.agents": ROOT / "agents",
           "promogym.predictors": ROOT / "predictors", "promogym.experiments": ROOT / "experiments"}
LAYERS = ("core", "world", "models", "envs", "agents", "pipelines", "cli")


def layer_of(module: str) -> str:
    """The layer of a promogym module, by its import name."""
    if module in ("promogym", "promogym.core") or module.startswith("promogym.core."):
        return "core"
    if module.startswith("promogym.envs.market"):
        return "world"
    if module.startswith("promogym.predictors"):
        return "models"
    if module.startswith("promogym.envs"):
        return "envs"
    if module.startswith("promogym.agents"):
        return "agents"
    last = module.rsplit(".", 1)[-1]
    return "cli" if last == "cli" or last.endswith("_cmd") else "pipelines"


def modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for name, folder in FOLDERS.items():
        for f in sorted(folder.rglob("*.py")):
            rel = f.relative_to(folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            found[".".join([name, *parts])] = f
    return found


def imports_of(module: str, path: Path) -> set[str]:
    """Every promogym module a file imports, at any depth (function-level imports included)."""
    out: set[str] = set()
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # a relative import
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            out.add(base)
            # `from promogym import envs` imports the subpackage promogym.envs
            out.update(f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in FOLDERS)
    return {m for m in out if m == "promogym" or m.startswith("promogym.")}


def test_layers_only_point_down():
    rank = {name: i for i, name in enumerate(LAYERS)}
    found = modules()
    assert len(found) > 40 and "promogym.envs.market.world" in found and "promogym.experiments.cli" in found
    upward = []
    for module, path in found.items():
        for imported in imports_of(module, path):
            if rank[layer_of(imported)] > rank[layer_of(module)]:
                upward.append(f"{module} ({layer_of(module)}) imports {imported} ({layer_of(imported)})")
    assert not upward, "imports that point up a layer:\n" + "\n".join(upward)


def test_the_layer_check_can_fail():
    path = ROOT / "predictors" / "registry.py"
    fake = imports_of("promogym.predictors.registry", path) | {"promogym.envs.pricing"}
    assert layer_of("promogym.envs.pricing") == "envs" and layer_of("promogym.predictors.registry") == "models"
    assert any(LAYERS.index(layer_of(m)) > LAYERS.index("models") for m in fake)


def test_no_module_imports_the_old_top_level_names():
    bad = []
    for module, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            bad += [f"{module}: {n}" for n in names if n.split(".")[0] in ("envs", "agents", "predictors",
                                                                            "experiments")]
    assert not bad


def test_env_ids_are_not_matched_by_string_outside_the_registries():
    pattern = re.compile(r"""endswith\(\s*["'][A-Za-z]*(Pricing|Coupon|Promo|Hillstrom)|endswith\(\s*["'][^"']*-v\d""")
    hits = [f"{m}: {line.strip()}" for m, p in modules().items() for line in p.read_text().splitlines()
            if pattern.search(line)]
    assert not hits


@pytest.mark.parametrize("name", ["envs", "agents", "predictors", "experiments"])
def test_nothing_generic_is_importable_outside_the_checkout(name, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    res = subprocess.run([sys.executable, "-c", f"import {name}"], cwd=tmp_path, env=env, capture_output=True,
                         text=True)
    assert res.returncode != 0 and "ModuleNotFoundError" in res.stderr
    ok = subprocess.run([sys.executable, "-c", f"import promogym.{name}; print(promogym.{name}.__name__)"],
                        cwd=tmp_path, env=env, capture_output=True, text=True)
    assert ok.returncode == 0 and ok.stdout.strip() == f"promogym.{name}"


# ---------------------------------------------------------------------------------------- extension
SMALL = {"market": {"n_customers": 600, "n_products": 60}, "n_products": 2, "horizon": 4, "daily_customers": 40,
         "initial_stock": 30}


@pytest.fixture
def half_price():
    """A policy registered here, in a test module, and nowhere else."""

    @register_policy("half_price", families=("pricing",), default=False, help="every product at half its list price")
    def _half(env, ctx, arg):
        return StaticPrice(env, 0.5)

    yield "half_price"
    unregister_policy("half_price")


def test_a_policy_registered_in_one_place_reaches_the_cli_and_experiments(half_price, tmp_path, capsys):
    with pytest.raises(SystemExit) as done:
        main(["evaluate", "--help"])
    assert done.value.code == 0
    assert half_price in capsys.readouterr().out

    env_set = [x for k, v in SMALL.items() if k != "market" for x in ("--env-set", f"{k}={v}")]
    env_set += ["--env-set", "market={n_customers: 600, n_products: 60}"]
    out = tmp_path / "episodes.parquet"
    assert main(["evaluate", "--env", "promogym/DynamicPricing-v1", *env_set, "--policy", "list_price",
                 "--policy", half_price, "--episodes", "2", "--out", str(out)]) == 0
    table = pd.read_parquet(out)
    means = table.groupby("policy")["return"].mean()
    assert set(means.index) == {"list_price", half_price} and means[half_price] != means["list_price"]

    config = {"name": "ext", "logs": {"rows": 1000},
              "envs": {"promogym/DynamicPricing-v1": {"algos": [], "config": SMALL,
                                                      "baselines": ["list_price", half_price]}},
              "train": {"seeds": 1, "simulators": ["world"]},
              "evaluate": {"episodes": 2, "trace_episodes": 0, "sim_planners": False},
              "execution": {"jobs": 1}}
    cfg = tmp_path / "ext.yml"
    cfg.write_text(yaml.safe_dump(config))
    assert main(["experiment", str(cfg), "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    summary = (tmp_path / "run" / "report" / "report.md").read_text()
    assert f"| {half_price} |" in summary
    # the same policy name is refused where its family does not play
    bad = {**config, "envs": {"promogym/CouponAllocation-v1": {"algos": [], "baselines": [half_price]}}}
    cfg.write_text(yaml.safe_dump(bad))
    assert main(["experiment", str(cfg), "--out", str(tmp_path / "run2"), "--no-progress"]) == 2
    assert f"unknown policy '{half_price}'" in capsys.readouterr().err
