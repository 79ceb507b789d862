"""Conversion models by name: ``bert:<checkpoint dir>``, ``gbdt:<file>``, ``logistic:<file>``,
``truth`` / ``world`` (the market's true probability) and ``ceiling`` (the best a text model can do)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from promogym.envs.market import Market
from promogym.predictors.base import ConversionModel

SPEC_HELP = "bert:<checkpoint dir> | gbdt:<file> | logistic:<file> | truth | ceiling"


def load_model(spec: str | ConversionModel, market: Market | None = None) -> ConversionModel:
    """Resolve a model spec (or pass a ConversionModel through)."""
    if not isinstance(spec, str):
        if not isinstance(spec, ConversionModel):
            raise ValueError(f"expected a model spec ({SPEC_HELP}) or a ConversionModel, got {type(spec).__name__}")
        return spec
    kind, _, arg = spec.partition(":")
    if kind in ("truth", "world", "ceiling"):
        from promogym.predictors.baselines import RevealedTruthModel, TruthModel

        if market is None:
            raise ValueError(f"model {spec!r} needs the market (the data's sidecar JSON with its world config)")
        return RevealedTruthModel(market) if kind == "ceiling" else TruthModel(market)
    if not arg:
        raise ValueError(f"model spec {spec!r} needs a path: {SPEC_HELP}")
    if kind == "bert":
        from promogym.predictors.bert import BertConversionModel

        return BertConversionModel.load(arg)
    if kind in ("gbdt", "logistic"):
        from promogym.predictors.baselines import _Pickled

        model = _Pickled.load(arg)
        if getattr(model, "name", None) != kind:
            raise ValueError(f"{arg} holds a {getattr(model, 'name', '?')} model, not {kind}")
        return model
    raise ValueError(f"unknown model kind {kind!r}; expected {SPEC_HELP}")


def market_for_data(data: str | Path) -> Market | None:
    """The market that generated a log file, from its sidecar JSON (None when there is none)."""
    side = Path(data).with_suffix(".json")
    if not side.is_file():
        return None
    meta: dict[str, Any] = json.loads(side.read_text())
    return Market(meta["world"]) if "world" in meta else None
