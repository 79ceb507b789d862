"""The response-model registry: the spec grammar, registering a kind, and kinds shared by both tasks."""

import hashlib
import subprocess
import sys
from pathlib import Path
from typing import Any, cast

import gymnasium as gym
import numpy as np
import pytest

import promogym.envs  # noqa: F401  (registers the env ids)
from promogym.agents.train import response_hash
from promogym.predictors import registry
from promogym.predictors.registry import (
    ModelSpec,
    check_spec,
    load_model,
    load_uplift_model,
    model_entry,
    parse_spec,
    register_model,
    spec_help,
    unregister_model,
)

ENV = "promogym/DynamicPricing-v1"
SMALL = {"market": {"n_customers": 800, "n_products": 100}, "horizon": 3, "daily_customers": 40, "initial_stock": 20}


class PriceModel:
    """log-odds = a - 5 (price / list price - 1), with ``a`` read from a file."""

    name = "price_model"

    def __init__(self, a: float) -> None:
        self.a = a
        self.calls = 0

    @classmethod
    def from_file(cls, path: str) -> "PriceModel":
        with open(path) as fh:
            return cls(float(fh.read()))

    def logit(self, price, list_price):
        return self.a - 5.0 * (np.asarray(price, float) / np.asarray(list_price, float) - 1.0)

    def predict_proba(self, batch):
        self.calls += 1
        return 1.0 / (1.0 + np.exp(-self.logit(batch["price"], batch["list_price"])))


class ArmModel:
    """An uplift model: the same visit rate ``a`` under every arm."""

    name = "arm_model"

    def __init__(self, a: float) -> None:
        self.a = a

    def predict(self, df):
        p = np.full((len(df), 3), self.a)
        return {"visit": p, "conversion": p / 10, "spend": p}


@pytest.fixture
def mykind():
    """``mykind:<threshold file>``, a conversion kind registered here only."""
    register_model("mykind", task="conversion", load=PriceModel.from_file, placeholder="threshold file",
                   help="a test model")
    yield
    unregister_model("mykind", "conversion")


def _write(path, a):
    path.write_text(str(a))
    return str(path)


def test_parse_good_specs():
    assert parse_spec("bert:/ckpt/dir") == ModelSpec("bert", "/ckpt/dir")
    assert parse_spec("gbdt:C:/models/g.pkl") == ModelSpec("gbdt", "C:/models/g.pkl")  # first colon only
    assert parse_spec("world") == ModelSpec("world", None)
    assert parse_spec("world", "conversion") == ModelSpec("world")  # an alias of truth
    assert parse_spec("cells", "uplift") == ModelSpec("cells")
    assert str(parse_spec("logistic:/a:b")) == "logistic:/a:b" and str(ModelSpec("truth")) == "truth"


@pytest.mark.parametrize(("spec", "task", "needle"), [
    (":x", None, "does not start with a model kind"),
    ("", "conversion", "does not start with a model kind; expected bert:<checkpoint dir>"),
    (3, None, "must be a string"),
    ("forest:x", "conversion", "unknown model kind 'forest'; expected bert:<checkpoint dir> | gbdt:<file>"),
    ("forest:x", "uplift", "unknown model kind 'forest'; expected cells | bert:<dir> | gbdt:<file>"),
    ("ceiling", "uplift", "unknown model kind 'ceiling'"),
    ("gbdt", "conversion", "model spec 'gbdt' needs a path"),
    ("bert:", "uplift", "model spec 'bert:' needs a path"),
    ("truth:/x", "conversion", "truth takes no path"),
    ("gbdt:x", "regression", "task must be one of conversion, uplift"),
])
def test_parse_bad_specs(spec, task, needle):
    with pytest.raises(ValueError, match=needle.replace("|", r"\|")):
        parse_spec(spec, task)


def test_help_lists_every_registered_kind_and_the_static_help_matches():
    assert spec_help("conversion") == "bert:<checkpoint dir> | gbdt:<file> | logistic:<file> | ceiling | truth"
    assert spec_help("uplift") == "cells | bert:<dir> | gbdt:<file> | logistic:<file>"
    # SPEC_HELP is built at import time for the CLI (without importing torch): it must not drift
    assert set(registry.SPEC_HELP.split(" | ")) == set(spec_help("conversion").split(" | "))


def test_env_config_messages_name_the_allowed_forms():
    with pytest.raises(ValueError, match=r"DynamicPricingConfig\.response must be 'world', 'bert:<checkpoint dir>', "
                                         r"'gbdt:<file>', 'logistic:<file>' or a ConversionModel, got 'truth'"):
        gym.make(ENV, config={**SMALL, "response": "truth"})  # an oracle is no backend
    with pytest.raises(ValueError, match=r"HillstromConfig\.response must be 'cells', 'bert:<dir>', 'gbdt:<file>' "
                                         r"or 'logistic:<file>', got 'world'"):
        check_spec("world", "uplift", name="HillstromConfig.response")
    with pytest.raises(ValueError, match=r"model 'truth' needs the market \(the data's sidecar JSON"):
        load_model("truth")


def test_a_kind_registered_in_a_test_serves_as_an_env_response(mykind, tmp_path):
    spec = f"mykind:{_write(tmp_path / 'low.txt', -30)}"
    assert check_spec(spec, "conversion") == ModelSpec("mykind", str(tmp_path / "low.txt"))
    env = gym.make(ENV, config={**SMALL, "response": spec})
    backend = cast(Any, env.unwrapped).backend
    assert isinstance(backend.model, PriceModel) and backend.name == spec and not backend.is_world
    env.reset(seed=0)
    _, _, _, _, info = env.step(env.action_space.sample())
    assert backend.model.calls > 0 and info["components"]["units"] == 0  # nobody buys at log-odds -30
    # the backend's log-odds are the model's (within the clipping of probabilities to [1e-6, 1 - 1e-6])
    mid: Any = gym.make(ENV, config={**SMALL, "response": f"mykind:{_write(tmp_path / 'mid.txt', 0.5)}"}).unwrapped
    items = np.arange(5)
    price = mid.market.catalog.list_price[items] * np.linspace(0.6, 1.4, 5)
    logits = mid.backend.logits(np.zeros(5, int), items, price, np.zeros(5), mid.state)
    np.testing.assert_allclose(logits, mid.backend.model.logit(price, mid.market.catalog.list_price[items]), atol=1e-6)

    high = gym.make(ENV, config={**SMALL, "response": f"mykind:{_write(tmp_path / 'high.txt', 30)}"})
    high.reset(seed=0)
    assert high.step(high.action_space.sample())[4]["components"]["units"] > 0  # and everybody at +30


def test_a_registered_kind_shows_up_in_errors_and_leaves_with_unregister(mykind):
    assert "mykind:<threshold file>" in spec_help("conversion").split(" | ")
    with pytest.raises(ValueError, match=r"unknown model kind 'forest'; expected .*mykind:<threshold file>"):
        check_spec("forest:x", "conversion")
    with pytest.raises(ValueError, match=r"'logistic:<file>', 'mykind:<threshold file>' or a ConversionModel"):
        gym.make(ENV, config={**SMALL, "response": "forest:x"})
    with pytest.raises(ValueError, match="model spec 'mykind' needs a path"):
        check_spec("mykind", "conversion")
    with pytest.raises(ValueError, match="already registered"):
        register_model("mykind", task="conversion", load=PriceModel.from_file)
    assert "mykind" not in spec_help("uplift")  # a kind belongs to a task
    unregister_model("mykind", "conversion")
    try:
        with pytest.raises(ValueError, match="unknown model kind 'mykind'"):
            check_spec("mykind:x", "conversion")
        assert "mykind" not in spec_help("conversion")
    finally:
        register_model("mykind", task="conversion", load=PriceModel.from_file)  # for the fixture's teardown


def test_same_kind_name_resolves_by_task(tmp_path):
    # the built-in ones: conversion gbdt lives in baselines, uplift gbdt in uplift
    conv, upl = model_entry("gbdt:x", "conversion"), model_entry("gbdt:x", "uplift")
    assert conv.task == "conversion" and upl.task == "uplift" and conv.loader is not upl.loader
    assert conv.loader.func.__module__ == "promogym.predictors.baselines"
    assert upl.loader.func.__module__ == "promogym.predictors.uplift"
    junk = tmp_path / "junk.pkl"
    junk.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="not a promogym baseline model"):
        load_model(f"gbdt:{junk}")
    with pytest.raises(ValueError, match="not a promogym uplift model file"):
        load_uplift_model(f"gbdt:{junk}")
    assert model_entry("bert:x", "conversion").placeholder != model_entry("bert:x", "uplift").placeholder
    # a kind of the test's under both tasks (the conversion one by a "module:attr" entry point)
    register_model("twin", task="conversion", load=f"{__name__}:PriceModel.from_file")
    register_model("twin", task="uplift", load=lambda path: ArmModel(float(Path(path).read_text())))
    try:
        path = _write(tmp_path / "a.txt", 0.25)
        conv_model, up_model = load_model(f"twin:{path}"), load_uplift_model(f"twin:{path}")
        assert isinstance(conv_model, PriceModel) and isinstance(up_model, ArmModel)
        assert conv_model.a == up_model.a == 0.25
        assert up_model.predict(np.zeros(4))["visit"].shape == (4, 3)
    finally:
        unregister_model("twin", "conversion")
        unregister_model("twin", "uplift")


def test_a_loader_must_return_the_tasks_contract(tmp_path):
    register_model("broken", task="conversion", load=lambda path: ArmModel(0.5))  # an uplift model
    try:
        with pytest.raises(TypeError, match="returned a ArmModel, which has no predict_proba"):
            load_model(f"broken:{tmp_path}")
    finally:
        unregister_model("broken", "conversion")


def test_builtin_fitters_and_loaders(small_logs, tmp_path):
    from promogym.predictors.data import load_logs

    train = load_logs(small_logs).iloc[:1000]
    fit = model_entry("logistic:x", "conversion").fitter
    assert fit is not None and model_entry("bert:x", "conversion").fitter is None
    fitted = fit(train, tmp_path / "l.pkl", 0)
    np.testing.assert_allclose(load_model(f"logistic:{tmp_path / 'l.pkl'}").predict_proba(train.iloc[:50]),
                               fitted.predict_proba(train.iloc[:50]))
    assert model_entry("logistic:x", "uplift").fitter is not None


def test_response_hash_uses_the_parser(mykind, tmp_path):
    f = _write(tmp_path / "m.txt", 1.5)
    assert response_hash("world") is None and response_hash("cells") is None
    assert response_hash(f"mykind:{f}") == hashlib.sha256(b"m.txt" + b"1.5").hexdigest()


def test_discovery_is_lazy_and_the_world_never_imports_torch():
    code = """
import sys, gymnasium as gym, promogym.envs
from promogym.predictors.registry import parse_spec
env = gym.make("promogym/DynamicPricing-v1", config={"horizon": 3, "market": {"n_customers": 800, "n_products": 100}})
env.reset(seed=0); env.step(env.action_space.sample())
assert parse_spec("gbdt:/m.pkl", "conversion").path == "/m.pkl"
print("torch" in sys.modules, "promogym.predictors.baselines" in sys.modules, "promogym.predictors.bert" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "True", "False"]
