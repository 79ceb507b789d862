"""The Hillstrom real-data track: data, profiles, response models, uplift metrics, OPE and the env."""

import pickle
import shutil
import warnings
import zipfile

import gymnasium as gym
import numpy as np
import pandas as pd
import pytest
import yaml
from budget_checks import MostGenerous, play_within_budget, unconstrained_spend
from gymnasium.utils.env_checker import check_env

from promogym import envs  # noqa: F401
from promogym.agents.train import LearnedPolicy
from promogym.experiments.cli import main
from promogym.experiments.uplift_eval import auuc, budgeted_best_arm, ope, qini_coefficient, qini_curve, uplift_at_k
from promogym.predictors.hillstrom import (
    ARMS,
    DATA_FILE,
    DataError,
    load_hillstrom,
    profile_text,
    split_labels,
    tabular_features,
)
from promogym.predictors.uplift import BertUplift, CellMeans, TwoModelUplift, load_uplift_model

ENV = "promogym/HillstromTargeting-v0"


@pytest.fixture(scope="module")
def data():
    return load_hillstrom()


def test_vendored_data_loads_with_a_fixed_split(data):
    assert len(data) == 51_200
    counts = data["split"].value_counts()
    assert counts["test"] == 15_360 and counts["valid"] == 7_168 and counts["train"] == 28_672
    np.testing.assert_array_equal(split_labels(len(data)), data["split"].to_numpy())  # same split every time
    shares = data.groupby("arm").size() / len(data)
    assert np.allclose(shares, 1 / 3, atol=0.01)          # randomized thirds
    rates = data.groupby("arm")["visit"].mean()
    assert rates[1] > rates[2] > rates[0]                  # men's > women's > none, as published


def test_missing_or_corrupted_file_names_the_file(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        load_hillstrom(tmp_path / "nope.csv.zip")
    bad = tmp_path / "bad.csv.zip"
    bad.write_bytes(b"not a zip at all\x00\x01")
    with pytest.raises(DataError, match=str(bad.name)):
        load_hillstrom(bad)
    copy = tmp_path / "hillstrom.csv.zip"
    shutil.copy(DATA_FILE, copy)
    with pytest.raises(DataError, match="sha256"):
        with copy.open("ab") as f:
            f.write(b"x")
        load_hillstrom(copy, verify_hash=True)
    wrong = tmp_path / "wrong.csv.zip"
    with zipfile.ZipFile(wrong, "w") as z:
        z.writestr("x.csv", "a,b\n1,2\n")
    with pytest.raises(DataError, match="missing columns"):
        load_hillstrom(wrong)


def test_profiles_are_plain_language_and_carry_the_arm(data):
    row = data.iloc[0]
    text = profile_text(row, arm=2)
    assert "months ago" in text or "last month" in text
    assert text.endswith("Was sent the women's merchandise e-mail.")
    assert "$" in text and "area" in text
    assert profile_text(row) != text
    x = tabular_features(data.iloc[:10])
    assert x.shape == (10, 11) and np.isfinite(x).all()


def test_uplift_metrics_reward_the_right_ordering():
    rng = np.random.default_rng(0)
    n = 20_000
    effect = rng.random(n)                     # true uplift per row
    treated = rng.random(n) < 0.5
    y = (rng.random(n) < 0.1 + 0.3 * effect * treated).astype(float)
    good, bad, noise = effect, -effect, rng.random(n)
    assert qini_coefficient(y, good, treated) > 0.1 > abs(qini_coefficient(y, noise, treated))
    assert qini_coefficient(y, bad, treated) < -0.1
    assert auuc(y, good, treated) > auuc(y, noise, treated)
    assert uplift_at_k(y, good, treated) > uplift_at_k(y, bad, treated)
    x, q = qini_curve(y, good, treated)
    assert x[0] == 0 and q[0] == 0 and len(x) == n + 1


def test_ips_snips_dr_are_unbiased_on_a_simulated_trial():
    """A trial with known potential outcomes: every estimator's CI covers the true policy value."""
    rng = np.random.default_rng(1)
    n = 30_000
    base = rng.random(n) * 0.2
    lift = np.column_stack([np.zeros(n), rng.random(n) * 0.2, rng.random(n) * 0.1])
    p = base[:, None] + lift                   # (n, 3) true outcome probabilities
    logged = rng.integers(0, 3, n)
    y = (rng.random(n) < p[np.arange(n), logged]).astype(float)
    pi = lift.argmax(axis=1)
    truth = p[np.arange(n), pi].mean()
    q_hat = p + rng.normal(0, 0.05, p.shape)   # an imperfect outcome model
    est = ope(pi, logged, y, 1 / 3, q_hat, reps=200)
    for k in ("ips", "snips", "dr"):
        lo, hi = est[f"{k}_ci95"]
        assert lo <= truth <= hi, (k, est[k], truth)
    assert est["dr_ci95"][1] - est["dr_ci95"][0] < est["ips_ci95"][1] - est["ips_ci95"][0]  # DR is tighter
    with pytest.raises(ValueError, match="one entry per row"):
        ope(pi[:-1], logged, y, 1 / 3, q_hat)


def test_budgeted_targeting_respects_the_budget():
    rng = np.random.default_rng(2)
    values = rng.random((1000, 3))
    arms = budgeted_best_arm(values, 0.3)
    assert (arms > 0).mean() <= 0.31
    gain = values[:, 1:].max(1) - values[:, 0]
    assert (gain[arms > 0] > 0).all()
    assert (budgeted_best_arm(values, 0.0) == 0).all()


def test_response_models_fit_predict_and_round_trip(data, tmp_path):
    train = data[data["split"] == "train"].iloc[:3000]
    valid = data[data["split"] == "valid"].iloc[:800]
    test = data[data["split"] == "test"].iloc[:200]
    cells = CellMeans().fit(train)
    for model in (cells, TwoModelUplift("logistic").fit(train, valid)):
        out = model.predict(test)
        assert set(out) == {"visit", "conversion", "spend"}
        assert out["visit"].shape == (200, 3) and ((out["visit"] >= 0) & (out["visit"] <= 1)).all()
    logit = TwoModelUplift("logistic").fit(train, valid)
    logit.save(tmp_path / "l.pkl")
    np.testing.assert_allclose(load_uplift_model(f"logistic:{tmp_path / 'l.pkl'}").predict(test)["visit"],
                               logit.predict(test)["visit"])
    with pytest.raises(ValueError, match="not a gbdt"):
        load_uplift_model(f"gbdt:{tmp_path / 'l.pkl'}")
    bert = BertUplift("tiny", head_epochs=2, finetune_epochs=1, batch_size=256).fit(train, valid)
    before = bert.predict(test)
    bert.save(tmp_path / "bert")
    after = load_uplift_model(f"bert:{tmp_path / 'bert'}").predict(test)
    np.testing.assert_allclose(after["visit"], before["visit"], atol=1e-5)
    assert [h["stage"] for h in bert.history].count("finetune") == 1


def test_env_passes_the_checker_and_never_overspends():
    cfg = {"batch_size": 8, "horizon": 10, "budget_share": 0.25}
    env = gym.make(ENV, config=cfg)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env.unwrapped)
    # an e-mail for everyone would send 80 with no budget; with 20 the rest are refused and counted
    assert unconstrained_spend(ENV, cfg, [0], budget_key="budget_share") == 80
    generous = play_within_budget(env, MostGenerous(env), [0])
    assert generous.given == 20 and generous.clipped == 60 and generous.spend == [20.0]
    env.reset(seed=0)
    env.action_space.seed(0)
    sent, clipped, steps = 0, 0, 0
    while True:
        _obs, r, term, trunc, info = env.step(env.action_space.sample())
        sent += info["emails_sent"]
        clipped += info["emails_clipped"]
        steps += 1
        assert r == pytest.approx(info["components"]["revenue"] - info["components"]["coupon_spend"])
        if term or trunc:
            break
    assert steps == 10 and sent == 0.25 * 8 * 10 and clipped > 0  # random e-mails (2 in 3) exhaust 25% too
    assert not env.unwrapped.action_masks().reshape(8, 3)[:, 1:].any()  # budget spent: no e-mail allowed
    clone = pickle.loads(pickle.dumps(env.unwrapped))
    assert clone.budget_left == env.unwrapped.budget_left


def test_budgeted_targeting_with_a_threshold_from_other_rows_respects_the_budget():
    rng = np.random.default_rng(0)
    train_values = np.column_stack([np.zeros(5000), rng.normal(0.0, 1.0, (5000, 2))])
    test_values = np.column_stack([np.zeros(5000), rng.normal(0.1, 1.0, (5000, 2))])  # a slightly better split
    gains = train_values[:, 1:].max(axis=1) - train_values[:, 0]
    threshold = float(np.quantile(gains, 1 - 0.3))            # as experiments/hillstrom.py evaluate() does
    assert (budgeted_best_arm(test_values, 0.3, threshold) > 0).mean() <= 0.3


def test_replayed_policies_are_held_to_the_budget(monkeypatch, data):
    """The track's replay of a learned policy over the test split: a policy e-mailing everyone ends with the
    budget's share of the rows e-mailed (each episode's budget spent, the rest refused), not all of them."""
    import promogym.agents.train as train_module
    from promogym.experiments.hillstrom import replay

    monkeypatch.setattr(train_module, "LearnedPolicy", lambda run, env: MostGenerous(env))
    rows = int((data["split"] == "test").sum())
    arms = replay(None, {"budget_share": 0.3}, rows)
    assert (arms >= 0).all()                     # every test row was walked
    share = float((arms > 0).mean())
    assert 0.29 < share <= 0.3 + 1e-9, share


def test_env_same_seed_same_trajectory_and_sequential_walk():
    a, b = (gym.make(ENV, config={"batch_size": 4, "horizon": 5}) for _ in range(2))
    oa, _ = a.reset(seed=3)
    ob, _ = b.reset(seed=3)
    np.testing.assert_array_equal(oa, ob)
    act = np.array([1, 2, 0, 1])
    for _ in range(5):
        ra, rb = a.step(act), b.step(act)
        np.testing.assert_array_equal(ra[0], rb[0])
        assert ra[1] == rb[1]
    seq = gym.make(ENV, config={"batch_size": 1000, "horizon": 100, "split": "test", "sequential": True})
    seq.reset(seed=0)
    seen = []
    while not seq.unwrapped.exhausted:
        seen.append(seq.step(np.zeros(1000, int))[4]["rows"])
    assert len(np.unique(np.concatenate(seen))) == 15_360


@pytest.mark.parametrize("bad, needle", [({"outcome": "clicks"}, "outcome"), ({"response": "world"}, "response"),
                                         ({"budget_share": 1.5}, "budget_share"), ({"batch_sise": 3}, "batch_sise")])
def test_env_bad_config_names_the_key(bad, needle):
    with pytest.raises(ValueError, match=needle):
        gym.make(ENV, config=bad)
    assert gym.make(ENV).unwrapped.default_config()["budget_share"] == 0.3


def test_hillstrom_command_end_to_end(tmp_path, capsys):
    """Tiny encoder, one short RL run: every table row is filled from real computation."""
    args = ["hillstrom", "--encoder", "tiny", "--seeds", "1", "--timesteps", "512", "--jobs", "1", "--bootstrap", "20",
            "--finetune-epochs", "0", "--train-rows", "2000", "--runs", str(tmp_path / "runs"),
            "--out", str(tmp_path / "out")]
    rc = main(args)
    assert rc == 0
    import json

    result = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert {"no_email", "email_all_mens", "random", "random_at_budget", "uplift_bert", "uplift_gbdt",
            "uplift_logistic", "rl_maskable_ppo_s0"} <= set(result["ope"])
    rl = result["ope"]["rl_maskable_ppo_s0"]
    assert rl["ips_ci95"][0] <= rl["ips"] <= rl["ips_ci95"][1]
    # the ship verdict: against the best budgeted rule by DR, paired; its line is in the report
    verdict = result["ship"]["rl_maskable_ppo_s0"]
    rules = [r for r in result["ope"] if r == "random_at_budget" or r.startswith("uplift_")]
    assert verdict["baseline"] == max(rules, key=lambda r: result["ope"][r]["dr"])
    assert verdict["diff"] == pytest.approx((rl["dr"] - result["ope"][verdict["baseline"]]["dr"]) * 1000)
    assert verdict["diff_ci"][0] <= verdict["diff"] <= verdict["diff_ci"][1]
    assert verdict["ship"] == (verdict["diff_ci"][0] > 0 and abs(verdict["bias"]) <= verdict["band"])
    assert verdict["line"] in (tmp_path / "out" / "report.md").read_text()
    # the fixed rules' e-mail shares are what they say; every budgeted policy stays within 30%
    assert result["ope"]["no_email"]["emails_share"] == 0 and result["ope"]["email_all_mens"]["emails_share"] == 1
    assert result["ope"]["rl_maskable_ppo_s0"]["emails_share"] <= 0.3 + 1e-9     # the env's budget is a cap
    # the uplift rules' threshold comes from the train split, and budgeted_best_arm caps them at the budget on
    # the test split; random_at_budget e-mails each row with probability 0.3 (binomial: within 2 points)
    for name in ("uplift_bert", "uplift_gbdt", "uplift_logistic"):
        assert 0 < result["ope"][name]["emails_share"] <= 0.3 + 1e-9, name
    assert 0.28 <= result["ope"]["random_at_budget"]["emails_share"] <= 0.32
    # the learned policy in its env: it asks only for e-mails its mask allows and gets exactly those the budget
    # can pay; an e-mail for everyone is refused past the budget, and the refusals are counted
    run = tmp_path / "runs" / "rl" / "maskable_ppo_s0"
    cfg = yaml.safe_load((run / "config.yml").read_text())
    env = gym.make(ENV, config=cfg["env_config"])
    learned = play_within_budget(env, LearnedPolicy(run, env), range(3))
    assert learned.masked_requests == 0 and learned.given + learned.clipped == learned.requested
    generous = play_within_budget(env, MostGenerous(env), range(3))
    budget = 0.3 * env.unwrapped.config.batch_size * env.unwrapped.config.horizon
    assert generous.clipped > 0 and max(generous.spend) <= budget + 1e-9 and max(learned.spend) <= budget + 1e-9
    assert (tmp_path / "out" / "qini.png").stat().st_size > 10_000
    assert "Qini coefficient" in (tmp_path / "out" / "report.md").read_text()
    # a second run reuses every model and run
    assert "fitted" in capsys.readouterr().out
    assert main([*args, "--stage", "train"]) == 0
    again = capsys.readouterr().out
    assert "fitted" not in again and "trained" not in again


def test_arms_are_named_as_in_the_file():
    assert ARMS == ("No E-Mail", "Mens E-Mail", "Womens E-Mail")
    df = pd.DataFrame({"segment": list(ARMS)})
    assert df["segment"].map({a: i for i, a in enumerate(ARMS)}).tolist() == [0, 1, 2]


def test_paired_dr_difference_cancels_the_rows_noise():
    from promogym.experiments.uplift_eval import dr_terms, paired_dr_difference

    rng = np.random.default_rng(0)
    n = 6000
    logged = rng.integers(0, 3, n)
    base = rng.normal(0, 1, n)                      # each row's own level: shared by every policy's terms
    reward = base + 0.1 * (logged > 0) + rng.normal(0, 0.5, n)
    q = np.column_stack([base, base + 0.1, base + 0.1])
    a = dr_terms(np.ones(n, int), logged, reward, 1 / 3, q)
    b = dr_terms(np.zeros(n, int), logged, reward, 1 / 3, q)
    diff, (lo, hi) = paired_dr_difference(a, b, reps=300)
    assert diff == pytest.approx(0.1, abs=0.02) and 0 < lo < diff < hi      # paired: the e-mail's +0.1 is detected
    same, ci = paired_dr_difference(a, a, reps=50)
    assert same == 0 and ci == (0.0, 0.0)
