"""Choice models fitted on a shop's past weeks and compared on its held-out weeks (`promogym shop compare`).

The shop folder's long table (``logs.parquet``, one row per alternative of a purchase occasion) is split by
week: the models fit on the train weeks, the validation weeks choose the conditional logit's ridge (and stop
the BERT fit early), the test weeks are scored. A seeded share of the products is held out of training entirely
(their rows leave the training occasions, and occasions that bought one are dropped: by the logit's
independence of irrelevant alternatives the rest is an exact choice subset), a designed cold start; products
first sold after the train weeks are a natural one. Models:

* **clogit**: the conditional logit with product fixed effects, log price and the promotion flags
  (:class:`~promogym.predictors.clogit.ConditionalLogit`), the ridge on the fixed effects chosen on validation;
* **gbdt**: the project's gradient boosting (target-encoded ids, category, the offer's numeric features, monotone
  in price) with the shop's promotion flags added, fitted on the IIA rows; a visit's choice from its logits;
* **bert**: the hybrid BERT choice model (:mod:`promogym.predictors.train`): the encoder reads the household's
  profile and the product's text, to which the row's promotions are added as a sentence ("On display in the
  store this week." ...); price, the shop's price history and the day enter the monotone head. It fits on the
  same sampled training occasions, holding out 10% of households for its early stopping and calibration.
  With ``bert_history`` a second fit, **bert_history**, reads a household profile that also says how often the
  household bought each category in the train weeks (the shop's own purchase history, in words).

Scores on the test weeks: log-likelihood per occasion (the chosen product, or none), top-1 hit rate on occasions
with a purchase (the chosen product has the highest probability), calibration (ECE of the rows' choice
probabilities; predicted against observed purchases), the same log-likelihood on the held-out and on the newly
launched products (each occasion restricted to those products, an exact choice subset), own-price elasticities
per product (the change of log P for a 5% higher price, averaged over the product's test rows: distribution and
share negative) and display / mailer lifts (the model's P on promoted rows against the same rows with the flag
off, beside the observed purchase rates with and without the flag, which confound the promotion with the
products and weeks it is used in).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from promogym.core.io import atomic_dir, package_versions, write_json
from promogym.predictors.baselines import GBDTConversionModel, _training_rows
from promogym.predictors.choice import choice_subset_rows, visit_choice_proba, visit_codes
from promogym.predictors.clogit import ConditionalLogit
from promogym.predictors.data import load_logs
from promogym.predictors.features import NUMERIC_FEATURES
from promogym.predictors.metrics import ece, reliability
from promogym.predictors.shop import with_offer_text, with_profile_text

log = logging.getLogger(__name__)
COMPARE_KIND = "promogym-shop-compare"
MARKER_FILE = "promogym-output.json"
RIDGES = (0.03, 0.3, 3.0, 30.0, 300.0)
PRICE_STEP = 1.05
SHOP_FLAGS = ("display", "mailer", "coupon_available")


@dataclasses.dataclass(frozen=True)
class CompareSettings:
    """The split, the sample sizes and the models of a comparison."""

    train_weeks: tuple[int, int] = (1, 40)
    val_weeks: tuple[int, int] = (41, 46)
    test_weeks: tuple[int, int] = (47, 53)
    train_occasions: int = 60_000
    eval_occasions: int = 0
    holdout_products: float = 0.1
    bert: str = "minilm"
    bert_epochs: int = 3
    bert_finetune_epochs: int = 0
    bert_history: bool = False
    seed: int = 0


def check_results_dir(out: str | Path, force: bool) -> Path:
    """The results folder: new or empty, or one this comparison wrote when ``force`` (ValueError otherwise)."""
    import json

    p = Path(out)
    if p.exists() and not p.is_dir():
        raise ValueError(f"--out {p} exists and is not a folder")
    if p.is_dir() and any(p.iterdir()):
        try:
            ours = json.loads((p / MARKER_FILE).read_text()).get("kind") == COMPARE_KIND
        except (OSError, ValueError, AttributeError):
            ours = False
        if not ours:
            raise ValueError(f"--out {p} is not empty and holds no comparison this program wrote; choose another")
        if not force:
            raise ValueError(f"--out {p} holds a comparison; pass --force to replace it")
    if not p.parent.is_dir():
        raise ValueError(f"--out's parent folder does not exist: {p.parent}")
    return p


# ------------------------------------------------------------------------------------------------ models
class ShopGBDT(GBDTConversionModel):
    """The project's GBDT with the shop's promotion flags as extra features (no monotone constraint on them)."""

    def __init__(self, extra: tuple[str, ...], seed: int = 0) -> None:
        super().__init__(seed=seed)
        self.extra = extra

    def _features(self, df: pd.DataFrame, user_code: np.ndarray, item_code: np.ndarray) -> np.ndarray:
        base = super()._features(df, user_code, item_code)
        return np.column_stack([base, *(df[c].to_numpy(dtype=float) for c in self.extra)])

    def fit(self, df: pd.DataFrame, world: Any = None) -> ShopGBDT:
        """Fit on the IIA rows of ``df`` as the parent does, with the promotion columns appended."""
        rows, _ = _training_rows(df, world)
        y = rows["purchased"].to_numpy(dtype=float)
        self.categories = sorted(rows["category"].astype(str).unique())
        visits = rows["visit_id"].to_numpy()
        u = self.user_enc.fit_transform(rows["user_id"].to_numpy(), y, seed=self.seed, groups=visits)
        i = self.item_enc.fit_transform(rows["item_id"].to_numpy(), y, seed=self.seed + 1, groups=visits)
        price_feats = ("log_shelf_rel", "log_paid_rel", "log_shelf_vs_fast", "log_shelf_vs_mid", "log_shelf_vs_slow")
        self.model.set_params(categorical_features=[2, 3], monotonic_cst=[
            0, 0, 0, 0, *(-1 if f in price_feats else 0 for f in NUMERIC_FEATURES), *([0] * len(self.extra))])
        self.model.fit(self._features(rows, u, i), y.astype(int))
        return self

    def logits(self, df: pd.DataFrame) -> np.ndarray:
        """Each row's utility: the log-odds of its binary purchase probability."""
        x = self._features(df, self.user_enc.transform(df["user_id"].to_numpy()),
                           self.item_enc.transform(df["item_id"].to_numpy()))
        p = np.clip(self.model.predict_proba(x)[:, 1], 1e-7, 1 - 1e-7)
        return np.log(p) - np.log1p(-p)


# ------------------------------------------------------------------------------------------------ scoring
def visit_ll(z: np.ndarray, df: pd.DataFrame) -> np.ndarray:
    """Log-likelihood of each visit's choice (the chosen product or none) under the MNL of logits ``z``."""
    p = visit_choice_proba(z, df["visit_id"].to_numpy())
    codes, n = visit_codes(df["visit_id"].to_numpy())
    y = df["purchased"].to_numpy(dtype=float)
    chosen = np.bincount(codes, weights=y * np.log(np.clip(p, 1e-12, 1)), minlength=n)
    total = np.bincount(codes, weights=p, minlength=n)
    bought = np.bincount(codes, weights=y, minlength=n)
    return chosen + (1 - bought) * np.log(np.clip(1 - total, 1e-12, 1))


def hit_rate(z: np.ndarray, df: pd.DataFrame) -> float:
    """Share of visits with a purchase whose chosen product has the highest logit of the visit."""
    codes, n = visit_codes(df["visit_id"].to_numpy())
    y = df["purchased"].to_numpy(dtype=bool)
    best = np.full(n, -np.inf)
    np.maximum.at(best, codes, z)
    hits = y & (z >= best[codes])
    bought = np.bincount(codes, weights=y.astype(float), minlength=n) > 0
    return float(np.bincount(codes, weights=hits.astype(float), minlength=n)[bought].clip(max=1).mean()) \
        if bought.any() else float("nan")


def subset_ll(z: np.ndarray, df: pd.DataFrame, keep: np.ndarray) -> tuple[dict[str, Any], np.ndarray]:
    """Log-likelihood per visit on the rows of ``keep`` (each visit restricted to them, an exact choice subset),
    with the per-visit values."""
    rows = choice_subset_rows(df, keep)
    if not rows.any():
        return {"occasions": 0, "purchases": 0, "ll_per_occasion": None, "hit_rate": None}, np.zeros(0)
    sub = df[rows]
    ll = visit_ll(z[rows], sub)
    return {"occasions": len(ll), "purchases": int(sub["purchased"].sum()), "ll_per_occasion": float(ll.mean()),
            "hit_rate": hit_rate(z[rows], sub)}, ll


def paired_difference(a: np.ndarray, b: np.ndarray, seed: int, resamples: int = 1000) -> dict[str, Any]:
    """Mean of ``a - b`` (per-occasion log-likelihoods of two models on the same occasions) with a 95% bootstrap
    interval over occasions."""
    if len(a) == 0:
        return {"mean": None, "ci95": None}
    d = np.asarray(a) - np.asarray(b)
    rng = np.random.default_rng(seed)
    means = np.array([d[rng.integers(0, len(d), len(d))].mean() for _ in range(resamples)])
    lo, hi = np.quantile(means, [0.025, 0.975])
    return {"mean": float(d.mean()), "ci95": [float(lo), float(hi)]}


def score_model(logits: Callable[[pd.DataFrame], np.ndarray], test: pd.DataFrame, holdout: np.ndarray,
                launched: np.ndarray) -> tuple[dict[str, Any], dict[str, Any]]:
    """(metrics, curves) of one model on the test rows; ``holdout`` and ``launched`` flag rows of cold products."""
    z = logits(test)
    p = visit_choice_proba(z, test["visit_id"].to_numpy())
    y = test["purchased"].to_numpy(dtype=float)
    ll = visit_ll(z, test)
    out: dict[str, Any] = {"ll_per_occasion": float(ll.mean()), "hit_rate": hit_rate(z, test),
                           "ece": float(ece(y, p)), "predicted_purchases": float(p.sum()),
                           "observed_purchases": float(y.sum())}
    out["holdout_products"], ll_held = subset_ll(z, test, holdout)
    out["launched_products"], ll_launched = subset_ll(z, test, launched)
    # own-price elasticities: d log P / d log price, from a 5% higher price on each row alone
    z_up = logits(test.assign(price=test["price"].to_numpy(dtype=float) * PRICE_STEP))
    row_el = (z_up - z) / np.log(PRICE_STEP) * (1 - p)
    by_product = pd.Series(row_el).groupby(test["item_id"].to_numpy()).mean()
    q = np.quantile(by_product.to_numpy(), [0.1, 0.25, 0.5, 0.75, 0.9])
    out["elasticity"] = {"products": len(by_product), "share_negative": float((by_product < 0).mean()),
                         "median": float(q[2]), "quantiles_10_25_50_75_90": [float(v) for v in q],
                         "mean": float(by_product.mean())}
    lifts = {}
    for flag in SHOP_FLAGS:
        if flag not in test.columns:
            continue
        on = test[flag].to_numpy() > 0
        if not on.any() or on.all():
            continue
        z_off = logits(test.assign(**{flag: np.zeros(len(test), test[flag].to_numpy().dtype)}))
        p_off = visit_choice_proba(z_off, test["visit_id"].to_numpy())
        lifts[flag] = {"model_lift": float(p[on].mean() / p_off[on].mean()),
                       "model_rate_ratio": float(p[on].mean() / p[~on].mean()),
                       "observed_rate_ratio": float(y[on].mean() / y[~on].mean())}
    out["lifts"] = lifts
    mean_p, frac, _ = reliability(y, p, bins=12)
    curves = {"reliability": [mean_p.tolist(), frac.tolist()], "elasticities": by_product.to_numpy().tolist(),
              "ll": {"all": ll, "holdout_products": ll_held, "launched_products": ll_launched}}
    return out, curves


# ------------------------------------------------------------------------------------------------ pipeline
def _sample_visits(df: pd.DataFrame, mask: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    if n <= 0:
        return mask
    visits = np.unique(df["visit_id"].to_numpy()[mask])
    if len(visits) <= n:
        return mask
    keep = rng.choice(visits, n, replace=False)
    return mask & np.isin(df["visit_id"].to_numpy(), keep)


def _weeks(df: pd.DataFrame) -> np.ndarray:
    return df["week"].to_numpy() if "week" in df.columns else df["day"].to_numpy() // 7 + 1


BANDS = ((0.0, "never"), (0.1, "rarely"), (0.3, "sometimes"), (0.6, "often"), (1.01, "usually"))


def history_profiles(rows: pd.DataFrame) -> dict[int, str]:
    """Per household, a sentence of how often its past occasions bought each category (never, rarely (< 10%),
    sometimes (< 30%), often (< 60%), usually): the shop's own purchase history as profile words."""
    per = rows.groupby(["user_id", "visit_id"], sort=False).agg(category=("category", "first"),
                                                                bought=("purchased", "max")).reset_index()
    share = per.groupby(["user_id", "category"], as_index=False)["bought"].mean()
    out: dict[int, list[str]] = {}
    for user, category, value in zip(share["user_id"], share["category"], share["bought"], strict=True):
        word = "never" if value == 0 else next(w for cut, w in BANDS[1:] if value < cut)
        out.setdefault(int(str(user)), []).append(f"{str(category).lower()} {word}")
    return {u: "In past weeks the household bought " + ", ".join(parts) + "." for u, parts in out.items()}


def _bert_rows(rows: pd.DataFrame, history: dict[int, str] | None) -> pd.DataFrame:
    """The rows the BERT hybrid reads: promotions in the product text; with ``history``, the household's purchase
    history appended to its profile (households without one: "No past purchases recorded.")."""
    rows = with_offer_text(rows)
    return rows if history is None else with_profile_text(rows, history)


def fit_bert(train: pd.DataFrame, folder: Path, encoder: str, epochs: int, seed: int, finetune_epochs: int = 0
             ) -> Any:
    """The hybrid BERT choice model fitted on ``train`` (with offer texts) into ``folder``: the head and tower pooling
    on the frozen encoder for ``epochs``, then ``finetune_epochs`` with the top two encoder layers trained."""
    from promogym.predictors.train import FitConfig, fit

    folder.mkdir(parents=True, exist_ok=True)
    data = folder / "train.parquet"
    train.to_parquet(data, index=False)
    cfg = FitConfig(encoder=encoder, head_epochs=epochs, finetune_epochs=finetune_epochs, ensemble=0, refine_epochs=2,
                    calibration="shift", seed=seed, val_rows=40_000)
    return fit(data, cfg, folder / "model")


def compare(shop: Path, out: Path, settings: CompareSettings, work: Path | None = None,
            command: str = "") -> dict[str, Any]:
    """Fit the models, score them on the test weeks and write the results folder ``out`` atomically
    (comparison.json, comparison.md, shop_compare.png and the fitted conditional logit, clogit.json); ``work``
    holds the BERT fit (default ``runs/shop_compare``)."""
    s = settings
    started = time.perf_counter()
    logs_file = shop / "logs.parquet"
    if not logs_file.is_file():
        raise ValueError(f"{shop} holds no shop (logs.parquet missing); write one with `promogym import`")
    df = load_logs(logs_file)
    if "category" in df.columns:
        df["category"] = df["category"].astype(str)
    week = _weeks(df)
    rng = np.random.default_rng(s.seed)
    products = np.unique(df["item_id"].to_numpy())
    held = rng.choice(products, round(s.holdout_products * len(products)), replace=False)
    is_held = np.isin(df["item_id"].to_numpy(), held)
    first_week = pd.Series(week).groupby(df["item_id"].to_numpy()).min()
    launched_ids = first_week.index[first_week > s.train_weeks[1]].to_numpy()
    is_launched = np.isin(df["item_id"].to_numpy(), launched_ids)

    def in_weeks(span: tuple[int, int]) -> np.ndarray:
        return (week >= span[0]) & (week <= span[1])

    train_mask = _sample_visits(df, choice_subset_rows(df, in_weeks(s.train_weeks) & ~is_held),
                                s.train_occasions, rng)
    val_mask = _sample_visits(df, choice_subset_rows(df, in_weeks(s.val_weeks) & ~is_held),
                              s.eval_occasions, rng)
    test_mask = _sample_visits(df, in_weeks(s.test_weeks), s.eval_occasions, rng)
    train, val, test = df[train_mask].reset_index(drop=True), df[val_mask].reset_index(drop=True), \
        df[test_mask].reset_index(drop=True)
    if train.empty or val.empty or test.empty:
        raise ValueError("the train, validation or test weeks hold no occasion")
    test_held, test_launched = is_held[test_mask], is_launched[test_mask]
    sizes: dict[str, Any] = {name: {"occasions": int(part["visit_id"].nunique()), "rows": len(part),
                    "purchases": int(part["purchased"].sum())} for name, part in
             (("train", train), ("validation", val), ("test", test))}
    sizes["products"] = len(products)
    sizes["holdout_products"] = len(held)
    sizes["launched_products"] = len(launched_ids)
    sizes["households"] = int(df["user_id"].nunique())
    results: dict[str, Any] = {}
    curves: dict[str, Any] = {}
    profile_words: dict[str, dict[int, str]] = {}
    fitted: dict[str, Any] = {}

    # conditional logit: the ridge chosen on the validation weeks
    t0 = time.perf_counter()
    grid = {}
    for ridge in RIDGES:
        model = ConditionalLogit(ridge=ridge).fit(train)
        grid[ridge] = (float(visit_ll(model.predict_logits(val), val).mean()), model)
    best = max(grid, key=lambda r: grid[r][0])
    clogit = grid[best][1]
    fitted["clogit"] = {"ridge": best, "validation_ll_by_ridge": {str(r): v[0] for r, v in grid.items()},
                        "coefficients": dict(zip(["log_price", *clogit.features], map(float, clogit.coef),
                                                 strict=True)),
                        "cold_products": "a product without a fitted fixed effect gets 0 (its category's intercept)",
                        "seconds": round(time.perf_counter() - t0, 1)}
    results["clogit"], curves["clogit"] = score_model(clogit.predict_logits, test, test_held, test_launched)
    log.info("clogit done")

    t0 = time.perf_counter()
    extra = tuple(c for c in SHOP_FLAGS if c in df.columns)  # a loyalty discount is part of the price paid
    gbdt = ShopGBDT(extra, seed=s.seed).fit(train)
    fitted["gbdt"] = {"extra_features": list(extra), "iterations": int(gbdt.model.n_iter_),
                      "seconds": round(time.perf_counter() - t0, 1),
                      "validation_ll": float(visit_ll(gbdt.logits(val), val).mean())}
    results["gbdt"], curves["gbdt"] = score_model(gbdt.logits, test, test_held, test_launched)
    log.info("gbdt done")

    if s.bert != "none":
        profiles: dict[str, dict[int, str] | None] = {"bert": None}
        if s.bert_history:
            profiles["bert_history"] = history_profiles(df[choice_subset_rows(df, in_weeks(s.train_weeks) & ~is_held)])
        for name, history in profiles.items():
            t0 = time.perf_counter()
            folder = (work or Path("runs") / "shop_compare") / name
            bert = fit_bert(_bert_rows(train, history), folder, s.bert, s.bert_epochs, s.seed, s.bert_finetune_epochs)

            def bert_logits(rows: pd.DataFrame, bert: Any = bert, history: Any = history) -> np.ndarray:
                p = np.clip(bert.predict_proba(_bert_rows(rows, history)), 1e-7, 1 - 1e-7)
                return np.log(p) - np.log1p(-p)

            kept: dict[str, Any] = min(bert.meta.get("history", []), key=lambda h: h["val_choice_nll"], default={})
            fitted[name] = {"encoder": s.bert, "head_epochs": s.bert_epochs,
                            "finetune_epochs": s.bert_finetune_epochs,
                            "kept_state": {"stage": kept.get("stage"), "epoch": kept.get("epoch")},
                            "fit_history": bert.meta.get("history"),
                            "profile": "demographics" if history is None else
                            "demographics + category purchase frequencies of the train weeks",
                            "fit_rows": sizes["train"]["rows"], "checkpoint": str(folder / "model"),
                            "seconds": round(time.perf_counter() - t0, 1),
                            "validation_ll": float(visit_ll(bert_logits(val), val).mean())}
            results[name], curves[name] = score_model(bert_logits, test, test_held, test_launched)
            if history is not None:
                profile_words[name] = history
    else:
        fitted["bert"] = {"not_measured": "the BERT hybrid was not fitted (--bert none)"}

    for name in results:
        if name != "clogit":
            results[name]["ll_difference_vs_clogit"] = {
                part: paired_difference(curves[name]["ll"][part], curves["clogit"]["ll"][part], s.seed)
                for part in ("all", "holdout_products", "launched_products")}
    result = {"kind": COMPARE_KIND, "shop": str(shop), "command": command, "settings": dataclasses.asdict(s),
              "sizes": sizes, "fitted": fitted, "test": results, "seconds": round(time.perf_counter() - started, 1),
              "versions": package_versions()}
    result["markdown"] = markdown(result)
    with atomic_dir(out) as tmp:
        write_json(tmp / "comparison.json", {k: v for k, v in result.items() if k != "markdown"})
        (tmp / "comparison.md").write_text(str(result["markdown"]) + "\n")
        plot(curves, tmp / "shop_compare.png")
        clogit.save(tmp / "clogit.json")
        for name, words in profile_words.items():  # what the env and the back-test append to the profiles
            write_json(tmp / f"{name}_profiles.json", {str(u): t for u, t in sorted(words.items())})
        write_json(tmp / MARKER_FILE, {"kind": COMPARE_KIND})
    return result


def _f(v: Any, fmt: str = "{:.4f}") -> str:
    return "n/a" if v is None or (isinstance(v, float) and not np.isfinite(v)) else fmt.format(v)


def markdown(result: dict[str, Any]) -> str:
    """The comparison table (and its notes) as markdown."""
    sz, st = result["sizes"], result["settings"]
    lines = [f"Shop `{result['shop']}`: train weeks {st['train_weeks'][0]}-{st['train_weeks'][1]} "
             f"({sz['train']['occasions']:,} occasions sampled, {sz['train']['rows']:,} alternatives), validation "
             f"{st['val_weeks'][0]}-{st['val_weeks'][1]} ({sz['validation']['occasions']:,}), test weeks "
             f"{st['test_weeks'][0]}-{st['test_weeks'][1]} ({sz['test']['occasions']:,} occasions, "
             f"{sz['test']['purchases']:,} purchases); {sz['products']} products, {sz['holdout_products']} held out "
             f"of training, {sz['launched_products']} first sold after the train weeks.", "",
             "| model | LL / occasion | top-1 hit | ECE | predicted / observed purchases | LL / occ. held-out products "
             "| LL / occ. launched products | elasticity median [p10, p90] | share negative | display lift (model; "
             "observed ratio) | mailer lift (model; observed ratio) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in result["test"].items():
        el, lifts = r["elasticity"], r["lifts"]
        q = el["quantiles_10_25_50_75_90"]

        def lift(flag: str, lifts: dict[str, Any] = lifts) -> str:
            x = lifts.get(flag)
            return "n/a" if x is None else f"{x['model_lift']:.2f} ({x['model_rate_ratio']:.2f}; " \
                                           f"{x['observed_rate_ratio']:.2f})"

        lines.append(f"| {name} | {_f(r['ll_per_occasion'])} | {_f(r['hit_rate'], '{:.3f}')} | {_f(r['ece'])} | "
                     f"{r['predicted_purchases']:,.0f} / {r['observed_purchases']:,.0f} | "
                     f"{_f(r['holdout_products']['ll_per_occasion'])} | {_f(r['launched_products']['ll_per_occasion'])}"
                     f" | {el['median']:.2f} [{q[0]:.2f}, {q[4]:.2f}] | {el['share_negative']:.1%} | "
                     f"{lift('display')} | {lift('mailer')} |")
    for name, r in result["test"].items():
        diff = r.get("ll_difference_vs_clogit")
        if diff:
            parts = [f"{part.replace('_', ' ')} {d['mean']:+.4f} [{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}]"
                     for part, d in diff.items() if d["mean"] is not None]
            lines += ["", f"{name} - clogit, LL per occasion (95% bootstrap CI over occasions): {'; '.join(parts)}."]
    if "bert" not in result["test"]:
        lines += ["", f"bert: not measured ({result['fitted']['bert'].get('not_measured', '')})."]
    ho = next(iter(result["test"].values()))
    lines += ["", f"Held-out products: {ho['holdout_products']['occasions']:,} test occasions restricted to them "
                  f"({ho['holdout_products']['purchases']:,} purchases); launched products: "
                  f"{ho['launched_products']['occasions']:,} occasions ({ho['launched_products']['purchases']:,} "
                  f"purchases). A lift is the model's mean choice probability on promoted rows over the same rows "
                  f"with the flag off; in brackets the model's and the observed purchase rates of promoted over "
                  f"other rows.", "", f"Command: `{result['command']}`"]
    return "\n".join(lines)


def plot(curves: dict[str, Any], path: Path) -> None:
    """Reliability of the choice probabilities and the distribution of product elasticities, per model."""
    from promogym.core.plots import save_png, two_panels

    fig, (ax1, ax2) = two_panels()
    top = 0.0
    for name, c in curves.items():
        mean_p, frac = c["reliability"]
        ax1.plot(mean_p, frac, marker="o", label=name)
        top = max(top, max(mean_p, default=0), max(frac, default=0))
        ax2.hist(c["elasticities"], bins=30, alpha=0.5, label=name)
    ax1.plot([0, top], [0, top], color="grey", linestyle="--", linewidth=1)
    ax1.set_xlabel("predicted choice probability")
    ax1.set_ylabel("observed purchase share")
    ax1.set_title("calibration (test weeks)")
    ax1.legend()
    ax2.axvline(0, color="grey", linewidth=1)
    ax2.set_xlabel("own-price elasticity per product")
    ax2.set_ylabel("products")
    ax2.set_title("elasticities (test weeks)")
    ax2.legend()
    save_png(fig, path)
