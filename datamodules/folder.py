"""Image files -> HR/LR pairs: scanning, bad-file policy, conversion and the folder dataset.

The data of both papers are folders of 1024² face images: CelebA-HQ (Pro-PULSE Sec. IV-A-1; PULSE
Sec. 4.1) and FFHQ (the StyleGAN2 training set). An item is the HR image resized to ``hr_size``
and its LR input ``DS(HR)`` at ``lr_size`` (Pro-PULSE Eq. (2); PULSE Sec. 3.1), optionally
degraded (PULSE Sec. 5, :mod:`datamodules.degradations`), or an LR read from disk.

Reading a file (``load_square_rgb``), in this order:

1. EXIF orientation applied (``ImageOps.exif_transpose``; a no-op for the face datasets).
2. Mode -> RGB (:func:`to_rgb`): L / 1 / CMYK / YCbCr / ... via PIL; P (palette) via RGBA when it
   has a transparent colour; LA / RGBA / PA / premultiplied: alpha composited on white
   (``alpha="white"``, default) or dropped (``alpha="drop"``: the stored colour of transparent
   pixels shows); 16-bit I;16 / I: scaled by 1/257 to 8 bits (PIL's own conversion clips at 255,
   which would make most 16-bit images white).
3. Non-square -> square (``non_square``): ``"center_crop"`` to the shorter side (default), or
   ``"pad"`` to the longer side with black, centred.
4. Resize to ``hr_size`` with PIL bicubic (antialiased when shrinking; the same a = -0.5 kernel as
   ``DS``, tests/test_downscale.py). Images smaller than ``hr_size`` are upscaled; the scan warns
   once per dataset with their count.

Bad files (:func:`check_image`, run by :meth:`ImageFolderDataset.scan`, which the DataModules call
in ``setup``): empty (0 bytes), not an image, truncated / corrupt, unreadable (permissions). The
scan reports every bad file in one :class:`BadImageError`; with ``on_bad_image="skip"`` it warns
with their count and names and drops them instead. A file that breaks later (mid-epoch) raises a
:class:`BadImageError` naming it, not a bare PIL traceback.
"""

from __future__ import annotations

import abc
import csv
import os
import zlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pytorch_lightning.utilities import rank_zero_warn
from torch.utils.data import Dataset

from datamodules.base import SPLITS, SRDataModule
from datamodules.degradations import Degradation
from datamodules.items import check_attrs, check_degradations, check_sizes, make_item
from datamodules.prepare import PreparedDataset, is_prepared, prepare_datasets
from lit_propulse.core.errors import BadImageError
from lit_propulse.core.images import (
    IMAGE_EXTENSIONS,
    AlphaMode,
    BadFile,
    ImageInfo,
    NonSquare,
    ScanMode,
    check_image,
    format_bad_files,
    list_images,
    load_square_rgb,
    make_square,
    natural_key,
    square_side,
    to_rgb,
    uint8_to_tensor,
)

__all__ = [
    "IMAGE_EXTENSIONS",
    "FileSRDataModule",
    "ImageFolderDataModule",
    "SplitFiles",
    "BadFile",
    "BadImageError",
    "ImageFolderDataset",
    "ScanReport",
    "check_image",
    "list_images",
    "load_square_rgb",
    "make_square",
    "match_files",
    "natural_key",
    "read_attrs_csv",
    "split_by_fraction",
    "to_rgb",
    "uint8_to_tensor",
]


OnBadImage = Literal["error", "skip"]


# ----------------------------------------------------------------------------------------------
# Listing


def split_by_fraction(names: Sequence[str], test_fraction: float) -> tuple[list[str], list[str]]:
    """Deterministic train/test split: ``round(n * test_fraction)`` names go to test.

    The test names are the first ones when ordered by the CRC32 of their name (ties by name), so
    the split does not depend on the listing order, the seed or the machine, and a folder sorted by
    identity or date is not split into head/tail. Both lists keep the natural order.
    """
    if not 0.0 <= test_fraction <= 1.0:
        raise ValueError(f"test_fraction must be in [0, 1], got {test_fraction}")
    n_test = int(round(len(names) * test_fraction))
    ranked = sorted(names, key=lambda n: (zlib.crc32(n.encode("utf-8")), n))
    test = set(ranked[:n_test])
    return [n for n in names if n not in test], [n for n in names if n in test]


def match_files(names: Sequence[str], root: str | Path, extensions: Sequence[str] = IMAGE_EXTENSIONS) -> tuple[list[str | None], list[str]]:
    """For each relative ``name``, the file under ``root`` with the same relative path, or else the
    same relative path with another image extension (HR ``a/1.png`` <-> LR ``a/1.jpg``).

    Returns ``(matched, available)``: ``matched[i]`` is a relative path under ``root`` or None.
    """
    available = list_images(root, extensions)
    exact = set(available)
    by_stem: dict[str, str] = {}
    for a in available:
        by_stem.setdefault(str(Path(a).with_suffix("")), a)
    out: list[str | None] = []
    for n in names:
        out.append(n if n in exact else by_stem.get(str(Path(n).with_suffix(""))))
    return out, available


# ----------------------------------------------------------------------------------------------
# Checking


# ----------------------------------------------------------------------------------------------
# Conversion


# ----------------------------------------------------------------------------------------------
# Attributes


def read_attrs_csv(path: str | Path) -> tuple[list[str], list[str], np.ndarray]:
    """Read ``name,attr1,attr2,...`` (header row, then one row per image) with 0/1 or -1/1 values.

    Returns ``(names, attr_names, values)`` with ``values`` float32 ``[N, A]`` in {0, 1}
    (-1 -> 0). A file mixing -1 and 0, or holding other values, raises ValueError naming the row.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"attributes file {str(path)!r} does not exist")
    with open(path, newline="") as f:
        rows = [[c.strip() for c in r] for r in csv.reader(f) if any(c.strip() for c in r)]
    if len(rows) < 1 or len(rows[0]) < 2:
        raise ValueError(f"attributes file {str(path)!r} needs a header 'name,attr1,...' and at least one attribute")
    attr_names = rows[0][1:]
    names, vals = [], []
    for ln, r in enumerate(rows[1:], start=2):
        if len(r) != len(rows[0]):
            raise ValueError(f"{path}:{ln}: expected {len(rows[0])} columns like the header, got {len(r)}")
        try:
            vals.append([int(float(v)) for v in r[1:]])
        except ValueError as e:
            raise ValueError(f"{path}:{ln}: attribute values must be 0/1 or -1/1 ({e})") from None
        names.append(r[0])
    v = np.asarray(vals, dtype=np.int64).reshape(len(names), len(attr_names))
    present = set(np.unique(v).tolist())
    if not present <= {-1, 0, 1} or {-1, 0} <= present:
        bad_row = next(i for i, row in enumerate(v) if not set(row.tolist()) <= ({-1, 1} if -1 in present else {0, 1}))
        raise ValueError(f"{path}:{bad_row + 2}: attribute values must be all 0/1 or all -1/1, found {sorted(present)}")
    return names, attr_names, (v > 0).astype(np.float32)


def align_attrs(image_names: Sequence[str], attr_rows: Sequence[str], values: np.ndarray, source: str) -> np.ndarray:
    """Rows of ``values`` for each image, matched by relative path, else file name, else stem.

    Raises ValueError listing images without a row, or whose name matches several rows.
    """
    keys = (lambda p: p.as_posix(), lambda p: p.name, lambda p: p.stem)
    tables: list[dict[str, list[int]]] = [{}, {}, {}]
    for i, n in enumerate(attr_rows):
        for table, key in zip(tables, keys):
            table.setdefault(key(Path(n)), []).append(i)
    rows, missing, ambiguous = [], [], []
    for n in image_names:
        hits = next((t[k(Path(n))] for t, k in zip(tables, keys) if k(Path(n)) in t), [])
        if len(hits) == 1:
            rows.append(hits[0])
        else:
            (missing if not hits else ambiguous).append(n)
    problems = []
    for what, lst in (("have no row", missing), ("match several rows", ambiguous)):
        if lst:
            problems.append(f"{len(lst)} images {what} in the attributes file {source}: " + ", ".join(lst[:20]) + (" ..." if len(lst) > 20 else ""))
    if problems:
        raise ValueError("; ".join(problems))
    return values[np.asarray(rows, dtype=np.int64)]


# ----------------------------------------------------------------------------------------------
# Dataset


@dataclass
class ScanReport:
    """What :meth:`ImageFolderDataset.scan` found: files before the scan, the bad ones (dropped
    under "skip"), and the names upscaled to ``hr_size``."""

    total: int
    bad: list[BadFile]
    upscaled: list[str]


class ImageFolderDataset(Dataset):
    """HR/LR face pairs from image files (Pro-PULSE Sec. IV-A-1, PULSE Sec. 4.1 / Sec. 5).

    Items: ``{"hr": [3, hr_size, hr_size], "lr": [3, lr_size, lr_size], "attrs": float [A] in
    {0, 1} or None, "index": int (position in this dataset), "name": relative file name}``,
    images in [-1, 1]. LR = degradations around ``DS(HR)`` (``degrade_lr``) or the file from
    ``lr_root`` (then only "after_ds" degradations apply).

    Args:
        root: folder the ``names`` are relative to.
        names: relative paths of the images, in dataset order.
        hr_size: side of the HR images in pixels (every file is made square and resized to it).
        lr_size: side of the LR images in pixels (< hr_size).
        lr_root: folder holding the LR files; None = LR made by ``DS`` from the HR.
        lr_names: relative LR paths under ``lr_root``, one per name (None entries = missing LR,
            reported by ``scan``); None = the same relative names as ``names``.
        attrs: float ``[N, A]`` attribute labels in {0, 1} aligned with ``names``; None = none.
        attr_names: the ``A`` attribute names (required with ``attrs``).
        non_square: "center_crop" (shorter side) or "pad" (black, to the longer side).
        alpha: "white" = composite transparent images on white; "drop" = discard alpha.
        degradations: PULSE Sec. 5 degradations of the LR (empty = none).
        degradation_seed: int = item ``i`` is degraded with a generator seeded by
            ``(degradation_seed, crc32(name))``, the same every epoch and in every worker;
            None = torch's global RNG (fresh draws, seeded per worker by the DataLoader).
    """

    def __init__(
        self,
        root: str | Path,
        names: Sequence[str],
        hr_size: int,
        lr_size: int,
        lr_root: str | Path | None = None,
        lr_names: Sequence[str | None] | None = None,
        attrs: np.ndarray | None = None,
        attr_names: Sequence[str] | None = None,
        non_square: NonSquare = "center_crop",
        alpha: AlphaMode = "white",
        degradations: Sequence[Degradation] = (),
        degradation_seed: int | None = 0,
    ) -> None:
        super().__init__()
        check_sizes(hr_size, lr_size)
        if non_square not in ("center_crop", "pad"):
            raise ValueError(f"non_square must be 'center_crop' or 'pad', got {non_square!r}")
        if alpha not in ("white", "drop"):
            raise ValueError(f"alpha must be 'white' or 'drop', got {alpha!r}")
        self.root = Path(root)
        self.names = list(names)
        self.hr_size, self.lr_size = int(hr_size), int(lr_size)
        self.lr_root = None if lr_root is None else Path(lr_root)
        if lr_names is not None and len(lr_names) != len(self.names):
            raise ValueError(f"lr_names has {len(lr_names)} entries for {len(self.names)} names")
        self.lr_names: list[str | None] | None = None
        if self.lr_root is not None:
            self.lr_names = list(lr_names) if lr_names is not None else list(self.names)
        self.attrs, self.attr_names = check_attrs(attrs, attr_names, len(self.names))
        self.non_square, self.alpha = non_square, alpha
        self.degradations = check_degradations(degradations, lr_from_disk=self.lr_root is not None)
        self.degradation_seed = degradation_seed

    # -- scanning ----------------------------------------------------------------------------

    def scan(self, on_bad_image: OnBadImage = "error", scan_mode: ScanMode = "full", num_threads: int | None = None) -> ScanReport:
        """Check every file (HR and LR) and apply the bad-file policy; see :func:`check_image`.

        ``"error"`` raises one :class:`BadImageError` listing every bad file and its reason;
        ``"skip"`` warns with their count and names and drops those items. Also warns once when
        some images are smaller than ``hr_size`` (they will be upscaled), and reports LR files whose
        size is not ``lr_size`` as bad. ``num_threads`` None = one per CPU core.
        """
        if on_bad_image not in ("error", "skip"):
            raise ValueError(f"on_bad_image must be 'error' or 'skip', got {on_bad_image!r}")
        if scan_mode not in ("full", "header"):
            raise ValueError(f"scan_mode must be 'full' or 'header', got {scan_mode!r}")
        n = len(self.names)
        hr_paths = [str(self.root / nm) for nm in self.names]
        threads = num_threads or os.cpu_count() or 1
        with ThreadPoolExecutor(max_workers=threads) as pool:
            hr_res = list(pool.map(lambda p: check_image(p, scan_mode), hr_paths))
            lr_res: list[ImageInfo | BadFile | None] = [None] * n
            if self.lr_root is not None:
                assert self.lr_names is not None
                lr_paths = [None if ln is None else str(self.lr_root / ln) for ln in self.lr_names]
                lr_res = list(pool.map(lambda p: None if p is None else check_image(p, scan_mode), lr_paths))
        bad: list[BadFile] = []
        keep: list[int] = []
        upscaled: list[str] = []
        for i in range(n):
            item_bad = []
            r = hr_res[i]
            if isinstance(r, BadFile):
                item_bad.append(r)
            elif square_side(r.size, self.non_square) < self.hr_size:
                upscaled.append(self.names[i])
            if self.lr_root is not None:
                assert self.lr_names is not None
                lr = lr_res[i]
                if self.lr_names[i] is None:
                    item_bad.append(BadFile(str(self.lr_root / self.names[i]), f"no LR file for {self.names[i]!r} under lr_root {str(self.lr_root)!r}"))
                elif isinstance(lr, BadFile):
                    item_bad.append(lr)
                elif isinstance(lr, ImageInfo) and square_side(lr.size, self.non_square) != self.lr_size:
                    w, h = lr.size
                    item_bad.append(
                        BadFile(
                            str(self.lr_root / self.lr_names[i]),
                            f"LR image is {w}x{h}, expected {self.lr_size}x{self.lr_size} (lr_size); LR files are used as they are",
                        )
                    )
            bad.extend(item_bad)
            if not item_bad:
                keep.append(i)
        if bad:
            where = f"under {str(self.root)!r}" + ("" if self.lr_root is None else f" and {str(self.lr_root)!r}")
            if on_bad_image == "error":
                raise BadImageError(
                    f"{len(bad)} bad image files {where} ({n - len(keep)} of {n} items affected):\n{format_bad_files(bad)}\n"
                    'Fix or remove them, or set on_bad_image="skip" to drop them with a warning.',
                    bad,
                )
            if not keep:
                raise BadImageError(f"all {n} items {where} are unusable, nothing left to skip to:\n{format_bad_files(bad)}", bad)
            rank_zero_warn(f"on_bad_image='skip': dropping {n - len(keep)} of {n} items, {len(bad)} bad image files {where}:\n{format_bad_files(bad)}")
            self._keep(keep)
            kept = set(self.names)
            upscaled = [u for u in upscaled if u in kept]
        if upscaled:
            shown = ", ".join(upscaled[:20]) + (" ..." if len(upscaled) > 20 else "")
            rank_zero_warn(
                f"{len(upscaled)} of {len(self.names)} images under {str(self.root)!r} are smaller than hr_size={self.hr_size} and will be upscaled (bicubic): {shown}"
            )
        return ScanReport(total=n, bad=bad, upscaled=upscaled)

    def _keep(self, keep: Sequence[int]) -> None:
        self.names = [self.names[i] for i in keep]
        if self.lr_names is not None:
            self.lr_names = [self.lr_names[i] for i in keep]
        if self.attrs is not None:
            self.attrs = self.attrs[np.asarray(keep, dtype=np.int64)]

    # -- items -------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.names)

    def _read(self, path: Path, size: int | None, what: str, i: int) -> np.ndarray:
        try:
            return load_square_rgb(path, size, self.non_square, self.alpha)
        except Exception as e:  # noqa: BLE001 - turn any decoder failure into a clear error
            raise BadImageError(
                f"cannot read {what} image {str(path)!r} (item {i}, {self.names[i]!r}): {type(e).__name__}: {e}. "
                "It may have changed or become unreadable after the scan in setup.",
                [BadFile(str(path), f"{type(e).__name__}: {e}")],
            ) from e

    def load_hr_uint8(self, i: int) -> np.ndarray:
        """HR of item ``i`` as uint8 ``[hr_size, hr_size, 3]`` (used by the prepare step)."""
        return self._read(self.root / self.names[i], self.hr_size, "HR", i)

    def load_lr_uint8(self, i: int) -> np.ndarray | None:
        """LR file of item ``i`` as uint8 ``[lr_size, lr_size, 3]``, or None without ``lr_root``."""
        if self.lr_root is None:
            return None
        assert self.lr_names is not None
        ln = self.lr_names[i]
        if ln is None:
            raise BadImageError(f"no LR file for {self.names[i]!r} under lr_root {str(self.lr_root)!r}")
        lr = self._read(self.lr_root / ln, None, "LR", i)
        if lr.shape[0] != self.lr_size:
            raise BadImageError(f"LR image {str(self.lr_root / ln)!r} is {lr.shape[1]}x{lr.shape[0]}, expected lr_size={self.lr_size}")
        return lr

    def __getitem__(self, i: int) -> dict[str, Any]:
        return make_item(self, int(i), self.load_hr_uint8(int(i)), self.load_lr_uint8(int(i)))


# ----------------------------------------------------------------------------------------------
# DataModules


@dataclass
class SplitFiles:
    """The files of one split: ``names`` relative to ``root`` (LR under ``lr_root``), attributes."""

    root: Path
    names: list[str]
    lr_root: Path | None = None
    lr_names: list[str | None] | None = None
    attrs: np.ndarray | None = None
    attr_names: list[str] | None = None


class FileSRDataModule(SRDataModule):
    """Base of the DataModules that read image files (folder, CelebA-HQ, FFHQ).

    Subclasses implement :meth:`list_split` (and extend :meth:`fingerprint`); this class builds the
    :class:`ImageFolderDataset` of a split and runs its bad-file :meth:`~ImageFolderDataset.scan`
    when ``setup`` asks for the split, or serves the prepared memmaps (:mod:`datamodules.prepare`)
    when ``prepared_dir`` is set.

    Args:
        hr_size: side of the HR images in pixels (1024 in both papers).
        lr_size: side of the LR inputs in pixels (16 = x64 in Pro-PULSE Sec. IV-A-1).
        on_bad_image: "error" = raise one error listing every bad file; "skip" = warn with their
            count and names and drop them.
        scan_mode: "full" = also decode every file in setup (catches corrupt compressed data;
            libjpeg still accepts a JPEG whose data stops early but ends with its end marker, and
            greys the rest); "header" = headers, PNG CRCs and the JPEG end marker only (~20-50x
            faster; misses corrupt compressed data inside an otherwise complete file).
        non_square: "center_crop" = crop non-square images to their shorter side; "pad" = pad them
            with black to their longer side.
        alpha: "white" = composite transparent images on white; "drop" = discard alpha.
        degradations: PULSE Sec. 5 degradations of the LR (None or [] = none), e.g. a
            ``Degradation(ops=[GaussianNoise(sigma=0.196)], where="after_ds")``.
        degradation_seed: int = degraded LR fixed per image (seeded by name); None = fresh noise
            at every access.
        prepared_dir: folder of the prepared uint8 memmaps; None = decode the image files.
            When set and not yet prepared, ``prepare_data()`` writes it.
        scan_threads: threads for the scan and the prepare step; None = one per CPU core.
        **kwargs: loader settings of :class:`~datamodules.base.SRDataModule` (batch_size, ...).
    """

    def __init__(
        self,
        hr_size: int = 1024,
        lr_size: int = 16,
        on_bad_image: OnBadImage = "error",
        scan_mode: ScanMode = "full",
        non_square: NonSquare = "center_crop",
        alpha: AlphaMode = "white",
        degradations: list[Degradation] | None = None,
        degradation_seed: int | None = 0,
        prepared_dir: str | None = None,
        scan_threads: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_sizes(hr_size, lr_size)
        for name, value, allowed in (
            ("on_bad_image", on_bad_image, ("error", "skip")),
            ("scan_mode", scan_mode, ("full", "header")),
            ("non_square", non_square, ("center_crop", "pad")),
            ("alpha", alpha, ("white", "drop")),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        if scan_threads is not None and scan_threads < 1:
            raise ValueError(f"scan_threads must be >= 1 or None, got {scan_threads}")
        self.hr_size, self.lr_size = int(hr_size), int(lr_size)
        self.on_bad_image, self.scan_mode = on_bad_image, scan_mode
        self.non_square, self.alpha = non_square, alpha
        self.degradations = check_degradations(degradations, lr_from_disk=False)
        self.degradation_seed = degradation_seed
        self.prepared_dir = prepared_dir
        self.scan_threads = scan_threads
        self.scan_reports: dict[str, ScanReport] = {}

    # -- to implement ------------------------------------------------------------------------

    @abc.abstractmethod
    def list_split(self, split: str) -> SplitFiles:
        """The files of ``split`` ("train" or "test"), before the bad-file scan."""

    def fingerprint(self) -> dict[str, Any]:
        """Settings that change the prepared arrays (checked against ``prepared_dir``)."""
        return {"class": type(self).__name__, "hr_size": self.hr_size, "non_square": self.non_square, "alpha": self.alpha}

    # -- datasets ----------------------------------------------------------------------------

    def _check_split(self, split: str) -> str:
        if split not in SPLITS:
            raise ValueError(f"{type(self).__name__} has splits {SPLITS}, got {split!r}")
        return split

    def no_test_message(self) -> str:
        """Why the test split is empty and how to get one (raised by the eval loaders)."""
        return f"{type(self).__name__}: the test split is empty"

    def _check_eval_split(self) -> None:
        if len(self.dataset("test")) == 0:  # type: ignore[arg-type]
            raise ValueError(
                self.no_test_message() + ". Validation and testing use the test split; to train without validation set trainer.limit_val_batches: 0."
            )

    def val_dataloader(self) -> Any:
        self._check_eval_split()
        return super().val_dataloader()

    def test_dataloader(self) -> Any:
        self._check_eval_split()
        return super().test_dataloader()

    def predict_dataloader(self) -> Any:
        self._check_eval_split()
        return super().predict_dataloader()

    def folder_dataset(self, split: str, scan: bool = True) -> ImageFolderDataset:
        """The :class:`ImageFolderDataset` of ``split`` (scanned with the bad-file policy)."""
        files = self.list_split(self._check_split(split))
        ds = ImageFolderDataset(
            files.root,
            files.names,
            self.hr_size,
            self.lr_size,
            lr_root=files.lr_root,
            lr_names=files.lr_names,
            attrs=files.attrs,
            attr_names=files.attr_names,
            non_square=self.non_square,
            alpha=self.alpha,
            degradations=self.degradations,
            degradation_seed=self.degradation_seed,
        )
        if scan:
            self.scan_reports[split] = ds.scan(self.on_bad_image, self.scan_mode, self.scan_threads)
        return ds

    def build_dataset(self, split: str) -> Dataset:
        """Dataset of ``split``: prepared memmaps when ``prepared_dir`` is set, else the image files
        (scanned here, i.e. during ``setup``)."""
        split = self._check_split(split)
        if self.prepared_dir is not None:
            return PreparedDataset(
                self.prepared_dir,
                split,
                self.hr_size,
                self.lr_size,
                degradations=self.degradations,
                degradation_seed=self.degradation_seed,
                fingerprint=self.fingerprint(),
            )
        return self.folder_dataset(split)

    # -- prepare step ------------------------------------------------------------------------

    def prepare(self, overwrite: bool = False, num_threads: int | None = None) -> Path:
        """Scan every split and write the prepared memmaps to ``prepared_dir``; returns the index path."""

        if self.prepared_dir is None:
            raise ValueError("prepare() needs prepared_dir (the output folder)")
        datasets = {s: self.folder_dataset(s) for s in SPLITS}
        return prepare_datasets(datasets, self.prepared_dir, self.fingerprint(), num_threads or self.scan_threads, overwrite)

    def prepare_data(self) -> None:
        """Lightning hook (rank 0): write ``prepared_dir`` on the first run; no-op otherwise."""

        if self.prepared_dir is not None and not is_prepared(self.prepared_dir):
            self.prepare()


class ImageFolderDataModule(FileSRDataModule):
    """Any folder of face images as HR/LR pairs (same pipeline as CelebA-HQ / FFHQ).

    Args:
        root: folder scanned recursively for png/jpg/jpeg/webp, split by ``test_fraction``;
            None when ``split_root`` is given.
        split_root: folder holding ``train/`` and ``test/`` subfolders (each scanned recursively);
            None = split ``root`` by ``test_fraction``.
        test_fraction: fraction of ``root`` held out for test, in [0, 1] (0 = no test images; 1 = every
            image is a test image: for ``test`` / ``predict`` on a folder);
            chosen by CRC32 of the file name (:func:`split_by_fraction`). Unused with split_root.
        lr_root: folder with LR images of the same relative names (any image extension);
            None = LR made by ``DS`` from the HR.
        attrs_file: CSV ``name,attr1,...`` with 0/1 or -1/1 values (names matched by relative
            path, file name or stem); None = no attributes.
        extensions: image file extensions to pick up (case-insensitive).
        **kwargs: see :class:`FileSRDataModule` and :class:`~datamodules.base.SRDataModule`.
    """

    def __init__(
        self,
        root: str | None = None,
        split_root: str | None = None,
        test_fraction: float = 0.0,
        lr_root: str | None = None,
        attrs_file: str | None = None,
        extensions: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if (root is None) == (split_root is None):
            raise ValueError(
                f"give exactly one of root (one pool, split by test_fraction) or split_root (train/ and test/ subfolders), got root={root!r}, split_root={split_root!r}"
            )
        if not 0.0 <= test_fraction <= 1.0:
            raise ValueError(f"test_fraction must be in [0, 1], got {test_fraction}")
        if split_root is not None and test_fraction != 0.0:
            raise ValueError(f"test_fraction={test_fraction} has no effect with split_root={split_root!r} (the test/ folder is the test split)")
        if lr_root is not None and any(d.where == "before_ds" and len(d) for d in self.degradations):
            raise ValueError("'before_ds' degradations need LR made by DS, but lr_root is set")
        self.root, self.split_root = root, split_root
        self.test_fraction = float(test_fraction)
        self.lr_root, self.attrs_file = lr_root, attrs_file
        self.extensions = tuple(extensions) if extensions else IMAGE_EXTENSIONS
        self._attrs_cache: tuple[list[str], list[str], np.ndarray] | None = None

    @property
    def attr_names(self) -> tuple[str, ...]:
        """Attribute names from the header of ``attrs_file``; () without one."""
        return () if self.attrs_file is None else tuple(self._read_attrs()[1])

    def no_test_message(self) -> str:
        if self.split_root is not None:
            return f"ImageFolderDataModule: {str(Path(self.split_root) / 'test')!r} holds no images"
        return f"ImageFolderDataModule: no test images (test_fraction={self.test_fraction}); set test_fraction > 0 or use split_root with train/ and test/"

    def _read_attrs(self) -> tuple[list[str], list[str], np.ndarray]:
        if self._attrs_cache is None:
            self._attrs_cache = read_attrs_csv(self.attrs_file)  # type: ignore[arg-type]
        return self._attrs_cache

    def _all_names(self) -> dict[str, list[str]]:
        if self.split_root is not None:
            out = {}
            for s in SPLITS:
                d = Path(self.split_root) / s
                if not d.is_dir():
                    raise FileNotFoundError(f"split_root layout needs {str(d)!r} (train/ and test/ subfolders of {self.split_root!r})")
                out[s] = [f"{s}/{n}" for n in list_images(d, self.extensions)]
            return out
        names = list_images(self.root, self.extensions)  # type: ignore[arg-type]
        train, test = split_by_fraction(names, self.test_fraction)
        return {"train": train, "test": test}

    def list_split(self, split: str) -> SplitFiles:
        root = Path(self.split_root if self.split_root is not None else self.root)  # type: ignore[arg-type]
        names = self._all_names()[split]
        if not names and split == "train":
            raise FileNotFoundError(f"no {'/'.join(self.extensions)} images found for split 'train' under {str(root)!r}")
        files = SplitFiles(root=root, names=names)
        if self.lr_root is not None:
            files.lr_root = Path(self.lr_root)
            files.lr_names, _ = match_files(names, files.lr_root, self.extensions)
        if self.attrs_file is not None:
            rows, attr_names, values = self._read_attrs()
            files.attrs = align_attrs(names, rows, values, repr(self.attrs_file))
            files.attr_names = attr_names
        return files

    def fingerprint(self) -> dict[str, Any]:
        return {
            **super().fingerprint(),
            "root": self.root,
            "split_root": self.split_root,
            "test_fraction": self.test_fraction,
            "lr_root": self.lr_root,
            "lr_size": self.lr_size if self.lr_root is not None else None,
            "attrs_file": self.attrs_file,
            "extensions": list(self.extensions),
            "on_bad_image": self.on_bad_image,
        }
