"""Data drawn from a StyleGAN2 itself: ground truth on the generator's manifold, with its true w+.

For tests and sanity checks of encoders and PULSE (an encoder that cannot recover a w+ the generator
made has a bug, not a domain gap), and for the G_ds stage, which trains on the generator's own
samples (Pro-PULSE Sec. III-C). Item ``i`` of a split is a pure function of (seed, split, i):
z_i ~ N(0, I) -> w (truncation toward ``latent_avg``) -> image with the generator's stored noise.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from datamodules.base import SRDataModule
from lit_propulse.core.downscale import downscale


class GeneratorSamplesDataset(Dataset):
    """Args:
    generator: the StyleGAN2 (lit_propulse.networks.stylegan2.Generator); kept in eval mode, on CPU.
    num_items: number of items.
    lr_size: LR side (DS of the image).
    seed: seed of the latents; the split is mixed in so train and test never share a latent.
    split: "train" or "test".
    truncation: truncation of w toward the generator's latent_avg (1 = none).
    render: False = no image is rendered (hr and lr are zeros of the right shapes; only the
        latents are meaningful): for the G_ds stage, where only the batch size matters.
    """

    def __init__(
        self, generator: torch.nn.Module, num_items: int, lr_size: int, seed: int = 0, split: str = "train", truncation: float = 1.0, render: bool = True
    ) -> None:
        if num_items < 1:
            raise ValueError(f"num_items must be >= 1, got {num_items}")
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        if lr_size >= generator.size or generator.size % lr_size:
            raise ValueError(f"lr_size {lr_size} must be smaller than and divide the generator size {generator.size}")
        self.G = generator.eval().requires_grad_(False)
        self.num_items, self.lr_size, self.seed, self.split = num_items, lr_size, seed, split
        self.truncation, self.render = truncation, render

    def __len__(self) -> int:
        return self.num_items

    def latent(self, index: int) -> torch.Tensor:
        """z of item ``index`` [z_dim] (deterministic)."""
        # (seed, split, index) mixed by numpy's SeedSequence into 32 bits: torch's CPU generator keeps
        # only the low 32 bits of a seed, and Python's hash() of a str is salted per process
        state = np.random.SeedSequence([int(self.seed), 0 if self.split == "train" else 1, int(index)]).generate_state(1)[0]
        g = torch.Generator().manual_seed(int(state))
        return torch.randn(self.G.z_dim, generator=g)

    @torch.no_grad()
    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self.num_items:
            raise IndexError(index)
        G = self.G
        w = G.truncate(G.mapping(self.latent(index)[None]), self.truncation)
        ws = G.to_ws(w)  # [1, num_ws, w_dim]
        if self.render:
            hr = G.synthesis(ws, noise="const").image.clamp(-1, 1)
            lr = downscale(hr, self.lr_size)
        else:
            hr = torch.zeros(1, 3, G.size, G.size)
            lr = torch.zeros(1, 3, self.lr_size, self.lr_size)
        return {"hr": hr[0], "lr": lr[0], "index": index, "name": f"gen_{self.split}_{index:06d}.png", "attrs": None, "ws": ws[0]}


class GeneratorSamplesDataModule(SRDataModule):
    """:class:`GeneratorSamplesDataset` splits behind :class:`SRDataModule` (batches are SRBatch; the
    true w+ stays available from the dataset by index).

    Args:
        generator: the StyleGAN2 to sample (in YAML: ``class_path: lit_propulse.networks.stylegan2.load_generator``).
        lr_size: LR side.
        num_train, num_test: items per split.
        truncation: see :class:`GeneratorSamplesDataset`.
        render: see :class:`GeneratorSamplesDataset`.
        sample_seed: seed of the latents (``seed`` seeds the order and flips, as in every DataModule).
        hflip: random horizontal flips in training; off by default here, unlike the other
            DataModules: a flipped image no longer matches its w+.
        **kwargs: the other loader settings of :class:`~datamodules.base.SRDataModule`
            (batch_size, num_workers, val_batch_size, pin_memory, seed, val_subset, shuffle_train,
            drop_last_train).
    """

    def __init__(
        self,
        generator: torch.nn.Module,
        lr_size: int = 8,
        num_train: int = 10_000,
        num_test: int = 500,
        truncation: float = 1.0,
        render: bool = True,
        sample_seed: int = 0,
        hflip: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(hflip=hflip, **kwargs)
        self.generator = generator
        self.hr_size, self.lr_size = generator.size, lr_size
        self.num_train, self.num_test = num_train, num_test
        self.truncation, self.render, self.sample_seed = truncation, render, sample_seed

    def build_dataset(self, split: str) -> Dataset:
        n = self.num_train if split == "train" else self.num_test
        return GeneratorSamplesDataset(self.generator, n, self.lr_size, self.sample_seed, split, self.truncation, self.render)
