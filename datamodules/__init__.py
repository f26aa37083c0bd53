"""DataModules and the data pipeline of lit_propulse (HR/LR pairs, toy faces, the downscaler DS)."""
from datamodules.batch import SRBatch, collate_sr
from datamodules.downscale import DS, downscale
from datamodules.degradations import Degradation, GaussianNoise, MotionBlur, SaltPepper
from datamodules.folder import BadImageError, FileSRDataModule, ImageFolderDataModule, ImageFolderDataset
from datamodules.celeba_hq import CelebAHQDataModule
from datamodules.ffhq import FFHQDataModule
from datamodules.prepare import PreparedDataset

__all__ = ["SRBatch", "collate_sr", "DS", "downscale"]
__all__ += ["Degradation", "GaussianNoise", "MotionBlur", "SaltPepper"]
__all__ += ["BadImageError", "FileSRDataModule", "ImageFolderDataModule", "ImageFolderDataset", "PreparedDataset"]
__all__ += ["CelebAHQDataModule", "FFHQDataModule"]
