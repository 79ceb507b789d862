"""Logged interactions: schema, propensities, and agreement of empirical rates with the truth."""

import numpy as np
import pandas as pd

from promogym.envs.market.logs import DISPLAY_COLUMNS, LOG_COLUMNS, LoggingPolicy, generate_logs


def test_schema_and_accounting(logs, market):
    assert tuple(logs.columns) == LOG_COLUMNS + DISPLAY_COLUMNS and len(logs) == 100_000
    np.testing.assert_allclose(logs["propensity"], logs["price_propensity"] * logs["coupon_propensity"])
    bought = logs["purchased"] == 1
    assert (logs.loc[~bought, ["revenue", "profit", "coupon_cost"]] == 0).all().all()
    np.testing.assert_allclose(logs["profit"], logs["revenue"] - bought * logs["unit_cost"] - logs["coupon_cost"])
    np.testing.assert_allclose(logs["list_price"], market.catalog.list_price[logs["item_id"]])
    assert (logs["user_text"].astype(str).to_numpy() == np.asarray(market.customers.text)[logs["user_id"]]).all()
    assert logs["is_new_product"].any() and not logs["is_new_product"].all()
    assert (logs["weekday"].astype(str) == logs["day"].map(lambda d: ["Monday", "Tuesday", "Wednesday",
            "Thursday", "Friday", "Saturday", "Sunday"][d % 7])).all()


def test_logged_purchase_rate_is_realistic(logs):
    assert 0.01 < logs["purchased"].mean() < 0.10


def test_empirical_purchase_rate_per_price_bin_matches_true_probability(logs):
    bins = (logs["price"] / logs["list_price"]).round(1)
    for _, grp in logs.groupby(bins):
        p = grp["true_proba"].to_numpy()
        se = np.sqrt((p * (1 - p)).sum()) / len(p)
        z = (grp["purchased"].mean() - p.mean()) / se
        assert abs(z) < 4.5, z
    for _, grp in logs.groupby("coupon"):
        p = grp["true_proba"].to_numpy()
        assert abs(grp["purchased"].mean() - p.mean()) < 4.5 * np.sqrt((p * (1 - p)).sum()) / len(p)


def test_recorded_propensities_match_assignment_frequencies(logs, market):
    policy = LoggingPolicy()
    freq = (logs["price"] / logs["list_price"]).round(1).value_counts(normalize=True).sort_index()
    np.testing.assert_allclose(freq.to_numpy(), policy.price_probs, atol=0.01)
    visits = logs.drop_duplicates("visit_id")
    other = market.customers.visit_band[visits["user_id"]] != 0  # the observable segment
    for mask, probs in [(~other, policy.coupon_probs_frequent), (other, policy.coupon_probs_other)]:
        seg = visits[mask]
        freq = seg["coupon"].value_counts(normalize=True).reindex(policy.coupon_levels).to_numpy()
        np.testing.assert_allclose(freq, probs, atol=0.02)
        expected = np.asarray(probs)[np.searchsorted(policy.coupon_levels, seg["coupon"])]
        np.testing.assert_allclose(seg["coupon_propensity"], expected)


def test_ips_on_logs_recovers_a_policy_value(logs):
    # The randomized log lets any policy be evaluated: the value of "always list price, no coupon",
    # estimated by inverse-propensity weighting, matches the mean true probability under that policy.
    at_list = (logs["price"] / logs["list_price"]).round(2).eq(1.0) & logs["coupon"].eq(0)
    ips = (at_list * logs["purchased"] / logs["propensity"]).sum() / (at_list / logs["propensity"]).sum()
    direct = logs.loc[at_list, "true_proba"].mean()
    assert abs(ips - direct) < 0.005


def test_same_seed_same_rows_different_seed_different(small_market):
    a = generate_logs(small_market, 3000, seed=11)
    b = generate_logs(small_market, 3000, seed=11)
    c = generate_logs(small_market, 3000, seed=12)
    pd.testing.assert_frame_equal(a, b)
    assert not a["purchased"].equals(c["purchased"]) or not a["item_id"].equals(c["item_id"])


def test_fatigue_and_reference_state_recorded(logs):
    assert logs["fatigue"].max() > 1 and logs.loc[logs["day"] == 0, "fatigue"].eq(0).all()
    assert not np.allclose(logs["reference_price"], logs["list_price"])


def test_coupons_last_7d_counts_the_shops_own_coupon_history(logs):
    visits = logs.drop_duplicates("visit_id")
    user = visits.groupby("user_id").size().idxmax()  # the most frequent visitor
    mine = visits[visits["user_id"] == user]
    for _, row in mine.iterrows():
        window = mine[(mine["day"] < row["day"]) & (mine["day"] >= row["day"] - 7)]
        assert row["coupons_last_7d"] == (window["coupon"] > 0).sum()


def test_the_display_propensities_are_the_uniform_draw_within_the_category(logs, market):
    sizes = np.bincount(market.catalog.category, minlength=market.config.n_categories)
    codes = logs["category"].cat.codes.to_numpy()
    assert (logs["display_pool"].to_numpy() == sizes[codes]).all()
    from math import comb

    first = logs.drop_duplicates("visit_id").head(200)
    want = [1 / comb(int(n), int(k)) for n, k in zip(first["display_pool"], first["views"], strict=True)]
    np.testing.assert_allclose(first["slate_propensity"], want, rtol=1e-9)
    np.testing.assert_allclose(logs["display_propensity"], logs["views"] / logs["display_pool"])
    # each product of a category is shown about as often as display_propensity says (uniform within the category)
    per_item = logs.groupby("item_id").size()
    cat_of = market.catalog.category[per_item.index.to_numpy()]
    shares = per_item.to_numpy() / per_item.groupby(cat_of).transform("sum").to_numpy()
    assert np.abs(shares * sizes[cat_of] - 1.0).max() < 0.25  # 100k rows: each share within 25% of 1/n
