"""Conversion models on the visit's choice: training batches, the monotone history head, the ensemble,
the world config each model records, and refusals of old logs and old checkpoints."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import SMALL_WORLD, TINY

from promogym.envs.market import Market
from promogym.predictors import train as train_module
from promogym.predictors.baselines import GBDTConversionModel, LogisticConversionModel, _Archived, fit_gbdt
from promogym.predictors.bert import SCHEMA_VERSION, BertConversionModel, HybridNet, OfferHead
from promogym.predictors.choice import iia_rows
from promogym.predictors.data import load_logs, split_rows
from promogym.predictors.features import HISTORY_FEATURES, NUMERIC_FEATURES, numeric_features, weekday_index
from promogym.predictors.train import FitConfig, Fitter, fit

HIST = ("price_hist_fast", "price_hist_mid", "price_hist_slow")


@pytest.fixture(scope="module")
def ensemble_fit(small_logs, tmp_path_factory):
    """A tiny fit with two ensemble heads, recording every batch the choice likelihood saw."""
    out = tmp_path_factory.mktemp("choice") / "model"
    seen: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    calls = {"nll": 0}
    original_loss, original_nll = Fitter._choice_loss, train_module.choice_nll

    def spy_loss(self, z, idx):
        seen.append((np.asarray(idx), self.visit_code, self.train_idx))
        return original_loss(self, z, idx)

    def spy_nll(*args, **kwargs):
        calls["nll"] += 1
        return original_nll(*args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Fitter, "_choice_loss", spy_loss)
        mp.setattr(train_module, "choice_nll", spy_nll)
        model = fit(small_logs, FitConfig.from_dict({**TINY, "ensemble": 2, "ensemble_epochs": 1}), out)
    return model, out, seen, calls


def test_hybrid_training_minimises_the_choice_likelihood_over_whole_visits(ensemble_fit):
    model, _, seen, calls = ensemble_fit
    assert model.meta["loss"] == "choice" and all("val_choice_nll" in h for h in model.meta["history"])
    assert len(seen) > 10 and calls["nll"] >= len(seen)
    for idx, visit_code, train_idx in seen[:20]:
        if not np.isin(idx, train_idx).all():
            continue  # the validation rows
        in_batch = np.bincount(visit_code[idx], minlength=visit_code.max() + 1)
        in_train = np.bincount(visit_code[train_idx], minlength=visit_code.max() + 1)
        batch_visits = np.flatnonzero(in_batch)
        np.testing.assert_array_equal(in_batch[batch_visits], in_train[batch_visits])  # no visit cut


def test_split_leaves_out_visits_that_bought_a_held_out_new_product(small_logs):
    df = load_logs(small_logs)
    split = split_rows(df)
    bought_new = df.loc[df["is_new_product"].astype(bool) & (df["purchased"] == 1), "visit_id"]
    assert len(bought_new) and not df.loc[split.train | split.val, "visit_id"].isin(bought_new).any()
    train = df[split.train]
    assert (train.groupby("visit_id")["purchased"].sum() <= 1).all()


def test_ensemble_is_saved_loaded_and_scored_by_bound_ids(ensemble_fit, small_logs):
    model, out, _, _ = ensemble_fit
    assert model.ensemble_size == 2 and json.loads((out / "promogym.json").read_text())["ensemble"] == 2
    head = torch.load(out / "head.pt", weights_only=True)
    assert any(k.startswith("ensemble.1.") for k in head)
    loaded = BertConversionModel.load(out)
    assert loaded.ensemble_size == 2
    market = Market(SMALL_WORLD)
    offers = load_logs(small_logs).iloc[:300]
    cols = {k: offers[k].to_numpy() for k in ("price", "list_price", "coupon", "day", "coupons_last_7d", *HIST)}
    users, items = offers["user_id"].to_numpy(), offers["item_id"].to_numpy()
    for m in (model, loaded):
        m.bind(market.customers.text, market.catalog.text, market.catalog.list_price)
    members = loaded.predict_member_logits_ids(users, items, cols)
    assert members.shape == (2, 300) and np.isfinite(members).all()
    assert np.abs(members[0] - members[1]).mean() > 1e-3  # different bootstrap resamples
    np.testing.assert_allclose(members, model.predict_member_logits_ids(users, items, cols), atol=1e-5)
    np.testing.assert_allclose(loaded.predict_member_logits_ids(users, items, cols), members, atol=0)  # memoised
    # a member with the main head's weights gives the main head's calibrated logits
    net = loaded.net
    assert isinstance(net, HybridNet)
    net.members()[0].load_state_dict(net.head.state_dict())
    loaded._reset_pairs()
    np.testing.assert_allclose(loaded.predict_member_logits_ids(users, items, cols)[0],
                               loaded.predict_logits_ids(users, items, cols), atol=1e-5)


def test_no_ensemble_means_no_member_logits(small_logs, tmp_path):
    model = fit(small_logs, FitConfig.from_dict({**TINY, "head_epochs": 1, "ensemble": 0}), tmp_path / "m")
    assert model.ensemble_size == 0 and BertConversionModel.load(tmp_path / "m").ensemble_size == 0
    with pytest.raises(ValueError, match="no ensemble heads"):
        model.predict_member_logits_ids(np.zeros(1, int), np.zeros(1, int), {})


def test_head_is_monotone_in_price_and_loss_averse_to_the_price_history():
    torch.manual_seed(0)
    head = OfferHead(dim=8, width=16, dropout=0.0).eval()
    with torch.no_grad():
        head.out.weight.normal_(0, 2.0)
        head.out.bias.normal_(0, 2.0)
    rng = np.random.default_rng(0)
    n = 400
    user, item = torch.randn(n, 8), torch.randn(n, 8)
    base = {"list_price": rng.uniform(5, 80, n), "coupon": rng.choice([0.0, 0.1], n), "day": rng.integers(0, 7, n),
            "coupons_last_7d": rng.integers(0, 3, n), **{h: rng.uniform(0.7, 1.3, n) for h in HIST}}

    def logits(price_mult, hist_mult=1.0):
        offer = {**base, "price": base["list_price"] * price_mult, **{h: base[h] * hist_mult for h in HIST}}
        with torch.no_grad():
            return head(user, item, torch.as_tensor(numeric_features(offer)),
                        torch.as_tensor(weekday_index(offer))).numpy()

    by_price = np.stack([logits(m) for m in np.linspace(0.6, 1.5, 19)])
    assert (np.diff(by_price, axis=0) <= 1e-5).all()
    by_history = np.stack([logits(1.0, h) for h in np.linspace(0.6, 1.5, 19)])  # recent prices higher
    assert (np.diff(by_history, axis=0) >= -1e-5).all() and (np.diff(by_history, axis=0) > 1e-4).any()
    assert set(HISTORY_FEATURES) <= set(NUMERIC_FEATURES)
    assert len(HISTORY_FEATURES) * 2 + 9 == OfferHead.N_OUT  # with the curvature above list price


def test_models_record_the_world_of_their_logs(small_logs, ensemble_fit, tmp_path):
    world = Market(SMALL_WORLD).config.to_dict()
    assert ensemble_fit[0].world_config == world
    assert BertConversionModel.load(ensemble_fit[1]).world_config == world
    df = load_logs(small_logs)
    train = df[split_rows(df).train]
    gbdt = GBDTConversionModel(max_iter=20).fit(train)
    gbdt.save(tmp_path / "g.zip")
    assert gbdt.world_config == world and _Archived.load(tmp_path / "g.zip").world_config == world
    # a frame without the sidecar's world records the one passed, or None
    bare = pd.DataFrame(train)
    bare.attrs = {}
    assert fit_gbdt(bare, seed=0, world={"seed": 9}).world_config == {"seed": 9}
    logistic = LogisticConversionModel(max_features=100).fit(bare)
    logistic.save(tmp_path / "l.zip")
    assert _Archived.load(tmp_path / "l.zip").world_config is None


def test_baselines_train_on_the_iia_rows_with_the_history_features(small_logs):
    df = load_logs(small_logs)
    train = df[split_rows(df).train]
    iia = iia_rows(train)
    assert 0 < (~iia).sum() < len(train)
    gbdt = GBDTConversionModel(max_iter=20).fit(train)
    assert gbdt.user_enc.prior == pytest.approx(train.loc[iia, "purchased"].mean())
    assert gbdt.user_enc.prior > train["purchased"].mean()  # the other rows of a bought visit are left out
    assert gbdt.model.n_features_in_ == 4 + len(NUMERIC_FEATURES)


@pytest.mark.parametrize("drop", ["visit_id", "price_hist_mid"])
def test_logs_of_the_older_format_are_refused_with_the_command_that_regenerates_them(small_logs, tmp_path, drop):
    old = tmp_path / "old.parquet"
    pd.read_parquet(small_logs).drop(columns=[drop]).to_parquet(old)
    with pytest.raises(ValueError, match=r"older format .*regenerate them with `promogym data --rows N --out "):
        load_logs(old)
    with pytest.raises(ValueError, match="older format"):
        fit(old, FitConfig.from_dict(TINY), tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_bad_visits_and_price_histories_are_named(small_logs, tmp_path):
    df = pd.read_parquet(small_logs)
    two = df.copy()
    visits = two.loc[two["views"] >= 2, "visit_id"].unique()[:3]
    two.loc[two["visit_id"].isin(visits), "purchased"] = 1
    two.to_parquet(tmp_path / "two.parquet")
    with pytest.raises(ValueError, match="3 visit"):
        load_logs(tmp_path / "two.parquet")
    hist = df.copy()
    hist.loc[hist.index[:5], "price_hist_slow"] = [0.0, -1.0, np.nan, np.inf, 0.0]
    hist.to_parquet(tmp_path / "hist.parquet")
    with pytest.raises(ValueError, match="price_hist_slow has"):
        load_logs(tmp_path / "hist.parquet")


@pytest.mark.parametrize("edit", ["version", "features"])
def test_a_checkpoint_of_the_older_schema_is_refused_with_refit(ensemble_fit, tmp_path, edit):
    ckpt = tmp_path / "old"
    shutil.copytree(ensemble_fit[1], ckpt)
    meta = json.loads((ckpt / "promogym.json").read_text())
    if edit == "version":
        meta["schema_version"] = SCHEMA_VERSION - 1
    else:
        meta["numeric_features"] = [f for f in NUMERIC_FEATURES if f not in HISTORY_FEATURES]
    (ckpt / "promogym.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"incompatible feature schema.*refit with `promogym fit --kind bert`"):
        BertConversionModel.load(ckpt)


def test_pair_memo_computes_what_it_cannot_hold_and_prefetches_a_customers_pairs() -> None:
    import torch

    from promogym.predictors.bert import PairMemo

    def compute(keys):
        return torch.as_tensor(np.stack([keys, 2 * keys], axis=1), dtype=torch.float32)

    memo = PairMemo(2, torch.device("cpu"), 1000)
    keys = np.array([7, 3, 7, 40, 41, 42, 43, 44])
    out = memo.get(keys, limit=4, compute=compute)  # more new pairs than the memo holds: no endless reset
    np.testing.assert_array_equal(out[:, 1].numpy(), 2 * keys)
    assert memo.count == 0
    n_items = 10
    out = memo.get(np.array([23]), limit=100, compute=compute,
                   expand=lambda k: (np.unique(k // n_items)[:, None] * n_items + np.arange(n_items)).ravel())
    assert out[0, 0].item() == 23 and memo.count == n_items  # customer 2's pairs with every product
    memo.get(np.array([25, 29]), limit=100, compute=lambda k: pytest.fail(f"recomputed {k}"))


def test_the_recommendation_env_subtracts_the_ensembles_spread_of_its_displays(ensemble_fit):
    """PromoRecommendation-v0 with ``uncertainty_penalty``: the reward is the profit less lambda x the members'
    standard deviation of the step's expected profit (the same displays, visitors and choices as without it)."""
    import gymnasium as gym

    import promogym.envs  # noqa: F401
    from promogym.envs.market import mnl_from_utility

    model = ensemble_fit[0]
    cfg = {"market": SMALL_WORLD, "response": model, "visitors": 4, "horizon": 2, "steps_per_day": 2}
    plain, penal = (gym.make("promogym/PromoRecommendation-v0", config={**cfg, "uncertainty_penalty": lam})
                    for lam in (0.0, 2.0))
    for env in (plain, penal):
        env.reset(seed=5)
    action = np.zeros(plain.action_space.shape, np.int64)
    _, r0, _, _, i0 = plain.step(action)
    _, r1, _, _, i1 = penal.step(action)
    np.testing.assert_array_equal(i0["shown"], i1["shown"])
    assert i0["profit_spread"] == 0 and i1["profit_spread"] > 0
    assert r1 == pytest.approx(r0 - 2.0 * i1["profit_spread"])
    u = penal.unwrapped
    shown = i1["shown"]
    on, items = shown >= 0, np.maximum(shown, 0)
    users = np.broadcast_to(i1["users"][:, None], shown.shape)
    cat = u.market.catalog
    margin = np.where(on, cat.list_price[items] - cat.unit_cost[items], 0.0)
    z = u.backend.member_logits(users, items, cat.list_price[items], np.zeros(shown.shape), u.state)
    assert i1["profit_spread"] == pytest.approx(np.std([(mnl_from_utility(zk, on) * margin).sum() for zk in z]))
