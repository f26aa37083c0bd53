"""Image files <-> tensors: listing, checking, conversion to RGB, reading, writing and grids.

The project's image convention: float tensors in [-1, 1], NCHW (or [3, H, W] for one image), RGB --
StyleGAN2's output range -- so generator outputs, HR and LR compare directly. Files are read as
8-bit RGB by :func:`load_square_rgb` (EXIF orientation, any PIL mode -> RGB, non-square -> square,
bicubic resize) and turned into tensors by :func:`uint8_to_tensor`, the one converter.

Conversion of modes (:func:`to_rgb`): L / 1 / CMYK / YCbCr / ... via PIL; P (palette) via RGBA when it
has a transparent colour; LA / RGBA / PA / premultiplied: alpha composited on white
(``alpha="white"``, default) or dropped (``alpha="drop"``); 16-bit I;16 / I: scaled by 1/257 to 8 bits
(PIL's own conversion clips at 255, which would make most 16-bit images white).
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

from lit_propulse.core.errors import MissingFilesError

#: the image files every command and dataset reads (matched case-insensitively)
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".webp")

ScanMode = Literal["full", "header"]
NonSquare = Literal["center_crop", "pad"]
AlphaMode = Literal["white", "drop"]


# ----------------------------------------------------------------------------------------------
# Listing and checking files


def natural_key(name: str) -> tuple[Any, ...]:
    """Sort key that orders digit runs numerically: ``2.jpg < 10.jpg``, ``00001/x < 00010/x``."""
    return tuple(int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name))


def list_images(root: str | Path, extensions: Sequence[str] = IMAGE_EXTENSIONS, exclude_dirs: Sequence[str] = ()) -> list[str]:
    """All image files under ``root`` (recursive), as relative POSIX paths in natural order.

    Extensions match case-insensitively; hidden files and folders (``.name``) are skipped, as are
    top-level folders named in ``exclude_dirs``. Raises :class:`MissingFilesError` if ``root`` is missing.

    Symbolic links are followed once, by resolved path: a link to a folder already walked (a loop,
    or a second way to the same folder) and a link whose target lies outside ``root`` are not
    followed, and a file reachable by two paths is listed once (real folders and files are
    walked before links, so a real path wins over a link to it). One warning names everything skipped this way.
    """
    root = Path(root)
    if not root.is_dir():
        raise MissingFilesError(f"image folder {str(root)!r} does not exist or is not a directory")
    exts = tuple(e.lower() if e.startswith(".") else "." + e.lower() for e in extensions)
    real_root = os.path.realpath(root)

    def inside(real: str) -> bool:
        return real == real_root or real.startswith(real_root.rstrip(os.sep) + os.sep)

    out: list[str] = []
    seen_dirs: set[str] = {real_root}
    seen_files: set[str] = set()
    skipped: list[str] = []

    def real_first(dirpath: str, names: list[str]) -> list[str]:
        return sorted(names, key=lambda n: (os.path.islink(os.path.join(dirpath, n)), natural_key(n)))

    def first_sight(dirpath: str, name: str, seen: set[str], again: str) -> bool:
        """True the first time the real path of ``dirpath/name`` is met inside ``root``; otherwise
        it goes to ``skipped`` with why (it links outside ``root``, or ``again``: it was met before)."""
        real = os.path.realpath(os.path.join(dirpath, name))
        why = "links outside the folder" if not inside(real) else again if real in seen else ""
        if why:
            skipped.append(f"{Path(dirpath, name).relative_to(root).as_posix()} ({why})")
            return False
        seen.add(real)
        return True

    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        rel_dir = Path(dirpath).relative_to(root)
        dirnames[:] = [  # real folders first
            d
            for d in real_first(dirpath, dirnames)
            if not (d.startswith(".") or (rel_dir == Path(".") and d in exclude_dirs))
            and first_sight(dirpath, d, seen_dirs, "a link to a folder already listed")
        ]
        out += [
            (rel_dir / f).as_posix()
            for f in real_first(dirpath, filenames)
            if not f.startswith(".") and f.lower().endswith(exts) and first_sight(dirpath, f, seen_files, "the same file as one already listed")
        ]
    if skipped:
        shown = "; ".join(skipped[:10]) + (f"; ... ({len(skipped) - 10} more)" if len(skipped) > 10 else "")
        warnings.warn(f"image folder {str(root)!r}: {len(skipped)} symbolic link(s) not followed: {shown}", stacklevel=2)
    return sorted(out, key=natural_key)


@dataclass(frozen=True)
class BadFile:
    """A file that cannot be used, with a human-readable reason."""

    path: str
    reason: str


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
# Conversion and reading


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
# Tensors -> files and grids


def to_uint8(img: Tensor) -> Tensor:
    """[-1, 1] float [..., 3, H, W] -> uint8 in [0, 255] (clamped, rounded). Loggers need uint8:
    a float image in [0, 1] is saved black by several of them."""
    return ((img.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def make_grid(images: Tensor, nrow: int = 8, pad: int = 2, pad_value: float = 1.0) -> Tensor:
    """[N, 3, H, W] in [-1, 1] -> one [3, H', W'] grid image in [-1, 1], ``nrow`` images per row."""
    n, c, h, w = images.shape
    ncol = min(nrow, n)
    nrows = (n + ncol - 1) // ncol
    grid = images.new_full((c, nrows * (h + pad) + pad, ncol * (w + pad) + pad), pad_value)
    for i in range(n):
        r, k = divmod(i, ncol)
        grid[:, pad + r * (h + pad) : pad + r * (h + pad) + h, pad + k * (w + pad) : pad + k * (w + pad) + w] = images[i]
    return grid


def resize_nearest(images: Tensor, size: int) -> Tensor:
    """Nearest-neighbour resize to ``size`` (to show LR images pixel by pixel next to HR ones)."""
    return F.interpolate(images.float(), size=(size, size), mode="nearest")


def rows_grid(rows: Sequence[Tensor], size: int, pad: int = 2) -> Tensor:
    """A grid whose row i holds the images of ``rows[i]`` ([N, 3, h, w] each, any h), all shown at ``size``.

    Used for "LR | side outputs | HR | GT" panels: pass one tensor per column and it is transposed.
    """
    cols = [resize_nearest(r, size) if r.shape[-1] != size else r.float() for r in rows]
    stacked = torch.stack(cols, dim=1).flatten(0, 1)  # [N * len(rows), 3, size, size]
    return make_grid(stacked, nrow=len(rows), pad=pad)


def save_image(img: Tensor, path: str | os.PathLike) -> None:
    """Write a [3, H, W] (or [1, 3, H, W]) [-1, 1] image as PNG, creating the directory."""
    if img.ndim == 4:
        if img.shape[0] != 1:
            raise ValueError(f"save_image takes one image, got a batch of {img.shape[0]}")
        img = img[0]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    Image.fromarray(to_uint8(img).permute(1, 2, 0).cpu().numpy()).save(path)


def load_image(path: str | os.PathLike) -> Tensor:
    """PNG/JPEG -> [3, H, W] float in [-1, 1] (RGB)."""
    with Image.open(path) as im:
        arr = np.array(im.convert("RGB"), dtype=np.uint8)
    return uint8_to_tensor(arr)
