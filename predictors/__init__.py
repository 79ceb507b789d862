"""Conversion models: the `ConversionModel` protocol, the BERT model, baselines and metrics."""

from promogym.predictors.base import ConversionModel, validate_batch
from promogym.predictors.registry import load_model, market_for_data

__all__ = ["ConversionModel", "load_model", "market_for_data", "validate_batch"]
