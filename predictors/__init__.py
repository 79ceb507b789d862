"""Conversion models: the `ConversionModel` protocol, the BERT model, baselines and metrics; the model registry."""

from promogym.predictors.base import ConversionModel, validate_batch
from promogym.predictors.registry import (
    ModelSpec,
    check_spec,
    load_model,
    load_uplift_model,
    market_for_data,
    parse_spec,
    register_model,
    spec_help,
    unregister_model,
)

__all__ = ["ConversionModel", "ModelSpec", "check_spec", "load_model", "load_uplift_model", "market_for_data",
           "parse_spec", "register_model", "spec_help", "unregister_model", "validate_batch"]
