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
import re
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from pytorch_lightning.utilities import rank_zero_warn
from torch import Tensor
from torch.utils.data import Dataset

from datamodules.base import SPLITS, SRDataModule
from datamodules.degradations import Degradation, degrade_lr, seed_generator

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

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".webp")

OnBadImage = Literal["error", "skip"]
ScanMode = Literal["full", "header"]
NonSquare = Literal["center_crop", "pad"]
AlphaMode = Literal["white", "drop"]


# ----------------------------------------------------------------------------------------------
# Listing


def natural_key(name: str) -> tuple[Any, ...]:
    """Sort key that orders digit runs numerically: ``2.jpg < 10.jpg``, ``00001/x < 00010/x``."""
    return tuple(int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name))


def list_images(root: str | Path, extensions: Sequence[str] = IMAGE_EXTENSIONS, exclude_dirs: Sequence[str] = ()) -> list[str]:
    """All image files under ``root`` (recursive), as relative POSIX paths in natural order.

    Extensions match case-insensitively; hidden files and folders (``.name``) are skipped, as are
    top-level folders named in ``exclude_dirs``. Raises FileNotFoundError if ``root`` is missing.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {str(root)!r} does not exist or is not a directory")
    exts = tuple(e.lower() if e.startswith(".") else "." + e.lower() for e in extensions)
    out: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        rel_dir = Path(dirpath).relative_to(root)
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and not (rel_dir == Path(".") and d in exclude_dirs)]
        for f in filenames:
            if not f.startswith(".") and f.lower().endswith(exts):
                out.append((rel_dir / f).as_posix())
    return sorted(out, key=natural_key)


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


@dataclass(frozen=True)
class BadFile:
    """A file that cannot be used, with a human-readable reason."""

    path: str
    reason: str


class BadImageError(RuntimeError):
    """One or more image files cannot be read; ``bad`` lists every one with its reason."""

    def __init__(self, message: str, bad: Sequence[BadFile] = ()) -> None:
        super().__init__(message)
        self.bad = list(bad)


@dataclass(frozen=True)
class ImageInfo:
    """Header facts of a good image: ``size`` = (width, height) as stored, PIL ``mode``."""

    size: tuple[int, int]
    mode: str


def _jpeg_has_eoi(path: str) -> bool:
    """A complete JPEG ends with the EOI marker FF D9 (maybe followed by padding)."""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        n = f.tell()
        f.seek(max(0, n - 64))
        tail = f.read()
    return b"\xff\xd9" in tail


def check_image(path: str | Path, scan_mode: ScanMode = "full") -> ImageInfo | BadFile:
    """Check one file; return its :class:`ImageInfo` or a :class:`BadFile` with the reason.

    ``scan_mode="header"``: ``Image.verify()`` (PNG: all chunk CRCs, so truncation and bit rot are
    caught without inflating; JPEG / WebP: headers only) plus a check that a JPEG ends with its EOI
    marker (catches truncated JPEGs). About 0.1-0.5 ms per 1024² file.
    ``scan_mode="full"``: additionally decodes the whole image (JPEG with DCT scaling via
    ``draft``, which still reads every entropy-coded byte), catching corrupt compressed data too.
    About 3 ms (JPEG) / 12 ms (PNG) per 1024² file on one core; the scan uses threads.
    """
    p = str(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        return BadFile(p, "file does not exist")
    except OSError as e:
        return BadFile(p, f"cannot stat: {e.strerror or e}")
    if st.st_size == 0:
        return BadFile(p, "empty file (0 bytes)")
    try:
        with open(p, "rb") as f:
            f.read(1)
    except PermissionError:
        return BadFile(p, "unreadable: permission denied")
    except OSError as e:
        return BadFile(p, f"unreadable: {e.strerror or e}")
    try:
        with Image.open(p) as im:
            fmt, size, mode = im.format, im.size, im.mode
            im.verify()
    except UnidentifiedImageError:
        return BadFile(p, "not an image (PIL cannot identify the format)")
    except Image.DecompressionBombError as e:
        return BadFile(p, f"too large to decode safely ({e})")
    except Exception as e:  # noqa: BLE001 - every PIL failure is a reason to report
        return BadFile(p, f"corrupt or truncated ({type(e).__name__}: {e})")
    if fmt == "JPEG" and not _jpeg_has_eoi(p):
        return BadFile(p, "truncated JPEG (no end-of-image marker)")
    if scan_mode == "full":
        try:
            with Image.open(p) as im:
                if im.format == "JPEG":
                    im.draft(im.mode, (64, 64))
                im.load()
        except Exception as e:  # noqa: BLE001
            return BadFile(p, f"corrupt or truncated, full decode failed ({type(e).__name__}: {e})")
    elif scan_mode != "header":
        raise ValueError(f"scan_mode must be 'full' or 'header', got {scan_mode!r}")
    return ImageInfo(size=size, mode=mode)


def format_bad_files(bad: Sequence[BadFile]) -> str:
    """One line per bad file: ``  path: reason``."""
    return "\n".join(f"  {b.path}: {b.reason}" for b in bad)


# ----------------------------------------------------------------------------------------------
# Conversion


def to_rgb(img: Image.Image, alpha: AlphaMode = "white") -> Image.Image:
    """Any PIL image -> 8-bit RGB (see the module docstring for each mode)."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode.startswith("I;16") or mode == "I":
        a = np.asarray(img).astype(np.float64)
        a = np.clip(np.rint(a / 257.0), 0, 255).astype(np.uint8)  # 0..65535 -> 0..255
        return Image.fromarray(a, mode="L").convert("RGB")
    if mode == "F":
        raise ValueError("32-bit float images (mode F) have no defined range; convert them to 8 or 16 bit first")
    if mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
        mode = img.mode
        if mode == "RGB":
            return img
    if mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = img.convert("RGBA")
        if alpha == "drop":
            return rgba.convert("RGB")
        if alpha != "white":
            raise ValueError(f"alpha must be 'white' or 'drop', got {alpha!r}")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")  # L, 1, CMYK (naive, no ICC), YCbCr, LAB, HSV


def make_square(img: Image.Image, non_square: NonSquare = "center_crop") -> Image.Image:
    """Center-crop to the shorter side, or pad (black, centred) to the longer side."""
    w, h = img.size
    if w == h:
        return img
    if non_square == "center_crop":
        s = min(w, h)
        left, top = (w - s) // 2, (h - s) // 2
        return img.crop((left, top, left + s, top + s))
    if non_square == "pad":
        s = max(w, h)
        out = Image.new(img.mode, (s, s), 0)
        out.paste(img, ((s - w) // 2, (s - h) // 2))
        return out
    raise ValueError(f"non_square must be 'center_crop' or 'pad', got {non_square!r}")


def square_side(size: tuple[int, int], non_square: NonSquare) -> int:
    """Side of the square :func:`make_square` makes from a (width, height) image."""
    return min(size) if non_square == "center_crop" else max(size)


def load_square_rgb(path: str | Path, size: int | None, non_square: NonSquare = "center_crop", alpha: AlphaMode = "white") -> np.ndarray:
    """Read ``path`` -> RGB -> square -> ``size`` (None = keep); returns uint8 ``[size, size, 3]``."""
    with Image.open(path) as im:
        im.load()
        img = ImageOps.exif_transpose(im)
        img = make_square(to_rgb(img, alpha), non_square)
    if size is not None and img.size != (size, size):
        img = img.resize((size, size), Image.BICUBIC)
    arr = np.array(img, dtype=np.uint8)  # a writable copy
    assert arr.shape[2] == 3, arr.shape
    return arr


def uint8_to_tensor(arr: np.ndarray) -> Tensor:
    """uint8 ``[H, W, 3]`` -> float ``[3, H, W]`` in [-1, 1] (0 -> -1, 255 -> 1)."""
    assert arr.ndim == 3 and arr.shape[2] == 3 and arr.dtype == np.uint8, (arr.shape, arr.dtype)
    if not arr.flags.writeable:  # e.g. a row of a read-only memmap
        arr = np.array(arr)
    t = torch.from_numpy(arr).permute(2, 0, 1).to(torch.float32, memory_format=torch.contiguous_format)
    return t.div_(127.5).sub_(1.0)  # [3, H, W], contiguous (faster DS, flips and collation)


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
        _check_sizes(hr_size, lr_size)
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
        self.attrs, self.attr_names = _check_attrs(attrs, attr_names, len(self.names))
        self.non_square, self.alpha = non_square, alpha
        self.degradations = _check_degradations(degradations, lr_from_disk=self.lr_root is not None)
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
                    item_bad.append(BadFile(str(self.lr_root / self.lr_names[i]), f"LR image is {w}x{h}, expected {self.lr_size}x{self.lr_size} (lr_size); LR files are used as they are"))
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
            rank_zero_warn(f"{len(upscaled)} of {len(self.names)} images under {str(self.root)!r} are smaller than hr_size={self.hr_size} and will be upscaled (bicubic): {shown}")
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


def make_item(ds: Any, i: int, hr_u8: np.ndarray, lr_u8: np.ndarray | None) -> dict[str, Any]:
    """Build the item dict shared by the folder and prepared datasets (``ds`` provides
    ``names, lr_size, degradations, degradation_seed, attrs``)."""
    hr = uint8_to_tensor(hr_u8)  # [3, H, W]
    gen = None
    if len(ds.degradations) and ds.degradation_seed is not None:
        gen = seed_generator(ds.degradation_seed, zlib.crc32(ds.names[i].encode("utf-8")))
    if lr_u8 is None:
        lr = degrade_lr(hr[None], ds.lr_size, ds.degradations, generator=gen)[0]  # [3, h, w]
    else:
        lr = uint8_to_tensor(lr_u8)
        for d in ds.degradations:  # only "after_ds" ones are allowed with LR files
            lr = d(lr, generator=gen)
    return {
        "hr": hr,
        "lr": lr,
        "attrs": None if ds.attrs is None else torch.from_numpy(np.asarray(ds.attrs[i], dtype=np.float32)),
        "index": i,
        "name": ds.names[i],
    }


def _check_sizes(hr_size: int, lr_size: int) -> None:
    if int(hr_size) <= 0 or int(lr_size) <= 0:
        raise ValueError(f"hr_size and lr_size must be positive, got hr_size={hr_size}, lr_size={lr_size}")
    if int(lr_size) > int(hr_size):
        raise ValueError(f"lr_size={lr_size} must not exceed hr_size={hr_size} (DS only shrinks)")


def _check_attrs(attrs: np.ndarray | None, attr_names: Sequence[str] | None, n: int) -> tuple[np.ndarray | None, list[str] | None]:
    if attrs is None:
        return None, (list(attr_names) if attr_names is not None else None)
    attrs = np.asarray(attrs, dtype=np.float32)
    if attrs.ndim != 2 or attrs.shape[0] != n:
        raise ValueError(f"attrs must be [N={n}, A], got shape {attrs.shape}")
    if attr_names is None or len(attr_names) != attrs.shape[1]:
        raise ValueError(f"attr_names must name the {attrs.shape[1]} attribute columns, got {attr_names}")
    return attrs, list(attr_names)


def _check_degradations(degradations: Sequence[Degradation] | None, lr_from_disk: bool) -> list[Degradation]:
    degs = list(degradations or [])
    for d in degs:
        if not isinstance(d, Degradation):
            raise ValueError(f"degradations must be Degradation modules, got {type(d).__name__}")
        if lr_from_disk and d.where == "before_ds" and len(d):
            raise ValueError("a 'before_ds' degradation cannot be applied when LR images are read from lr_root (no DS runs)")
    return degs


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
        _check_sizes(hr_size, lr_size)
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
        self.degradations = _check_degradations(degradations, lr_from_disk=False)
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
                self.no_test_message() + ". Validation and testing use the test split; to train without "
                "validation set trainer.limit_val_batches: 0."
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
            from datamodules.prepare import PreparedDataset

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
        from datamodules.prepare import prepare_datasets

        if self.prepared_dir is None:
            raise ValueError("prepare() needs prepared_dir (the output folder)")
        datasets = {s: self.folder_dataset(s) for s in SPLITS}
        return prepare_datasets(datasets, self.prepared_dir, self.fingerprint(), num_threads or self.scan_threads, overwrite)

    def prepare_data(self) -> None:
        """Lightning hook (rank 0): write ``prepared_dir`` on the first run; no-op otherwise."""
        from datamodules.prepare import is_prepared

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
            raise ValueError(f"give exactly one of root (one pool, split by test_fraction) or split_root (train/ and test/ subfolders), got root={root!r}, split_root={split_root!r}")
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
