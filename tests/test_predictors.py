"""Conversion models: the BERT model (tiny random encoder), baselines, metrics and calibration."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import SMALL_WORLD, TINY

from promogym.envs.market import Market
from promogym.predictors.baselines import GBDTConversionModel, LogisticConversionModel, RevealedTruthModel, TruthModel
from promogym.predictors.bert import BertConversionModel, HybridNet
from promogym.predictors.calibration import Calibrator
from promogym.predictors.data import load_logs, split_rows
from promogym.predictors.encoder import load_encoder
from promogym.predictors.evaluate import evaluate, monotone_share
from promogym.predictors.metrics import ece, gap_share, log_loss
from promogym.predictors.registry import load_model
from promogym.predictors.train import FitConfig, fit


def _offers(path, n=300, seed=0):
    df = load_logs(path)
    return df.iloc[np.random.default_rng(seed).choice(len(df), n, replace=False)]


def test_tiny_bert_fine_tunes_and_beats_a_constant(tiny_model, small_logs):
    model, out = tiny_model
    df = load_logs(small_logs)
    split = split_rows(df)
    test = df[split.test | split.val]  # held-out users
    y = test["purchased"].to_numpy(float)
    constant = log_loss(y, np.full(len(y), df.loc[split.train, "purchased"].mean()))
    assert log_loss(y, model.predict_proba(test)) < constant
    meta = json.loads((out / "promogym.json").read_text())
    assert meta["mode"] == "hybrid" and meta["data_sha256"] and meta["calibration"]["method"] == "shift"
    assert (out / "encoder" / "config.json").is_file() and not out.with_name("tiny.partial").exists()


def test_save_load_gives_identical_predictions(tiny_model, small_logs, tmp_path):
    model, out = tiny_model
    offers = _offers(small_logs)
    loaded = BertConversionModel.load(out)
    model.clear_cache()  # embeddings of the same texts computed in the same batches on both sides
    np.testing.assert_array_equal(model.predict_proba(offers), loaded.predict_proba(offers))
    np.testing.assert_array_equal(loaded.predict_proba(offers), load_model(f"bert:{out}").predict_proba(offers))


def test_cached_predictions_do_not_run_the_encoder(tiny_model, small_logs):
    model, _ = tiny_model
    offers = _offers(small_logs, n=2000)
    model.clear_cache()
    first = model.predict_proba(offers)
    calls = model.encoder_calls
    again = model.predict_proba(offers.assign(price=offers["price"] * 1.1))
    assert model.encoder_calls == calls
    assert (again <= first + 1e-12).all()
    assert model.cache_size == offers["user_text"].nunique() + offers["item_text"].nunique()


def test_hybrid_is_monotone_in_price_for_random_weights_and_offers(small_logs):
    torch.manual_seed(3)
    encoder, tokenizer = load_encoder("tiny", seed=5)
    net = HybridNet(encoder, dim=16, queries=2, width=32)
    for p in net.head.parameters():
        torch.nn.init.normal_(p, std=1.0)  # far from any trained state
    model = BertConversionModel(net, tokenizer, "hybrid", 64)
    rng = np.random.default_rng(0)
    offers = _offers(small_logs, 200).assign(
        coupon=rng.choice([0.0, 0.05, 0.2, 0.5], 200), coupons_last_7d=rng.integers(0, 5, 200),
        list_price=rng.uniform(1, 500, 200))
    assert monotone_share(model, offers) == 1.0


def test_resume_after_interruption_reaches_the_same_state(small_logs, tmp_path):
    cfg = FitConfig.from_dict({**TINY, "head_epochs": 2, "finetune_epochs": 2, "finetune_steps": 2,
                               "finetune_users": 8, "rows_per_user": 4, "max_train_rows": 3000, "val_rows": 1000})
    straight = fit(small_logs, cfg, tmp_path / "straight")

    class Interrupt(Exception):
        pass

    def stop_in_stage_b(stage, step, total):
        if stage == "B" and step == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        fit(small_logs, cfg, tmp_path / "resumed", progress=stop_in_stage_b)
    assert (tmp_path / "resumed.partial").is_dir() and not (tmp_path / "resumed").exists()

    def stop_in_stage_a(stage, step, total):
        if stage == "A" and step == 2:
            raise Interrupt

    with pytest.raises(Interrupt):  # an interruption of the resumed run still loses at most one epoch
        fit(small_logs, cfg, tmp_path / "other", progress=stop_in_stage_a)
    resumed = fit(small_logs, cfg, tmp_path / "resumed", resume=True)
    a, b = straight.net.state_dict(), resumed.net.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)
    hist_a, hist_b = straight.meta["history"], resumed.meta["history"]
    assert [(h["stage"], h["epoch"]) for h in hist_a] == [(h["stage"], h["epoch"]) for h in hist_b]
    np.testing.assert_allclose([h["val_choice_nll"] for h in hist_a], [h["val_choice_nll"] for h in hist_b], rtol=1e-6)
    assert not (tmp_path / "resumed.partial").exists()


def test_text_mode_trains_and_predicts(small_logs, tmp_path):
    cfg = FitConfig.from_dict({"encoder": "tiny", "mode": "text", "finetune_epochs": 1, "finetune_steps": 4,
                               "text_batch": 16, "val_rows": 200})
    model = fit(small_logs, cfg, tmp_path / "text")
    p = BertConversionModel.load(tmp_path / "text").predict_proba(_offers(small_logs, 50))
    assert p.shape == (50,) and ((p > 0) & (p < 1)).all()
    assert model.mode == "text"


@pytest.mark.parametrize(("mutate", "needle"), [
    (lambda df: df.drop(columns=["price"]), "missing column(s): price"),
    (lambda df: df.iloc[:0], "empty"),
    (lambda df: df.assign(price=df["price"].where(df.index != df.index[3], np.nan)), "NaN"),
    (lambda df: df.assign(list_price=-df["list_price"]), "<= 0"),
    (lambda df: df.assign(purchased=2), "purchased must hold 0 or 1"),
])
def test_bad_data_is_named_and_leaves_no_checkpoint(small_logs, tmp_path, mutate, needle):
    bad = tmp_path / "bad.parquet"
    mutate(pd.read_parquet(small_logs)).to_parquet(bad)
    with pytest.raises(ValueError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        fit(bad, FitConfig.from_dict(TINY), tmp_path / "m")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.parquet"]


def test_encoder_that_is_not_bert_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="not 'minilm', 'tiny' or a Hugging Face folder"):
        load_encoder(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(ValueError, match="holds a 'gpt2' model; a BERT model is required"):
        load_encoder(str(tmp_path))


def test_incompatible_checkpoint_schema_is_rejected(tiny_model, tmp_path):
    _, out = tiny_model
    copy = tmp_path / "old"
    shutil.copytree(out, copy)
    meta = json.loads((copy / "promogym.json").read_text())
    meta["numeric_features"] = ["price"]
    (copy / "promogym.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="incompatible feature schema"):
        BertConversionModel.load(copy)
    (copy / "promogym.json").unlink()
    with pytest.raises(ValueError, match="not a promogym BERT checkpoint"):
        BertConversionModel.load(copy)


def test_baselines_fit_save_load_and_evaluate(small_logs, tmp_path, tiny_model):
    df = load_logs(small_logs)
    train = df[split_rows(df).train]
    gbdt = GBDTConversionModel(max_iter=50).fit(train)
    logistic = LogisticConversionModel(max_features=300).fit(train)
    gbdt.save(tmp_path / "g.pkl")
    logistic.save(tmp_path / "l.pkl")
    offers = _offers(small_logs)
    reloaded = load_model(f"gbdt:{tmp_path / 'g.pkl'}")
    np.testing.assert_array_equal(gbdt.predict_proba(offers), reloaded.predict_proba(offers))
    with pytest.raises(ValueError, match="holds a gbdt model, not logistic"):
        load_model(f"logistic:{tmp_path / 'g.pkl'}")
    with pytest.raises(ValueError, match="unknown model kind"):
        load_model("forest:x")
    market = Market(SMALL_WORLD)
    models = {"bert": tiny_model[0], "gbdt": gbdt, "logistic": logistic, "truth": TruthModel(market),
              "ceiling": RevealedTruthModel(market)}
    res = evaluate(models, df, max_rows=1500, monotone_rows=50)
    seen = res["sets"]["seen"]
    # the truth model reproduces the logged true choice probabilities exactly; the ceiling model the logged
    # ceiling up to its Monte Carlo noise
    assert seen["models"]["truth"]["mae_true"] < 1e-9
    assert seen["models"]["ceiling"]["log_loss_over_ceiling"] == pytest.approx(1.0, abs=2e-3)
    visits = res["visits"]["seen"]
    assert visits["models"]["truth"]["buy_log_loss"] == pytest.approx(visits["bayes"]["buy_log_loss"], rel=1e-6)
    assert visits["models"]["truth"]["top1"] == visits["bayes"]["top1"] > visits["uniform"]["top1"]
    assert seen["models"]["truth"]["log_loss"] < seen["models"]["gbdt"]["log_loss"]
    assert seen["models"]["bert"]["monotone_share"] == 1.0
    assert "deal_seeker" in seen["models"]["bert"]["by_customer_type"]


def test_metrics_and_calibration():
    rng = np.random.default_rng(0)
    p = rng.uniform(0.0, 0.2, 200_000)
    y = (rng.random(len(p)) < p).astype(float)
    assert ece(y, p) < 0.003 and ece(y, np.clip(p * 1.5, 0, 1)) > 0.03
    assert gap_share(0.15, 0.2, 0.1) == pytest.approx(0.5)
    logits = np.log(p / (1 - p))
    skewed = 2.0 * logits + 1.0  # over-confident and biased
    cal = Calibrator.fit("temperature", skewed, y)
    assert log_loss(y, cal(skewed)) < log_loss(y, 1 / (1 + np.exp(-skewed)))
    assert cal.temperature == pytest.approx(2.0, rel=0.1)
    iso = Calibrator.fit("isotonic", skewed, y)
    assert ece(y, iso(skewed)) < 0.003
    assert Calibrator.from_dict(cal.to_dict())(skewed[:10]) == pytest.approx(cal(skewed[:10]))


@pytest.mark.parametrize(("table", "chunk"), [(True, None), (False, None), (True, 7)])
def test_bound_id_predictions_match_the_full_head(tiny_model, small_logs, monkeypatch, table, chunk):
    import promogym.predictors.bert as bert_module

    if not table:
        monkeypatch.setattr(bert_module, "PAIR_TABLE_CELLS", 0)  # the sorted-key index
    if chunk:
        monkeypatch.setattr(bert_module, "PAIR_CHUNK", chunk)  # new pairs through the head a few at a time
    model = BertConversionModel.load(tiny_model[1])
    market = Market(SMALL_WORLD)
    model.bind(market.customers.text, market.catalog.text, market.catalog.list_price)
    assert (model._pair_table is not None) == table
    model.pair_cache_limit = 500  # forces the memo to be reset on the way
    offers = _offers(small_logs, 400)
    cols = {k: offers[k].to_numpy() for k in ("price", "list_price", "coupon", "day", "coupons_last_7d",
                                              "price_hist_fast", "price_hist_mid", "price_hist_slow")}
    users, items = offers["user_id"].to_numpy(), offers["item_id"].to_numpy()
    full = model.predict_logits(offers)
    calibrated = np.log(model.calibrator(full)) - np.log1p(-model.calibrator(full))
    for _ in range(2):  # cold, then memoised
        np.testing.assert_allclose(model.predict_logits_ids(users, items, cols), calibrated, rtol=1e-5, atol=1e-5)


def test_stored_tower_embeddings_skip_the_encoder_and_change_nothing(tiny_model, tmp_path):
    _, folder = tiny_model
    ckpt = tmp_path / "ckpt"
    shutil.copytree(folder, ckpt)
    market = Market(SMALL_WORLD)
    fresh = BertConversionModel.load(ckpt)
    fresh.bind(market.customers.text, market.catalog.text, market.catalog.list_price)
    assert fresh.encoder_calls > 0
    fresh.save_tower_cache(ckpt, market.customers.text, market.catalog.text)
    cached = BertConversionModel.load(ckpt)
    cached.bind(market.customers.text, market.catalog.text, market.catalog.list_price)
    assert cached.encoder_calls == 0
    users = np.arange(50) % len(market.customers.text)
    items = np.arange(50) % len(market.catalog.text)
    offers = {"list_price": market.catalog.list_price[items], "price": market.catalog.list_price[items] * 0.9,
              "coupon": np.zeros(50), "day": np.zeros(50), "coupons_last_7d": np.zeros(50)}
    np.testing.assert_allclose(cached.predict_logits_ids(users, items, offers),
                               fresh.predict_logits_ids(users, items, offers), atol=1e-6)
    # other weights: the stored embeddings no longer describe the model and are ignored
    head = torch.load(ckpt / "head.pt", weights_only=True)
    key = next(k for k, v in head.items() if v.is_floating_point())
    head[key] = head[key] + 0.01
    torch.save(head, ckpt / "head.pt")
    changed = BertConversionModel.load(ckpt)
    changed.bind(market.customers.text, market.catalog.text, market.catalog.list_price)
    assert changed.encoder_calls > 0
