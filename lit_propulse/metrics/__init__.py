from lit_propulse.metrics.niqe import NIQE, fit_pristine_model, niqe
from lit_propulse.metrics.attributes import AttributeScoreDifference
