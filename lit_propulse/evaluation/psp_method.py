"""pSp (Richardson et al., CVPR 2021) as a row of the comparison (Pro-PULSE Table I, Fig. 6):
:class:`PSPMethod`, its trained encoder export (``psp.pt``, :class:`lit_propulse.modules.psp.PSPModule`)
in front of the StyleGAN2 it was trained with."""

from __future__ import annotations

from typing import Literal

import torch

from lit_propulse.core.batch import SRBatch
from lit_propulse.core.errors import UserFacingError
from lit_propulse.core.files import needs_file
from lit_propulse.core.outputs import ImageOutput
from lit_propulse.evaluation.methods import SRMethod, clamp_output

__all__ = ["PSPMethod"]


@needs_file(
    "encoder",
    "the pSp encoder export (psp.pt)",
    "written by the pSp stage (python -m lit_propulse fit --config experiments/psp.yaml or experiments/toy/psp.yaml)",
)
@needs_file(
    "generator",
    "the StyleGAN2 checkpoint pSp was trained with",
    "the same generator Pro-PULSE uses (e.g. stylegan2-ffhq-config-f.pt, or lit_propulse/data/toy_stylegan2_64.pt)",
)
class PSPMethod(SRMethod):
    """pSp: w+ = E(up(LR)) (offsets from the mean latent), image = G.synthesis(w+) at the generator's
    own size, stored noise maps (pSp's inference: ``randomize_noise=False``), clamped to [-1, 1].

    Args:
        name: row label.
        generator: the StyleGAN2 checkpoint the encoder was trained with.
        encoder: the pSp export (psp.pt).
        noise: "const" (the stored maps; deterministic) or "random".
    """

    def __init__(self, name: str, generator: str, encoder: str, noise: Literal["const", "random"] = "const") -> None:
        super().__init__(name)
        from lit_propulse.core.weights import load_module
        from lit_propulse.networks.psp import GradualStyleEncoder
        from lit_propulse.networks.stylegan2 import Generator

        if noise not in ("const", "random"):
            raise ValueError(f"noise must be 'const' or 'random', got {noise!r}")
        self.generator = Generator.from_checkpoint(generator).requires_grad_(False).eval()
        self.encoder = load_module(encoder, expected=GradualStyleEncoder, what="pSp encoder").requires_grad_(False).eval()
        if (self.encoder.num_ws, self.encoder.w_dim) != (self.generator.num_ws, self.generator.w_dim):
            raise UserFacingError(
                f"{encoder}: produces w+ of {self.encoder.num_ws} x {self.encoder.w_dim}, but {generator} takes "
                f"{self.generator.num_ws} x {self.generator.w_dim}: not the generator it was trained with"
            )
        self.noise = noise

    def train(self, mode: bool = True) -> PSPMethod:
        return super().train(False)  # inference only: BatchNorm keeps its running statistics

    def settings(self) -> str:
        e = self.encoder
        return f"pSp GradualStyleEncoder: LR {e.lr_size} upsampled ({e.upsample_mode}) to {e.input_size}, IR-SE stages {list(e.stages)}, noise {self.noise}"

    def upsample(self, batch: SRBatch) -> ImageOutput:
        if batch.lr.shape[-1] != self.encoder.lr_size:
            raise ValueError(f"{self.name}: the encoder takes LR {self.encoder.lr_size}, got {tuple(batch.lr.shape[-2:])}")
        with torch.no_grad():
            ws = self.encoder(batch.lr.float())  # [B, num_ws, w_dim]
            image = self.generator.synthesis(ws, noise=self.noise).image  # [B, 3, H, W]
        return clamp_output(ImageOutput(image, {}, ws))
