"""Toy faces: deterministic rendering, labels that match the pixels, the dataset's splits and pairs."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from datamodules.toy_faces import (
    TOY_ATTRIBUTES,
    ToyFaceFactors,
    ToyFacesDataModule,
    ToyFacesDataset,
    render_toy_face,
    sample_toy_factors,
    toy_attributes,
)
from lit_propulse.core.downscale import downscale

NO_GLASSES = {"eyeglasses": False, "sunglasses": False}
EYEGLASSES = {"eyeglasses": True, "sunglasses": False}
SUNGLASSES = {"eyeglasses": False, "sunglasses": True}


# ---- rendering ------------------------------------------------------------------------------------
def test_render_is_deterministic_per_seed_and_index():
    a, la = render_toy_face(3, 17)
    b, lb = render_toy_face(3, 17)
    assert a.dtype == np.uint8 and a.shape == (64, 64, 3)
    np.testing.assert_array_equal(a, b)
    assert la == lb
    assert not np.array_equal(a, render_toy_face(3, 18)[0])
    assert not np.array_equal(a, render_toy_face(4, 17)[0])


@pytest.mark.parametrize("size", [16, 64, 256])
def test_render_sizes(size):
    img, labels = render_toy_face(0, 5, size)
    assert img.shape == (size, size, 3) and img.dtype == np.uint8
    assert list(labels) == list(TOY_ATTRIBUTES)
    assert img.std() > 20  # a drawn face, not a flat canvas


def test_same_face_at_64_and_256():
    """Geometry is in canvas units: the 256² render box-averaged to 64² is the 64² render."""
    for index in range(4):
        small = render_toy_face(1, index, 64)[0].astype(np.float64)
        big = render_toy_face(1, index, 256)[0].astype(np.float64)
        pooled = big.reshape(64, 4, 64, 4, 3).mean(axis=(1, 3))
        assert np.abs(pooled - small).mean() < 2.0
        # a different face is far away, so the tolerance above is meaningful
        other = render_toy_face(1, index + 10, 64)[0].astype(np.float64)
        assert np.abs(other - small).mean() > 10.0


def test_supersampling_antialiases_edges():
    flat = {"light": (0.0, 0.0)}  # no lighting gradient: a 1x render holds only palette colours
    aliased = render_toy_face(0, 2, 64, supersample=1, overrides=flat)[0]
    smooth = render_toy_face(0, 2, 64, supersample=4, overrides=flat)[0]
    n_colours = lambda im: len(np.unique(im.reshape(-1, 3), axis=0))  # noqa: E731
    assert n_colours(aliased) < 40
    assert n_colours(smooth) > 3 * n_colours(aliased)  # box-averaged edges mix neighbouring colours


def test_render_argument_errors():
    with pytest.raises(ValueError, match="size"):
        render_toy_face(0, 0, 15)
    with pytest.raises(ValueError, match="supersample"):
        render_toy_face(0, 0, 64, supersample=0)
    with pytest.raises(ValueError, match="index"):
        render_toy_face(0, -1)
    with pytest.raises(ValueError, match="unknown toy face factors"):
        render_toy_face(0, 0, overrides={"monocle": True})
    with pytest.raises(ValueError, match="mutually exclusive"):
        render_toy_face(0, 0, overrides={"eyeglasses": True, "sunglasses": True})
    with pytest.raises(ValueError, match="bald"):
        render_toy_face(0, 0, overrides={"hair_style": "bald", "hat": True})


# ---- labels ---------------------------------------------------------------------------------------
def test_attribute_frequencies_and_exclusivity():
    labels = np.array([list(toy_attributes(sample_toy_factors(0, i)).values()) for i in range(3000)])
    freq = dict(zip(TOY_ATTRIBUTES, labels.mean(axis=0)))
    col = {name: labels[:, k] for k, name in enumerate(TOY_ATTRIBUTES)}
    assert len(TOY_ATTRIBUTES) >= 8
    assert 0.22 < freq["Eyeglasses"] < 0.32
    assert 0.16 < freq["Wearing_Hat"] < 0.24
    assert all(0.05 < f < 0.6 for f in freq.values()), freq  # every attribute reasonably frequent
    assert not np.any(col["Eyeglasses"] & col["Sunglasses"])
    assert not np.any(col["Bald"] & (col["Bangs"] | col["Wearing_Hat"] | col["Long_Hair"]))
    hair = col["Black_Hair"] + col["Blond_Hair"] + col["Brown_Hair"] + col["Gray_Hair"]
    assert hair.max() == 1 and 0.05 < (hair == 0).mean() < 0.15  # one colour at most; red is unlabelled


def _eye_band(f: ToyFaceFactors, size: int) -> tuple[slice, slice]:
    """Pixels where glasses may be drawn: the eye row +- 0.1 canvas, within the face width + 1 px."""
    eye_y = f.cy - 0.035 + f.eye_y
    rx = f.face_ry * f.face_aspect
    ys = slice(int((eye_y - 0.1) * size), int(np.ceil((eye_y + 0.1) * size)))
    xs = slice(int((f.cx - rx) * size) - 1, int(np.ceil((f.cx + rx) * size)) + 1)
    return ys, xs


@pytest.mark.parametrize("index", range(6))
def test_eyeglasses_counterfactual_changes_only_the_eye_region(index):
    f = sample_toy_factors(0, index)
    plain, l0 = render_toy_face(0, index, overrides=NO_GLASSES)
    glasses, l1 = render_toy_face(0, index, overrides=EYEGLASSES)
    shades, l2 = render_toy_face(0, index, overrides=SUNGLASSES)
    assert (l0["Eyeglasses"], l1["Eyeglasses"], l2["Sunglasses"]) == (0, 1, 1)
    assert {k: v for k, v in l1.items() if k != "Eyeglasses"} == {k: v for k, v in l0.items() if k != "Eyeglasses"}

    changed = np.any(plain != glasses, axis=-1)  # [64, 64]
    ys, xs = _eye_band(f, 64)
    outside = changed.copy()
    outside[ys, xs] = False
    assert not outside.any(), "eyeglasses changed pixels away from the eyes"
    # thin frames: two rings + bridge + temples, about one pixel wide -> tens of pixels, not a block
    assert 50 <= changed.sum() <= 220
    # the frame is drawn on both eyes (left and right halves of the face)
    cx = int(round(f.cx * 64))
    assert changed[:, :cx].sum() > 20 and changed[:, cx:].sum() > 20
    # sunglasses fill the lenses: strictly more pixels change, and they get darker on average
    shaded = np.any(plain != shades, axis=-1)
    assert shaded.sum() > changed.sum()
    assert shades[shaded].mean() < plain[shaded].mean()


def test_labels_match_drawn_pixels():
    """Each labelled factor is visible: switching it off on a face that has it changes the image,
    and switching a boolean factor off on a face labelled without it changes nothing."""
    switch_off = {  # boolean factors: "off" is a no-op exactly when the label is 0
        "Eyeglasses": {"eyeglasses": False},
        "Sunglasses": {"sunglasses": False},
        "Wearing_Hat": {"hat": False},
        "Wearing_Earrings": {"earrings": False},
        "Bangs": {"bangs": False},
        "Smiling": {"smiling": False},
        "Mouth_Slightly_Open": {"mouth_open": False},
        "Mustache": {"mustache": False},
        "Rosy_Cheeks": {"rosy_cheeks": False},
    }
    change = {  # categorical / continuous factors: only "present -> changed" is meaningful
        "Long_Hair": {"hair_style": "short"},
        "Bald": {"hair_style": "short"},
        "Wide_Face": {"face_aspect": 0.72},
        "Dark_Skin": {"skin_tone": 2},
        "Pale_Skin": {"skin_tone": 2},
        "Blond_Hair": {"hair_color": "black"},
        "Black_Hair": {"hair_color": "blond"},
        "Brown_Hair": {"hair_color": "gray"},
        "Gray_Hair": {"hair_color": "brown"},
    }
    need = {**{n: [2, 2] for n in switch_off}, **{n: [2, 0] for n in change}}  # checks left: [with, without]
    for index in range(80):
        img, labels = render_toy_face(0, index)
        for name, override in {**switch_off, **change}.items():
            has = labels[name] == 1
            slot = 0 if has else 1
            if need[name][slot] == 0:
                continue
            other, other_labels = render_toy_face(0, index, overrides=override)
            assert other_labels[name] == 0
            assert np.array_equal(img, other) != has, (index, name, has)
            need[name][slot] -= 1
    assert all(v == [0, 0] for v in need.values()), need


def test_overrides_keep_the_other_factors():
    base = sample_toy_factors(0, 11)
    _, labels = render_toy_face(0, 11, overrides={"hat": not base.hat, "hair_style": "short"})
    expected = toy_attributes(dataclasses.replace(base, hat=not base.hat, hair_style="short"))
    assert labels == expected


# ---- dataset --------------------------------------------------------------------------------------
def _ds(split="train", **kw):
    args = dict(hr_size=32, lr_size=8, seed=2, num_train=6, num_test=5, cache="none")
    args.update(kw)
    return ToyFacesDataset(split, **args)


def test_dataset_items():
    ds = _ds("train")
    assert len(ds) == 6 and ds.attr_names == TOY_ATTRIBUTES
    item = ds[4]
    assert set(item) == {"hr", "lr", "attrs", "index", "name"}
    assert item["hr"].shape == (3, 32, 32) and item["hr"].dtype == torch.float32
    assert item["lr"].shape == (3, 8, 8)
    assert item["hr"].min() >= -1 and item["hr"].max() <= 1 and item["hr"].std() > 0.1
    assert item["index"] == 4 and item["name"] == "toy_000004.png"
    img, labels = render_toy_face(2, 4, 32)
    np.testing.assert_array_equal(((item["hr"] + 1) * 127.5).round().byte().permute(1, 2, 0).numpy(), img)
    assert item["attrs"].tolist() == [float(v) for v in labels.values()]
    with pytest.raises(IndexError):
        ds[6]


def test_lr_is_ds_of_hr():
    for lr_size in (8, 4, 2):  # 4x, 8x, 16x at 32²
        item = _ds("test", lr_size=lr_size)[1]
        torch.testing.assert_close(item["lr"], downscale(item["hr"][None], lr_size)[0], rtol=0, atol=0)


def test_default_setting_64_to_8_and_16x():
    ds = ToyFacesDataset("test", hr_size=64, lr_size=8, num_train=3, num_test=2, cache="none")
    assert ds[0]["hr"].shape == (3, 64, 64) and ds[0]["lr"].shape == (3, 8, 8)
    x16 = ToyFacesDataset("test", hr_size=64, lr_size=4, num_train=3, num_test=2, cache="none")
    assert x16[0]["lr"].shape == (3, 4, 4)


def test_splits_are_disjoint_by_render_index():
    train, test = _ds("train"), _ds("test")
    train_idx = {train.render_index(i) for i in range(len(train))}
    test_idx = {test.render_index(i) for i in range(len(test))}
    assert train_idx == set(range(6)) and test_idx == set(range(6, 11))
    # test item 0 is render index num_train, with its own name; no test image equals a train image
    np.testing.assert_array_equal(((test[0]["hr"] + 1) * 127.5).round().byte().permute(1, 2, 0).numpy(), render_toy_face(2, 6, 32)[0])
    assert test[0]["name"] == "toy_000006.png" and test[0]["index"] == 0
    train_hr = torch.stack([train[i]["hr"] for i in range(len(train))])
    for i in range(len(test)):
        assert (train_hr - test[i]["hr"]).abs().flatten(1).amax(1).min() > 0


def test_cache_modes_agree(tmp_path):
    none, memory, lazy = _ds("test"), _ds("test", cache="memory"), _ds("test", cache="lazy")
    disk = _ds("test", cache=str(tmp_path / "cache"))
    for i in reversed(range(len(none))):
        for other in (memory, disk, lazy):
            a, b = none[i], other[i]
            assert all(torch.equal(a[k], b[k]) for k in ("hr", "lr", "attrs"))
    img_path, attr_path = disk.cache_files()
    assert img_path.exists() and attr_path.exists()
    assert "seed2" in img_path.name and "hr32" in img_path.name and "idx6-11" in img_path.name
    # a second dataset memory-maps the written file instead of rendering
    again = _ds("test", cache=str(tmp_path / "cache"))
    again.materialize()
    assert isinstance(again._images, np.memmap)
    assert torch.equal(again[3]["hr"], none[3]["hr"])


def test_lazy_cache_renders_each_read_face_once_and_no_other(monkeypatch):
    """The default "lazy" mode: reading 3 of 5 faces (one twice) renders exactly those 3, once each;
    "memory" renders all 5 up front."""
    import datamodules.toy_faces as toy

    calls: list[int] = []
    real = toy.render_toy_face

    def counting(seed, index, size, supersample):
        calls.append(index)
        return real(seed, index, size, supersample)

    monkeypatch.setattr(toy, "render_toy_face", counting)
    lazy = _ds("test", cache="lazy")
    assert ToyFacesDataset("test").cache == "lazy" and ToyFacesDataModule().cache == "lazy"  # the defaults
    lazy.materialize()  # a no-op for lazy
    first = [lazy[i]["hr"] for i in (4, 1, 4, 2)]
    assert sorted(calls) == [7, 8, 10] and torch.equal(first[0], first[2])
    calls.clear()
    _ds("test", cache="memory")[0]
    assert sorted(calls) == [6, 7, 8, 9, 10]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(split="val"), "split"),
        (dict(hr_size=64, lr_size=7), "lr_size"),
        (dict(hr_size=64, lr_size=64), "lr_size"),
        (dict(hr_size=64, lr_size=0), "lr_size"),
        (dict(hr_size=8, lr_size=2), "hr_size"),
        (dict(num_test=0), "num_test"),
        (dict(num_train=-1), "num_train"),
        (dict(seed=-3), "seed"),
        (dict(supersample=0), "supersample"),
        (dict(cache=""), "cache"),
    ],
)
def test_dataset_argument_errors(kwargs, match):
    args = dict(split="train", hr_size=64, lr_size=8, num_train=4, num_test=4, cache="none")
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        ToyFacesDataset(**args)


def test_cache_path_must_be_a_directory(tmp_path):
    file = tmp_path / "not_a_dir"
    file.write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        ToyFacesDataset("train", num_train=2, num_test=2, cache=str(file))
