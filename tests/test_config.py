import pytest

from promogym.envs.market import MarketConfig
from promogym.envs.market.logs import LoggingPolicy


def test_defaults_are_valid_and_roundtrip():
    cfg = MarketConfig()
    assert MarketConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.n_products == 200 and cfg.n_categories == 10 and cfg.n_customers == 5000


def test_unknown_key_is_named():
    with pytest.raises(ValueError, match="n_prodcts"):
        MarketConfig.from_dict({"n_prodcts": 10})


@pytest.mark.parametrize(("key", "value"), [("n_products", 5), ("new_product_share", 1.5),
                                            ("fatigue_decay", -0.1), ("customer_noise", float("nan")),
                                            ("n_customers", "many")])
def test_out_of_range_value_names_key_and_range(key, value):
    with pytest.raises(ValueError, match=rf"MarketConfig\.{key} must be"):
        MarketConfig.from_dict({key: value})


def test_type_shares_must_sum_to_one_and_match_types():
    with pytest.raises(ValueError, match="type_shares must sum to 1"):
        MarketConfig.from_dict({"type_shares": [0.5, 0.5, 0.5, 0.0, 0.0]})
    with pytest.raises(ValueError, match="type_shares must have 5 entries"):
        MarketConfig.from_dict({"type_shares": [0.5, 0.5]})


def test_logging_policy_needs_positive_propensities():
    with pytest.raises(ValueError, match="price_probs"):
        LoggingPolicy.from_dict({"price_probs": [0.5, 0.5, 0.0, 0.0, 0.0]})
    with pytest.raises(ValueError, match="coupon_probs_other needs 4 entries"):
        LoggingPolicy.from_dict({"coupon_probs_other": [1.0]})


def test_parameter_table_documents_every_field():
    rows = MarketConfig.parameter_table()
    assert {r[0] for r in rows} == set(MarketConfig().to_dict())
    assert all(r[3] for r in rows)


def test_overrides_read_scientific_notation_as_numbers() -> None:
    from promogym.experiments.paths import parse_overrides

    got = parse_overrides(["lr_head=3e-3", "max_train_rows=1e5", "name=e5", "encoder=tiny", "dropout=0.1"])
    assert got == {"lr_head": 0.003, "max_train_rows": 100000, "name": "e5", "encoder": "tiny", "dropout": 0.1}
    assert isinstance(got["lr_head"], float) and isinstance(got["max_train_rows"], int)
