"""Slate off-policy estimators: exact on cases with known value, and on the env's own logs beside the truth."""

import itertools
from math import comb

import gymnasium as gym
import numpy as np
import pytest

import promogym.envs  # noqa: F401
from promogym.agents.registry import PolicyContext, make_policy
from promogym.experiments.slate_ope import pi_weight, record_slates, slate_estimates, true_visit_values


@pytest.mark.parametrize("n, k", [(5, 1), (5, 2), (6, 3), (4, 4)])
def test_both_estimators_are_exactly_unbiased_for_an_additive_reward_under_the_uniform_display(n, k):
    rng = np.random.default_rng(n * 10 + k)
    phi = rng.normal(size=n)                      # each product's additive contribution
    target = set(rng.choice(n, size=k, replace=False).tolist())
    truth = phi[list(target)].sum()
    sets = list(itertools.combinations(range(n), k))
    mu = 1 / comb(n, k)
    ips = sum(mu * (set(s) == target) / mu * phi[list(s)].sum() for s in sets)
    pi = sum(mu * pi_weight(np.array([len(set(s) & target)]), np.array([k]), np.array([n]))[0] * phi[list(s)].sum()
             for s in sets)
    assert ips == pytest.approx(truth) and pi == pytest.approx(truth)


def test_the_pseudo_inverse_weight_is_ips_for_one_slot_and_one_for_a_full_display():
    np.testing.assert_allclose(pi_weight(np.array([1, 0]), np.array([1, 1]), np.array([7, 7])), [7.0, 0.0])
    np.testing.assert_allclose(pi_weight(np.array([3]), np.array([3]), np.array([3])), [1.0])
    with pytest.raises(ValueError, match="overlap"):
        pi_weight(np.array([3]), np.array([2]), np.array([5]))


def test_a_non_additive_reward_is_where_pi_is_biased_and_ips_is_not():
    # reward: 1 if product 0 is shown alone-ish (a substitute, product 1, halves it) -- not additive
    n, k = 4, 2
    target = {0, 2}
    sets = list(itertools.combinations(range(n), k))
    mu = 1 / comb(n, k)

    def r(s):
        return (1.0 if 0 in s else 0.0) * (0.5 if 1 in s else 1.0)

    ips = sum(mu * (set(s) == target) / mu * r(s) for s in sets)
    pi = sum(mu * pi_weight(np.array([len(set(s) & target)]), np.array([k]), np.array([n]))[0] * r(s) for s in sets)
    assert ips == pytest.approx(r(tuple(target)))
    assert pi != pytest.approx(r(tuple(target)))


def test_on_the_envs_logs_the_estimates_cover_the_true_value_of_a_display_rule():
    env = gym.make("promogym/PromoRecommendation-v0",
                   config={"market": {"n_products": 40, "n_customers": 400, "seed": 3}, "visitors": 8,
                           "horizon": 6, "steps_per_day": 4})
    ctx = PolicyContext("promogym/PromoRecommendation-v0", env)
    targets = {"margin": make_policy("margin", env, ctx), "random": make_policy("random", env, ctx)}
    table = record_slates(env, targets, range(40))
    # the logging display as a target: every weight is one, both estimators are the logged mean
    np.testing.assert_allclose(table["prob_random"], table["slate_propensity"])
    np.testing.assert_allclose(pi_weight(table["overlap_random"], table["slots"], table["pool"]), 1.0)
    est = slate_estimates(table, "margin", reps=500)
    truth = true_visit_values(env, targets["margin"], range(1000, 1040), reps=500)
    assert est["matches"] > 0 and est["pi"]["ess"] > est["ips"]["ess"]
    for name in ("ips", "pi"):
        lo, hi = est[name]["ci95"]
        assert lo <= truth["mean"] <= hi, (name, est[name], truth)
    # the logging display's own value: the logged profit per visit, within its CI of the truth
    logged = true_visit_values(env, targets["random"], range(1000, 1040), reps=500)
    assert abs(table["expected_profit"].mean() - logged["mean"]) < 3 * (logged["ci95"][1] - logged["ci95"][0])
    with pytest.raises(ValueError, match="prob_popular"):
        slate_estimates(table, "popular")


def test_the_slates_command_writes_its_table_and_refuses_bad_input(tmp_path, capsys):
    import json

    from promogym.experiments.cli import main

    out = tmp_path / "slates"
    small = ["--set", "horizon=2", "--set", "new_products_day=1", "--set", "visitors=4"]
    assert main(["slates", "--policy", "margin", "--policy", "random", "--log-episodes", "2", "--episodes", "2",
                 *small, "--out", str(out)]) == 0
    result = json.loads((out / "slates.json").read_text())
    assert set(result["policies"]) == {"margin", "random"}
    assert result["policies"]["margin"]["world"]["new_products"]["share"] > 0  # new products entered on day 1
    assert "| margin |" in (out / "slates.md").read_text()
    for bad, message in ((["--policy", "best_static"], "best_static"), (["--set", "response=world"], "--simulator"),
                         (["--simulator", "gbdt:/nowhere.zip"], "nowhere")):
        assert main(["slates", *bad, "--out", str(tmp_path / "bad")]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err
    assert not (tmp_path / "bad").exists()
