"""Many answers per input for Pro-PULSE: N outputs per LR that differ only in what the LR does not
determine, each with its L_DS, and a per-pixel spread map of where detail is invented.

PULSE gets one-to-many super-resolution (Menon et al. 2020, Sec. 4.4) from restarting its search at
other random latents and noise maps. Pro-PULSE's encoders are deterministic; here the answer is
resampled where the LR leaves it free, keeping the rest of the encoder's w+ exactly:

* **rows** — the w+ rows of the layers above ``rows_above`` (rows [num_ws_up_to(r), num_ws) style
  only layers finer than r; the row layout is :func:`~lit_propulse.networks.stylegan2.num_ws_up_to`'s)
  move toward a fresh w = mapping(z) per sample (style mixing, truncated toward the mean latent), by
  ``strength`` (1 = replaced, 0 = kept). The default is 4x the LR's side, not the LR's side itself:
  StyleGAN2's rows just above the LR resolution still set colours the LR sees (on the toy domain,
  8² -> 64², resampling the rows above 8² multiplies L_DS by 4, above 16² by 1.35, above 32² leaves it
  unchanged: docs/beyond.md);
* **noise** — the noise maps at resolutions above ``noise_above`` (default the LR size) are drawn
  afresh per sample; the others stay the generator's stored maps, as the encoder's answer uses.

Every sample is scored by its L_DS (:class:`~lit_propulse.losses.pulse.DownscaleLoss` of the clamped
image, PULSE Eq. (8)): a resampled fine row can still move the LR a little. With ``refine`` each
sample is then made consistent (:func:`lit_propulse.refine.refine`, every row free).
:func:`spread_map` is the per-pixel standard deviation over the samples (mean over RGB).
Samples are seeded by ``(seed, key, sample)`` (:func:`~lit_propulse.core.seeding.seed_generator`), so
an image's samples do not depend on its batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lit_propulse.core.downscale import downscale
from lit_propulse.core.seeding import seed_generator
from lit_propulse.losses.pulse import downscale_l2
from lit_propulse.networks.stylegan2 import num_ws_up_to
from lit_propulse.pulse.fit import GaussianFit
from lit_propulse.pulse.search import noise_resolutions
from lit_propulse.refine import RefineConfig, refine, render_fn

__all__ = ["SampleConfig", "Samples", "resample_noise", "resample_rows", "sample_answers", "spread_image", "spread_map"]


@dataclass(frozen=True)
class SampleConfig:
    """What is resampled (module docstring).

    Args:
        num_samples: answers per LR (N >= 1).
        rows_above: resolution above which the w+ rows are resampled; None = 4x the LR size (at most
            the generator's size). The generator's size = no row resampled.
        noise_above: resolution above which the noise maps are redrawn; None = the LR size. The
            generator's size = no map redrawn.
        strength: how far the resampled rows move toward the random w: 1 = replaced (style mixing),
            0 = kept; in [0, 1].
        truncation: truncation of the random w toward the mean latent (1 = none; 0.7 keeps the
            mixed-in styles typical).
        seed: base seed; sample s of image key k uses ``seed_generator(seed, k, s)``.
    """

    num_samples: int = 8
    rows_above: int | None = None
    noise_above: int | None = None
    strength: float = 1.0
    truncation: float = 0.7
    seed: int = 0

    def __post_init__(self) -> None:
        if self.num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {self.num_samples}")
        if not 0.0 <= self.strength <= 1.0:
            raise ValueError(f"strength must be in [0, 1] (1 = replace the rows, 0 = keep them), got {self.strength}")
        if not 0.0 <= self.truncation <= 1.0:
            raise ValueError(f"truncation must be in [0, 1], got {self.truncation}")
        for name in ("rows_above", "noise_above"):
            r = getattr(self, name)
            if r is not None and (r < 4 or r & (r - 1)):
                raise ValueError(f"{name} must be None or a power of two >= 4, got {r}")


@dataclass
class Samples:
    """N answers per LR; B = number of LRs.

    images: [B, N, 3, H, W] (raw generator range); ws: [B, N, num_ws, w_dim];
    noise: the noise maps, each [B * N, 1, r, r] (sample s of LR i at i * N + s);
    l_ds: [B, N] L_DS of each (clamped) sample; spread: [B, 1, H, W] (:func:`spread_map`);
    first_row: the first resampled w+ row (rows [first_row, num_ws) were resampled);
    noise_maps: indices of the redrawn noise maps (port order).
    """

    images: Tensor
    ws: Tensor
    noise: list[Tensor | None]
    l_ds: Tensor
    spread: Tensor
    first_row: int
    noise_maps: list[int]


def resample_rows(G: nn.Module, ws: Tensor, first_row: int, generators: Sequence[torch.Generator], strength: float = 1.0, truncation: float = 0.7) -> Tensor:
    """ws [M, num_ws, d] with rows [first_row, num_ws) moved toward one fresh w = truncate(mapping(z)) per
    item (z drawn from ``generators[m]``, one per item) by ``strength``; rows before ``first_row`` are
    returned unchanged (the same values)."""
    if len(generators) != ws.shape[0]:
        raise ValueError(f"got {len(generators)} generators for {ws.shape[0]} w+")
    if not 0 <= first_row <= ws.shape[1]:
        raise ValueError(f"first_row must be in [0, {ws.shape[1]}], got {first_row}")
    z = torch.stack([torch.randn(G.z_dim, generator=g) for g in generators]).to(ws)  # [M, z_dim]
    with torch.no_grad():
        w = G.truncate(G.mapping(z), truncation)  # [M, d]
    fine = torch.lerp(ws[:, first_row:], w[:, None].expand(-1, ws.shape[1] - first_row, -1), float(strength))
    return torch.cat([ws[:, :first_row], fine], dim=1)  # [M, num_ws, d]


def resample_noise(
    stored: Sequence[Tensor | None], resolutions: Sequence[int], above: int, generators: Sequence[torch.Generator]
) -> tuple[list[Tensor | None], list[int]]:
    """The noise maps for M items: maps at resolutions > ``above`` drawn afresh per item (from
    ``generators[m]``), the others the ``stored`` maps as they are (shared, [1, 1, r, r]).
    Returns (maps, indices of the redrawn maps)."""
    maps: list[Tensor | None] = []
    redrawn = []
    for i, (n, r) in enumerate(zip(stored, resolutions)):
        if r > above and n is not None:
            maps.append(torch.stack([torch.randn(1, r, r, generator=g) for g in generators]).to(n))  # [M, 1, r, r]
            redrawn.append(i)
        else:
            maps.append(n)
    return maps, redrawn


def spread_map(images: Tensor) -> Tensor:
    """Per-pixel standard deviation over the samples, averaged over RGB: [B, N, 3, H, W] -> [B, 1, H, W]
    (0 where every sample agrees; N = 1 gives zeros)."""
    if images.ndim != 5:
        raise ValueError(f"expected samples [B, N, 3, H, W], got {tuple(images.shape)}")
    if images.shape[1] == 1:
        return images.new_zeros(images.shape[0], 1, *images.shape[-2:])
    return images.clamp(-1, 1).std(dim=1, unbiased=False).mean(dim=1, keepdim=True)


def spread_image(spread: Tensor) -> Tensor:
    """A spread map [B, 1, H, W] as grey images [B, 3, H, W] in [-1, 1] for saving and showing: black = every
    sample agrees, white = the image's own largest spread (each image scaled by its max; all black when
    the samples agree everywhere)."""
    if spread.ndim != 4 or spread.shape[1] != 1:
        raise ValueError(f"expected a spread map [B, 1, H, W], got {tuple(spread.shape)}")
    top = spread.amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-12)  # [B, 1, 1, 1]
    return (spread / top * 2 - 1).expand(-1, 3, -1, -1)  # [B, 3, H, W]


def sample_answers(
    upsampler: nn.Module,
    lr: Tensor,
    config: SampleConfig,
    keys: Sequence[int] | None = None,
    refine_config: RefineConfig | None = None,
    gaussian_fit: GaussianFit | None = None,
) -> Samples:
    """N answers per LR from a :class:`~lit_propulse.inference.ProPulseUpsampler` (module docstring).

    Args:
        upsampler: the trained upsampler (its ``encode`` gives the w+ every sample starts from).
        lr: [B, 3, l, l] LR images in [-1, 1].
        config: what to resample and how many samples.
        keys: a stable key per LR (e.g. dataset indices) for the seeds; None = range(B).
        refine_config: refine every sample to L_DS <= ε (:func:`lit_propulse.refine.refine`; every row
            moves a little); None = no refinement.
        gaussian_fit: the generator's Gaussian fit, needed by a refinement of variant "sphere".
    """
    G = upsampler.gds.generator
    B, N = lr.shape[0], config.num_samples
    keys = list(range(B)) if keys is None else [int(k) for k in keys]
    if len(keys) != B:
        raise ValueError(f"got {len(keys)} keys for {B} LR images")
    lr_side = lr.shape[-1]
    rows_above = min(4 * lr_side, G.size) if config.rows_above is None else config.rows_above
    noise_above = lr_side if config.noise_above is None else config.noise_above
    if rows_above > G.size or noise_above > G.size:
        raise ValueError(f"rows_above / noise_above must not exceed the generator's size {G.size}, got {rows_above} / {noise_above}")
    first_row = num_ws_up_to(rows_above)
    gens_rows = [seed_generator(config.seed, k, s, 0) for k in keys for s in range(N)]
    gens_noise = [seed_generator(config.seed, k, s, 1) for k in keys for s in range(N)]
    with torch.no_grad():
        ws0 = upsampler.encode(lr)  # [B, num_ws, d]
        ws = resample_rows(G, ws0.repeat_interleave(N, dim=0), first_row, gens_rows, config.strength, config.truncation)
        noise, redrawn = resample_noise(G.synthesis.stored_noise(), noise_resolutions(G.size), noise_above, gens_noise)
        lr_n = lr.repeat_interleave(N, dim=0)  # [B * N, 3, l, l]
    if refine_config is not None:
        res = refine(render_fn(G.synthesis), ws, lr_n, noise, refine_config, gaussian_fit)
        ws, noise = res.ws, res.noise
    with torch.no_grad():
        image = G.synthesis(ws, noise=noise).image  # [B * N, 3, H, W]
        l_ds = downscale_l2(downscale(image.clamp(-1, 1), tuple(lr.shape[-2:])), lr_n.float())  # [B * N]
    images = image.reshape(B, N, *image.shape[1:])
    return Samples(
        images=images,
        ws=ws.reshape(B, N, *ws.shape[1:]),
        noise=list(noise),
        l_ds=l_ds.reshape(B, N),
        spread=spread_map(images),
        first_row=first_row,
        noise_maps=redrawn,
    )
