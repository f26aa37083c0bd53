"""SRDataModule (through ToyFacesDataModule): batches, seeding, flips and DDP sharding of evaluation."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.utils.data import DistributedSampler

from datamodules.base import EvalSampler, HFlipDataset, SRDataModule, TrainSampler, flip_bits
from datamodules.toy_faces import TOY_ATTRIBUTES, ToyFacesDataModule
from lit_propulse.core.batch import SRBatch
from lit_propulse.core.downscale import downscale

pytestmark = pytest.mark.slow  # end-to-end runs: outside `pytest -m "not slow"`

SMALL = dict(hr_size=16, lr_size=4, num_train=10, num_test=7, cache="memory", batch_size=4)


def _dm(**kw) -> ToyFacesDataModule:
    args = dict(SMALL)
    args.update(kw)
    return ToyFacesDataModule(**args)


def _indices(loader) -> list[int]:
    return [i for batch in loader for i in batch.index.tolist()]


# ---- batches ----------------------------------------------------------------------------------------
def test_batches_are_srbatches_with_right_shapes():
    dm = _dm(val_batch_size=3)
    dm.setup("fit")
    assert dm.attr_names == TOY_ATTRIBUTES and (dm.hr_size, dm.lr_size) == (16, 4)
    batches = list(dm.train_dataloader())
    assert len(batches) == 2  # 10 items, batch 4, drop_last
    for b in batches:
        assert isinstance(b, SRBatch) and len(b) == 4
        assert b.hr.shape == (4, 3, 16, 16) and b.lr.shape == (4, 3, 4, 4)
        assert b.attrs.shape == (4, len(TOY_ATTRIBUTES)) and set(b.attrs.unique().tolist()) <= {0.0, 1.0}
        assert b.index.dtype == torch.long and len(b.name) == 4
        assert b.hr.min() >= -1 and b.hr.max() <= 1
        torch.testing.assert_close(b.lr, downscale(b.hr, 4), rtol=0, atol=1e-6)  # flips keep LR = DS(HR)
    val = list(dm.val_dataloader())
    assert [len(b) for b in val] == [3, 3, 1]  # eval keeps the last partial batch
    assert _indices(val) == list(range(7))
    assert val[0].name[0] == "toy_000010.png"  # test split starts at render index num_train


def test_val_subset_and_full_test_split():
    dm = _dm(val_subset=5)
    dm.setup("validate")
    assert _indices(dm.val_dataloader()) == [0, 1, 2, 3, 4]
    assert _indices(dm.test_dataloader()) == list(range(7))
    assert _indices(dm.predict_dataloader()) == list(range(7))
    assert "train" not in dm._datasets  # validate/test/predict never build the train split


def test_train_loader_is_seeded():
    def epoch_batches(dm, epoch):
        loader = dm.train_dataloader()
        loader.sampler.set_epoch(epoch)  # what Lightning does at every epoch start
        return [(b.index.tolist(), b.hr) for b in loader]

    a, b, c = _dm(seed=1), _dm(seed=1), _dm(seed=2)
    for dm in (a, b, c):
        dm.setup("fit")
    ea, eb, ec = epoch_batches(a, 0), epoch_batches(b, 0), epoch_batches(c, 0)
    assert [i for i, _ in ea] == [i for i, _ in eb]
    assert all(torch.equal(x, y) for (_, x), (_, y) in zip(ea, eb))
    assert [i for i, _ in ea] != [i for i, _ in ec]
    assert [i for i, _ in epoch_batches(a, 1)] != [i for i, _ in ea]  # a new order each epoch
    unshuffled = _dm(shuffle_train=False, drop_last_train=False)
    unshuffled.setup("fit")
    assert _indices(unshuffled.train_dataloader()) == list(range(10))


def test_train_loader_same_with_workers():
    dm0, dm2 = _dm(seed=5), _dm(seed=5, num_workers=2)
    dm0.setup("fit")
    dm2.setup("fit")
    loader2 = dm2.train_dataloader()
    assert loader2.persistent_workers
    for b0, b2 in zip(dm0.train_dataloader(), loader2):
        assert torch.equal(b0.index, b2.index) and torch.equal(b0.hr, b2.hr) and torch.equal(b0.lr, b2.lr)


# ---- flips ------------------------------------------------------------------------------------------
def test_flip_is_deterministic_and_consistent():
    dm = _dm()
    dm.setup("fit")
    base = dm.dataset("train")
    data = HFlipDataset(base)
    item, flipped = data[(3, False)], data[(3, True)]
    assert torch.equal(item["hr"], base[3]["hr"]) and torch.equal(data[3]["hr"], base[3]["hr"])
    assert torch.equal(flipped["hr"], item["hr"].flip(-1)) and torch.equal(flipped["lr"], item["lr"].flip(-1))
    assert not torch.equal(flipped["hr"], item["hr"])  # toy faces are not mirror-symmetric
    torch.testing.assert_close(flipped["lr"], downscale(flipped["hr"][None], 4)[0], rtol=0, atol=1e-6)
    assert torch.equal(flipped["attrs"], item["attrs"]) and flipped["index"] == 3

    bits = flip_bits(0, 0, 1000)
    assert np.array_equal(bits, flip_bits(0, 0, 1000))
    assert 0.4 < bits.mean() < 0.6
    assert not np.array_equal(bits, flip_bits(0, 1, 1000)) and not np.array_equal(bits, flip_bits(1, 0, 1000))


def test_train_sampler_flips_depend_only_on_seed_epoch_index():
    data = list(range(11))
    single = dict(TrainSampler(data, seed=3, hflip=True, num_replicas=1, rank=0))
    sharded = {}
    for rank in (0, 1):
        s = TrainSampler(data, seed=3, hflip=True, num_replicas=2, rank=rank)
        sharded.update(dict(s))
    assert set(single) == set(range(11)) and sharded == single  # same flip per index, any world size
    assert set(single.values()) == {True, False}
    s = TrainSampler(data, seed=3, hflip=True, num_replicas=1, rank=0)
    s.set_epoch(1)
    assert dict(s) != single
    assert all(isinstance(i, int) for i in TrainSampler(data, seed=3, hflip=False, num_replicas=1, rank=0))


def test_no_hflip_means_no_flipped_items():
    dm = _dm(hflip=False, shuffle_train=False, drop_last_train=False)
    dm.setup("fit")
    base = dm.dataset("train")
    hr = torch.cat([b.hr for b in dm.train_dataloader()])
    assert torch.equal(hr, torch.stack([base[i]["hr"] for i in range(10)]))
    dm_flip = _dm(hflip=True, shuffle_train=False, drop_last_train=False)
    dm_flip.setup("fit")
    hr_flip = torch.cat([b.hr for b in dm_flip.train_dataloader()])
    flipped = [not torch.equal(hr_flip[i], hr[i]) for i in range(10)]
    assert flipped == flip_bits(0, 0, 10).tolist()


# ---- DDP evaluation sampler -------------------------------------------------------------------------
@pytest.mark.parametrize("n, world", [(7, 2), (5, 2), (10, 3), (1, 1)])
def test_eval_sampler_each_index_exactly_once(n, world):
    data = list(range(n))
    shards = [list(EvalSampler(data, num_replicas=world, rank=r)) for r in range(world)]
    assert sorted(i for s in shards for i in s) == list(range(n))
    assert [len(EvalSampler(data, num_replicas=world, rank=r)) for r in range(world)] == [len(s) for s in shards]
    assert all(isinstance(EvalSampler(data, num_replicas=world, rank=r), DistributedSampler) for r in range(world))
    if n % world:  # what Lightning's default would do instead: pad with duplicates
        padded = [i for r in range(world) for i in DistributedSampler(data, num_replicas=world, rank=r, shuffle=False)]
        assert len(padded) > n


def test_eval_sampler_errors():
    with pytest.raises(ValueError, match="fewer than"):
        EvalSampler([0], num_replicas=2, rank=0)
    with pytest.raises(ValueError, match="rank"):
        EvalSampler([0, 1, 2], num_replicas=2, rank=2)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sampler_name(loader) -> str:
    """Class of the index sampler a loader really uses (Lightning's predict loader has a dummy
    ``.sampler`` and keeps the real one inside its batch sampler)."""
    return type(getattr(loader.batch_sampler, "sampler", loader.sampler)).__name__


class _Recorder(pl.LightningModule):
    """Records the indices each rank sees, per stage and epoch, into ``out/<rank>.json``."""

    def __init__(self, out: str) -> None:
        super().__init__()
        self.out = out
        self.layer = nn.Linear(3, 1)
        self.seen: dict[str, list] = {}

    def _add(self, key: str, batch: SRBatch) -> None:
        assert isinstance(batch, SRBatch)
        self.seen.setdefault(key, []).extend(batch.index.tolist())

    def training_step(self, batch, batch_idx):
        self._add(f"train{self.current_epoch}", batch)
        return self.layer(batch.hr.mean(dim=(2, 3))).mean()

    def validation_step(self, batch, batch_idx):
        stage = "fitval" if self.trainer.state.fn == "fit" else "validate"
        self._add(f"fitval{self.current_epoch}" if stage == "fitval" else stage, batch)
        self.seen[f"{stage}_sampler"] = _sampler_name(self.trainer.val_dataloaders)

    def test_step(self, batch, batch_idx):
        self._add("test", batch)
        self.seen["test_sampler"] = _sampler_name(self.trainer.test_dataloaders)

    def predict_step(self, batch, batch_idx):
        self._add("predict", batch)
        self.seen["predict_sampler"] = _sampler_name(self.trainer.predict_dataloaders)
        return batch.index

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)

    def dump(self, name: str) -> None:
        with open(Path(self.out) / f"{name}_rank{self.global_rank}.json", "w") as fh:
            json.dump(self.seen, fh)


def _ddp_worker(rank: int, world: int, port: int, out: str) -> None:
    """One of two gloo ranks: plain loaders first, then a Lightning Trainer(strategy="ddp") on top
    of the same process group (LOCAL_RANK set = processes launched externally, as with torchrun)."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        WORLD_SIZE=str(world),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        NODE_RANK="0",
    )
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    dm = _dm(batch_size=2, val_subset=5, num_train=10, num_test=7)
    dm.setup("fit")
    raw = {
        "test": _indices(dm.test_dataloader()),
        "val": _indices(dm.val_dataloader()),
        "train": _indices(dm.train_dataloader()),
    }
    with open(Path(out) / f"raw_rank{rank}.json", "w") as fh:
        json.dump(raw, fh)

    model = _Recorder(out)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=world,
        strategy="ddp",
        max_epochs=2,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=dm)
    trainer.validate(model, datamodule=dm, verbose=False)
    trainer.test(model, datamodule=dm, verbose=False)
    trainer.predict(model, datamodule=dm)
    model.dump("lightning")
    dist.destroy_process_group()


def test_ddp_two_gloo_ranks_see_each_eval_item_once(tmp_path):
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    raw = [json.loads((tmp_path / f"raw_rank{r}.json").read_text()) for r in range(2)]
    pl_seen = [json.loads((tmp_path / f"lightning_rank{r}.json").read_text()) for r in range(2)]

    def union(runs, key):
        return sorted(i for run in runs for i in run[key])

    # plain DataLoaders under an initialised 2-rank group: 7 test items split 4 + 3, no duplicates
    assert union(raw, "test") == list(range(7)) and [len(r["test"]) for r in raw] == [4, 3]
    assert union(raw, "val") == list(range(5))
    # train shards are disjoint (10 items over 2 ranks needs no padding), 2 batches of 2 per rank
    assert len(raw[0]["train"]) == len(raw[1]["train"]) == 4
    assert not set(raw[0]["train"]) & set(raw[1]["train"])

    # inside Lightning: the samplers are kept (not wrapped / replaced), every eval item once
    for stage in ("fitval0", "fitval1", "validate"):
        assert union(pl_seen, stage) == list(range(5)), stage
    assert union(pl_seen, "test") == list(range(7))
    assert union(pl_seen, "predict") == list(range(7))
    for key in ("fitval_sampler", "validate_sampler", "test_sampler", "predict_sampler"):
        assert {run[key] for run in pl_seen} == {"EvalSampler"}, key
    for run in pl_seen:  # Lightning called set_epoch: a new train order in epoch 1
        assert run["train0"] != run["train1"]
    assert not set(pl_seen[0]["train0"]) & set(pl_seen[1]["train0"])


# ---- construction -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(batch_size=0), "batch_size"),
        (dict(num_workers=-1), "num_workers"),
        (dict(val_batch_size=0), "val_batch_size"),
        (dict(val_subset=0), "val_subset"),
        (dict(hr_size=64, lr_size=6), "lr_size"),
        (dict(num_test=0), "num_test"),
    ],
)
def test_datamodule_argument_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        _dm(**kwargs)


def test_base_requires_build_dataset():
    with pytest.raises(TypeError, match="build_dataset"):  # abstract: refused at construction
        SRDataModule()
    with pytest.raises(ValueError, match="split"):
        _dm().dataset("val")


def test_directory_cache_written_in_prepare_data(tmp_path):
    dm = _dm(cache=str(tmp_path / "toy"))
    assert not (tmp_path / "toy").exists()  # nothing written at construction
    dm.prepare_data()
    assert len(list((tmp_path / "toy").glob("*.npy"))) == 4  # images + attrs for train and test
    dm.setup("fit")
    ref = _dm(cache="none")
    ref.setup("fit")
    assert torch.equal(dm.dataset("test")[2]["hr"], ref.dataset("test")[2]["hr"])


def test_constructible_from_yaml_with_jsonargparse():
    from jsonargparse import ArgumentParser

    parser = ArgumentParser()
    parser.add_subclass_arguments(SRDataModule, "data")
    cfg = parser.parse_string(
        """
data:
  class_path: datamodules.toy_faces.ToyFacesDataModule
  init_args:
    hr_size: 64
    lr_size: 4
    render_seed: 3
    num_train: 100
    num_test: 10
    cache: none
    batch_size: 16
    val_subset: 4
    hflip: false
"""
    )
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes  # renamed in 4.49
    dm = instantiate(cfg).data
    assert isinstance(dm, ToyFacesDataModule)
    got = (dm.hr_size, dm.lr_size, dm.render_seed, dm.batch_size, dm.val_subset, dm.hflip)
    assert got == (64, 4, 3, 16, 4, False)
    assert dm.hparams["cache"] == "none" and dm.val_batch_size == 16
