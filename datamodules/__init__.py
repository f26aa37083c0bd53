"""DataModules of lit_propulse: HR/LR pairs from image folders, CelebA-HQ, FFHQ, toy faces and a
generator's samples, with PULSE's degradations. A client of :mod:`lit_propulse.core` (DS, image
reading, SRBatch); nothing in ``lit_propulse`` below the LightningModules and commands imports it."""

from datamodules.celeba_hq import CelebAHQDataModule
from datamodules.degradations import Degradation, GaussianNoise, MotionBlur, SaltPepper
from datamodules.ffhq import FFHQDataModule
from datamodules.folder import FileSRDataModule, ImageFolderDataModule, ImageFolderDataset
from datamodules.prepare import PreparedDataset

__all__ = ["Degradation", "GaussianNoise", "MotionBlur", "SaltPepper"]
__all__ += ["FileSRDataModule", "ImageFolderDataModule", "ImageFolderDataset", "PreparedDataset"]
__all__ += ["CelebAHQDataModule", "FFHQDataModule"]
