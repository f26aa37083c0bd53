"""Train a StyleGAN2 from scratch on any DataModule (Karras et al., CVPR 2020; the paper's Sec. IV-I and V
note that a new domain first needs its own pretrained StyleGAN — this is how the toy domain gets one).

Algorithm as in StyleGAN2 / the standard port's ``train.py``: non-saturating logistic loss, lazy R1
on reals every ``r1_every`` D steps, lazy path-length regularisation every ``pl_every`` G steps,
style mixing with probability ``mixing_prob``, an EMA generator (half-life ``ema_kimg`` thousand
images), Adam(0, 0.99) whose lr and betas get the lazy-regularisation correction
c = every / (every + 1). Lazy regularisation is part of the optimisation algorithm itself (which
minibatches carry the regulariser), so its intervals are arguments here rather than a Callback.
"""

from __future__ import annotations

import copy
import random

import pytorch_lightning as pl
import torch
from torch import Tensor

from lit_propulse.core.batch import SRBatch
from lit_propulse.losses.gan import NonSaturatingLoss, PathLengthPenalty, R1Penalty
from lit_propulse.networks.augment import AdaptiveAugment
from lit_propulse.networks.stylegan2 import Discriminator, Generator


class StyleGAN2Module(pl.LightningModule):
    """G + D + G_ema trained with manual optimisation.

    Args:
        generator: the generator to train (its architecture defines the run).
        discriminator: the discriminator (same ``size``).
        lr: Adam learning rate before the lazy-regularisation correction (0.002).
        r1_gamma: R1 weight gamma (10 at 1024; ~0.1-1 for 64 px images).
        r1_every: R1 on every N-th D step (16); 0 = no R1.
        pl_weight: path-length weight (2); 0 = off.
        pl_every: path-length on every N-th G step (4).
        pl_batch_shrink: the path-length batch is batch // shrink (2).
        mixing_prob: style-mixing probability (0.9); 0 = off.
        ema_kimg: EMA half-life in thousands of images (10).
        ema_rampup: None = no ramp-up; else the half-life is at most ``rampup * images seen`` (0.05 in ADA).
        channels_last: run convolutions in channels_last memory format (much faster on CPU; same math).
        augment: ADA-style adaptive augmentation of everything D sees; None = off.
        latent_avg_samples: z samples for ``latent_avg`` when exporting (10k).
        total_kimg: stop after this many thousand real images; None = let the Trainer decide. (The
            Trainer's ``max_steps`` counts every optimizer step, the lazy-regulariser ones included.)
        init_from: continue from an exported checkpoint (``export_port_checkpoint``: ``g``, ``g_ema``,
            ``d``, ``kimg``): weights and the images-seen counter, with fresh optimizer states (the way
            the shipped toy generator is trained further in a later session); None = from scratch.
            A Lightning ``--ckpt_path`` resume restores everything and needs no ``init_from``.
    """

    def __init__(
        self,
        generator: Generator,
        discriminator: Discriminator,
        lr: float = 0.002,
        r1_gamma: float = 10.0,
        r1_every: int = 16,
        pl_weight: float = 2.0,
        pl_every: int = 4,
        pl_batch_shrink: int = 2,
        mixing_prob: float = 0.9,
        ema_kimg: float = 10.0,
        ema_rampup: float | None = None,
        channels_last: bool = True,
        augment: AdaptiveAugment | None = None,
        latent_avg_samples: int = 10_000,
        total_kimg: float | None = None,
        init_from: str | None = None,
    ) -> None:
        super().__init__()
        if generator.size != discriminator.size:
            raise ValueError(f"generator size {generator.size} != discriminator size {discriminator.size}")
        for name, v in (("r1_every", r1_every), ("pl_every", pl_every), ("pl_batch_shrink", pl_batch_shrink)):
            if v < 0 or (name != "r1_every" and v == 0):
                raise ValueError(f"{name} must be positive, got {v}")
        if not 0 <= mixing_prob <= 1:
            raise ValueError(f"mixing_prob must be in [0, 1], got {mixing_prob}")
        self.save_hyperparameters(ignore=["generator", "discriminator", "augment"])
        self.automatic_optimization = False
        self.G = generator
        self.D = discriminator
        self.G_ema = copy.deepcopy(generator).eval().requires_grad_(False)
        for g in (self.G, self.G_ema):
            g.synthesis.channels_last = channels_last
        self.adv = NonSaturatingLoss()
        self.r1 = R1Penalty(r1_gamma)
        self.path_length = PathLengthPenalty()
        self.augment = augment
        self.register_buffer("images_seen", torch.zeros((), dtype=torch.long))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))  # minibatches trained
        if init_from is not None:
            self._init_from(init_from)

    @torch.no_grad()
    def _init_from(self, path: str) -> None:
        from lit_propulse.core.errors import CheckpointError
        from lit_propulse.networks.checkpoints import load_checkpoint_file

        ckpt = load_checkpoint_file(path)
        missing = [k for k in ("g", "g_ema", "d") if k not in ckpt]
        if missing:
            raise CheckpointError(f"{path}: cannot continue training from it: no {missing} (needs an export of StyleGAN2Module with g, g_ema and d)")
        self.G.load_port_state_dict(ckpt["g"], source=path)
        self.G_ema.load_port_state_dict(ckpt["g_ema"], source=path)
        self.D.load_state_dict(ckpt["d"])
        self.images_seen.fill_(int(round(float(ckpt.get("kimg", 0.0)) * 1000)))

    def on_fit_start(self) -> None:
        # Every optimizer step but the main G step is the raw optimizer's, so that trainer.global_step
        # counts minibatches: ModelCheckpoint(every_n_train_steps=N) and max_steps then mean N minibatches
        # (Lightning counts each LightningOptimizer.step, and the lazy regularisers' extra steps made
        # global_step skip the multiples of N). fp16's GradScaler would need Lightning's own steps.
        if str(self.trainer.precision).startswith("16"):
            raise ValueError(f"precision {self.trainer.precision!r} is not supported by StyleGAN2Module; use bf16-mixed or 32-true")

    # -- helpers --------------------------------------------------------------------------------
    def _cl(self, x: Tensor) -> Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.hparams.channels_last else x

    def sample_ws(self, batch: int, G: Generator | None = None) -> Tensor:
        """Mapped latents with style mixing: [batch, num_ws, w_dim]."""
        G = self.G if G is None else G
        z = torch.randn(batch, G.z_dim, device=self.device)
        ws = G.to_ws(G.mapping(z))
        if self.hparams.mixing_prob > 0 and random.random() < self.hparams.mixing_prob:
            cut = random.randint(1, G.num_ws - 1)
            ws = G.mix(ws, G.mapping(torch.randn_like(z)), cut)
        return ws

    def _D(self, img: Tensor) -> Tensor:
        if self.augment is not None:
            img = self.augment(img)
        return self.D(self._cl(img))

    def _synth(self, ws: Tensor) -> Tensor:
        return self.G.synthesis(ws, noise="random").image

    # -- training -------------------------------------------------------------------------------
    def training_step(self, batch: SRBatch, batch_idx: int) -> None:
        opt_g, opt_d = self.optimizers()
        real = batch.hr
        b = real.shape[0]
        step = int(self.steps)

        # D: logistic loss (+ lazy R1)
        self.D.requires_grad_(True)
        self.G.requires_grad_(False)
        with torch.no_grad():
            fake = self._synth(self.sample_ws(b))
        real_logits, fake_logits = self._D(real), self._D(fake)
        d_loss = self.adv.discriminator(real_logits, fake_logits)
        opt_d.zero_grad(set_to_none=True)
        self.manual_backward(d_loss)
        opt_d.optimizer.step()  # raw: trainer.global_step counts minibatches (the G step below), see on_fit_start
        logs = {"loss/D/logistic": d_loss.detach(), "D/real": real_logits.mean().detach(), "D/fake": fake_logits.mean().detach()}
        if self.augment is not None:
            self.augment.update(real_logits.detach())
            logs["augment/p"] = self.augment.p.detach()

        if self.hparams.r1_every and self.hparams.r1_gamma > 0 and step % self.hparams.r1_every == 0:
            with torch.autocast(device_type=self.device.type, enabled=False):
                real_r = real.detach().float().requires_grad_(True)
                logits = self._D(real_r)
                r1 = self.r1(real_r, logits)
            opt_d.zero_grad(set_to_none=True)
            self.manual_backward(r1 * self.hparams.r1_every + 0 * logits.sum())
            opt_d.optimizer.step()
            logs["loss/D/r1"] = r1.detach()

        # G: non-saturating loss (+ lazy path length)
        self.D.requires_grad_(False)
        self.G.requires_grad_(True)
        fake = self._synth(self.sample_ws(b))
        g_loss = self.adv.generator(self._D(fake))
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(g_loss)
        opt_g.step()  # the one Lightning-counted step of the minibatch
        logs["loss/G/logistic"] = g_loss.detach()

        if self.hparams.pl_weight > 0 and step % self.hparams.pl_every == 0:
            with torch.autocast(device_type=self.device.type, enabled=False):
                pb = max(1, b // self.hparams.pl_batch_shrink)
                ws = self.sample_ws(pb)  # not detached: the path-length gradient reaches the mapping network too (StyleGAN2, ADA)
                img = self._synth(ws)
                penalty, length = self.path_length(img.float(), ws)
            opt_g.zero_grad(set_to_none=True)
            self.manual_backward(penalty * self.hparams.pl_weight * self.hparams.pl_every + 0 * img[0, 0, 0, 0])
            opt_g.optimizer.step()
            logs["loss/G/path_length"] = penalty.detach()
            logs["G/path_length_mean"] = length

        self.images_seen += b
        self.steps += 1
        self._update_ema(b)
        if self.hparams.total_kimg is not None and float(self.images_seen) >= self.hparams.total_kimg * 1000:
            self.trainer.should_stop = True
        logs["progress/kimg"] = self.images_seen.float() / 1000
        self.log_dict(logs, prog_bar=False, on_step=True, on_epoch=False, batch_size=b)
        self.log("g", g_loss.detach(), prog_bar=True, on_step=True, on_epoch=False, batch_size=b)
        self.log("d", d_loss.detach(), prog_bar=True, on_step=True, on_epoch=False, batch_size=b)

    @torch.no_grad()
    def _update_ema(self, batch: int) -> None:
        half_life = self.hparams.ema_kimg * 1000
        if self.hparams.ema_rampup is not None:
            half_life = min(half_life, float(self.images_seen) * self.hparams.ema_rampup)
        beta = 0.5 ** (batch / max(half_life, 1e-8))
        for p_ema, p in zip(self.G_ema.parameters(), self.G.parameters()):
            p_ema.lerp_(p.detach(), 1 - beta)
        for b_ema, b in zip(self.G_ema.buffers(), self.G.buffers()):
            b_ema.copy_(b)

    def configure_optimizers(self):
        def adam(params, every: int):
            c = every / (every + 1) if every else 1.0
            return torch.optim.Adam(params, lr=self.hparams.lr * c, betas=(0.0, 0.99**c), eps=1e-8)

        return [adam(self.G.parameters(), self.hparams.pl_every if self.hparams.pl_weight > 0 else 0), adam(self.D.parameters(), self.hparams.r1_every)]

    # -- export ---------------------------------------------------------------------------------
    @torch.no_grad()
    def export_port_checkpoint(self, path: str) -> None:
        """Write ``{"g_ema", "g", "d", "latent_avg", "arch", "d_arch", "kimg"}`` in the port's layout."""
        G_ema = self.G_ema
        G_ema.compute_latent_avg(self.hparams.latent_avg_samples)  # G_ema keeps moving: recompute
        G_ema.save(path, discriminator=self.D, extra={"g": self.G.port_state_dict(), "kimg": float(self.images_seen) / 1000})

    def forward(self, z: Tensor) -> Tensor:
        """Images from z with the EMA generator."""
        return self.G_ema(z, noise="random").image
