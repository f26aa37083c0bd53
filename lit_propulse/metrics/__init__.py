"""Metrics as torchmetrics ``Metric``s (NIQE, attribute-score difference; quality metrics in
:mod:`lit_propulse.metrics.quality`)."""

from lit_propulse.metrics.attributes import AttributeScoreDifference
from lit_propulse.metrics.niqe import NIQE, fit_pristine_model, niqe

__all__ = ["NIQE", "AttributeScoreDifference", "fit_pristine_model", "niqe"]
