"""Image-folder data: listing, bad-file policy, conversions, LR files, attributes, prepare step,
and ImageFolderDataModule (datamodules/folder.py, datamodules/prepare.py)."""

from __future__ import annotations

import builtins
import os
import pickle
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from datamodules.degradations import Degradation, GaussianNoise, MotionBlur
from datamodules.folder import (
    BadImageError,
    ImageFolderDataset,
    check_image,
    list_images,
    load_square_rgb,
    read_attrs_csv,
    split_by_fraction,
    to_rgb,
    uint8_to_tensor,
)
from datamodules.prepare import PreparedDataset, prepare_datasets
from lit_propulse.core.batch import collate_sr
from lit_propulse.core.downscale import downscale

HR, LR = 32, 8


def smooth_rgb(h: int, w: int, seed: int) -> np.ndarray:
    """A random smooth uint8 image [h, w, 3]."""
    g = torch.Generator().manual_seed(seed)
    img = torch.nn.functional.interpolate(torch.rand(1, 3, 4, 4, generator=g), size=(h, w), mode="bilinear", align_corners=True)
    return (img[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def write(path: Path, arr: np.ndarray | Image.Image, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = arr if isinstance(arr, Image.Image) else Image.fromarray(arr)
    img.save(path, **kw)
    return path


def make_folder(root: Path, n: int = 6, size: int = HR, ext: str = "png") -> list[str]:
    for i in range(n):
        write(root / f"img_{i}.{ext}", smooth_rgb(size, size, i))
    return list_images(root)


def truncate(path: Path, keep: float = 0.6) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


# ----------------------------------------------------------------------------------------------
# Listing and splitting


def test_list_images_recursive_natural_order(tmp_path: Path) -> None:
    for rel in ["b/10.png", "b/2.PNG", "a/1.jpg", "a/x.jpeg", "c.webp", "notes.txt", ".hidden/3.png", "d/.4.png"]:
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    assert list_images(tmp_path) == ["a/1.jpg", "a/x.jpeg", "b/2.PNG", "b/10.png", "c.webp"]
    assert list_images(tmp_path) == list_images(tmp_path)  # deterministic
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list_images(tmp_path / "nope")


def test_split_by_fraction_is_exact_deterministic_and_disjoint() -> None:
    names = [f"{i:05d}.png" for i in range(103)]
    train, test = split_by_fraction(names, 0.2)
    assert len(test) == round(103 * 0.2) and len(train) + len(test) == 103
    assert not set(train) & set(test)
    assert set(split_by_fraction(list(reversed(names)), 0.2)[1]) == set(test)  # independent of listing order
    assert test != names[-len(test) :]  # not simply the tail
    assert split_by_fraction(names, 0.0) == (names, [])
    train_all, test_all = split_by_fraction(names, 1.0)  # every image a test image (predict on a folder)
    assert train_all == [] and sorted(test_all) == sorted(names)
    with pytest.raises(ValueError, match="test_fraction"):
        split_by_fraction(names, 1.5)


# ----------------------------------------------------------------------------------------------
# Items


def test_items_shapes_range_and_lr_is_ds_of_hr(tmp_path: Path) -> None:
    names = make_folder(tmp_path, n=3, size=64)
    ds = ImageFolderDataset(tmp_path, names, HR, LR)
    ds.scan()
    it = ds[1]
    assert it["hr"].shape == (3, HR, HR) and it["lr"].shape == (3, LR, LR)
    assert it["hr"].dtype == torch.float32 and -1 <= it["hr"].min() and it["hr"].max() <= 1
    assert it["index"] == 1 and it["name"] == "img_1.png" and it["attrs"] is None
    torch.testing.assert_close(it["lr"], downscale(it["hr"][None], LR)[0], rtol=0, atol=0)
    # HR = PIL bicubic of the file, mapped 0..255 -> -1..1
    ref = np.asarray(Image.open(tmp_path / "img_1.png").resize((HR, HR), Image.BICUBIC))
    torch.testing.assert_close(it["hr"], uint8_to_tensor(ref))
    batch = collate_sr([ds[0], ds[2]])
    assert batch.hr.shape == (2, 3, HR, HR) and batch.index.tolist() == [0, 2] and batch.attrs is None


# ----------------------------------------------------------------------------------------------
# Bad files


def _make_bad_files(root: Path) -> dict[str, str]:
    """One file of each bad class; returns {relative name: expected reason fragment}."""
    write(root / "good.png", smooth_rgb(HR, HR, 0))
    (root / "empty.png").write_bytes(b"")
    (root / "text.jpg").write_text("this is not an image\n")
    write(root / "trunc.png", smooth_rgb(64, 64, 1))
    truncate(root / "trunc.png")
    write(root / "trunc.jpg", (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8), quality=95)
    truncate(root / "trunc.jpg", 0.7)
    write(root / "locked.png", smooth_rgb(HR, HR, 2))
    return {
        "empty.png": "empty file (0 bytes)",
        "text.jpg": "not an image",
        "trunc.png": "truncated",
        "trunc.jpg": "truncated",
        "locked.png": "permission denied",
    }


@pytest.fixture
def locked(monkeypatch: pytest.MonkeyPatch):
    """Make files named locked.* unreadable: chmod 000, or (as root, who ignores modes) a patched open."""

    def lock(path: Path) -> None:
        os.chmod(path, 0)
        if os.geteuid() == 0:
            real_open = builtins.open

            def fake_open(file, *a, **k):
                if Path(str(file)).name.startswith("locked."):
                    raise PermissionError(13, "Permission denied", str(file))
                return real_open(file, *a, **k)

            monkeypatch.setattr("lit_propulse.core.images.open", fake_open, raising=False)

    yield lock


@pytest.mark.parametrize("scan_mode", ["full", "header"])
def test_scan_reports_every_bad_file_at_once(tmp_path: Path, locked, scan_mode: str) -> None:
    expected = _make_bad_files(tmp_path)
    locked(tmp_path / "locked.png")
    ds = ImageFolderDataset(tmp_path, list_images(tmp_path), HR, LR)
    with pytest.raises(BadImageError) as info:
        ds.scan("error", scan_mode)  # type: ignore[arg-type]
    msg = str(info.value)
    assert "5 bad image files" in msg and 'on_bad_image="skip"' in msg
    got = {Path(b.path).name: b.reason for b in info.value.bad}
    assert set(got) == set(expected)
    for name, reason in expected.items():
        assert str(tmp_path / name) in msg
        assert reason in got[name], (name, got[name])
    assert len(ds) == 6  # nothing dropped under "error"


def test_skip_policy_warns_with_count_and_names_and_drops(tmp_path: Path, locked) -> None:
    expected = _make_bad_files(tmp_path)
    locked(tmp_path / "locked.png")
    ds = ImageFolderDataset(tmp_path, list_images(tmp_path), HR, LR)
    with pytest.warns(UserWarning, match=r"dropping 5 of 6 items") as rec:
        report = ds.scan("skip")
    text = "\n".join(str(w.message) for w in rec)
    assert all(name in text for name in expected)
    assert ds.names == ["good.png"] and len(report.bad) == 5 and report.total == 6
    assert ds[0]["name"] == "good.png"


def test_skip_policy_refuses_to_leave_nothing(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(b"")
    (tmp_path / "b.png").write_text("no")
    with pytest.raises(BadImageError, match="all 2 items"):
        ImageFolderDataset(tmp_path, list_images(tmp_path), HR, LR).scan("skip")


def test_header_scan_misses_what_only_a_full_decode_finds(tmp_path: Path) -> None:
    # a PNG whose compressed IDAT data is corrupt but carries a valid CRC: the header scan
    # (verify = chunk CRCs) accepts it, the full decode does not
    data = bytearray(write(tmp_path / "a.png", smooth_rgb(64, 64, 0)).read_bytes())
    i = data.find(b"IDAT")
    length = struct.unpack(">I", data[i - 4 : i])[0]
    payload = bytearray(data[i + 4 : i + 4 + length])
    payload[10:30] = b"\x00" * 20
    chunk = b"IDAT" + bytes(payload)
    data[i : i + 4 + length + 4] = chunk + struct.pack(">I", zlib.crc32(chunk))
    (tmp_path / "a.png").write_bytes(bytes(data))
    assert not hasattr(check_image(tmp_path / "a.png", "header"), "reason")
    assert "full decode failed" in check_image(tmp_path / "a.png", "full").reason  # type: ignore[union-attr]


def test_mid_epoch_failure_names_the_file(tmp_path: Path) -> None:
    names = make_folder(tmp_path, n=2)
    ds = ImageFolderDataset(tmp_path, names, HR, LR)
    ds.scan()
    (tmp_path / "img_1.png").write_bytes(b"garbage")
    with pytest.raises(BadImageError, match=r"img_1\.png.*item 1") as info:
        ds[1]
    assert "after the scan" in str(info.value)
    (tmp_path / "img_0.png").unlink()
    with pytest.raises(BadImageError, match=r"img_0\.png"):
        ds[0]


# ----------------------------------------------------------------------------------------------
# Conversions


def _rgb_of(path: Path, size: int = HR, **kw) -> np.ndarray:
    return load_square_rgb(path, size, **kw)


def test_mode_conversions(tmp_path: Path) -> None:
    gray = write(tmp_path / "l.png", Image.new("L", (HR, HR), 77))
    assert (_rgb_of(gray) == 77).all()
    bilevel = write(tmp_path / "one.png", Image.new("1", (HR, HR), 1))
    assert (_rgb_of(bilevel) == 255).all()
    # LA: gray 100 at alpha 51 on white -> 100*0.2 + 255*0.8 = 224
    la = write(tmp_path / "la.png", Image.new("LA", (HR, HR), (100, 51)))
    assert np.abs(_rgb_of(la).astype(int) - 224).max() <= 1
    assert (_rgb_of(la, alpha="drop") == 100).all()
    rgba = write(tmp_path / "rgba.png", Image.new("RGBA", (HR, HR), (10, 200, 30, 0)))
    assert (_rgb_of(rgba) == 255).all()  # fully transparent -> white
    assert (_rgb_of(rgba, alpha="drop") == [10, 200, 30]).all()  # the stored colour shows
    webp = write(tmp_path / "rgba.webp", Image.new("RGBA", (HR, HR), (0, 0, 0, 128)), lossless=True)
    assert np.abs(_rgb_of(webp).astype(int) - 127).max() <= 1  # black at alpha 0.5 on white
    pal = Image.new("P", (HR, HR), 1)
    pal.putpalette([0, 0, 0, 250, 20, 40] + [0] * 762)
    assert (_rgb_of(write(tmp_path / "p.png", pal)) == [250, 20, 40]).all()
    pal.info["transparency"] = 1
    assert (_rgb_of(write(tmp_path / "pt.png", pal, transparency=1)) == 255).all()
    # 16 bit: scaled to 8 bit (PIL's own conversion would clip 40000 to 255)
    i16 = write(tmp_path / "i16.png", Image.fromarray(np.full((HR, HR), 40000, np.uint16)))
    assert Image.open(i16).mode == "I;16"
    assert (_rgb_of(i16) == round(40000 / 257)).all()
    i32 = Image.fromarray(np.full((4, 4), 65535, np.int32))
    assert i32.mode == "I" and (np.asarray(to_rgb(i32)) == 255).all()
    cmyk = write(tmp_path / "cmyk.jpg", Image.new("CMYK", (HR, HR), (0, 255, 255, 0)), quality=100)
    assert Image.open(cmyk).mode == "CMYK"
    rgb = _rgb_of(cmyk).astype(int)
    assert rgb[..., 0].min() > 240 and rgb[..., 1:].max() < 15  # red
    # every class goes through the dataset to [3, HR, HR]
    files = list_images(tmp_path)
    ds = ImageFolderDataset(tmp_path, files, HR, LR)
    ds.scan()
    assert all(ds[i]["hr"].shape == (3, HR, HR) for i in range(len(ds)))


def test_non_square_center_crop_and_pad(tmp_path: Path) -> None:
    a = np.zeros((HR, 2 * HR, 3), np.uint8)
    a[:, HR // 2 : HR // 2 + HR] = 200  # the centre square is bright, the sides black
    p = write(tmp_path / "wide.png", a)
    crop = _rgb_of(p, non_square="center_crop")
    assert crop.shape == (HR, HR, 3) and (crop == 200).all()
    pad = _rgb_of(p, size=None, non_square="pad")
    assert pad.shape == (2 * HR, 2 * HR, 3)
    assert (pad[: HR // 2] == 0).all() and (pad[-HR // 2 :] == 0).all()  # black bands top and bottom
    assert (pad[HR // 2 : HR // 2 + HR, HR // 2 : HR // 2 + HR] == 200).all()
    tall = write(tmp_path / "tall.jpg", smooth_rgb(50, 20, 3))
    assert _rgb_of(tall).shape == (HR, HR, 3)


def test_small_images_upscaled_with_one_warning(tmp_path: Path) -> None:
    make_folder(tmp_path, n=2, size=HR)
    for i in range(3):
        write(tmp_path / f"small_{i}.png", smooth_rgb(HR // 2, HR // 2, 10 + i))
    ds = ImageFolderDataset(tmp_path, list_images(tmp_path), HR, LR)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        report = ds.scan()
    ups = [str(w.message) for w in rec if "upscaled" in str(w.message)]
    assert len(ups) == 1 and "3 of 5 images" in ups[0] and "small_0.png" in ups[0]
    assert report.upscaled == ["small_0.png", "small_1.png", "small_2.png"]
    assert ds[4]["hr"].shape == (3, HR, HR)


# ----------------------------------------------------------------------------------------------
# LR files, attributes, degradations


def test_lr_root_matching_names_and_checks(tmp_path: Path) -> None:
    hr_root, lr_root = tmp_path / "hr", tmp_path / "lr"
    names = make_folder(hr_root, n=3)
    write(lr_root / "img_0.jpg", smooth_rgb(LR, LR, 100), quality=100)  # other extension
    write(lr_root / "img_1.png", smooth_rgb(LR, LR, 101))
    from datamodules.folder import match_files

    lr_names, _ = match_files(names, lr_root)
    assert lr_names == ["img_0.jpg", "img_1.png", None]
    ds = ImageFolderDataset(hr_root, names, HR, LR, lr_root=lr_root, lr_names=lr_names)
    with pytest.raises(BadImageError, match="no LR file for 'img_2.png'"):
        ds.scan()
    write(lr_root / "img_2.png", smooth_rgb(2 * LR, 2 * LR, 102))  # wrong size
    ds = ImageFolderDataset(hr_root, names, HR, LR, lr_root=lr_root, lr_names=match_files(names, lr_root)[0])
    with pytest.raises(BadImageError, match=r"LR image is 16x16, expected 8x8"):
        ds.scan()
    with pytest.warns(UserWarning, match="dropping 1 of 3"):
        ds.scan("skip")
    it = ds[1]
    torch.testing.assert_close(it["lr"], uint8_to_tensor(smooth_rgb(LR, LR, 101)))  # read, not DS(HR)
    with pytest.raises(ValueError, match="before_ds"):
        ImageFolderDataset(hr_root, names, HR, LR, lr_root=lr_root, degradations=[Degradation([MotionBlur(5)], where="before_ds")])


def test_attrs_csv(tmp_path: Path) -> None:
    names = make_folder(tmp_path / "img", n=3)
    (tmp_path / "pm.csv").write_text("name,Smiling,Eyeglasses\nimg_0.png,1,-1\nimg_1,-1,-1\nimg_2.png,1,1\n")
    rows, attr_names, values = read_attrs_csv(tmp_path / "pm.csv")
    assert attr_names == ["Smiling", "Eyeglasses"] and values.tolist() == [[1, 0], [0, 0], [1, 1]]
    (tmp_path / "01.csv").write_text("name, A\nimg_0.png, 0\nimg_1.png, 1\n")
    assert read_attrs_csv(tmp_path / "01.csv")[2].tolist() == [[0], [1]]
    (tmp_path / "mixed.csv").write_text("name,A,B\nimg_0.png,0,1\nimg_1.png,-1,1\n")
    with pytest.raises(ValueError, match=r"mixed\.csv:2.*all 0/1 or all -1/1"):
        read_attrs_csv(tmp_path / "mixed.csv")
    (tmp_path / "bad.csv").write_text("name,A\nimg_0.png,yes\n")
    with pytest.raises(ValueError, match=r"bad\.csv:2"):
        read_attrs_csv(tmp_path / "bad.csv")
    from datamodules.folder import align_attrs

    aligned = align_attrs(names, rows, values, "pm.csv")  # "img_1" matched by stem
    ds = ImageFolderDataset(tmp_path / "img", names, HR, LR, attrs=aligned, attr_names=attr_names)
    assert ds[2]["attrs"].tolist() == [1.0, 1.0] and ds[1]["attrs"].dtype == torch.float32
    with pytest.raises(ValueError, match=r"1 images have no row.*img_2\.png"):
        align_attrs(names, rows[:2], values[:2], "pm.csv")


def test_degradations_applied_and_seeded(tmp_path: Path) -> None:
    names = make_folder(tmp_path, n=2)
    noise = [Degradation([GaussianNoise(0.2)], where="after_ds")]
    clean = ImageFolderDataset(tmp_path, names, HR, LR)
    noisy = ImageFolderDataset(tmp_path, names, HR, LR, degradations=noise, degradation_seed=3)
    a, b = noisy[0]["lr"], noisy[0]["lr"]
    torch.testing.assert_close(a, b, rtol=0, atol=0)  # same every access
    assert (a - clean[0]["lr"]).std().item() > 0.1
    torch.testing.assert_close(noisy[0]["hr"], clean[0]["hr"], rtol=0, atol=0)  # HR untouched
    fresh = ImageFolderDataset(tmp_path, names, HR, LR, degradations=noise, degradation_seed=None)
    assert not torch.equal(fresh[0]["lr"], fresh[0]["lr"])


# ----------------------------------------------------------------------------------------------
# Prepare step


def test_prepared_items_equal_folder_items(tmp_path: Path) -> None:
    root = tmp_path / "img"
    names = make_folder(root, n=5, size=48)
    (tmp_path / "a.csv").write_text("name,A\n" + "".join(f"{n},{i % 2}\n" for i, n in enumerate(names)))
    from datamodules.folder import align_attrs

    rows, an, vals = read_attrs_csv(tmp_path / "a.csv")
    train = ImageFolderDataset(root, names[:3], HR, LR, attrs=align_attrs(names[:3], rows, vals, "a"), attr_names=an)
    test = ImageFolderDataset(root, names[3:], HR, LR, attrs=align_attrs(names[3:], rows, vals, "a"), attr_names=an)
    fp = {"class": "test", "hr_size": HR}
    prepare_datasets({"train": train, "test": test}, tmp_path / "prep", fp, num_threads=2)
    assert (tmp_path / "prep" / "train_hr.npy").is_file() and (tmp_path / "prep" / "index.json").is_file()
    for split, ref in (("train", train), ("test", test)):
        prep = PreparedDataset(tmp_path / "prep", split, HR, LR, fingerprint=fp)
        assert len(prep) == len(ref) and prep.attr_names == ["A"]
        for i in range(len(ref)):
            x, y = prep[i], ref[i]
            assert x["name"] == y["name"] and x["index"] == y["index"]
            for k in ("hr", "lr", "attrs"):
                torch.testing.assert_close(x[k], y[k], rtol=0, atol=0)
    prep = pickle.loads(pickle.dumps(PreparedDataset(tmp_path / "prep", "train", HR, LR)))
    assert prep[0]["hr"].shape == (3, HR, HR)
    with pytest.raises(ValueError, match=r"hr_size: prepared=32, requested=64"):
        PreparedDataset(tmp_path / "prep", "train", HR, LR, fingerprint={**fp, "hr_size": 64})
    with pytest.raises(ValueError, match="hr_size=32, requested hr_size=64"):
        PreparedDataset(tmp_path / "prep", "train", 64, LR)
    with pytest.raises(FileExistsError, match="overwrite"):
        prepare_datasets({"train": train}, tmp_path / "prep", fp)
    with pytest.raises(FileNotFoundError, match="run the prepare step"):
        PreparedDataset(tmp_path / "nothing", "train", HR, LR)


# ----------------------------------------------------------------------------------------------
# ImageFolderDataModule


def folder_dm(**kw):
    from datamodules.folder import ImageFolderDataModule

    return ImageFolderDataModule(**{"hr_size": HR, "lr_size": LR, "batch_size": 2, "num_workers": 0, **kw})


def test_datamodule_fraction_split_and_loaders(tmp_path: Path) -> None:
    make_folder(tmp_path, n=10)
    dm = folder_dm(root=str(tmp_path), test_fraction=0.3, val_subset=2)
    dm.setup("fit")
    train, test = dm.dataset("train"), dm.dataset("test")
    assert (len(train), len(test)) == (7, 3)
    assert not set(train.names) & set(test.names)
    assert dm.hr_size == HR and dm.lr_size == LR and dm.attr_names == ()
    batch = next(iter(dm.train_dataloader()))
    assert batch.hr.shape == (2, 3, HR, HR) and batch.lr.shape == (2, 3, LR, LR)
    assert sum(len(b) for b in dm.val_dataloader()) == 2 and sum(len(b) for b in dm.test_dataloader()) == 3


def test_datamodule_split_root_attrs_and_lr_root(tmp_path: Path) -> None:
    for split, n in (("train", 4), ("test", 2)):
        for i in range(n):
            write(tmp_path / "data" / split / f"{split}_{i}.png", smooth_rgb(HR, HR, i))
            write(tmp_path / "lr" / split / f"{split}_{i}.jpg", smooth_rgb(LR, LR, 50 + i), quality=100)
    (tmp_path / "attrs.csv").write_text("name,Smiling\n" + "".join(f"{s}_{i}.png,{i % 2}\n" for s in ("train", "test") for i in range(4)))
    dm = folder_dm(split_root=str(tmp_path / "data"), lr_root=str(tmp_path / "lr"), attrs_file=str(tmp_path / "attrs.csv"))
    assert dm.attr_names == ("Smiling",)
    dm.setup("fit")
    assert len(dm.dataset("train")) == 4 and len(dm.dataset("test")) == 2
    it = dm.dataset("test")[1]
    assert it["name"] == "test/test_1.png" and it["attrs"].tolist() == [1.0]
    torch.testing.assert_close(it["lr"], uint8_to_tensor(np.asarray(Image.open(tmp_path / "lr" / "test" / "test_1.jpg"))))


def test_datamodule_argument_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="exactly one of root"):
        folder_dm()
    with pytest.raises(ValueError, match="exactly one of root"):
        folder_dm(root="a", split_root="b")
    with pytest.raises(ValueError, match="test_fraction must be in"):
        folder_dm(root="a", test_fraction=1.5)
    with pytest.raises(ValueError, match="on_bad_image must be one of"):
        folder_dm(root="a", on_bad_image="ignore")
    with pytest.raises(ValueError, match="lr_size=64 must not exceed hr_size=32"):
        folder_dm(root="a", lr_size=64)
    with pytest.raises(FileNotFoundError, match=r"split_root layout needs '.*test'"):
        (tmp_path / "train").mkdir()
        folder_dm(split_root=str(tmp_path)).setup("fit")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        folder_dm(root=str(tmp_path / "missing")).setup("fit")


def test_datamodule_scans_in_setup(tmp_path: Path) -> None:
    make_folder(tmp_path, n=4)
    (tmp_path / "zero.png").write_bytes(b"")
    with pytest.raises(BadImageError, match="zero.png: empty file"):
        folder_dm(root=str(tmp_path)).setup("fit")
    dm = folder_dm(root=str(tmp_path), on_bad_image="skip", scan_mode="header")
    with pytest.warns(UserWarning, match="dropping 1 of 5"):
        dm.setup("fit")
    assert len(dm.dataset("train")) == 4 and len(dm.scan_reports["train"].bad) == 1


def test_datamodule_prepared_dir_matches_files_and_checks_settings(tmp_path: Path) -> None:
    root = tmp_path / "img"
    make_folder(root, n=6, size=40)
    kw = {"root": str(root), "test_fraction": 0.5, "batch_size": 3, "shuffle_train": False, "hflip": False}
    plain = folder_dm(**kw)
    plain.setup("fit")
    prep = folder_dm(prepared_dir=str(tmp_path / "prep"), num_workers=2, **kw)
    prep.prepare_data()
    prep.setup("fit")
    for split in ("train", "test"):
        a, b = plain.dataset(split), prep.dataset(split)
        assert isinstance(b, PreparedDataset) and len(a) == len(b) == 3
        for i in range(3):
            torch.testing.assert_close(a[i]["hr"], b[i]["hr"], rtol=0, atol=0)
            torch.testing.assert_close(a[i]["lr"], b[i]["lr"], rtol=0, atol=0)
    got = [x for batch in prep.train_dataloader() for x in batch.name]  # two worker processes
    assert got == plain.dataset("train").names
    prep.prepare_data()  # already prepared: a no-op
    other = folder_dm(prepared_dir=str(tmp_path / "prep"), **{**kw, "test_fraction": 0.25})
    with pytest.raises(ValueError, match=r"test_fraction: prepared=0.5, requested=0.25"):
        other.setup("fit")


def test_prepare_cli_reads_a_lightningcli_data_section(tmp_path: Path) -> None:
    from datamodules.prepare import main

    make_folder(tmp_path / "img", n=3)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        "trainer:\n  max_steps: 1\n"
        "data:\n  class_path: datamodules.folder.ImageFolderDataModule\n  init_args:\n"
        f"    root: {tmp_path / 'img'}\n    hr_size: {HR}\n    lr_size: {LR}\n    prepared_dir: {tmp_path / 'prep'}\n"
    )
    main(["--config", str(cfg)])
    assert len(PreparedDataset(tmp_path / "prep", "train", HR, LR)) == 3
    with pytest.raises(FileExistsError):
        main(["--config", str(cfg)])
    main(["--config", str(cfg), "--overwrite"])


def test_docs_yaml_examples_parse_and_instantiate() -> None:
    """Every ``data:`` YAML example in the README and the data page of the docs is a valid LightningCLI
    data section."""
    import re

    import pytorch_lightning as pl
    import yaml
    from jsonargparse import ArgumentParser

    root = Path(__file__).resolve().parents[2]
    text = (root / "README.md").read_text() + (root / "docs" / "data.md").read_text()
    blocks = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", text, flags=re.S)]
    sections = [b["data"] for b in blocks if isinstance(b, dict) and "data" in b]
    assert len(sections) >= 4
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(pl.LightningDataModule, "data")
    for sec in sections:
        dm = parser.instantiate(parser.parse_object({"data": sec}))["data"]  # no file access in __init__
        assert dm.hr_size >= dm.lr_size
