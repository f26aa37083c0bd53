"""DataModules and the data pipeline of lit_propulse (HR/LR pairs, toy faces, the downscaler DS)."""
from datamodules.batch import SRBatch, collate_sr
from datamodules.downscale import DS, downscale

__all__ = ["SRBatch", "collate_sr", "DS", "downscale"]
