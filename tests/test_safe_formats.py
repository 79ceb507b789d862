"""No code runs from a data or model file: every artifact the predictors write is read back without
unpickling, a planted pickle is refused (and its payload never runs), round trips are exact, and a
corrupted artifact fails naming its file."""

from __future__ import annotations

import json
import logging
import pathlib
import pickle
import shutil
import zipfile

import numpy as np
import pytest
import torch
from conftest import SMALL_WORLD, TINY

from promogym.envs.market import Market
from promogym.predictors.baselines import (
    ESTIMATORS,
    MANIFEST,
    GBDTConversionModel,
    LogisticConversionModel,
    save_archive,
)
from promogym.predictors.bert import TOWER_CACHE_FILE, BertConversionModel, build_net
from promogym.predictors.data import load_logs, split_rows
from promogym.predictors.encoder import load_encoder
from promogym.predictors.hillstrom import load_hillstrom
from promogym.predictors.registry import load_model
from promogym.predictors.train import STATE_FILE, FitConfig, fit
from promogym.predictors.uplift import BertUplift, TwoModelUplift, load_uplift_model

NET = {"dim": 16, "queries": 1, "width": 32, "dropout": 0.0}


class Payload:
    """Unpickling this creates ``marker``: the harmless stand-in for arbitrary code."""

    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (pathlib.Path.touch, (self.marker,))


def _refused(exc: pytest.ExceptionInfo[BaseException], path: pathlib.Path) -> str:
    """The message of a refusal: one line naming ``path``."""
    msg = str(exc.value)
    assert str(path) in msg and "\n" not in msg, msg
    return msg


# ---------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def conv_data(small_logs):
    df = load_logs(small_logs)
    train = df[split_rows(df).train].iloc[:4000]
    offers = df.iloc[np.random.default_rng(0).choice(len(df), 300, replace=False)]
    return train, offers


@pytest.fixture(scope="module")
def baselines(conv_data):
    train, _ = conv_data
    return {"gbdt": GBDTConversionModel(max_iter=30).fit(train),
            "logistic": LogisticConversionModel(max_features=200).fit(train)}


@pytest.fixture(scope="module")
def uplift_data():
    df = load_hillstrom()
    return (df[df["split"] == "train"].iloc[:2000], df[df["split"] == "valid"].iloc[:600],
            df[df["split"] == "test"].iloc[:150])


@pytest.fixture(scope="module")
def two_models(uplift_data):
    train, valid, _ = uplift_data
    out = {}
    for kind in ("gbdt", "logistic"):
        m = TwoModelUplift(kind)
        m.GBDT_GRID = ({"max_leaf_nodes": 7, "learning_rate": 0.1, "max_iter": 20},)  # type: ignore[misc]
        m.LOGISTIC_GRID = ({"C": 1.0},)  # type: ignore[misc]
        out[kind] = m.fit(train, valid)
    return out


@pytest.fixture(scope="module")
def bert_ckpt(tmp_path_factory):
    """An (untrained) tiny hybrid BERT conversion checkpoint folder."""
    encoder, tokenizer = load_encoder("tiny", seed=0)
    net = build_net(encoder, "hybrid", NET)
    model = BertConversionModel(net, tokenizer, "hybrid", 32, device=torch.device("cpu"), bf16=False, segment=True)
    folder = tmp_path_factory.mktemp("bert") / "ckpt"
    model.save(folder, extra_meta={"net": NET})
    return folder


@pytest.fixture(scope="module")
def uplift_ckpt(tmp_path_factory, uplift_data):
    """An (untrained) tiny BERT uplift folder."""
    folder = tmp_path_factory.mktemp("uplift") / "bert"
    BertUplift("tiny", device="cpu").save(folder)
    return folder


@pytest.fixture(scope="module")
def partial_fit(small_logs, tmp_path_factory):
    """The ``.partial`` folder of a fit interrupted in its second epoch, and the fit's config."""
    cfg = FitConfig.from_dict({**TINY, "head_epochs": 2, "max_train_rows": 2000, "val_rows": 500})
    out = tmp_path_factory.mktemp("fit") / "model"
    calls = []

    class Interrupt(Exception):
        pass

    def progress(stage, step, total):
        calls.append(step)
        if len(calls) > total:  # the first epoch is done and checkpointed
            raise Interrupt

    with pytest.raises(Interrupt):
        fit(small_logs, cfg, out, progress=progress)
    partial = out.with_name("model.partial")
    assert (partial / STATE_FILE).is_file()
    return partial, cfg


def _copy(folder: pathlib.Path, dest: pathlib.Path) -> pathlib.Path:
    shutil.copytree(folder, dest)
    return dest


# ---------------------------------------------------------------------------------------------- planted pickles
def test_the_payload_runs_when_unpickled(tmp_path):
    """The control: unpickling the payload does create its marker, so the tests below can fail."""
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(Payload(marker)))
    assert marker.exists()


@pytest.mark.parametrize("kind", ["gbdt", "logistic"])
@pytest.mark.parametrize("wrapped", [False, True])
def test_a_planted_pickle_is_refused_by_the_baseline_loaders(tmp_path, kind, wrapped):
    marker = tmp_path / "ran"
    f = tmp_path / "model.pkl"
    obj = {"magic": "promogym-baseline-v1", "class": "GBDTConversionModel", "model": Payload(marker)} \
        if wrapped else Payload(marker)
    f.write_bytes(pickle.dumps(obj))
    with pytest.raises(ValueError) as exc:
        load_model(f"{kind}:{f}")
    msg = _refused(exc, f)
    assert "pickle" in msg and f"promogym fit --kind {kind}" in msg
    assert not marker.exists()


@pytest.mark.parametrize("kind", ["gbdt", "logistic"])
def test_a_planted_pickle_is_refused_by_the_uplift_loaders(tmp_path, kind):
    marker = tmp_path / "ran"
    f = tmp_path / "model.pkl"
    f.write_bytes(b"promogym-uplift-v1\n" + pickle.dumps(Payload(marker)))  # the old uplift format
    with pytest.raises(ValueError) as exc:
        load_uplift_model(f"{kind}:{f}")
    assert "pickle" in _refused(exc, f) and "refit" in str(exc.value)
    assert not marker.exists()


def test_an_archive_naming_an_untrusted_type_is_refused(tmp_path):
    import os

    f = tmp_path / "model.skops.zip"
    save_archive(f, task="conversion", kind="gbdt", state={}, estimators={"model": os.system})
    with pytest.raises(ValueError, match="does not trust") as exc:
        load_model(f"gbdt:{f}")
    _refused(exc, f)


def test_a_planted_train_state_is_refused(partial_fit, small_logs, tmp_path):
    partial, cfg = partial_fit
    planted = _copy(partial, tmp_path / "model.partial")
    marker = tmp_path / "ran"
    torch.save({"state": Payload(marker)}, planted / STATE_FILE)
    with pytest.raises(ValueError) as exc:
        fit(small_logs, cfg, tmp_path / "model", resume=True)
    assert "without --resume" in _refused(exc, planted / STATE_FILE)
    assert not marker.exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_planted_head_files_are_refused(uplift_ckpt, bert_ckpt, tmp_path):
    marker = tmp_path / "ran"
    up = _copy(uplift_ckpt, tmp_path / "up")
    torch.save(Payload(marker), up / "head.pt")
    with pytest.raises(ValueError) as exc:
        BertUplift.load(up)
    _refused(exc, up / "head.pt")
    conv = _copy(bert_ckpt, tmp_path / "conv")
    (conv / "head.pt").write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises(ValueError) as exc:
        BertConversionModel.load(conv)
    _refused(exc, conv / "head.pt")
    # a planted tower cache is ignored (with a warning), never unpickled
    torch.save(Payload(marker), _copy(bert_ckpt, tmp_path / "cache") / TOWER_CACHE_FILE)
    BertConversionModel.load(tmp_path / "cache")
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("kind", ["gbdt", "logistic"])
def test_baselines_round_trip_exactly(baselines, conv_data, tmp_path, kind):
    model = baselines[kind]
    model.data_sha256 = "ab" * 32
    f = tmp_path / "model.skops.zip"
    model.save(f)
    with zipfile.ZipFile(f) as zf:
        assert sorted(zf.namelist()) == sorted([MANIFEST, ESTIMATORS])
        manifest = json.loads(zf.read(MANIFEST))
    assert manifest["kind"] == kind and manifest["task"] == "conversion" and manifest["format_version"] == 1
    loaded = load_model(f"{kind}:{f}")
    assert type(loaded) is type(model) and loaded.data_sha256 == "ab" * 32
    offers = conv_data[1]
    np.testing.assert_array_equal(loaded.predict_proba(offers), model.predict_proba(offers))
    other = "logistic" if kind == "gbdt" else "gbdt"
    with pytest.raises(ValueError, match=f"holds a {kind} model, not {other}"):
        load_model(f"{other}:{f}")
    with pytest.raises(ValueError, match="for the conversion task"):
        load_uplift_model(f"{kind}:{f}")


@pytest.mark.parametrize("kind", ["gbdt", "logistic"])
def test_two_models_round_trip_exactly(two_models, uplift_data, tmp_path, kind):
    model, test = two_models[kind], uplift_data[2]
    f = tmp_path / "model.skops.zip"
    model.save(f)
    loaded = load_uplift_model(f"{kind}:{f}")
    assert loaded.chosen == model.chosen and loaded.spend_per_conversion == model.spend_per_conversion
    before, after = model.predict(test), loaded.predict(test)
    for k in before:
        np.testing.assert_array_equal(after[k], before[k])
    with pytest.raises(ValueError, match=r"not a (gbdt|logistic) model"):
        load_uplift_model(f"{'logistic' if kind == 'gbdt' else 'gbdt'}:{f}")


def test_bert_models_round_trip_exactly(bert_ckpt, uplift_ckpt, conv_data, uplift_data):
    offers = conv_data[1]
    a, b = BertConversionModel.load(bert_ckpt), BertConversionModel.load(bert_ckpt)
    np.testing.assert_array_equal(a.predict_proba(offers), b.predict_proba(offers))
    test = uplift_data[2]
    model = BertUplift.load(uplift_ckpt)
    fresh = BertUplift("tiny", device="cpu")  # the same seed: the saved weights are these
    np.testing.assert_allclose(model.predict(test)["visit"], fresh.predict(test)["visit"], rtol=0, atol=1e-6)


def test_an_intact_partial_fit_resumes(partial_fit, small_logs, tmp_path):
    from promogym.predictors.train import Fitter

    partial, cfg = partial_fit
    _copy(partial, tmp_path / "model.partial")
    fitter = Fitter(small_logs, cfg, tmp_path / "model", resume=True)
    assert fitter.state.stage == "A" and fitter.state.epoch == 1 and fitter.opt_state is not None


# ---------------------------------------------------------------------------------------------- corruption
@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_a_damaged_model_archive_is_named(baselines, tmp_path, damage):
    f = tmp_path / "model.skops.zip"
    baselines["gbdt"].save(f)
    blob = f.read_bytes()
    f.write_bytes(blob[: len(blob) // 2] if damage == "truncated" else b"\x00garbage" * 10)
    with pytest.raises(ValueError) as exc:
        load_model(f"gbdt:{f}")
    _refused(exc, f)
    with pytest.raises(FileNotFoundError, match=r"missing\.zip"):
        load_model(f"gbdt:{tmp_path / 'missing.zip'}")


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty dict", "other tensors"])
@pytest.mark.parametrize("which", ["conversion", "uplift"])
def test_a_damaged_head_is_named(bert_ckpt, uplift_ckpt, tmp_path, damage, which):
    folder = _copy(bert_ckpt if which == "conversion" else uplift_ckpt, tmp_path / "ckpt")
    head = folder / "head.pt"
    if damage == "truncated":
        head.write_bytes(head.read_bytes()[:100])
    elif damage == "garbage":
        head.write_bytes(b"garbage" * 50)
    elif damage == "empty dict":
        torch.save({}, head)
    else:
        torch.save({"w": torch.zeros(3)}, head)
    load = BertConversionModel.load if which == "conversion" else BertUplift.load
    with pytest.raises(ValueError) as exc:
        load(folder)
    msg = _refused(exc, head)
    if damage == "empty dict":
        assert "missing" in msg


@pytest.mark.parametrize("which", ["conversion", "uplift"])
def test_truncated_encoder_weights_are_named(bert_ckpt, uplift_ckpt, tmp_path, which):
    folder = _copy(bert_ckpt if which == "conversion" else uplift_ckpt, tmp_path / "ckpt")
    weights = folder / "encoder" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    load = BertConversionModel.load if which == "conversion" else BertUplift.load
    with pytest.raises(ValueError) as exc:
        load(folder)
    _refused(exc, weights)


def test_a_truncated_train_state_is_named(partial_fit, small_logs, tmp_path):
    partial, cfg = partial_fit
    planted = _copy(partial, tmp_path / "model.partial")
    state = planted / STATE_FILE
    state.write_bytes(state.read_bytes()[:2000])
    with pytest.raises(ValueError) as exc:
        fit(small_logs, cfg, tmp_path / "model", resume=True)
    _refused(exc, state)
    torch.save({"state": {}, "best": None, "opt": None, "net": {}}, state)  # readable, but not this fit's
    with pytest.raises(ValueError) as exc:
        fit(small_logs, cfg, tmp_path / "model", resume=True)
    _refused(exc, state)


def _bound(folder: pathlib.Path, market: Market) -> BertConversionModel:
    model = BertConversionModel.load(folder)
    model.bind(market.customers.text, market.catalog.text, market.catalog.list_price)
    return model


def test_tower_cache_unreadable_or_tampered_is_not_used(bert_ckpt, tmp_path, caplog):
    market = Market(SMALL_WORLD)
    folder = _copy(bert_ckpt, tmp_path / "ckpt")
    fresh = _bound(folder, market)
    cache = fresh.save_tower_cache(folder, market.customers.text, market.catalog.text)
    assert _bound(folder, market).encoder_calls == 0  # the intact cache is used
    good = cache.read_bytes()
    users, items = np.arange(40) % len(market.customers.text), np.arange(40) % len(market.catalog.text)
    offers = {"list_price": market.catalog.list_price[items], "price": market.catalog.list_price[items] * 0.9,
              "coupon": np.zeros(40), "day": np.zeros(40), "coupons_last_7d": np.zeros(40)}
    expected = fresh.predict_logits_ids(users, items, offers)

    # tampered embeddings under the old fingerprint
    saved = torch.load(cache, weights_only=True)
    texts, mat = saved["user"]
    saved["user"] = (texts, mat + 1.0)
    torch.save(saved, cache)
    with caplog.at_level(logging.WARNING, logger="promogym.predictors.bert"):
        tampered = _bound(folder, market)
    assert tampered.encoder_calls > 0 and "own contents" in caplog.text and str(cache) in caplog.text
    np.testing.assert_allclose(tampered.predict_logits_ids(users, items, offers), expected, atol=1e-6)

    # a truncated cache: a warning, and the embeddings are recomputed
    caplog.clear()
    cache.write_bytes(good[: len(good) // 2])
    with caplog.at_level(logging.WARNING, logger="promogym.predictors.bert"):
        truncated = _bound(folder, market)
    assert truncated.encoder_calls > 0 and "unreadable" in caplog.text and str(cache) in caplog.text
    np.testing.assert_allclose(truncated.predict_logits_ids(users, items, offers), expected, atol=1e-6)
