"""Pro-PULSE's training stages as thin LightningModules (IEEE TIP 2022, Sec. III, IV-G).

| stage | module | paper |
| --- | --- | --- |
| deeply-supervised generator G_ds | :class:`GdsModule` | Sec. III-C, Eq. (1)-(3) |
| base encoder E_W | :class:`EWModule` | Sec. III-D, Eq. (4)-(9), Fig. 3 |
| scale-specific encoder E_W+ | :class:`EWPlusModule` + ProgressiveScaleCallback | Sec. III-E, Eq. (10), Fig. 4 |
| E2E (Table II): no G_ds stage; the branches train with E_W, then with E_W+ | :class:`EWModule` then :class:`EWPlusModule` with ``train_side_heads`` | Sec. IV-G 3) |
| the other ablations of Table II | the same modules, configured | Sec. IV-G |

The modules receive their networks and losses (see ``experiments/*.yaml``) and wire them; the math
is in :mod:`lit_propulse.losses.propulse`, :mod:`lit_propulse.networks.stylegan2` and
:mod:`lit_propulse.networks.encoders`. Each stage writes one export file at the end of training
(:class:`lit_propulse.callbacks.export.StageExport`) that the next stage's YAML loads; an encoder
stage that trains G_ds's branches (E2E) also writes its G_ds beside it (:func:`gds_export_path`).

E2E, as Sec. IV-G describes it ("training encoder and generator in an end-to-end manner"; "its
side-outputs are always changing during training"): G_ds is never trained on its own. Its branches
start fresh on the plain StyleGAN2 and train under Eq. (1) (L_pix + lambda_pp L_pp, lambda_pp = 1 as
in Sec. IV) together with the encoder under Eq. (5): first with E_W (so E2E has its own E_W, not the
one trained on the frozen pretrained G_ds), then, continuing the same branches, with E_W+ guided by
that E_W.
"""

from __future__ import annotations

import abc
import os
from typing import Any, Literal

import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from lit_propulse.core.batch import SRBatch
from lit_propulse.core.downscale import downscale
from lit_propulse.core.outputs import ImageOutput
from lit_propulse.core.weights import save_module
from lit_propulse.inference import encode_ws
from lit_propulse.losses.gan import WGANDiscriminatorLoss
from lit_propulse.losses.propulse import EncoderLoss, GdsLoss, GradientPenalty
from lit_propulse.networks.gds import DeeplySupervisedGenerator
from lit_propulse.networks.stylegan2 import Discriminator


class ExternalWeightsMixin:
    """Keep frozen pretrained networks (the StyleGAN2 inside G_ds, identity/VGG nets, a frozen E_W) out
    of Lightning checkpoints: they come from their own files through the config on every run, and
    would otherwise add up to hundreds of MB per checkpoint. On load, the current values are put
    back for exactly those keys, so every other key still loads strictly."""

    #: state-dict key prefixes of frozen networks that the config rebuilds
    external_prefixes: tuple[str, ...] = ("gds.generator.", "loss.id.", "loss.pp.", "gds_loss.pp.", "ew_encoder.")

    def _is_external(self, key: str) -> bool:
        return key.startswith(self.external_prefixes)

    def setup(self, stage: str) -> None:
        # DDP neither broadcasts nor all-reduces the frozen external networks: they are identical on
        # every rank (loaded from the same files), and their bool buffers break gloo's broadcast
        names = [n for n, _ in self.named_parameters()] + [n for n, _ in self.named_buffers()]
        self._ddp_params_and_buffers_to_ignore = [n for n in names if self._is_external(n)]

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if not self._is_external(k)}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint["state_dict"]
        for k, v in self.state_dict().items():
            if self._is_external(k) and k not in state:
                state[k] = v


def gds_export_path(path: str | os.PathLike) -> str:
    """Where an encoder stage that trains G_ds's branches (E2E) writes its G_ds: ``runs/e2e_ew/ew.pt`` ->
    ``runs/e2e_ew/ew_gds.pt`` (a G_ds export, :func:`lit_propulse.networks.gds.load_gds` reads it)."""
    root, ext = os.path.splitext(str(path))
    return f"{root}_gds{ext or '.pt'}"


def _check_shapes(batch: SRBatch, size: int, lr_size: int, who: str) -> None:
    if batch.hr.shape[-1] != size or batch.lr.shape[-1] != lr_size:
        raise ValueError(
            f"{who}: data gives HR {tuple(batch.hr.shape[-2:])} / LR {tuple(batch.lr.shape[-2:])}, but the generator "
            f"outputs {size}x{size} and the encoder takes {lr_size}x{lr_size}: set data hr_size={size}, lr_size={lr_size}"
        )


class GdsModule(ExternalWeightsMixin, pl.LightningModule):
    """Train G_ds's side-output branches on the frozen generator's own samples (Sec. III-C).

    No real image is needed: each step draws z, maps it to w (truncation ``truncation``), renders the
    final image and every side output, and minimises Eq. (1). The batch only sets the batch size.

    Args:
        gds: the deeply-supervised generator (frozen StyleGAN2 + branches).
        loss: Eq. (1) (L_pix + lambda_pp L_pp).
        lr: Adam learning rate (1e-4 in the paper).
        truncation: truncation of the sampled latents (1 = none).
        mixing_prob: probability of a style-mixed w+ (0 = the paper's plain samples).
    """

    def __init__(self, gds: DeeplySupervisedGenerator, loss: GdsLoss, lr: float = 1e-4, truncation: float = 1.0, mixing_prob: float = 0.0) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["gds", "loss"])
        self.gds = gds
        self.loss = loss

    def sample_ws(self, batch: int) -> Tensor:
        G = self.gds.generator
        with torch.no_grad():
            ws = G.to_ws(G.truncate(G.mapping(torch.randn(batch, G.z_dim, device=self.device)), self.hparams.truncation))
            if self.hparams.mixing_prob > 0 and torch.rand(()) < self.hparams.mixing_prob:
                cut = int(torch.randint(1, G.num_ws, ()))
                ws = G.mix(ws, G.mapping(torch.randn(batch, G.z_dim, device=self.device)), cut)
        return ws  # [B, num_ws, w_dim]

    def training_step(self, batch: SRBatch, batch_idx: int) -> Tensor:
        b = len(batch)
        out = self.gds(self.sample_ws(b), noise="random")
        total, logs = self.loss(out)
        self.log_dict({f"train/{k}": v for k, v in logs.items()}, batch_size=b)
        return total

    def validation_step(self, batch: SRBatch, batch_idx: int) -> None:
        g = torch.Generator(device="cpu").manual_seed(batch_idx)
        G = self.gds.generator
        ws = G.to_ws(G.mapping(torch.randn(len(batch), G.z_dim, generator=g).to(self.device)))
        _, logs = self.loss(self.gds(ws, noise="const"))
        self.log_dict({f"val/{k}": v for k, v in logs.items()}, batch_size=len(batch), sync_dist=True)

    @torch.no_grad()
    def visual_columns(self, batch: SRBatch) -> list[tuple[str, Tensor]]:
        """Panel columns: every side output, the final image, and DS of the final to each side size."""
        G = self.gds.generator
        g = torch.Generator(device="cpu").manual_seed(0)
        ws = G.to_ws(G.mapping(torch.randn(len(batch), G.z_dim, generator=g).to(self.device)))
        out = self.gds(ws, noise="const")
        cols = [(f"side {r}", img) for r, img in out.side_images.items()]
        cols += [(f"DS_{r}(final)", downscale(out.image, r)) for r in out.side_images]
        return cols + [("final", out.image)]

    def configure_optimizers(self):
        return torch.optim.Adam([p for p in self.gds.heads.parameters()], lr=self.hparams.lr)

    def export(self, path: str) -> None:
        """Write G_ds (the generator in the port's layout plus the trained branches)."""
        self.gds.save(path)


class EncoderStageModule(ExternalWeightsMixin, pl.LightningModule, abc.ABC):
    """Shared wiring of the E_W and E_W+ stages: encode the LR into w+, render through G_ds, Eq. (5)
    for the encoder, Eq. (9) for the WGAN critic (manual optimisation, one critic step per encoder step).

    Subclasses define :meth:`compose_ws` (Eq. (4) or (10)) and :meth:`trainable_encoder_parameters`.
    ``validation_step`` and ``test_step`` return the model's :class:`ImageOutput` for the batch: the
    stage's self-evaluation (metrics at validation, the report on ``test``) is a callback that scores
    it, ``lit_propulse.evaluation.StageEvaluation`` in ``trainer.callbacks``.

    Args:
        gds: the deeply-supervised generator from the G_ds stage (frozen; its branches train too in
            the E2E variant, ``train_side_heads``).
        loss: Eq. (5).
        discriminator: WGAN critic for L_adv/L_D (Eq. (8)/(9)), initialised from a StyleGAN2
            discriminator file of its own (:func:`lit_propulse.networks.checkpoints.load_discriminator`);
            None = no adversarial term (then loss.lambda_adv must be 0).
        lr: Adam learning rate of the encoder (1e-4).
        d_lr: Adam learning rate of the critic (1e-4).
        betas: Adam betas for both.
        gradient_penalty: WGAN-GP weight; 0 = off (the paper's setting).
        gradient_penalty_every: apply the penalty on every k-th critic step only, weighted k times (lazy
            regularisation, StyleGAN2 Sec. 3.1): the double backward it needs costs about 0.7 of a
            whole step on CPU; 1 = every step.
        train_side_heads: E2E variant: G_ds's branches train together with the encoder, with
            ``gds_loss`` added (Sec. IV-G "E2E"); the export then also writes G_ds (:func:`gds_export_path`).
        gds_loss: Eq. (1), required when ``train_side_heads`` (the paper's lambda_pp = 1 with VGG-16).
        noise: the generator's noise: "const" (its stored maps, deterministic outputs) or "random".
    """

    def __init__(
        self,
        gds: DeeplySupervisedGenerator,
        loss: EncoderLoss,
        discriminator: Discriminator | None = None,
        lr: float = 1e-4,
        d_lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.999),
        gradient_penalty: float = 0.0,
        gradient_penalty_every: int = 1,
        train_side_heads: bool = False,
        gds_loss: GdsLoss | None = None,
        noise: Literal["const", "random"] = "const",
    ) -> None:
        super().__init__()
        if loss.needs_discriminator and discriminator is None:
            raise ValueError(f"lambda_adv = {loss.weights['adv']} needs a discriminator; give one or set lambda_adv: 0")
        if train_side_heads and gds_loss is None:
            raise ValueError("train_side_heads (the E2E variant) needs gds_loss (Eq. (1)) for the branches")
        if gradient_penalty < 0 or gradient_penalty_every < 1:
            raise ValueError(f"gradient_penalty must be >= 0 and gradient_penalty_every >= 1, got {gradient_penalty}, {gradient_penalty_every}")
        if discriminator is not None and discriminator.size != gds.size:
            raise ValueError(f"discriminator size {discriminator.size} != generator size {gds.size}")
        self.save_hyperparameters(ignore=["gds", "loss", "discriminator", "gds_loss", "encoder", "ew_encoder"])
        self.automatic_optimization = False
        self.gds = gds
        self.loss = loss
        self.discriminator = discriminator
        self.critic_loss = WGANDiscriminatorLoss()
        self.gp = GradientPenalty(gradient_penalty) if gradient_penalty > 0 else None
        self._critic_steps = 0  # critic updates of this process (the lazy penalty's schedule)
        self.gds_loss = gds_loss if train_side_heads else None
        self.gds.heads.requires_grad_(train_side_heads)

    # -- to define in subclasses ------------------------------------------------------------------
    @abc.abstractmethod
    def compose_ws(self, lr: Tensor) -> Tensor:
        """LR [B, 3, l, l] -> w+ [B, num_ws, w_dim] fed to G_ds."""

    @abc.abstractmethod
    def trainable_encoder_parameters(self) -> list[nn.Parameter]:
        """The encoder parameters this stage trains."""

    @property
    def lr_size(self) -> int:
        return self.gds.lr_size

    def on_fit_start(self) -> None:
        # the critic steps its raw optimizer (so global_step counts encoder iterations, as the paper
        # does); fp16's GradScaler would need Lightning's own step to unscale: refuse it clearly
        if self.discriminator is not None and str(self.trainer.precision).startswith("16"):
            raise ValueError(f"precision {self.trainer.precision!r} is not supported with the WGAN critic; use bf16-mixed or 32-true")

    # -- shared -----------------------------------------------------------------------------------
    def forward(self, lr: Tensor) -> ImageOutput:
        """Upsample: LR [B, 3, l, l] -> G_ds output (final image + side outputs)."""
        return self.gds(self.compose_ws(lr), noise=self.hparams.noise)

    def training_step(self, batch: SRBatch, batch_idx: int) -> None:
        _check_shapes(batch, self.gds.size, self.lr_size, type(self).__name__)
        opts = self.optimizers()
        opt_e, opt_d = (opts[0], opts[1]) if isinstance(opts, (list, tuple)) else (opts, None)
        b = len(batch)
        out = self(batch.lr)
        fake_logits = None
        if self.loss.needs_discriminator:
            self.discriminator.requires_grad_(False)
            fake_logits = self.discriminator(out.image)
        total, logs = self.loss(out, batch.lr, batch.hr, fake_logits)
        if self.gds_loss is not None:
            gds_total, gds_logs = self.gds_loss(out)
            total = total + gds_total
            logs.update(gds_logs)
        opt_e.zero_grad(set_to_none=True)
        self.manual_backward(total)
        opt_e.step()

        if self.discriminator is not None and opt_d is not None:
            self.discriminator.requires_grad_(True)
            real_logits = self.discriminator(batch.hr)
            fake_logits = self.discriminator(out.image.detach())
            d_loss = self.critic_loss(real_logits, fake_logits)
            logs["loss/D/wgan"] = d_loss.detach()
            every = self.hparams.gradient_penalty_every
            if self.gp is not None and self._critic_steps % every == 0:
                gp = self.gp(self.discriminator, batch.hr, out.image)
                d_loss = d_loss + gp * every
                logs["loss/D/gp"] = gp.detach()
            self._critic_steps += 1
            opt_d.zero_grad(set_to_none=True)
            self._critic_backward(d_loss)
            # the raw optimizer: trainer.global_step then counts encoder iterations only, as the paper does
            opt_d.optimizer.step()
        self.log_dict({f"train/{k}": v for k, v in logs.items()}, batch_size=b)
        self.log("rec", logs.get("loss/rec", total.detach()), prog_bar=True, batch_size=b)

    def export_gds(self, path: str) -> None:
        """E2E (``train_side_heads``): write G_ds with the branches trained here to
        :func:`gds_export_path` of the stage's export ``path``; otherwise nothing (G_ds is frozen)."""
        if self.gds_loss is not None:
            self.gds.save(gds_export_path(path))

    def _critic_backward(self, d_loss: Tensor) -> None:
        """The critic's backward. Under DDP the wrapped module's reducer serves the encoder's backward
        (one per forward); a second reducer pass per forward desynchronises the ranks' collectives
        (seen as a hang with gloo). So this backward runs outside the reducer and the critic's
        gradients are averaged over processes explicitly."""
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized() and self.trainer.world_size > 1
        if not distributed:
            self.manual_backward(d_loss)
            return
        with self.trainer.strategy.block_backward_sync():
            self.manual_backward(d_loss)
        world = torch.distributed.get_world_size()
        for p in self.discriminator.parameters():
            if p.grad is not None:
                torch.distributed.all_reduce(p.grad)
                p.grad.div_(world)

    def validation_step(self, batch: SRBatch, batch_idx: int) -> ImageOutput:
        """Log the unweighted L_rec per scale (Eq. (6)) as ``val/loss/rec[/<r>]``; return the output (for callbacks' metrics)."""
        out = self(batch.lr)
        per_scale = self.loss.rec.per_scale(out, batch.lr)
        logs = {f"val/loss/rec/{r}": v for r, v in per_scale.items()}
        logs["val/loss/rec"] = torch.stack(list(per_scale.values())).mean()
        self.log_dict(logs, batch_size=len(batch), sync_dist=True)
        return out

    def test_step(self, batch: SRBatch, batch_idx: int) -> ImageOutput:
        """The upsampled test batch (scored by ``lit_propulse.evaluation.StageEvaluation`` when configured)."""
        return self(batch.lr)

    @property
    def method_name(self) -> str:
        """The model's row label in evaluation reports."""
        return "E_W"

    def predict_step(self, batch: SRBatch, batch_idx: int) -> dict[str, Any]:
        out = self(batch.lr)
        return {"name": batch.name, "image": out.image, "side_images": out.side_images, "lr": batch.lr}

    @torch.no_grad()
    def visual_columns(self, batch: SRBatch) -> list[tuple[str, Tensor]]:
        """Panel columns of Sec. IV figures: LR | every side output | HR (final) | GT."""
        out = self(batch.lr)
        cols = [("LR", batch.lr)] + [(f"side {r}", img) for r, img in out.side_images.items()]
        return cols + [("HR", out.image), ("GT", batch.hr)]

    def configure_optimizers(self):
        params = list(self.trainable_encoder_parameters())
        if self.gds_loss is not None:
            params += list(self.gds.heads.parameters())
        opt_e = torch.optim.Adam(params, lr=self.hparams.lr, betas=tuple(self.hparams.betas))
        if self.discriminator is None:
            return opt_e
        return [opt_e, torch.optim.Adam(self.discriminator.parameters(), lr=self.hparams.d_lr, betas=tuple(self.hparams.betas))]


def _start_from_latent_avg(encoder: nn.Module, gds: DeeplySupervisedGenerator) -> None:
    G = gds.generator
    if not G.has_latent_avg:
        raise ValueError("start_from_latent_avg: the generator checkpoint has no latent_avg")
    with torch.no_grad():
        encoder.w_offset.copy_(G.latent_avg.reshape(-1).to(encoder.w_offset))


class EWModule(EncoderStageModule):
    """Stage E_W (Sec. III-D): w = E_W(I_LR), repeated to every layer (Eq. (4)), trained with Eq. (5).

    Args:
        encoder: the base encoder E_W (lit_propulse.networks.encoders.EWEncoder).
        start_from_latent_avg: the encoder predicts an offset from the generator's mean latent
            (``encoder.w_offset = latent_avg``; pSp's habit, not the paper's): training starts at the
            average face instead of a random w. Our option, on in the toy configs.
        gds, loss, **kwargs: see :class:`EncoderStageModule` (discriminator, lr, d_lr, betas, ...).
    """

    def __init__(self, encoder: nn.Module, gds: DeeplySupervisedGenerator, loss: EncoderLoss, start_from_latent_avg: bool = False, **kwargs: Any) -> None:
        super().__init__(gds, loss, **kwargs)
        self.encoder = encoder
        if start_from_latent_avg:  # a resumed run then loads the same offset from its checkpoint
            _start_from_latent_avg(encoder, gds)

    def compose_ws(self, lr: Tensor) -> Tensor:
        return encode_ws(self.gds.generator, self.encoder, lr)  # Eq. (4): R_q(w), [B, num_ws, w_dim]

    def trainable_encoder_parameters(self) -> list[nn.Parameter]:
        return list(self.encoder.parameters())

    def export(self, path: str) -> None:
        """Write E_W to ``path`` (and, in E2E, the co-trained G_ds to :func:`gds_export_path`)."""
        save_module(self.encoder, path)
        self.export_gds(path)


class EWPlusModule(EncoderStageModule):
    """Stage E_W+ (Sec. III-E, Eq. (10)): at progressive scale r_i the w+ rows of the layers up to
    r_i come from E_W+, the others are E_W's w repeated (``guidance="ew"``) or the generator's mean
    latent (``guidance="latent_avg"``, the "without E_W guidance" ablation). The active scale is set
    by :class:`lit_propulse.callbacks.progressive.ProgressiveScaleCallback` and saved with the model.

    Args:
        encoder: the scale-specific encoder E_W+ (lit_propulse.networks.encoders.EWPlusEncoder).
        ew_encoder: the trained E_W (frozen), required when guidance == "ew".
        guidance: what fills the rows E_W+ does not yet produce: "ew" (the paper) or "latent_avg".
        init_from_ew: warm-start E_W+ from the trained E_W (:meth:`EWPlusEncoder.init_from_ew`: every
            row starts as E_W's code, so the first scale starts from E_W's result). Our option, not
            the paper's; on in the toy configs.
        start_from_latent_avg: see :class:`EWModule` (ignored with ``init_from_ew``, which copies E_W's offset).
        gds, loss, **kwargs: see :class:`EncoderStageModule` (discriminator, lr, d_lr, betas, ...).
    """

    def __init__(
        self,
        encoder: nn.Module,
        gds: DeeplySupervisedGenerator,
        loss: EncoderLoss,
        ew_encoder: nn.Module | None = None,
        guidance: Literal["ew", "latent_avg"] = "ew",
        init_from_ew: bool = False,
        start_from_latent_avg: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(gds, loss, **kwargs)
        if init_from_ew and ew_encoder is None:
            raise ValueError("init_from_ew needs the trained E_W (ew_encoder=...)")
        if guidance == "ew" and ew_encoder is None:
            raise ValueError("guidance='ew' needs the trained E_W (ew_encoder=...); use guidance='latent_avg' for the ablation without it")
        if guidance not in ("ew", "latent_avg"):
            raise ValueError(f"guidance must be 'ew' or 'latent_avg', got {guidance!r}")
        self.hparams["guidance"] = guidance
        self.encoder = encoder
        self.ew_encoder = None if ew_encoder is None else ew_encoder.requires_grad_(False).eval()
        if init_from_ew:  # a resumed run then loads its own weights from the checkpoint
            encoder.init_from_ew(self.ew_encoder)
        elif start_from_latent_avg:
            _start_from_latent_avg(encoder, gds)
        self.scales: list[int] = [r for r in self.gds.resolutions] + [self.gds.size]
        # the scale reached; saved in checkpoints so inference after training uses it
        self.register_buffer("active_scale", torch.tensor(self.gds.size))

    def train(self, mode: bool = True) -> EWPlusModule:
        super().train(mode)
        if self.ew_encoder is not None:
            self.ew_encoder.eval()
        return self

    @property
    def method_name(self) -> str:
        return "Pro-PULSE" if self.hparams.guidance == "ew" else "E_W+ (latent_avg guidance)"

    def set_active_scale(self, scale: int) -> None:
        if scale not in self.scales:
            raise ValueError(f"scale {scale} is not one of the progressive scales {self.scales}")
        self.active_scale.fill_(int(scale))

    def compose_ws(self, lr: Tensor) -> Tensor:
        """Eq. (10): C(w+^{r_i}, R_2q(w)) -> [B, num_ws, w_dim]."""
        return encode_ws(self.gds.generator, self.encoder, lr, int(self.active_scale), self.ew_encoder, self.hparams.guidance)

    def trainable_encoder_parameters(self) -> list[nn.Parameter]:
        return list(self.encoder.parameters())

    def export(self, path: str) -> None:
        """Write E_W+ with its progressive scale to ``path`` (and, in E2E, G_ds to :func:`gds_export_path`)."""
        save_module(self.encoder, path, extra={"active_scale": int(self.active_scale)})
        self.export_gds(path)
