"""PromoRecommendation-v0: the display decision, its exact slate propensities, masks, stock, new products, and the
display policies shops run."""

import itertools
from math import comb

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import promogym.envs  # noqa: F401
from promogym.agents.recommenders import greedy_assortment, top_levels
from promogym.agents.registry import PolicyContext, make_policy
from promogym.envs.recommendation import PAIR_FEATURES, slate_propensity

ID = "promogym/PromoRecommendation-v0"
SMALL = {"market": {"n_products": 40, "n_customers": 400, "seed": 3}, "visitors": 4, "horizon": 4,
         "steps_per_day": 2, "new_products_day": 2}


def make(**changes):
    return gym.make(ID, config={**SMALL, **changes})


def test_the_env_passes_gymnasiums_checker_and_declares_its_per_pair_layout():
    env = make()
    check_env(env.unwrapped, skip_render_check=True)
    u = env.unwrapped
    assert env.observation_space.shape == (PAIR_FEATURES * 4 * u.width + 8,)
    assert env.action_space.shape == (4 * u.width,) and u.item_features == PAIR_FEATURES


def test_equal_levels_are_the_logs_uniform_display_with_its_propensity():
    env = make()
    env.reset(seed=0)
    u = env.unwrapped
    pool = (u.candidates >= 0).sum(axis=1)
    _, _, _, _, info = env.step(np.zeros(env.action_space.shape, np.int64))
    want = [1 / comb(int(n), int(k)) for n, k in zip(pool, info["slots"], strict=True)]
    np.testing.assert_allclose(info["slate_propensity"], want)
    shown = info["shown"]
    assert ((shown >= 0).sum(axis=1) == np.minimum(info["slots"], pool)).all()
    for row, cands in zip(shown, info["candidates"], strict=True):  # shown products are distinct candidates
        got = row[row >= 0]
        assert len(set(got)) == len(got) and np.isin(got, cands[cands >= 0]).all()


def test_slate_propensities_sum_to_one_and_match_the_displays_frequencies():
    env = make()
    env.reset(seed=1)
    u = env.unwrapped
    n = int((u.candidates[0] >= 0).sum())
    u.slots[:] = 2
    levels = np.zeros((len(u.users), u.width), np.int64)
    levels[0, :3] = 2        # three favoured candidates, one level below them, the rest 0: ties inside the top group
    levels[0, 3] = 1
    valid = u.candidates >= 0
    # every 2-set of visitor 0's candidates, its probability under the rule; they sum to one
    sets = list(itertools.combinations(range(n), 2))
    p_top = slate_propensity(levels, valid, u.slots)[0]
    assert p_top == pytest.approx(1 / 3)     # 2 of the 3 tied at the top level
    counts = {}
    draws = 3000
    for _ in range(draws):
        shown = u.display(levels)[0]
        key = tuple(sorted(int(np.flatnonzero(u.candidates[0] == j)[0]) for j in shown[shown >= 0]))
        counts[key] = counts.get(key, 0) + 1
    assert set(counts) <= {s for s in sets if set(s) <= {0, 1, 2}}
    total = sum(p_top for s in sets if set(s) <= {0, 1, 2})
    assert total == pytest.approx(1.0)
    for c in counts.values():  # each set about 1/3 of the draws (binomial sd ~ 0.009)
        assert abs(c / draws - p_top) < 0.04


def test_padding_pairs_are_masked_to_level_zero():
    env = make()
    env.reset(seed=2)
    u = env.unwrapped
    masks = u.action_masks().reshape(len(u.users), u.width, u.config.levels)
    pad = u.candidates < 0
    assert pad.any() and not masks[pad][:, 1:].any() and masks[pad][:, 0].all()
    assert masks[~pad].all()


def test_new_products_enter_on_their_day_and_not_before():
    env = make()
    env.reset(seed=3)
    u = env.unwrapped
    is_new = u.market.catalog.is_new
    seen_before, seen_after = set(), set()
    done = False
    while not done:
        target = seen_before if u.season_day < 2 else seen_after
        target.update(int(j) for j in u.candidates[u.candidates >= 0])
        _, _, term, trunc, _ = env.step(np.zeros(env.action_space.shape, np.int64))
        done = term or trunc
    assert not any(is_new[j] for j in seen_before)
    assert any(is_new[j] for j in seen_after)


def test_a_display_that_pushes_one_product_on_everybody_never_sells_past_its_stock():
    env = make(initial_stock=2, visitors=8, horizon=6)
    env.reset(seed=4)
    u = env.unwrapped
    start = u.stock.copy()
    sold = np.zeros_like(start)
    stockouts = 0
    for _ in range(12):
        levels = np.zeros((len(u.users), u.width), np.int64)
        levels[:, 0] = 3    # every visitor's first candidate: the same few products again and again
        _, _, _, _, info = env.step(levels.ravel())
        np.add.at(sold, info["chosen"][info["bought"]], 1)
        stockouts += info["components"]["stockouts"]
    assert (u.stock >= 0).all() and (sold <= start).all()
    assert (u.stock == start - sold).all()
    assert not np.isin(u.candidates[u.candidates >= 0], np.flatnonzero(u.stock == 0)).any()  # sold out: not offered


def test_the_same_seed_gives_the_same_visitors_whatever_the_display():
    a, b = make(), make()
    a.reset(seed=5)
    b.reset(seed=5)
    differs = False
    for _ in range(5):
        _, _, _, _, ia = a.step(np.zeros(a.action_space.shape, np.int64))
        _, _, _, _, ib = b.step(top_levels(b.unwrapped, b.unwrapped.candidates.astype(float)))
        assert (ia["users"] == ib["users"]).all() and (ia["slots"] == ib["slots"]).all()
        differs = differs or (ia["shown"] != ib["shown"]).any()
    assert differs  # the displays differed, the visitors did not


@pytest.mark.parametrize("changes, message", [
    ({"visitors": 0}, "visitors"),
    ({"levels": 1}, "levels"),
    ({"bogus": 1}, "bogus"),
])
def test_a_bad_config_names_the_key(changes, message):
    with pytest.raises((ValueError, TypeError), match=message):
        make(**changes)


def test_a_bad_action_is_refused_before_anything_changes():
    env = make()
    env.reset(seed=6)
    u = env.unwrapped
    before = u.users.copy()
    with pytest.raises(ValueError, match="action must be"):
        env.step(np.full(env.action_space.shape, 4))
    with pytest.raises(ValueError, match="action must be"):
        env.step(np.zeros(3, np.int64))
    assert (u.users == before).all() and u.t == 0


def test_greedy_assortment_finds_the_best_pair_where_top_by_margin_does_not():
    # one visitor, three candidates: a dear product nobody buys, two cheap ones people buy
    u = np.array([[-6.0, 1.0, 0.5]])
    margin = np.array([[100.0, 5.0, 4.0]])
    valid = np.ones((1, 3), bool)
    chosen = greedy_assortment(u, margin, valid, np.array([1]))
    assert chosen.tolist() == [[False, True, False]]    # 5 e / (1 + e) = 3.65 beats 100 e^-6 / (1 + e^-6) = 0.25
    best = max(itertools.combinations(range(3), 2),
               key=lambda s: sum(np.exp(u[0, j]) * margin[0, j] for j in s) / (1 + sum(np.exp(u[0, j]) for j in s)))
    assert set(np.flatnonzero(greedy_assortment(u, margin, valid, np.array([2]))[0])) == set(best)


def test_top_levels_show_exactly_the_slots_best_candidates():
    env = make()
    env.reset(seed=7)
    u = env.unwrapped
    score = np.where(u.candidates >= 0, u.market.catalog.list_price[np.maximum(u.candidates, 0)], 0.0)
    action = top_levels(u, score)
    assert np.allclose(slate_propensity(action.reshape(u.candidates.shape), u.candidates >= 0, u.slots), 1.0)
    _, _, _, _, info = env.step(action)
    for k, row in enumerate(info["shown"]):
        cands = u.market.catalog.list_price[info["candidates"][k][info["candidates"][k] >= 0]]
        got = np.sort(u.market.catalog.list_price[row[row >= 0]])[::-1]
        np.testing.assert_allclose(got, np.sort(cands)[::-1][: len(got)])


def test_the_oracle_beats_the_uniform_display_and_the_margin_rule_in_the_world():
    from promogym.agents.base import run_episode

    env = make(visitors=8, horizon=6, steps_per_day=4)
    ctx = PolicyContext(ID, env)
    values = {name: np.mean([run_episode(env, make_policy(name, env, ctx), seed=s)["return"] for s in range(6)])
              for name in ("random", "margin", "oracle")}
    assert values["oracle"] > values["margin"] > values["random"]


def test_a_bert_backend_holds_every_pair_before_the_first_step(tiny_model, monkeypatch):
    """Built on a hybrid BERT model, the env memoises every customer's pair coefficients with every product, so its
    steps never run the head's MLP (as a pricing env does with its products)."""
    from conftest import SMALL_WORLD

    model = tiny_model[0]
    env = gym.make(ID, config={"market": SMALL_WORLD, "response": model, "visitors": 4, "horizon": 2,
                               "steps_per_day": 2})
    market = env.unwrapped.market
    assert model._pairs.count == market.n_customers * market.n_products
    calls = []
    pair = model.net.head.pair
    monkeypatch.setattr(model.net.head, "pair", lambda *a: calls.append(len(a[0])) or pair(*a))
    env.reset(seed=0)
    env.action_space.seed(0)
    for _ in range(4):
        _, _, term, _, info = env.step(env.action_space.sample())
        assert np.isfinite(info["expected_profit"])
        if term:
            env.reset()
    assert calls == []



def test_the_text_ceiling_plans_without_what_the_world_hides():
    """``revealed`` plans with the world's utilities in expectation over the hidden customer taste and product
    appeal: changing those changes the oracle's displays, never the text ceiling's."""
    env = make(visitors=8, horizon=2, steps_per_day=2)
    ctx = PolicyContext(ID, env)
    obs, _ = env.reset(seed=0)
    revealed, oracle = make_policy("revealed", env, ctx), make_policy("oracle", env, ctx)
    before = revealed.act(obs), oracle.act(obs)
    market = env.unwrapped.market
    market._value = 2 * market._value_revealed - market._value  # every product's hidden appeal flipped
    market.customers.taste[:] = -market.customers.taste
    np.testing.assert_array_equal(revealed.act(obs), before[0])
    assert (oracle.act(obs) != before[1]).any()


def test_the_text_ceiling_earns_between_the_margin_rule_and_the_oracle():
    """In the world's expectation on the same visitors: the oracle, then the text ceiling, then highest margin."""
    env = make(visitors=8, horizon=6, steps_per_day=4)
    ctx = PolicyContext(ID, env)

    def expected(name):
        policy, total = make_policy(name, env, ctx), 0.0
        for seed in range(4):
            obs, _ = env.reset(seed=seed)
            done = False
            while not done:
                obs, _, terminated, truncated, info = env.step(policy.act(obs))
                total += info["expected_profit_world"]
                done = terminated or truncated
        return total

    values = {name: expected(name) for name in ("margin", "revealed", "oracle")}
    assert values["oracle"] > values["revealed"] > values["margin"]
