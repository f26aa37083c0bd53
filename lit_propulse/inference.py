"""Trained Pro-PULSE as one inference network: LR -> w+ -> G_ds (final image + every side output).

:class:`ProPulseUpsampler` is what the stages' exports add up to, used by evaluation
(:mod:`lit_propulse.evaluation`), real photos (``upsample``) and editing. The w+ composition is the
one the training modules use (:func:`encode_ws`), so inference and training cannot drift apart.

    up = ProPulseUpsampler.from_files("runs/toy/gds/gds.pt", "runs/toy/ewplus/ewplus.pt", ew="runs/toy/ew/ew.pt")
    out = up(lr)        # ImageOutput(image [B,3,H,W], side_images {r: [B,3,r,r]}, ws [B,num_ws,w_dim])
"""

from __future__ import annotations

import os
from typing import Literal

import torch
from torch import Tensor, nn

from lit_propulse.core.errors import UserFacingError
from lit_propulse.core.outputs import ImageOutput
from lit_propulse.core.weights import load_module, safe_load
from lit_propulse.networks.encoders import EWEncoder, EWPlusEncoder, compose_wplus
from lit_propulse.networks.gds import DeeplySupervisedGenerator, load_gds
from lit_propulse.networks.stylegan2 import Generator

Guidance = Literal["ew", "latent_avg"]


def encode_ws(
    G: Generator,
    encoder: nn.Module,
    lr: Tensor,
    scale: int | None = None,
    ew_encoder: nn.Module | None = None,
    guidance: Guidance = "ew",
) -> Tensor:
    """LR [B, 3, l, l] -> w+ [B, num_ws, w_dim].

    ``encoder`` an E_W (one w, repeated: Eq. (4), Sec. III-D) or an E_W+ read up to ``scale`` and
    completed with E_W's w (``guidance="ew"``) or the mean latent (``"latent_avg"``): Eq. (10), Sec. III-E.
    When E_W+ produces every row (the full scale: q = 0 in Eq. (10)) E_W is not called at all.
    """
    if isinstance(encoder, EWPlusEncoder):
        if scale is None:
            raise ValueError("an E_W+ encoder needs the progressive scale reached (scale=...)")
        if guidance not in ("ew", "latent_avg"):
            raise ValueError(f"guidance must be 'ew' or 'latent_avg', got {guidance!r}")
        wplus = encoder.forward_scales(lr, int(scale))  # [B, num_ws_up_to(scale), w_dim]
        if wplus.shape[1] == G.num_ws:
            return wplus  # [B, num_ws, w_dim]: no row left for E_W's w to fill
        if guidance == "ew":
            if ew_encoder is None:
                raise ValueError("guidance='ew' needs the trained E_W (ew_encoder=...)")
            with torch.no_grad():
                base = ew_encoder(lr)  # [B, w_dim]
        else:
            base = G.latent_avg.expand(lr.shape[0], -1)
        return compose_wplus(wplus, base.to(wplus.dtype), G.num_ws)
    w = encoder(lr)  # [B, w_dim]
    return G.to_ws(w)  # [B, num_ws, w_dim]


class ProPulseUpsampler(nn.Module):
    """E_W or E_W+ in front of G_ds, frozen and in eval mode.

    Args:
        gds: the deeply-supervised generator (G_ds stage export).
        encoder: E_W (EWEncoder) or E_W+ (EWPlusEncoder).
        ew_encoder: the base E_W that fills the rows E_W+ does not produce (guidance "ew"); None for
            an E_W-only upsampler, guidance "latent_avg", or an E_W+ at the full scale (E_W+ then
            produces every row and E_W is never called).
        scale: the progressive scale E_W+ reached (None = the generator's size; ignored for E_W).
        guidance: see :func:`encode_ws`.
        noise: generator noise: "const" (stored maps: deterministic, as in training) or "random".
    """

    def __init__(
        self,
        gds: DeeplySupervisedGenerator,
        encoder: nn.Module,
        ew_encoder: nn.Module | None = None,
        scale: int | None = None,
        guidance: Guidance = "ew",
        noise: Literal["const", "random"] = "const",
    ) -> None:
        super().__init__()
        self.scale = int(scale) if scale is not None else gds.size
        if isinstance(encoder, EWPlusEncoder) and guidance == "ew" and ew_encoder is None and self.scale < gds.size:
            raise ValueError(f"an E_W+ upsampler at scale {self.scale} < {gds.size} with guidance='ew' needs ew_encoder (the trained E_W)")
        self.gds = gds
        self.encoder = encoder
        self.ew_encoder = ew_encoder
        self.guidance = guidance
        self.noise = noise
        self.requires_grad_(False).eval()

    @property
    def lr_size(self) -> int:
        return self.gds.lr_size

    @property
    def size(self) -> int:
        return self.gds.size

    def train(self, mode: bool = True) -> ProPulseUpsampler:
        return super().train(False)  # always inference

    def encode(self, lr: Tensor) -> Tensor:
        if lr.ndim != 4 or lr.shape[1] != 3 or lr.shape[-1] != self.lr_size or lr.shape[-2] != self.lr_size:
            raise ValueError(f"expected LR [B, 3, {self.lr_size}, {self.lr_size}], got {tuple(lr.shape)}")
        return encode_ws(self.gds.generator, self.encoder, lr, self.scale, self.ew_encoder, self.guidance)

    def render(self, ws: Tensor) -> ImageOutput:
        """w+ [B, num_ws, w_dim] -> final image and every side output (the editing path)."""
        out = self.gds(ws, noise=self.noise)
        return ImageOutput(out.image, dict(out.side_images), ws)

    def forward(self, lr: Tensor) -> ImageOutput:
        return self.render(self.encode(lr))

    @classmethod
    def from_files(
        cls,
        gds: str | os.PathLike,
        encoder: str | os.PathLike,
        ew: str | os.PathLike | None = None,
        guidance: Guidance = "ew",
        noise: Literal["const", "random"] = "const",
    ) -> ProPulseUpsampler:
        """Build from stage exports: ``gds`` (gds.pt), ``encoder`` (ew.pt or ewplus.pt), ``ew`` (ew.pt,
        needed with an E_W+ and guidance "ew"). The E_W+ export's saved progressive scale is used."""
        for p, what in ((gds, "G_ds export (gds.pt)"), (encoder, "encoder export (ew.pt / ewplus.pt)"), (ew, "E_W export (ew.pt)")):
            if p is not None and not os.path.isfile(p):
                raise UserFacingError(f"{p}: {what} not found; the pipeline / fit of that stage writes it")
        G_ds = load_gds(str(gds))
        enc = load_module(encoder, what="encoder")
        if not isinstance(enc, (EWEncoder, EWPlusEncoder)):
            raise UserFacingError(f"{encoder}: holds a {type(enc).__name__}, expected an E_W or E_W+ encoder")
        base = None
        scale = None
        if isinstance(enc, EWPlusEncoder):
            meta = safe_load(encoder, "expected the E_W+ export (ewplus.pt) written by the E_W+ stage")
            scale = int(meta.get("active_scale", G_ds.size))
            if ew is not None:
                base = load_module(ew, expected=EWEncoder, what="E_W encoder")
        if enc.lr_size != G_ds.lr_size:
            raise UserFacingError(f"{encoder}: encoder takes LR {enc.lr_size}, but {gds} was trained for LR {G_ds.lr_size}")
        return cls(G_ds, enc, base, scale, guidance, noise)
