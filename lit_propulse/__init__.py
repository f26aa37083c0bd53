"""lit_propulse: Pro-PULSE (IEEE TIP 2022) and PULSE (CVPR 2020) on StyleGAN2, with PyTorch Lightning."""

__version__ = "0.1.0"
