"""The ground-truth market: catalog, customers, utilities, dynamics and logged interactions."""

from promogym.envs.market.catalog import CATEGORIES, TIERS, Catalog
from promogym.envs.market.config import CUSTOMER_TYPE_NAMES, MarketConfig
from promogym.envs.market.customers import CUSTOMER_TYPES, Customers, CustomerType
from promogym.envs.market.world import WEEKDAYS, Market, MarketState, mnl_from_utility, sigmoid

__all__ = [
    "CATEGORIES",
    "CUSTOMER_TYPES",
    "CUSTOMER_TYPE_NAMES",
    "TIERS",
    "WEEKDAYS",
    "Catalog",
    "CustomerType",
    "Customers",
    "Market",
    "MarketConfig",
    "MarketState",
    "mnl_from_utility",
    "sigmoid",
]
