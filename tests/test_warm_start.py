"""Warm starts of a closed loop: a refit of the response model starts from the previous checkpoint
(`FitConfig.init_from`), an agent run from the previous run's policy and statistics (`TrainSpec.init_from`);
what does not fit is refused before any work, and the start is recorded."""

import hashlib
import json
import shutil

import gymnasium as gym
import numpy as np
import pytest
import yaml
from conftest import SMALL_WORLD, TINY

from promogym.agents.train import LearnedPolicy, TrainSpec, train
from promogym.envs.market import Market
from promogym.envs.market.logs import generate_logs
from promogym.predictors.bert import BertConversionModel
from promogym.predictors.data import load_logs
from promogym.predictors.train import FitConfig, checkpoint_sha256, fit

# ---------------------------------------------------------------------------------------- the response model
# no epoch of any stage, no ensemble: the fitted network is exactly where the fit started
FROZEN = {**TINY, "head_epochs": 0, "refine_epochs": 0, "ensemble": 0}


def _offers(path, n=300):
    df = load_logs(path)
    return df.iloc[np.random.default_rng(0).choice(len(df), n, replace=False)]


def _log_odds(p):
    return np.log(p) - np.log1p(-p)


def test_a_warm_fit_without_epochs_reproduces_the_previous_model(tiny_model, small_logs, tmp_path):
    _, previous = tiny_model
    warm = fit(small_logs, FitConfig.from_dict({**FROZEN, "init_from": str(previous)}), tmp_path / "warm")
    cold = fit(small_logs, FitConfig.from_dict(FROZEN), tmp_path / "cold")
    offers = _offers(small_logs)
    before = BertConversionModel.load(previous)
    after = BertConversionModel.load(tmp_path / "warm")
    # the previous encoder, pooling and head: the same utilities; the same data, so the same calibration
    np.testing.assert_allclose(after.predict_logits(offers), before.predict_logits(offers), rtol=0, atol=1e-5)
    np.testing.assert_allclose(after.predict_proba(offers), before.predict_proba(offers), rtol=0, atol=1e-6)
    assert np.abs(cold.predict_logits(offers) - before.predict_logits(offers)).max() > 0.1  # not by chance
    # its ensemble is refitted (none asked for here), not carried over
    assert before.ensemble_size == 5 and after.ensemble_size == 0
    meta = json.loads((tmp_path / "warm" / "promogym.json").read_text())
    prior = json.loads((previous / "promogym.json").read_text())
    assert meta["init_from"] == {"path": str(previous.resolve()), "sha256": checkpoint_sha256(previous),
                                 "data": prior["data"], "data_sha256": prior["data_sha256"], "init_from": None}
    assert meta["fit_config"]["init_from"] == str(previous) and warm.meta["init_from"] == meta["init_from"]
    assert json.loads((tmp_path / "cold" / "promogym.json").read_text())["init_from"] is None


def test_a_refit_on_more_logs_reproduces_it_up_to_the_recalibration(tiny_model, tmp_path):
    """New logs of the same world: the warm start keeps the utilities; the calibration (a shift of the log-odds)
    is refitted on the new validation visits."""
    _, previous = tiny_model
    more = tmp_path / "more.parquet"
    market = Market(SMALL_WORLD)
    generate_logs(market, 12_000, seed=11).to_parquet(more, index=False)
    more.with_suffix(".json").write_text(json.dumps({"world": market.config.to_dict()}))
    fit(more, FitConfig.from_dict({**FROZEN, "init_from": str(previous)}), tmp_path / "round2")
    before, after = BertConversionModel.load(previous), BertConversionModel.load(tmp_path / "round2")
    offers = _offers(more)
    np.testing.assert_allclose(after.predict_logits(offers), before.predict_logits(offers), rtol=0, atol=1e-5)
    shift = _log_odds(after.predict_proba(offers)) - _log_odds(before.predict_proba(offers))
    assert np.ptp(shift) < 1e-4  # one constant: the new calibration's shift less the old one's
    meta = json.loads((tmp_path / "round2" / "promogym.json").read_text())
    assert meta["init_from"]["data_sha256"] != meta["data_sha256"]


class Interrupt(Exception):
    pass


def _stop_in_second_epoch():
    """A progress callback that interrupts the fit at the first step of stage A's second epoch."""
    starts = []

    def progress(stage, step, total):
        if stage == "A" and step == 1:
            starts.append(stage)
            if len(starts) == 2:
                raise Interrupt

    return progress


def test_an_interrupted_warm_fit_resumes_from_where_it_stopped(tiny_model, small_logs, tmp_path):
    """The partial fit keeps the checkpoint it started from: resuming reaches the uninterrupted fit's weights, and a
    partial whose checkpoint has changed since is not resumed."""
    previous = tmp_path / "previous"
    shutil.copytree(tiny_model[1], previous)
    cfg = FitConfig.from_dict({**FROZEN, "head_epochs": 2, "max_train_rows": 2000, "val_rows": 500,
                               "init_from": str(previous)})
    straight = fit(small_logs, cfg, tmp_path / "straight")
    with pytest.raises(Interrupt):
        fit(small_logs, cfg, tmp_path / "resumed", progress=_stop_in_second_epoch())
    resumed = fit(small_logs, cfg, tmp_path / "resumed", resume=True)
    a, b = straight.net.state_dict(), resumed.net.state_dict()
    assert all(np.allclose(a[k], b[k], rtol=1e-5, atol=1e-6) for k in a)
    assert [h["epoch"] for h in resumed.meta["history"]] == [0, 1]
    start = BertConversionModel.load(previous).net.state_dict()
    assert not np.allclose(a["head.weekday.weight"], start["head.weekday.weight"])  # it trained from there
    with pytest.raises(Interrupt):
        fit(small_logs, cfg, tmp_path / "again", progress=_stop_in_second_epoch())
    meta = json.loads((previous / "promogym.json").read_text())
    (previous / "promogym.json").write_text(json.dumps({**meta, "note": "refitted in the meantime"}))
    with pytest.raises(ValueError, match="was started from another checkpoint than"):
        fit(small_logs, cfg, tmp_path / "again", resume=True)


def _other_world_logs(small_logs, tmp_path):
    data = tmp_path / "other.parquet"
    shutil.copy(small_logs, data)
    data.with_suffix(".json").write_text(json.dumps({"world": {**Market(SMALL_WORLD).config.to_dict(), "seed": 5}}))
    return data


@pytest.mark.parametrize(("overrides", "data", "needle"), [
    ({"mode": "text"}, None, r"network differs from this fit's: mode \('hybrid' vs 'text'\)"),
    ({"dim": 64}, None, r"network differs from this fit's: dim \(128 vs 64\)"),
    ({"segment": False}, None, r"segment \(True vs False\)"),
    ({"encoder": "minilm"}, None, r"its encoder \('tiny'\) has another architecture than this fit's: hidden_size"),
    ({}, _other_world_logs, r"fitted on logs of another world than .*other\.parquet \(checkpoint vs data: seed"),
])
def test_a_checkpoint_that_does_not_fit_is_refused_before_any_work(tiny_model, small_logs, tmp_path, overrides,
                                                                   data, needle):
    _, previous = tiny_model
    cfg = FitConfig.from_dict({**FROZEN, **overrides, "init_from": str(previous)})
    with pytest.raises(ValueError, match=needle) as err:
        fit(data(small_logs, tmp_path) if data else small_logs, cfg, tmp_path / "m")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "m").exists() and not (tmp_path / "m.partial").exists()


def test_a_folder_that_is_no_checkpoint_or_the_output_is_refused(tiny_model, small_logs, tmp_path):
    _, previous = tiny_model
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="not a promogym BERT checkpoint"):
        fit(small_logs, FitConfig.from_dict({**FROZEN, "init_from": str(tmp_path / "empty")}), tmp_path / "m")
    copy = tmp_path / "copy"
    shutil.copytree(previous, copy)
    with pytest.raises(ValueError, match="is the output folder itself"):
        fit(small_logs, FitConfig.from_dict({**FROZEN, "init_from": str(copy)}), copy)
    assert checkpoint_sha256(copy) == checkpoint_sha256(previous)  # left as it was


# ---------------------------------------------------------------------------------------- the agent
ENV = "promogym/DynamicPricing-v1"
SMALL = {"market": {"n_customers": 600, "n_products": 60}, "n_products": 2, "horizon": 4, "daily_customers": 40,
         "initial_stock": 30}
HP = {"n_steps": 64, "batch_size": 32, "n_epochs": 1}


def _spec(timesteps=128, **kwargs):
    base = {"env_config": dict(SMALL), "eval_freq": 64, "eval_episodes": 2, "checkpoint_freq": 64,
            "hyperparams": dict(HP)}
    return TrainSpec(ENV, kwargs.pop("algo", "ppo"), kwargs.pop("seed", 0), timesteps, **{**base, **kwargs})


@pytest.fixture(scope="module")
def previous_run(tmp_path_factory):
    """A tiny PPO run: the previous round of the loop."""
    run = tmp_path_factory.mktemp("rounds") / "round1"
    train(_spec(), run)
    return run


def _observations(env_config, n=6):
    env = gym.make(ENV, config=env_config)
    obs = [env.reset(seed=s)[0] for s in range(n)]
    return np.stack(obs + [env.step(env.action_space.sample())[0] for _ in range(n)])


def test_a_warm_started_run_acts_like_the_previous_policy(previous_run, tmp_path):
    """Another seed and another simulator setting (same spaces), one PPO update at a negligible learning rate:
    the policy is the previous run's final one, and the normalization statistics continue the previous ones."""
    new = tmp_path / "round2"
    refitted = {**SMALL, "daily_customers": 60}
    spec = _spec(64, seed=1, env_config=refitted, hyperparams={**HP, "learning_rate": 1e-12},
                 init_from=str(previous_run))
    meta = train(spec, new)
    before, after = LearnedPolicy(previous_run, best=False), LearnedPolicy(new, best=False)
    obs = before.norm.normalize_obs(_observations(refitted))  # the same inputs to both networks
    a_before, _ = before.model.predict(obs, deterministic=True)
    a_after, _ = after.model.predict(obs, deterministic=True)
    np.testing.assert_allclose(a_after, a_before, rtol=0, atol=1e-6)
    fresh = TrainSpec(ENV, "ppo", 1, 64, env_config=refitted, hyperparams=dict(HP))  # what seed 1 starts from
    train(fresh, tmp_path / "cold")
    cold = LearnedPolicy(tmp_path / "cold", best=False).model.predict(obs, deterministic=True)[0]
    assert np.abs(cold - a_before).max() > 1e-3  # a fresh policy of this spec would act otherwise
    stats = [json.loads((run / "vecnormalize.json").read_text())["obs_rms"] for run in (previous_run, new)]
    assert stats[1]["count"] == pytest.approx(stats[0]["count"] + 1 + 64)  # one reset and 64 steps more
    config = yaml.safe_load((new / "config.yml").read_text())
    assert config["init_from"] == str(previous_run.resolve()) and config["env_config"] == refitted
    model_sha = hashlib.sha256((previous_run / "model.zip").read_bytes()).hexdigest()
    assert meta["init_from"]["path"] == str(previous_run.resolve()) and meta["init_from"]["model_sha256"] == model_sha
    assert json.loads((new / "metadata.json").read_text())["init_from"] == meta["init_from"]


def _tampered(previous_run, tmp_path):
    copy = tmp_path / "tampered"
    shutil.copytree(previous_run, copy)
    with open(copy / "model.zip", "ab") as f:
        f.write(b"\0")
    return copy


@pytest.mark.parametrize(("kwargs", "source", "needle"), [
    ({"env_id": "promogym/PricePromo-v1"}, None, r"holds a ppo run on promogym/DynamicPricing-v1, not ppo on "
                                                 r"promogym/PricePromo-v1"),
    ({"algo": "a2c", "hyperparams": {}}, None, r"holds a ppo run on .*, not a2c on"),
    ({"env_config": {**SMALL, "n_products": 3}}, None, r"its observation space Box.* differs from this env's"),
    ({"hyperparams": {**HP, "policy_kwargs": {"net_arch": [16]}}}, None, r"policy architecture differs"),
    ({}, _tampered, r"refusing to load .*model\.zip.*differs from its manifest\.json entry"),
])
def test_a_run_that_does_not_fit_is_refused_before_the_folder_is_touched(previous_run, tmp_path, kwargs, source,
                                                                         needle):
    env_id = kwargs.pop("env_id", ENV)
    spec = _spec(64, init_from=str(source(previous_run, tmp_path) if source else previous_run), **kwargs)
    spec.env_id = env_id
    with pytest.raises(ValueError, match=needle) as err:
        train(spec, tmp_path / "new")
    assert "\n" not in str(err.value) and not (tmp_path / "new").exists()


def test_warm_starting_into_the_previous_folder_is_refused(previous_run):
    before = (previous_run / "manifest.json").read_bytes()
    with pytest.raises(ValueError, match="is the run folder itself"):
        train(_spec(64, init_from=str(previous_run)), previous_run)
    assert (previous_run / "manifest.json").read_bytes() == before
