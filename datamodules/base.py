"""The shared base of every super-resolution DataModule: loaders, seeding, flips and DDP sharding.

Subclasses (toy faces, image folders, CelebA-HQ, FFHQ) only implement
:meth:`SRDataModule.build_dataset`, returning a map-style dataset whose items are
``{"hr": [3, H, W], "lr": [3, h, w], "index": int, "name": str, "attrs": [A] | None}``; every loader
collates them into a :class:`~lit_propulse.core.batch.SRBatch`. Splits are ``"train"`` and ``"test"``;
validation runs on the first ``val_subset`` test items.

Samplers and DDP (checked against pytorch-lightning 2.6, ``trainer/connectors/data_connector.py``):
Lightning replaces a loader's sampler under DDP only when it is *not* a
:class:`~torch.utils.data.DistributedSampler` (``_requires_distributed_sampler``); any other custom
sampler would be wrapped in ``DistributedSamplerWrapper``, which pads every rank to the same length
with duplicated indices. Both samplers here therefore subclass ``DistributedSampler`` and read the
world size and rank from ``torch.distributed`` themselves, so Lightning keeps them as they are with
either value of ``Trainer(use_distributed_sampler=...)``:

* :class:`TrainSampler` shuffles with ``seed + epoch`` (Lightning calls ``set_epoch``), pads like
  ``DistributedSampler`` (every rank needs the same number of steps), and draws the horizontal
  flips, one bit per (seed, epoch, index), independent of world size and worker count.
* :class:`EvalSampler` gives rank ``r`` the indices ``r, r + W, r + 2W, ...``: every test index
  exactly once over all ranks, no padding. Ranks may hold one batch more or less than each other,
  so per-step collectives (``self.log(..., on_step=True, sync_dist=True)``) must be avoided in
  evaluation; reduce at epoch end (torchmetrics states) instead.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from lit_propulse.core.batch import collate_sr

SPLITS = ("train", "test")


def world_and_rank() -> tuple[int, int]:
    """``(world_size, rank)`` of the initialised default process group, ``(1, 0)`` without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def _resolve_world(num_replicas: int | None, rank: int | None) -> tuple[int, int]:
    world, own_rank = world_and_rank()
    num_replicas = world if num_replicas is None else int(num_replicas)
    rank = own_rank if rank is None else int(rank)
    if num_replicas < 1 or not 0 <= rank < num_replicas:
        raise ValueError(f"invalid num_replicas={num_replicas}, rank={rank}")
    return num_replicas, rank


def flip_bits(seed: int, epoch: int, n: int) -> np.ndarray:
    """[n] bool: whether item ``i`` is flipped in ``epoch``; a pure function of (seed, epoch, i)."""
    return np.random.default_rng([int(seed), int(epoch), 0x0F11B]).random(n) < 0.5


class TrainSampler(DistributedSampler):
    """Seeded train order, sharded over ranks, optionally yielding ``(index, flip)`` pairs.

    Args:
        dataset: the (unwrapped or :class:`HFlipDataset`-wrapped) train dataset; only its length is used.
        seed: seeds both the per-epoch permutation (``seed + epoch``) and the flip bits.
        shuffle: False = indices in order every epoch.
        hflip: True = yield ``(index, flip)`` for :class:`HFlipDataset`; False = plain indices.
        num_replicas: number of ranks; None = from ``torch.distributed`` (1 when not initialised).
        rank: this rank; None = from ``torch.distributed`` (0 when not initialised).
    """

    def __init__(
        self,
        dataset: Dataset,
        seed: int = 0,
        shuffle: bool = True,
        hflip: bool = False,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        num_replicas, rank = _resolve_world(num_replicas, rank)
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=False)
        self.hflip = hflip

    def __iter__(self) -> Iterator[Any]:
        indices = list(super().__iter__())
        if not self.hflip:
            return iter(indices)
        flips = flip_bits(self.seed, self.epoch, len(self.dataset))
        return iter([(i, bool(flips[i])) for i in indices])


class EvalSampler(DistributedSampler):
    """In-order evaluation indices, rank ``r`` of ``W`` getting ``r::W``: each index exactly once.

    A ``DistributedSampler`` subclass only so that Lightning leaves it in place under DDP (see the
    module docstring); unlike its parent it never pads. Raises ``ValueError`` when the dataset has
    fewer items than ranks, since a rank without batches would skip the evaluation loop and
    deadlock the others at the epoch-end metric synchronisation.

    Args:
        dataset: the evaluation dataset; only its length is used.
        num_replicas: number of ranks; None = from ``torch.distributed`` (1 when not initialised).
        rank: this rank; None = from ``torch.distributed`` (0 when not initialised).
    """

    def __init__(self, dataset: Dataset, num_replicas: int | None = None, rank: int | None = None) -> None:
        num_replicas, rank = _resolve_world(num_replicas, rank)
        n = len(dataset)  # type: ignore[arg-type]
        if n < num_replicas:
            raise ValueError(f"evaluation set has {n} items, fewer than the {num_replicas} ranks")
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=False)
        self.num_samples = len(range(rank, n, num_replicas))
        self.total_size = n

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.total_size, self.num_replicas))

    def __len__(self) -> int:
        return self.num_samples


class HFlipDataset(Dataset):
    """Wraps an SR dataset; key ``(index, True)`` returns item ``index`` with hr and lr mirrored.

    Plain integer keys (and ``(index, False)``) return the item unchanged. The flip decision comes
    from :class:`TrainSampler`, so it is seeded and identical whatever the number of workers.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: int | tuple[int, bool]) -> dict[str, Any]:
        index, flip = key if isinstance(key, tuple) else (key, False)
        item = self.dataset[index]
        if not flip:
            return item
        item = dict(item)
        item["hr"] = item["hr"].flip(-1)  # [3, H, W], mirror the width axis
        item["lr"] = item["lr"].flip(-1)
        return item


class SRDataModule(pl.LightningDataModule, abc.ABC):
    """Base DataModule: subclasses implement :meth:`build_dataset` and set ``hr_size`` / ``lr_size``.

    Args:
        batch_size: per-device batch size for training (and evaluation unless ``val_batch_size``).
        num_workers: DataLoader worker processes per device; 0 = load in the main process.
        val_batch_size: per-device batch size of the val/test/predict loaders; None = ``batch_size``.
        pin_memory: pin host memory of batches (useful with CUDA).
        seed: seeds the train order and flips (the data itself is the subclass's business).
        val_subset: validation uses only the first N test items; None = all of them. Test and
            predict loaders always use the whole test split.
        shuffle_train: False = train items in order every epoch.
        drop_last_train: drop the last incomplete train batch.
        hflip: random horizontal flips of hr and lr together in training; False = none.
    """

    #: HR / LR side lengths in pixels; subclasses set them (None = unknown / variable).
    hr_size: int | None = None
    lr_size: int | None = None

    def __init__(
        self,
        batch_size: int = 8,
        num_workers: int = 0,
        val_batch_size: int | None = None,
        pin_memory: bool = False,
        seed: int = 0,
        val_subset: int | None = None,
        shuffle_train: bool = True,
        drop_last_train: bool = True,
        hflip: bool = True,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        if val_batch_size is not None and val_batch_size < 1:
            raise ValueError(f"val_batch_size must be >= 1 or None, got {val_batch_size}")
        if val_subset is not None and val_subset < 1:
            raise ValueError(f"val_subset must be >= 1 or None, got {val_subset}")
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.val_batch_size = batch_size if val_batch_size is None else val_batch_size
        self.pin_memory = pin_memory
        self.seed = seed
        self.val_subset = val_subset
        self.shuffle_train = shuffle_train
        self.drop_last_train = drop_last_train
        self.hflip = hflip
        self._datasets: dict[str, Dataset] = {}

    # ---- to implement -------------------------------------------------------------------------
    @abc.abstractmethod
    def build_dataset(self, split: str) -> Dataset:
        """Return the map-style dataset of ``split`` (``"train"`` or ``"test"``), items as above."""

    @property
    def attr_names(self) -> tuple[str, ...]:
        """Names of the ``attrs`` columns; () when the data has no attribute labels."""
        return ()

    # ---- datasets -----------------------------------------------------------------------------
    def dataset(self, split: str) -> Dataset:
        """The dataset of ``split``, built once per process."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if split not in self._datasets:
            self._datasets[split] = self.build_dataset(split)
        return self._datasets[split]

    def setup(self, stage: str) -> None:
        splits = ("train", "test") if stage == "fit" else ("test",)
        for split in splits:
            self.dataset(split)

    def val_dataset(self) -> Dataset:
        """The first ``val_subset`` test items (all of them when None)."""
        test = self.dataset("test")
        n = len(test)  # type: ignore[arg-type]
        if self.val_subset is None or self.val_subset >= n:
            return test
        return Subset(test, range(self.val_subset))

    # ---- loaders ------------------------------------------------------------------------------
    def train_dataloader(self) -> DataLoader:
        data = self.dataset("train")
        if self.hflip:
            data = HFlipDataset(data)
        sampler = TrainSampler(data, seed=self.seed, shuffle=self.shuffle_train, hflip=self.hflip)
        return DataLoader(
            data,
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            collate_fn=collate_sr,
            pin_memory=self.pin_memory,
            drop_last=self.drop_last_train,
            persistent_workers=self.num_workers > 0,
            generator=torch.Generator().manual_seed(self.seed),
        )

    def _eval_loader(self, data: Dataset) -> DataLoader:
        return DataLoader(
            data,
            batch_size=self.val_batch_size,
            sampler=EvalSampler(data),
            num_workers=self.num_workers,
            collate_fn=collate_sr,
            pin_memory=self.pin_memory,
            drop_last=False,
            persistent_workers=self.num_workers > 0,
        )

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader(self.val_dataset())

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader(self.dataset("test"))

    def predict_dataloader(self) -> DataLoader:
        return self._eval_loader(self.dataset("test"))
