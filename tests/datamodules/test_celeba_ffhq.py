"""CelebA-HQ (standard split through the mapping + CelebA partition files, attributes) and FFHQ
layouts, on synthetic list files and tiny images built in tmp_path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from datamodules.celeba_hq import (
    CelebAHQDataModule,
    celeba_hq_split_files,
    read_celeba_hq_attrs,
)
from datamodules.ffhq import FFHQDataModule
from lit_propulse.core.errors import BadImageError

HR, LR = 16, 4
ATTRS = [f"Attr_{k}" for k in range(40)]
# CelebA-HQ index -> CelebA file and partition: 6 train (0), 2 val (1), 2 test (2) -> 6 / 4
ORIG = {i: f"{100000 + 7 * i:06d}.jpg" for i in range(10)}
PARTITION = {0: 0, 1: 1, 2: 0, 3: 2, 4: 0, 5: 0, 6: 1, 7: 0, 8: 2, 9: 0}
TRAIN_IDS = [i for i in range(10) if PARTITION[i] == 0]
TEST_IDS = [i for i in range(10) if PARTITION[i] != 0]


def tiny(path: Path, seed: int, size: int = HR) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    a = np.full((size, size, 3), (seed * 23) % 256, np.uint8)
    Image.fromarray(a).save(path, quality=100) if path.suffix == ".jpg" else Image.fromarray(a).save(path)


def attr_value(i: int, k: int) -> int:
    return 1 if (i + k) % 3 == 0 else -1


def make_celeba_hq(root: Path, subdir: str | None = "CelebA-HQ-img", name: str = "{i}.jpg", lists: bool = True, anno: bool = True) -> Path:
    img_dir = root / subdir if subdir else root
    for i in range(10):
        tiny(img_dir / name.format(i=i), i)
    if lists:
        (root / "CelebA-HQ-to-CelebA-mapping.txt").write_text(
            "idx         orig_idx    orig_file\n" + "".join(f"{i:<12d}{int(ORIG[i][:6]) - 1:<12d}{ORIG[i]}\n" for i in range(10))
        )
        extra = "".join(f"{200000 + j:06d}.jpg {j % 3}\n" for j in range(5))  # CelebA files not in CelebA-HQ
        (root / "list_eval_partition.txt").write_text("".join(f"{ORIG[i]} {PARTITION[i]}\n" for i in range(10)) + extra)
    if anno:
        rows = "".join(f"{i}.jpg " + " ".join(str(attr_value(i, k)) for k in range(40)) + "\n" for i in range(10))
        (root / "CelebAMask-HQ-attribute-anno.txt").write_text(f"10\n{' '.join(ATTRS)}\n{rows}")
    return root


def dm_kwargs(**kw) -> dict:
    return {"hr_size": HR, "lr_size": LR, "batch_size": 2, "num_workers": 0, **kw}


@pytest.mark.parametrize(
    "subdir,name",
    [("CelebA-HQ-img", "{i}.jpg"), (None, "{i}.jpg"), ("CelebA-HQ-img", "{i:05d}.jpg"), (None, "{i:05d}.png")],
)
def test_celeba_hq_standard_split_counts_and_layouts(tmp_path: Path, subdir: str | None, name: str) -> None:
    make_celeba_hq(tmp_path, subdir, name)
    img_root, names, ids = celeba_hq_split_files(tmp_path)
    assert img_root == (tmp_path / subdir if subdir else tmp_path)
    assert (len(names["train"]), len(names["test"])) == (6, 4)
    assert ids == {"train": TRAIN_IDS, "test": TEST_IDS}
    assert names["test"] == [name.format(i=i) for i in TEST_IDS]
    dm = CelebAHQDataModule(root=str(tmp_path), **dm_kwargs())
    dm.setup("fit")
    assert len(dm.dataset("train")) == 6 and len(dm.dataset("test")) == 4
    batch = next(iter(dm.test_dataloader()))
    assert batch.hr.shape == (2, 3, HR, HR) and batch.lr.shape == (2, 3, LR, LR)
    assert batch.name == [name.format(i=i) for i in TEST_IDS[:2]] and batch.index.tolist() == [0, 1]


def test_celeba_hq_attributes(tmp_path: Path) -> None:
    make_celeba_hq(tmp_path)
    rows, names, values = read_celeba_hq_attrs(tmp_path / "CelebAMask-HQ-attribute-anno.txt")
    assert names == ATTRS and values.shape == (10, 40) and set(np.unique(values)) == {0.0, 1.0}
    dm = CelebAHQDataModule(root=str(tmp_path), **dm_kwargs())
    assert dm.attr_names == tuple(ATTRS)
    dm.setup("test")
    test = dm.dataset("test")
    for pos, i in enumerate(TEST_IDS):
        want = torch.tensor([1.0 if attr_value(i, k) > 0 else 0.0 for k in range(40)])
        torch.testing.assert_close(test[pos]["attrs"], want)
    assert next(iter(dm.test_dataloader())).attrs.shape == (2, 40)
    no = CelebAHQDataModule(root=str(tmp_path), use_attrs=False, **dm_kwargs())
    no.setup("test")
    assert no.attr_names == () and no.dataset("test")[0]["attrs"] is None


def test_celeba_hq_without_anno_file_has_no_attrs(tmp_path: Path) -> None:
    make_celeba_hq(tmp_path, anno=False)
    dm = CelebAHQDataModule(root=str(tmp_path), **dm_kwargs())
    assert dm.attr_names == ()
    with pytest.raises(FileNotFoundError, match=r"attribute file.*CelebAMask-HQ"):
        CelebAHQDataModule(root=str(tmp_path), attr_file=str(tmp_path / "nope.txt"), **dm_kwargs()).setup("test")


def test_celeba_hq_presplit_folders(tmp_path: Path) -> None:
    for i in TRAIN_IDS:
        tiny(tmp_path / "train" / f"{i}.jpg", i)
    for i in TEST_IDS:
        tiny(tmp_path / "test" / f"{i:05d}.png", i)
    make_celeba_hq(tmp_path / "unused", lists=False, anno=False)  # ignored in this layout
    dm = CelebAHQDataModule(root=str(tmp_path), **dm_kwargs())
    dm.setup("fit")
    assert len(dm.dataset("train")) == 6 and len(dm.dataset("test")) == 4
    assert dm.dataset("test")[0]["name"] == f"test/{TEST_IDS[0]:05d}.png"


@pytest.mark.parametrize(
    "missing,pattern",
    [
        ("CelebA-HQ-to-CelebA-mapping.txt", r"mapping file not found at '.*CelebA-HQ-to-CelebA-mapping\.txt'.*CelebAMask-HQ"),
        ("list_eval_partition.txt", r"partition file not found at '.*list_eval_partition\.txt'.*mmlab\.ie\.cuhk\.edu\.hk"),
    ],
)
def test_celeba_hq_missing_list_files_say_which_and_where_from(tmp_path: Path, missing: str, pattern: str) -> None:
    make_celeba_hq(tmp_path)
    (tmp_path / missing).unlink()
    dm = CelebAHQDataModule(root=str(tmp_path), **dm_kwargs())
    with pytest.raises(FileNotFoundError, match=pattern):
        dm.setup("fit")


def test_celeba_hq_missing_root_and_images(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"root folder not found at '.*nowhere'.*github\.com/switchablenorms/CelebAMask-HQ"):
        CelebAHQDataModule(root=str(tmp_path / "nowhere"), **dm_kwargs()).setup("fit")
    make_celeba_hq(tmp_path)
    for p in (tmp_path / "CelebA-HQ-img").iterdir():
        p.unlink()
    with pytest.raises(FileNotFoundError, match=r"images named by index.*CelebA-HQ-img"):
        CelebAHQDataModule(root=str(tmp_path), **dm_kwargs()).setup("fit")


def test_celeba_hq_missing_and_bad_images_follow_the_policy(tmp_path: Path) -> None:
    make_celeba_hq(tmp_path)
    (tmp_path / "CelebA-HQ-img" / "3.jpg").unlink()  # listed by the mapping, absent on disk
    (tmp_path / "CelebA-HQ-img" / "8.jpg").write_bytes(b"")
    with pytest.raises(BadImageError) as info:
        CelebAHQDataModule(root=str(tmp_path), **dm_kwargs()).setup("test")
    msg = str(info.value)
    assert "3.jpg: file does not exist" in msg and "8.jpg: empty file" in msg
    dm = CelebAHQDataModule(root=str(tmp_path), on_bad_image="skip", **dm_kwargs())
    with pytest.warns(UserWarning, match="dropping 2 of 4"):
        dm.setup("test")
    test = dm.dataset("test")
    assert [test[i]["name"] for i in range(len(test))] == ["1.jpg", "6.jpg"]
    assert test[1]["attrs"][0].item() == (1.0 if attr_value(6, 0) > 0 else 0.0)  # attrs stay aligned


def test_celeba_hq_duplicate_indices_rejected(tmp_path: Path) -> None:
    make_celeba_hq(tmp_path)
    tiny(tmp_path / "CelebA-HQ-img" / "00004.png", 4)
    with pytest.raises(ValueError, match=r"several files.*00004\.png, 4\.jpg"):
        CelebAHQDataModule(root=str(tmp_path), **dm_kwargs()).setup("fit")


# ----------------------------------------------------------------------------------------------
# FFHQ


def make_ffhq(root: Path, n: int = 12, nested: bool = True) -> None:
    for i in range(n):
        rel = f"{(i // 5) * 1000:05d}/{i:05d}.png" if nested else f"{i:05d}.png"
        tiny(root / "images1024x1024" / rel, i)
    (root / "images1024x1024" / "LICENSE.txt").write_text("CC BY-NC-SA 4.0")


@pytest.mark.parametrize("nested", [True, False])
def test_ffhq_layouts_train_only(tmp_path: Path, nested: bool) -> None:
    make_ffhq(tmp_path, nested=nested)
    dm = FFHQDataModule(root=str(tmp_path), **dm_kwargs())
    dm.setup("fit")
    train = dm.dataset("train")
    assert len(train) == 12 and len(dm.dataset("test")) == 0 and dm.attr_names == ()
    assert Path(train[11]["name"]).name == "00011.png" and train[11]["attrs"] is None
    assert next(iter(dm.train_dataloader())).hr.shape == (2, 3, HR, HR)
    for loader in (dm.test_dataloader, dm.val_dataloader):
        with pytest.raises(ValueError, match=r"FFHQ has no test split.*test_count.*limit_val_batches: 0"):
            loader()


def test_ffhq_test_count_holds_out_last_indices(tmp_path: Path) -> None:
    make_ffhq(tmp_path)
    dm = FFHQDataModule(root=str(tmp_path), test_count=3, **dm_kwargs())
    dm.setup("fit")
    assert len(dm.dataset("train")) == 9
    test = dm.dataset("test")
    assert [Path(test[i]["name"]).name for i in range(3)] == ["00009.png", "00010.png", "00011.png"]
    assert sum(len(b) for b in dm.test_dataloader()) == 3
    with pytest.raises(ValueError, match="leaves no training images"):
        FFHQDataModule(root=str(tmp_path), test_count=12, **dm_kwargs()).setup("fit")
    with pytest.raises(ValueError, match="test_count must be >= 0"):
        FFHQDataModule(root=str(tmp_path), test_count=-1, **dm_kwargs())


def test_ffhq_missing_root_says_where_from(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"github\.com/NVlabs/ffhq-dataset"):
        FFHQDataModule(root=str(tmp_path / "nowhere"), **dm_kwargs()).setup("fit")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no images named by index"):
        FFHQDataModule(root=str(tmp_path / "empty"), **dm_kwargs()).setup("fit")


def test_celeba_hq_full_size_split_checked_against_the_standard_counts(tmp_path: Path) -> None:
    import warnings

    tiny(tmp_path / "CelebA-HQ-img" / "0.jpg", 0)
    (tmp_path / "CelebA-HQ-to-CelebA-mapping.txt").write_text("idx orig_idx orig_file\n" + "".join(f"{i} {i} {i + 1:06d}.jpg\n" for i in range(30000)))

    def partition(n_train: int) -> None:
        (tmp_path / "list_eval_partition.txt").write_text("".join(f"{i + 1:06d}.jpg {0 if i < n_train else 2}\n" for i in range(30000)))

    partition(24183)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, names, _ = celeba_hq_split_files(tmp_path)
    assert (len(names["train"]), len(names["test"])) == (24183, 5817)
    partition(25000)
    with pytest.warns(UserWarning, match="not the standard"):
        celeba_hq_split_files(tmp_path)
