"""NIQE, the Natural Image Quality Evaluator, as a torchmetrics Metric. Lower is better.

A. Mittal, R. Soundararajan and A. C. Bovik, "Making a 'Completely Blind' Image Quality Analyzer",
IEEE Signal Processing Letters 20(3), 2013. Per image (all of it batched, CPU or CUDA):

1. [-1, 1] RGB -> 8-bit levels -> the Y channel of BT.601 YCbCr in [0, 255] (or gray);
   ``crop_border`` pixels off each edge; rounded; cut to whole ``block_size`` blocks.
2. At two scales (full, then MATLAB's antialiased bicubic x0.5): MSCN coefficients
   ``(I - mu) / (sigma + 1)``, mu and sigma over a 7x7 Gaussian window of sigma 7/6 (Eq. (1)).
3. Per block (``block_size`` at scale 1, half that at scale 2), 18 features: the AGGD fit (Eq. (7))
   of the coefficients and of their products with 4 neighbours, with the AGGD mean (Eq. (8)).
4. A Gaussian fitted to the image's block features, and its distance to the pristine Gaussian:
   ``sqrt((mu_p - mu)^T ((S_p + S) / 2)^+ (mu_p - mu))`` (Eq. (10)).

This reproduces basicsr's MATLAB-equivalent ``basicsr/metrics/niqe.py::calculate_niqe`` (itself
within 1e-4 of the authors' MATLAB release): ``tests/test_niqe.py`` checks it to 1e-3 against
values computed by basicsr itself (``benchmarks/niqe_reference.py``; measured: 2e-6). Where
basicsr stores an image in float32 (the luma, the half-scale image, the local mean and deviation,
the MSCN map) this does too, after float64 arithmetic; features and the distance are float64. That
matters for images with large flat areas, such as the toy faces: a flat area leaves exactly zero
coefficients at full scale (NaN features, skipped as basicsr skips them) but float32 rounding noise
at half scale, and their NIQE moves by ~0.03 between a float32 and a float64 half-scale resize. So
the resize makes basicsr's float32 matrix-vector products, and the gray conversion follows OpenCV's
float32 order; on CUDA, whose BLAS rounds otherwise, such images may differ by that much.
One deliberate difference: an image with a single usable block has no sample covariance; basicsr
returns NaN there, this uses a zero covariance (the distance under the pristine covariance alone).

Pristine parameters: ``lit_propulse/data/niqe_pris_params.npz`` is
``basicsr/metrics/niqe_pris_params.npz`` from the basicsr 1.4.2 sdist on PyPI (``basicsr-1.4.2.tar.gz``,
sha256 b89b595a87ef964cda9913b4d99380ddb6554c965577c0c10cb7b78e31301e87), file sha256
2a7c182a68c9e7f1b2e2e5ec723279d6f65d912b6fcaf37eb2bf03d7367c4296: the authors' model, fitted with
96x96 blocks. It cannot score images smaller than one block; for such a domain (the 64x64 toy
faces), fit a model with smaller blocks on its clean images with :func:`fit_pristine_model` (the
authors' procedure: the sharp blocks of pristine images) and pass it as
``NIQE(params=...)``; ``python -m lit_propulse.metrics.niqe FOLDER OUT.npz --block-size 16`` does both.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torchmetrics import Metric

from lit_propulse.core.files import needs_file
from lit_propulse.core.images import list_images

PRISTINE_PARAMS = Path(__file__).resolve().parent.parent / "data" / "niqe_pris_params.npz"
PRISTINE_BLOCK_SIZE = 96  # the block size of the packaged parameters (their file does not store it)
NUM_FEATURES = 36  # 18 per scale

ConvertTo = Literal["y", "gray"]

# The AGGD shape grid searched by moment matching (Eq. (7)): 0.2, 0.201, ..., 10, and
# r(a) = Gamma(2/a)^2 / (Gamma(1/a) Gamma(3/a)) on it (strictly increasing).
_ALPHA_GRID = torch.linspace(0.2, 10.0, 9801, dtype=torch.float64)
_R_GRID = torch.exp(2 * torch.lgamma(2 / _ALPHA_GRID) - torch.lgamma(1 / _ALPHA_GRID) - torch.lgamma(3 / _ALPHA_GRID))
_NEIGHBOURS = ((0, 1), (1, 0), (1, 1), (1, -1))  # horizontal, vertical, two diagonals


# ---- the pristine model ----------------------------------------------------------------------------
@dataclass(frozen=True)
class NIQEParams:
    """A pristine model: the Gaussian of clean images' block features, and how they were computed."""

    mu: Tensor  # [36] float64, mean block feature
    cov: Tensor  # [36, 36] float64, covariance of the block features
    window: Tensor  # [k, k] float64, the MSCN window (Eq. (1))
    block_size: int  # side of the square blocks the features were computed on

    def save(self, path: str | os.PathLike) -> None:
        """Write an ``.npz`` in basicsr's layout (``mu_pris_param`` [1, 36], ``cov_pris_param``,
        ``gaussian_window``) plus ``block_size``. Written to ``path`` exactly (no suffix added)."""
        with open(path, "wb") as f:
            np.savez(
                f,
                mu_pris_param=self.mu.detach().cpu().double().numpy()[None],
                cov_pris_param=self.cov.detach().cpu().double().numpy(),
                gaussian_window=self.window.detach().cpu().double().numpy(),
                block_size=np.int64(self.block_size),
            )

    @classmethod
    def load(cls, path: str | os.PathLike | None = None) -> NIQEParams:
        """Read an ``.npz`` written by :meth:`save` or basicsr's. None = the packaged pristine
        parameters. A file without ``block_size`` (basicsr's) was fitted with 96x96 blocks."""
        path = PRISTINE_PARAMS if path is None else Path(path)
        with np.load(path) as data:
            missing = {"mu_pris_param", "cov_pris_param", "gaussian_window"} - set(data.files)
            if missing:
                raise ValueError(f"{str(path)!r} is not a NIQE parameter file: it lacks {sorted(missing)}")
            mu = torch.from_numpy(data["mu_pris_param"].astype(np.float64)).reshape(-1)
            cov = torch.from_numpy(data["cov_pris_param"].astype(np.float64))
            window = torch.from_numpy(data["gaussian_window"].astype(np.float64))
            block_size = int(data["block_size"]) if "block_size" in data.files else PRISTINE_BLOCK_SIZE
        if mu.shape != (NUM_FEATURES,) or cov.shape != (NUM_FEATURES, NUM_FEATURES):
            raise ValueError(f"{str(path)!r}: expected a 36-feature model, got mu {tuple(mu.shape)}, cov {tuple(cov.shape)}")
        return cls(mu, cov, window, block_size)


def gaussian_window(size: int = 7, sigma: float = 7 / 6) -> Tensor:
    """MATLAB's ``fspecial('gaussian', size, sigma)``, normalised to sum 1: [size, size] float64."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x[:, None] ** 2 + x[None, :] ** 2) / (2 * sigma**2))
    g = torch.where(g < torch.finfo(torch.float64).eps * g.max(), 0.0, g)
    return g / g.sum()


# ---- input: [-1, 1] RGB -> rounded luma --------------------------------------------------------------
def _luma_from_levels(levels: Tensor, convert_to: ConvertTo) -> Tensor:
    """[B, 3 | 1, H, W] 8-bit levels (floats in [0, 255]) -> [B, H, W] float32 luma in [0, 255], unrounded.

    "y": BT.601 Y, ``16 + (65.481 R + 128.553 G + 24.966 B) / 255`` (MATLAB's rgb2ycbcr, basicsr's
    ``to_y_channel``); "gray": ``0.299 R + 0.587 G + 0.114 B`` (basicsr's OpenCV gray). One channel
    is taken as luma already. The float32 steps are basicsr's (for gray, OpenCV's float32 order:
    G first, then fused multiply-adds of B and R), so the rounding to levels is the same.
    """
    if levels.shape[1] == 1:
        return levels[:, 0].float()
    r, g, b = (levels.float() / 255).double().unbind(1)  # float32 values, exact in float64
    if convert_to == "y":
        luma = ((b * 24.966 + g * 128.553 + r * 65.481 + 16.0) / 255).float()
    else:
        f32 = lambda t: t.float().double()  # noqa: E731  (round to float32)
        cr, cg, cb = (float(np.float32(c)) for c in (0.299, 0.587, 0.114))
        luma = f32(f32(f32(g * cg) + b * cb) + r * cr).float()  # float64 sum of exact products = fma
    return luma * 255


def to_niqe_input(images: Tensor, crop_border: int = 0, convert_to: ConvertTo = "y") -> Tensor:
    """[B, 3 | 1, H, W] float in [-1, 1] (clamped) -> [B, H - 2c, W - 2c] float32 rounded luma in [0, 255].

    The images are quantised to 8 bits first, as when saved and scored from files.
    """
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"NIQE expects images [B, 3 or 1, H, W] in [-1, 1], got shape {tuple(images.shape)}")
    levels = ((images.detach().double().clamp(-1, 1) + 1) * 127.5).round()
    luma = _luma_from_levels(levels, convert_to)
    if crop_border:
        luma = luma[:, crop_border:-crop_border, crop_border:-crop_border]
    return luma.round()


def _check_block_size(block_size: int) -> None:
    if block_size < 8 or block_size % 2:
        raise ValueError(f"block_size must be an even number >= 8 (half of it is the block at the second scale), got {block_size}")


def _check_image_size(height: int, width: int, block_size: int, crop_border: int = 0) -> None:
    h, w = height - 2 * crop_border, width - 2 * crop_border
    if h < block_size or w < block_size:
        cropped = f" ({h}x{w} after cropping crop_border={crop_border} from each edge)" if crop_border else ""
        raise ValueError(
            f"NIQE needs at least one {block_size}x{block_size} block, the block size of its pristine model, "
            f"but the images are {height}x{width}{cropped}. Score larger images, lower crop_border, or fit a "
            f"pristine model with smaller blocks on clean images of this domain, e.g. "
            f"fit_pristine_model(folder, block_size=16).save('niqe16.npz') and NIQE(params='niqe16.npz')."
        )


# ---- features -----------------------------------------------------------------------------------------
def _filter(img: Tensor, window: Tensor) -> Tensor:
    """[B, H, W] float32 -> same, filtered with ``window`` in float64, edges replicated (MATLAB 'replicate')."""
    kh, kw = window.shape
    h, w = img.shape[-2:]
    padded = F.pad(img.double()[:, None], (kw // 2, kw // 2, kh // 2, kh // 2), mode="replicate")[:, 0]
    out = torch.zeros_like(padded[:, :h, :w])
    for (i, j), weight in np.ndenumerate(window.detach().cpu().double().numpy()):  # a sum of shifted copies:
        out += weight * padded[:, i : i + h, j : j + w]  # faster than a float64 conv2d on the CPU
    return out.float()


def _mscn(img: Tensor, window: Tensor) -> tuple[Tensor, Tensor]:
    """Eq. (1): [B, H, W] float32 luma -> (MSCN coefficients, local deviation sigma), both [B, H, W] float32."""
    mu = _filter(img, window)
    sigma = (_filter(img * img, window) - mu * mu).abs().sqrt()
    return (img - mu) / (sigma + 1), sigma


def _cubic(x: Tensor) -> Tensor:
    """MATLAB's bicubic kernel (a = -0.5)."""
    ax = x.abs()
    ax2, ax3 = ax**2, ax**3
    near = (1.5 * ax3 - 2.5 * ax2 + 1) * (ax <= 1).type_as(ax)
    far = (-0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2)).type_as(ax)
    return near + far


def _half_taps(in_len: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """MATLAB ``imresize`` x0.5 (bicubic, antialiased) along one axis of length ``in_len``, in float32 as
    basicsr computes it: ([out_len, 8] tap weights, [out_len] first tap as an index into the
    symmetrically padded axis ``_symmetric_index(in_len, 3)``)."""
    scale, width = 0.5, 8.0  # the cubic kernel stretched by 1/scale to antialias
    out_len = math.ceil(in_len * scale)
    u = torch.linspace(1, out_len, out_len, device=device) / scale + 0.5 * (1 - 1 / scale)
    left = torch.floor(u - width / 2)
    taps = left[:, None] + torch.linspace(0, 9, 10, device=device)  # 1-based; the outer two weigh 0 at x0.5
    weights = scale * _cubic((u[:, None] - taps) * scale)
    weights = (weights / weights.sum(1, keepdim=True))[:, 1:-1]
    first = left.long() + 3  # tap 1 (1-based left + 1) as a 0-based index, past the 3 mirrored in front
    return weights.contiguous(), first


def _symmetric_index(n: int, pad: int, device: torch.device) -> Tensor:
    """Indices of ``range(-pad, n + pad)`` mirrored into [0, n): MATLAB's 'symmetric' padding."""
    i = torch.arange(-pad, n + pad, device=device)
    i = torch.where(i < 0, -i - 1, i)
    return torch.where(i >= n, 2 * n - 1 - i, i)


def _half(img: Tensor) -> Tensor:
    """[B, H, W] float32 (H, W even) -> [B, H/2, W/2] float32: MATLAB ``imresize(img, 0.5)``.

    Computed as basicsr's ``imresize(img / 255, 0.5) * 255``: float32 throughout, rows then columns,
    3 mirrored pixels each side, one matrix-vector product per output row (column) of all images at
    once, so that the float32 rounding, which is all that is left of flat areas, is the same
    (on the CPU, bit for bit: the BLAS's rounding depends on that layout).
    """
    b, h, w = img.shape
    x = img.float() / 255
    row_weights, row_first = _half_taps(h, img.device)
    col_weights, col_first = _half_taps(w, img.device)
    x = x[:, _symmetric_index(h, 3, img.device)].transpose(0, 1).reshape(h + 6, b * w)  # [H + 6, B * W]
    rows = torch.stack([x[s : s + 8].T.mv(wt) for s, wt in zip(row_first.tolist(), row_weights)])  # [H/2, B * W]
    rows = rows.reshape(h // 2, b, w).transpose(0, 1).reshape(b * (h // 2), w)
    rows = rows[:, _symmetric_index(w, 3, img.device)]  # [B * H/2, W + 6]
    cols = torch.stack([rows[:, s : s + 8].mv(wt) for s, wt in zip(col_first.tolist(), col_weights)], 1)
    return cols.reshape(b, h // 2, w // 2) * 255


def _blocks(x: Tensor, size: int) -> Tensor:
    """[B, H, W] with H, W multiples of ``size`` -> [B, num_blocks, size, size]."""
    b, h, w = x.shape
    return x.reshape(b, h // size, size, w // size, size).transpose(2, 3).reshape(b, -1, size, size)


def _aggd(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Moment-matching AGGD fit (Eq. (7)) over the last dim of float64 ``x``: (alpha, beta_l, beta_r).

    Without negative (or positive) samples the left (right) deviation is NaN, and so are the betas;
    alpha is then the grid's first value, 0.2 (what basicsr's NaN argmin gives).
    """
    neg, pos = x < 0, x > 0
    x2 = x * x
    left = ((x2 * neg).sum(-1) / neg.sum(-1)).sqrt()  # 0 / 0 = NaN without negative samples
    right = ((x2 * pos).sum(-1) / pos.sum(-1)).sqrt()
    gamma_hat = left / right
    r_hat = x.abs().mean(-1) ** 2 / x2.mean(-1)
    r_norm = r_hat * (gamma_hat**3 + 1) * (gamma_hat + 1) / (gamma_hat**2 + 1) ** 2
    # nearest grid point, the lower one on a tie (argmin's first minimum)
    r_grid, alpha_grid = _R_GRID.to(x.device), _ALPHA_GRID.to(x.device)
    upper = torch.searchsorted(r_grid, r_norm.nan_to_num(0.0).contiguous()).clamp(1, len(r_grid) - 1)
    lower = upper - 1
    idx = torch.where((r_norm - r_grid[lower]) ** 2 <= (r_grid[upper] - r_norm) ** 2, lower, upper)
    alpha = alpha_grid[torch.where(r_norm.isnan(), 0, idx)]
    scale = torch.exp(0.5 * (torch.lgamma(1 / alpha) - torch.lgamma(3 / alpha)))
    return alpha, left * scale, right * scale


def _block_features(mscn: Tensor, size: int) -> Tensor:
    """[B, H, W] MSCN map -> [B, num_blocks, 18] float64: per block the AGGD shape and mean scale of the
    coefficients, then (shape, mean (Eq. (8)), left scale, right scale) of their products with each neighbour."""
    blocks = _blocks(mscn, size).double()  # [B, n, size, size]
    alpha, beta_l, beta_r = _aggd(blocks.flatten(-2))
    feats = [alpha, (beta_l + beta_r) / 2]
    for shift in _NEIGHBOURS:
        products = blocks * torch.roll(blocks, shift, dims=(-2, -1))  # neighbours wrap within the block
        alpha, beta_l, beta_r = _aggd(products.flatten(-2))
        mean = (beta_r - beta_l) * torch.exp(torch.lgamma(2 / alpha) - torch.lgamma(1 / alpha))
        feats += [alpha, mean, beta_l, beta_r]
    return torch.stack(feats, -1)


def niqe_features(img: Tensor, window: Tensor, block_size: int) -> tuple[Tensor, Tensor]:
    """Block features of rounded luma images (:func:`to_niqe_input`).

    Args:
        img: [B, H, W] luma in [0, 255], H and W >= ``block_size``; cut to whole blocks here.
        window: [k, k] MSCN window (:func:`gaussian_window`).
        block_size: block side at full scale (even, >= 8).

    Returns:
        ``(features, sharpness)``: [B, num_blocks, 36] float64 (18 at full scale, 18 at half scale;
        NaN where a block has no coefficient of one sign) and [B, num_blocks] float64, each
        block's mean local deviation, the sharpness the pristine-model fit selects on.
    """
    if img.ndim != 3:
        raise ValueError(f"expected luma images [B, H, W], got shape {tuple(img.shape)}")
    _check_block_size(block_size)
    _check_image_size(img.shape[-2], img.shape[-1], block_size)
    rows, cols = img.shape[-2] // block_size, img.shape[-1] // block_size
    img = img[:, : rows * block_size, : cols * block_size].float()
    mscn, sigma = _mscn(img, window)
    sharpness = _blocks(sigma, block_size).double().mean((-2, -1))  # [B, n]
    half_mscn, _ = _mscn(_half(img), window)
    feats = torch.cat([_block_features(mscn, block_size), _block_features(half_mscn, block_size // 2)], -1)
    return feats, sharpness


def _fit_gaussian(feats: Tensor) -> tuple[Tensor, Tensor]:
    """[B, n, d] features -> (mean [B, d] over non-NaN values, covariance [B, d, d] over rows without NaN).

    Fewer than two complete rows give a zero covariance (basicsr: NaN).
    """
    mu = feats.nanmean(1)
    complete = ~feats.isnan().any(-1, keepdim=True)  # [B, n, 1]
    n = complete.sum(1)  # [B, 1]
    mean = torch.where(complete, feats, 0.0).sum(1) / n.clamp(min=1)
    centred = torch.where(complete, feats - mean[:, None], 0.0)
    cov = centred.transpose(1, 2) @ centred / (n - 1).clamp(min=1)[..., None]
    return mu, cov


def niqe(img: Tensor, mu_pris: Tensor, cov_pris: Tensor, window: Tensor, block_size: int) -> Tensor:
    """NIQE of each image (Eq. (10)): [B, H, W] rounded luma in [0, 255] (:func:`to_niqe_input`) -> [B] float64.

    Args:
        img: [B, H, W] luma, H and W >= ``block_size``.
        mu_pris: [36] pristine mean; cov_pris: [36, 36] pristine covariance.
        window: [k, k] MSCN window the pristine model was fitted with.
        block_size: block side the pristine model was fitted with.

    A constant image has no defined NIQE (NaN).
    """
    feats, _ = niqe_features(img, window, block_size)
    mu, cov = _fit_gaussian(feats)  # [B, 36], [B, 36, 36]
    diff = mu_pris.double().to(img.device) - mu  # [B, 36]
    inv = torch.linalg.pinv((cov_pris.double().to(img.device) + cov) / 2)
    return (diff[:, None] @ inv @ diff[..., None]).reshape(-1).sqrt()


# ---- the Metric -----------------------------------------------------------------------------------
@needs_file(
    "params",
    "NIQE pristine parameters (.npz: mu_pris_param, cov_pris_param, gaussian_window, block_size)",
    "fit_pristine_model(...).save(path), or `python -m lit_propulse.metrics.niqe FOLDER OUT.npz --block-size 16`",
)
class NIQE(Metric):
    """Mean NIQE of the images passed to :meth:`update` (lower is better).

    Images are NCHW RGB (or one-channel) floats in [-1, 1], the project's convention; values outside
    are clamped, and the images are quantised to 8 bits as when saved. Each image must be at least
    ``block_size`` on each side after cropping.

    Args:
        crop_border: pixels dropped from each edge before scoring (basicsr's ``crop_border``; 0 = none).
        block_size: block side; None = the block size of ``params`` (96 for the packaged parameters).
            Another value than the parameters' is refused: features of other blocks are not comparable.
        params: ``.npz`` of a pristine model (:meth:`NIQEParams.save`, or basicsr's file), or a
            :class:`NIQEParams`; None = the packaged pristine parameters of the NIQE authors.
        convert_to: "y" = score the Y of BT.601 YCbCr (basicsr's default), "gray" = the 0.299/0.587/0.114 gray.
        kwargs: torchmetrics ``Metric`` options (``sync_on_compute``, ...).
    """

    higher_is_better = False
    is_differentiable = False
    full_state_update = False

    sum: Tensor
    count: Tensor

    def __init__(
        self,
        crop_border: int = 0,
        block_size: int | None = None,
        params: str | os.PathLike | NIQEParams | None = None,
        convert_to: ConvertTo = "y",
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if crop_border < 0:
            raise ValueError(f"crop_border must be >= 0, got {crop_border}")
        if convert_to not in ("y", "gray"):
            raise ValueError(f"convert_to must be 'y' or 'gray', got {convert_to!r}")
        model = params if isinstance(params, NIQEParams) else NIQEParams.load(params)
        if block_size is not None and block_size != model.block_size:
            raise ValueError(
                f"block_size={block_size} but the pristine parameters were fitted with {model.block_size}x{model.block_size} "
                "blocks; leave block_size unset, or fit parameters with this block size (fit_pristine_model)"
            )
        _check_block_size(model.block_size)
        self.crop_border = crop_border
        self.block_size = model.block_size
        self.convert_to = convert_to
        self.register_buffer("mu_pris", model.mu.double(), persistent=False)
        self.register_buffer("cov_pris", model.cov.double(), persistent=False)
        self.register_buffer("window", model.window.double(), persistent=False)
        self.add_state("sum", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def per_image(self, images: Tensor) -> Tensor:
        """[B, 3 | 1, H, W] in [-1, 1] -> [B] float64 NIQE of each image, without touching the state."""
        if images.ndim != 4:
            raise ValueError(f"NIQE expects images [B, 3 or 1, H, W] in [-1, 1], got shape {tuple(images.shape)}")
        _check_image_size(images.shape[-2], images.shape[-1], self.block_size, self.crop_border)
        luma = to_niqe_input(images, self.crop_border, self.convert_to)  # [B, H', W']
        return niqe(luma, self.mu_pris, self.cov_pris, self.window, self.block_size)

    def update(self, images: Tensor) -> None:
        scores = self.per_image(images)
        self.sum += scores.sum()
        self.count += scores.numel()

    def compute(self) -> Tensor:
        return self.sum / self.count


# ---- fitting a pristine model ------------------------------------------------------------------------
def _luma_batches(images: str | os.PathLike | Tensor | Iterable[Tensor], convert_to: ConvertTo) -> Iterable[Tensor]:
    """Rounded luma [B, H, W] batches from a folder (one image a batch) or [-1, 1] image tensors."""
    if isinstance(images, (str, os.PathLike)):
        for name in list_images(images):
            with Image.open(Path(images) / name) as im:
                pixels = np.asarray(im.convert("RGB"))
            levels = torch.from_numpy(pixels.copy()).permute(2, 0, 1)[None].double()  # [1, 3, H, W]
            yield _luma_from_levels(levels, convert_to).round()
    elif isinstance(images, Tensor):
        yield to_niqe_input(images, 0, convert_to)
    else:
        for batch in images:
            yield to_niqe_input(batch, 0, convert_to)


def fit_pristine_model(
    images: str | os.PathLike | Tensor | Iterable[Tensor],
    block_size: int = PRISTINE_BLOCK_SIZE,
    sharpness_threshold: float = 0.75,
    convert_to: ConvertTo = "y",
) -> NIQEParams:
    """Fit the pristine Gaussian of NIQE on clean images, as the NIQE authors did (their
    ``estimatemodelparam.m``): each image cut into ``block_size`` blocks, its blocks whose sharpness
    (mean local deviation) exceeds ``sharpness_threshold`` times that of its sharpest block kept,
    their 36 features' mean (NaN-skipping) and covariance (over rows without NaN).

    Args:
        images: a folder of clean images (read as RGB; any sizes >= ``block_size``), or [N, 3 | 1, H, W]
            tensors in [-1, 1]: one, or an iterable of them (e.g. a loader's image batches).
        block_size: block side, even, >= 8; the metric then needs images at least this large.
        sharpness_threshold: fraction of each image's sharpest block a block must exceed to be kept
            (0.75 as the authors; 0 = every block except perfectly flat ones).
        convert_to: "y" or "gray", as the metric will use (the authors' MATLAB fit used gray).

    Returns:
        The model; ``.save(path)`` writes it for ``NIQE(params=path)``.
    """
    _check_block_size(block_size)
    if not 0.0 <= sharpness_threshold < 1.0:
        raise ValueError(f"sharpness_threshold must be in [0, 1), got {sharpness_threshold}")
    window = gaussian_window()
    kept, num_images = [], 0
    for luma in _luma_batches(images, convert_to):
        feats, sharpness = niqe_features(luma, window, block_size)  # [B, n, 36], [B, n]
        keep = sharpness > sharpness_threshold * sharpness.amax(1, keepdim=True)
        kept.append(feats[keep].cpu())
        num_images += luma.shape[0]
    feats = torch.cat(kept) if kept else torch.empty(0, NUM_FEATURES, dtype=torch.float64)
    complete = feats[~feats.isnan().any(-1)]
    if complete.shape[0] <= NUM_FEATURES:
        raise ValueError(
            f"{num_images} images gave {complete.shape[0]} sharp blocks with finite features; a {NUM_FEATURES}-feature "
            "covariance needs more: use more (or larger, less flat) images, or a smaller block_size"
        )
    return NIQEParams(feats.nanmean(0), torch.cov(complete.T), window, block_size)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Fit NIQE pristine parameters on a folder of clean images.")
    parser.add_argument("folder", help="folder of clean images of the domain (searched recursively)")
    parser.add_argument("out", help="output .npz, for NIQE(params=...)")
    parser.add_argument("--block-size", type=int, default=PRISTINE_BLOCK_SIZE, help="block side (even, >= 8)")
    parser.add_argument("--sharpness-threshold", type=float, default=0.75, help="fraction of the sharpest block to keep")
    parser.add_argument("--convert-to", choices=("y", "gray"), default="y", help="luma the metric will score")
    args = parser.parse_args(argv)
    model = fit_pristine_model(args.folder, args.block_size, args.sharpness_threshold, args.convert_to)
    model.save(args.out)
    print(f"wrote {args.out}: block_size {model.block_size}")


if __name__ == "__main__":
    main()
