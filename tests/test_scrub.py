import pytest

from promogym.envs.market import Market
from promogym.predictors.scrub import scrub


@pytest.mark.parametrize(("raw", "token", "leak"), [
    ("Contact jane.doe+shop@example.co.uk for returns", "[EMAIL]", "jane.doe"),
    ("Call me on +44 20 7946 0958 after six", "[PHONE]", "7946"),
    ("US number (415) 555-2671 please", "[PHONE]", "555-2671"),
    ("mobile 0049-170-1234567", "[PHONE]", "1234567"),
    ("landline 020 7946 0958", "[PHONE]", "7946 0958"),
    ("card 4111 1111 1111 1111 on file", "[CARD]", "1111 1111"),
    ("IBAN DE89 3704 0044 0532 0130 00 for refunds", "[IBAN]", "3704"),
    ("see https://example.com/u/123?ref=abc", "[URL]", "example.com"),
    ("last login from 192.168.10.24", "[IP]", "192.168"),
    ("follow @janedoe_shops on social", "[HANDLE]", "janedoe"),
])
def test_scrubber_removes_identifiers(raw, token, leak):
    out = scrub(raw)
    assert token in out and leak not in out


def test_scrubber_keeps_ordinary_shop_text():
    for text in ["Rated 4 stars by most buyers.", "Price 85.49, list price 94.99, 10% off.",
                 "Visits about once a week. Mostly shops for kitchen & dining and pet supplies."]:
        assert scrub(text) == text
    market = Market({"n_customers": 300, "n_products": 40})
    assert all(scrub(t) == t for t in market.customers.text + market.catalog.text)
