"""pSp (Richardson et al., CVPR 2021) trained for super-resolution as it trains it: the baseline of
Pro-PULSE Table I (Sec. IV-A 3, "we mainly compare to ... pSp network [25]").

A thin LightningModule: the encoder (:class:`~lit_propulse.networks.psp.GradualStyleEncoder`, LR ->
upsampled input -> w+), the frozen StyleGAN2 and the objective (:class:`~lit_propulse.losses.psp.PSPLoss`:
L2 + LPIPS + identity + w-norm) are injected. One Adam step per batch on the encoder only (pSp's
``train_decoder`` off). The export (``psp.pt``, :meth:`PSPModule.export`) is the encoder alone; the
generator comes from its own file (:class:`~lit_propulse.evaluation.psp_method.PSPMethod`).

Differences from pSp's own trainer, each a choice of ours: Adam (pSp's ``--optim_name adam``) rather
than its default Ranger (RAdam + Lookahead, not a dependency here); the LR of the data module at
one factor (Table I's 16 -> 1024) rather than pSp's random factor in {1, 2, 4, 8, 16, 32} per image.
"""

from __future__ import annotations

from typing import Any, Literal

import pytorch_lightning as pl
import torch
from torch import Tensor

from lit_propulse.core.batch import SRBatch
from lit_propulse.core.files import needs_file
from lit_propulse.core.outputs import ImageOutput
from lit_propulse.core.weights import save_module
from lit_propulse.losses.psp import PSPLoss
from lit_propulse.modules.propulse import ExternalWeightsMixin
from lit_propulse.networks.psp import GradualStyleEncoder
from lit_propulse.networks.stylegan2 import Generator

__all__ = ["PSPModule"]


@needs_file(
    "backbone_weights",
    "the ArcFace IR-SE50 weights pSp initialises its encoder backbone from",
    "model_ir_se50.pth, as linked from the README of eladrich/pixel2style2pixel ('IR-SE50 Model')",
)
class PSPModule(ExternalWeightsMixin, pl.LightningModule):
    """Train pSp's encoder for SR on :class:`SRBatch` batches: w+ = E(up(LR)), image = G.synthesis(w+),
    loss = PSPLoss(image, HR, w+). ``validation_step`` / ``test_step`` return the :class:`ImageOutput`
    (scored by :class:`lit_propulse.evaluation.callback.StageEvaluation` when configured).

    Args:
        encoder: pSp's GradualStyleEncoder (its ``lr_size`` must be the data's LR size).
        generator: the pretrained StyleGAN2 (frozen; left out of checkpoints).
        loss: pSp's objective (L2, LPIPS, identity, w-norm).
        lr: Adam learning rate (1e-4, pSp's).
        betas: Adam betas.
        backbone_weights: ArcFace's ``model_ir_se50.pth``: pSp's initialisation of the encoder's
            ``input_layer`` and ``body`` (:meth:`GradualStyleEncoder.load_backbone`; IR-SE50 layout only);
            None = PyTorch's default initialisation (the toy domain, whose narrow backbone has no
            pretrained weights).
        start_from_latent_avg: the encoder predicts offsets from the generator's mean latent
            (``encoder.w_offset = latent_avg``; pSp's SR setting); False = zeros.
        train_noise: the generator's noise while training ("random", pSp's ``randomize_noise=True``).
        eval_noise: the noise at validation / test / inference ("const", the stored maps: pSp's
            inference script uses ``randomize_noise=False``).
    """

    external_prefixes = ("generator.", "loss.lpips.", "loss.id.")

    def __init__(
        self,
        encoder: GradualStyleEncoder,
        generator: Generator,
        loss: PSPLoss,
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.999),
        backbone_weights: str | None = None,
        start_from_latent_avg: bool = True,
        train_noise: Literal["random", "const"] = "random",
        eval_noise: Literal["random", "const"] = "const",
    ) -> None:
        super().__init__()
        if (encoder.num_ws, encoder.w_dim) != (generator.num_ws, generator.w_dim):
            raise ValueError(f"encoder produces w+ of {encoder.num_ws} x {encoder.w_dim}, the generator takes {generator.num_ws} x {generator.w_dim}")
        for name, v in (("train_noise", train_noise), ("eval_noise", eval_noise)):
            if v not in ("random", "const"):
                raise ValueError(f"{name} must be 'random' or 'const', got {v!r}")
        self.save_hyperparameters(ignore=["encoder", "generator", "loss"])
        self.encoder = encoder
        self.generator = generator.requires_grad_(False).eval()
        self.loss = loss
        if backbone_weights is not None:  # a resumed run then loads its trained weights from the checkpoint
            encoder.load_backbone(backbone_weights)
        if start_from_latent_avg:  # a resumed run then loads the same offset from its checkpoint
            if not bool(generator.has_latent_avg):
                raise ValueError("start_from_latent_avg: the generator checkpoint has no latent_avg")
            with torch.no_grad():
                encoder.w_offset.copy_(generator.latent_avg.to(encoder.w_offset))

    @property
    def method_name(self) -> str:
        """The model's row label in evaluation reports."""
        return "pSp"

    def train(self, mode: bool = True) -> PSPModule:
        super().train(mode)
        self.generator.eval()
        return self

    def forward(self, lr: Tensor, noise: Literal["random", "const"] | None = None) -> ImageOutput:
        """LR [B, 3, l, l] -> ImageOutput(image [B, 3, H, W], {}, ws [B, num_ws, w_dim])."""
        ws = self.encoder(lr)  # [B, num_ws, w_dim]
        image = self.generator.synthesis(ws, noise=noise or self.hparams.eval_noise).image  # [B, 3, H, W]
        return ImageOutput(image, {}, ws)

    def _check(self, batch: SRBatch) -> None:
        if batch.lr.shape[-1] != self.encoder.lr_size or batch.hr.shape[-1] != self.generator.size:
            raise ValueError(
                f"PSPModule: data gives HR {tuple(batch.hr.shape[-2:])} / LR {tuple(batch.lr.shape[-2:])}, but the generator "
                f"outputs {self.generator.size} and the encoder takes LR {self.encoder.lr_size}: set data hr_size / lr_size"
            )

    def _losses(self, batch: SRBatch, noise: str) -> tuple[Tensor, dict[str, Tensor], ImageOutput]:
        out = self(batch.lr, noise=noise)
        total, logs = self.loss(out.image, batch.hr, out.ws, self.generator.latent_avg)
        return total, logs, out

    def training_step(self, batch: SRBatch, batch_idx: int) -> Tensor:
        self._check(batch)
        total, logs, _ = self._losses(batch, self.hparams.train_noise)
        self.log_dict({f"train/{k}": v for k, v in logs.items()}, batch_size=len(batch))
        return total

    def validation_step(self, batch: SRBatch, batch_idx: int) -> ImageOutput:
        _, logs, out = self._losses(batch, self.hparams.eval_noise)
        self.log_dict({f"val/{k}": v for k, v in logs.items()}, batch_size=len(batch), sync_dist=True)
        return out

    def test_step(self, batch: SRBatch, batch_idx: int) -> ImageOutput:
        return self(batch.lr)

    def predict_step(self, batch: SRBatch, batch_idx: int) -> dict[str, Any]:
        out = self(batch.lr)
        return {"name": batch.name, "image": out.image, "side_images": {}, "lr": batch.lr}

    @torch.no_grad()
    def visual_columns(self, batch: SRBatch) -> list[tuple[str, Tensor]]:
        """Panel columns: LR | pSp's input (the upsampled LR) | output | GT."""
        up = torch.nn.functional.interpolate(self.encoder.upsample_lr(batch.lr), size=batch.hr.shape[-2:], mode="nearest")
        return [("LR", batch.lr), ("input", up), ("pSp", self(batch.lr).image), ("GT", batch.hr)]

    def configure_optimizers(self):
        return torch.optim.Adam(self.encoder.parameters(), lr=self.hparams.lr, betas=tuple(self.hparams.betas))

    def export(self, path: str) -> None:
        """Write the encoder (``psp.pt``; :func:`lit_propulse.core.weights.load_module` rebuilds it)."""
        save_module(self.encoder, path)
