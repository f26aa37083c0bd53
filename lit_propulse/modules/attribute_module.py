"""Train the attribute classifier of the semantic-preservation analysis (Pro-PULSE Sec. IV-E, Fig. 8).

Multi-label binary cross-entropy with logits on the HR images and ``attrs`` of any SR DataModule
(toy faces: 18 attributes; CelebA-HQ: the 40 of ``CelebAMask-HQ-attribute-anno.txt``), Adam,
optionally a per-attribute ``pos_weight`` for rare attributes and light augmentation (random
translation; the DataModule's ``hflip`` already mirrors). Validation and test report torchmetrics'
multi-label accuracy (threshold 0.5) and AUROC, macro-averaged and per attribute:

    val/loss, val/acc, val/auroc, val/acc/<attribute>, val/auroc/<attribute>   (test/... alike)

``export(path)`` (called by :class:`lit_propulse.callbacks.export.StageExport`) writes the classifier
with ``save_module``, its attribute names in ``init_args``; load it with
:func:`lit_propulse.networks.attribute_classifier.load_attribute_classifier`.
"""

from __future__ import annotations

from typing import Literal

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import MetricCollection
from torchmetrics.classification import MultilabelAccuracy, MultilabelAUROC

from lit_propulse.core.batch import SRBatch
from lit_propulse.core.weights import save_module
from lit_propulse.networks.attribute_classifier import AttributeClassifier


def random_shift(x: Tensor, max_shift: int, generator: torch.Generator | None = None) -> Tensor:
    """Translate each image by an integer offset in [-max_shift, max_shift]² (edge pixels replicated)."""
    b, _, h, w = x.shape
    p = max_shift
    padded = F.pad(x, (p, p, p, p), mode="replicate")  # [B, 3, H + 2p, W + 2p]
    dx, dy = torch.randint(0, 2 * p + 1, (2, b), generator=generator).tolist()
    return torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(b)])


class AttributeClassifierModule(pl.LightningModule):
    """Multi-label attribute classification on :class:`SRBatch` (``batch.hr``, ``batch.attrs``).

    Args:
        classifier: the network to train; its ``num_attributes`` and ``image_size`` must match the
            data's attributes and HR size. Unnamed attributes (``attr_names: null``) are named from
            the DataModule's ``attr_names`` at setup.
        lr: Adam learning rate.
        weight_decay: Adam (L2) weight decay; 0 = none.
        pos_weight: per-attribute weight of the positive term of the BCE (``BCEWithLogitsLoss``'s
            ``pos_weight``; e.g. negatives/positives for rare attributes), one value per attribute;
            None = unweighted.
        augment_shift: random translation of the training images by up to this many pixels;
            0 = no augmentation (the default).
        schedule: "constant" learning rate, or "cosine" annealing to 0 over the Trainer's
            ``estimated_stepping_batches`` (needs a finite ``max_steps`` or ``max_epochs``).
        channels_last: run the convolutions in channels_last memory format (faster on CPU; same math).
    """

    def __init__(
        self,
        classifier: AttributeClassifier,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        pos_weight: list[float] | None = None,
        augment_shift: int = 0,
        schedule: Literal["constant", "cosine"] = "constant",
        channels_last: bool = True,
    ) -> None:
        super().__init__()
        a = classifier.num_attributes
        if pos_weight is not None and (len(pos_weight) != a or min(pos_weight) <= 0):
            raise ValueError(f"pos_weight needs {a} positive values (one per attribute), got {pos_weight}")
        if augment_shift < 0:
            raise ValueError(f"augment_shift must be >= 0, got {augment_shift}")
        if schedule not in ("constant", "cosine"):
            raise ValueError(f"schedule must be 'constant' or 'cosine', got {schedule!r}")
        self.save_hyperparameters(ignore=["classifier"])
        self.classifier = classifier
        if channels_last:
            self.classifier.to(memory_format=torch.channels_last)
        self.register_buffer("pos_weight", None if pos_weight is None else torch.tensor(pos_weight, dtype=torch.float32), persistent=False)
        self.metrics = torch.nn.ModuleDict(
            {
                stage: MetricCollection(
                    {
                        "acc": MultilabelAccuracy(num_labels=a, average="macro"),
                        "acc_per": MultilabelAccuracy(num_labels=a, average="none"),
                        "auroc": MultilabelAUROC(num_labels=a, average="none"),
                    }
                )
                for stage in ("val", "test")
            }
        )
        self.last_metrics: dict[str, float] = {}  # the latest validation/test values (exported with the weights)

    # -- data checks ----------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        """Check the DataModule's attributes and HR size against the classifier; name the attributes."""
        dm = self.trainer.datamodule
        if dm is None:
            return
        names = tuple(getattr(dm, "attr_names", ()) or ())
        who = type(dm).__name__
        if not names:
            raise ValueError(
                f"{who} has no attribute labels (attr_names is empty): the attribute classifier needs data with "
                "attrs (toy faces always have them; CelebA-HQ needs CelebAMask-HQ-attribute-anno.txt and use_attrs: true)"
            )
        clf = self.classifier
        if len(names) != clf.num_attributes:
            raise ValueError(f"{who} has {len(names)} attributes, the classifier predicts num_attributes={clf.num_attributes}")
        if clf.attr_names is None:
            clf.set_attr_names(names)
        elif list(clf.attr_names) != list(names):
            raise ValueError(f"the classifier's attr_names {clf.attr_names} differ from {who}'s {list(names)}")
        hr = getattr(dm, "hr_size", None)
        if hr is not None and hr != clf.image_size:
            raise ValueError(f"{who} gives {hr}x{hr} HR images, the classifier takes image_size={clf.image_size}: set them equal")

    def _inputs(self, batch: SRBatch) -> tuple[Tensor, Tensor]:
        if batch.attrs is None:
            raise ValueError("the batch has no attrs: the attribute classifier needs a DataModule with attribute labels")
        x = batch.hr
        if self.hparams.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, batch.attrs  # [B, 3, S, S], [B, A]

    def loss(self, logits: Tensor, target: Tensor) -> Tensor:
        """Mean multi-label BCE with logits over batch and attributes (positives weighted by ``pos_weight``)."""
        return F.binary_cross_entropy_with_logits(logits, target, pos_weight=self.pos_weight)

    # -- steps ----------------------------------------------------------------------------------
    def training_step(self, batch: SRBatch, batch_idx: int) -> Tensor:
        x, y = self._inputs(batch)
        if self.hparams.augment_shift > 0:
            x = random_shift(x, self.hparams.augment_shift)
        logits = self.classifier(x)  # [B, A]
        loss = self.loss(logits, y)
        acc = ((logits > 0).float() == y).float().mean()
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch))
        self.log("train/acc", acc, batch_size=len(batch))
        return loss

    def _eval_step(self, batch: SRBatch, stage: str) -> None:
        x, y = self._inputs(batch)
        logits = self.classifier(x)  # [B, A]
        self.log(f"{stage}/loss", self.loss(logits, y), batch_size=len(batch), sync_dist=False, on_epoch=True, on_step=False)
        self.metrics[stage].update(torch.sigmoid(logits), y.long())

    def validation_step(self, batch: SRBatch, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: SRBatch, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def _eval_epoch_end(self, stage: str) -> None:
        m = self.metrics[stage].compute()
        names = self.classifier.attr_names or [str(i) for i in range(self.classifier.num_attributes)]
        logs = {f"{stage}/acc": m["acc"], f"{stage}/auroc": m["auroc"].mean()}
        logs.update({f"{stage}/acc/{n}": v for n, v in zip(names, m["acc_per"])})
        logs.update({f"{stage}/auroc/{n}": v for n, v in zip(names, m["auroc"])})
        self.log_dict(logs)
        self.last_metrics = {k: float(v) for k, v in logs.items()}
        self.metrics[stage].reset()

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    def configure_optimizers(self):
        opt = torch.optim.Adam(self.classifier.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        if self.hparams.schedule == "constant":
            return opt
        total = self.trainer.estimated_stepping_batches
        if not 0 < total < float("inf"):
            raise ValueError(f"schedule='cosine' needs a finite number of steps (trainer.max_steps or max_epochs), got {total}")
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=int(total))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def export(self, path: str) -> None:
        """Write the classifier (``save_module``: class, init_args with attr_names, weights) plus the
        latest val/test metrics under ``"metrics"``."""
        save_module(self.classifier, path, extra={"metrics": dict(self.last_metrics)})
