"""The face-attribute classifier behind the semantic-preservation analysis (Pro-PULSE Sec. IV-E, Fig. 8).

The paper scores SR results and ground truths with "the attribute classifier pretrained on the
CelebA-HQ dataset [17] to predict 40 attributes" and reports |score(SR) - score(GT)| per attribute
(:class:`lit_propulse.metrics.attributes.AttributeScoreDifference`). That classifier is not
published with the paper, so this is our own: a small ResNet trained with
:class:`lit_propulse.modules.attribute_module.AttributeClassifierModule` on any SR DataModule with
attribute labels (toy faces: 18 attributes at 64²; CelebA-HQ: 40).

Architecture (:class:`AttributeClassifier`):

1. Input [B, 3, image_size, image_size] in [-1, 1]. When ``input_size < image_size`` it is first
   resized to ``input_size`` with the project's ``DS`` (antialiased bicubic,
   :func:`lit_propulse.core.downscale.downscale`), so a 256² CelebA-HQ classifier can work at 128².
2. Stem: 3x3 conv -> BN -> ReLU, ``channels`` wide, at ``input_size``.
3. One stage per resolution ``input_size, input_size/2, ..., FINAL_RESOLUTION`` (8): ``blocks``
   basic residual blocks (3x3 conv-BN-ReLU-3x3 conv-BN + skip, ReLU); the first block of every
   stage but the first halves the resolution (stride-2 conv; skip: 2x2 average pool + 1x1 conv,
   ResNet-D). The first stage stays at full resolution so one-pixel structures (the toy faces'
   eyeglass frames at 64²) are seen before any subsampling. Stage i is
   ``min(channels * 2**i, max_channels)`` wide.
4. Global average pooling -> ``features`` [B, num_features] (the penultimate features; a "toy-FID"
   uses them instead of Inception's through :class:`lit_propulse.metrics.quality.FIDFeatures`)
   -> dropout -> linear -> logits [B, A].

Images are float [-1, 1] NCHW RGB.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from lit_propulse.core.downscale import downscale
from lit_propulse.core.errors import MissingFilesError
from lit_propulse.core.files import needs_file
from lit_propulse.core.weights import load_module, record_init_args

__all__ = [
    "FINAL_RESOLUTION",
    "AttributeClassifier",
    "BasicBlock",
    "load_attribute_classifier",
]

#: Side of the last feature map before global average pooling.
FINAL_RESOLUTION = 8

_TOY_COMMAND = "python -m lit_propulse fit --config experiments/toy/attributes.yaml"


class BasicBlock(nn.Module):
    """ResNet basic block: 3x3 conv (stride) -> BN -> ReLU -> 3x3 conv -> BN, plus the skip, ReLU.
    The skip is the identity, or (when the shape changes) average pooling + 1x1 conv + BN (ResNet-D).

    Args:
        in_channels: input channels.
        out_channels: output channels.
        stride: 1 = same resolution; 2 = halve it.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        self.skip: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            # ResNet-D skip: average-pool, then a stride-1 1x1 conv. (It also avoids a strided 1x1 conv,
            # whose channels_last weight gradient oneDNN computes out of bounds when in_channels is
            # below its channel block: heap corruption on CPU, oneDNN issue #6035.)
            pool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
            self.skip = nn.Sequential(pool, nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels))
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:  # [B, in, H, W] -> [B, out, H/stride, W/stride]
        return self.act(self.body(x) + self.skip(x))


@record_init_args
class AttributeClassifier(nn.Module):
    """Multi-label face-attribute classifier: image -> one logit per attribute (see the module docstring).

    Args:
        num_attributes: number of binary attributes A (18 for toy faces, 40 for CelebA-HQ).
        image_size: side of the images it is given (the data's HR size, e.g. 64 or 256); ``forward``
            refuses any other size (:class:`~lit_propulse.metrics.attributes.AttributeScoreDifference`
            resizes SR outputs of other sizes to it).
        channels: width of the stem and the full-resolution stage; doubles per stage.
        attr_names: the A attribute names, in logit order; None = unnamed (the training module fills
            them in from the DataModule's ``attr_names`` before exporting).
        input_size: internal working resolution; None = ``image_size``. Smaller values resize the
            input with antialiased bicubic first. Must be ``FINAL_RESOLUTION * 2**k`` (8, 16, 32, ...)
            and at most ``image_size``.
        max_channels: cap on the stage width.
        blocks: residual blocks per stage (>= 1).
        dropout: dropout on the pooled features before the linear layer; 0 = off.
    """

    def __init__(
        self,
        num_attributes: int,
        image_size: int,
        channels: int = 16,
        attr_names: list[str] | None = None,
        input_size: int | None = None,
        max_channels: int = 256,
        blocks: int = 1,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        input_size = image_size if input_size is None else int(input_size)
        if num_attributes < 1:
            raise ValueError(f"num_attributes must be >= 1, got {num_attributes}")
        if attr_names is not None and len(attr_names) != num_attributes:
            raise ValueError(f"attr_names has {len(attr_names)} names for num_attributes={num_attributes}")
        if input_size > image_size:
            raise ValueError(f"input_size must be at most image_size (it only shrinks), got input_size={input_size}, image_size={image_size}")
        k = math.log2(input_size / FINAL_RESOLUTION) if input_size >= FINAL_RESOLUTION else -1.0
        if k < 0 or k != int(k):
            raise ValueError(f"input_size must be {FINAL_RESOLUTION} * 2**k (8, 16, 32, 64, ...), got {input_size} (image_size={image_size})")
        if channels < 1 or max_channels < channels or blocks < 1:
            raise ValueError(f"need 1 <= channels <= max_channels and blocks >= 1, got channels={channels}, max_channels={max_channels}, blocks={blocks}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.num_attributes = int(num_attributes)
        self.image_size = int(image_size)
        self.input_size = input_size
        self.attr_names = None if attr_names is None else [str(n) for n in attr_names]

        widths = [min(channels * 2**i, max_channels) for i in range(int(k) + 1)]  # one per resolution
        self.stem = nn.Sequential(nn.Conv2d(3, channels, 3, 1, 1, bias=False), nn.BatchNorm2d(channels), nn.ReLU(inplace=True))
        stages, c_in = [], channels
        for i, c in enumerate(widths):
            stage = [BasicBlock(c_in, c, stride=1 if i == 0 else 2)] + [BasicBlock(c, c) for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*stage))
            c_in = c
        self.stages = nn.Sequential(*stages)
        self._num_features = c_in
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(c_in, num_attributes)

    @property
    def num_features(self) -> int:
        """Width of :meth:`features` (the pooled penultimate layer)."""
        return self._num_features

    def set_attr_names(self, names: Sequence[str]) -> None:
        """Name the attributes after construction (kept in ``init_args``, so exports carry them)."""
        names = [str(n) for n in names]
        if len(names) != self.num_attributes:
            raise ValueError(f"got {len(names)} attribute names for a classifier of {self.num_attributes} attributes")
        self.attr_names = names
        self.init_args["attr_names"] = list(names)

    def features(self, x: Tensor) -> Tensor:
        """Pooled penultimate features [B, num_features] of images [B, 3, image_size, image_size]."""
        if x.ndim != 4 or tuple(x.shape[1:]) != (3, self.image_size, self.image_size):
            raise ValueError(f"AttributeClassifier expects [B, 3, {self.image_size}, {self.image_size}] images, got {tuple(x.shape)}")
        x = downscale(x, self.input_size)  # [B, 3, input_size, input_size]
        h = self.stages(self.stem(x))  # [B, C, 8, 8]
        return h.mean(dim=(2, 3))  # [B, num_features]

    def forward(self, x: Tensor) -> Tensor:
        """Logits [B, num_attributes] of images [B, 3, image_size, image_size] in [-1, 1]."""
        return self.head(self.dropout(self.features(x)))

    def scores(self, x: Tensor) -> Tensor:
        """Attribute probabilities sigmoid(logits), [B, num_attributes] (the paper's "attribute scores")."""
        return torch.sigmoid(self(x))


@needs_file(
    "path",
    "the attribute classifier of the semantic-preservation analysis (Sec. IV-E)",
    f"{_TOY_COMMAND} writes runs/toy/attributes/attributes.pt (the toy one also ships as lit_propulse/data/toy_attributes_64.pt); "
    "python -m lit_propulse fit --config experiments/attributes.yaml writes the CelebA-HQ one",
)
def load_attribute_classifier(path: str, freeze: bool = True) -> AttributeClassifier:
    """Load an :class:`AttributeClassifier` written by ``AttributeClassifierModule.export`` (YAML-friendly).

    Args:
        path: the ``.pt`` file (``save_module`` format).
        freeze: True = eval mode and no parameter requires grad (for metrics); False = as trained.
    """
    if not os.path.isfile(str(path)):
        raise MissingFilesError(
            f"{path}: attribute classifier file not found; `{_TOY_COMMAND}` writes the toy one "
            "(runs/toy/attributes/attributes.pt; a trained copy ships as lit_propulse/data/toy_attributes_64.pt), "
            "experiments/attributes.yaml the CelebA-HQ one"
        )
    clf = load_module(path, AttributeClassifier, what="attribute classifier")
    return clf.eval().requires_grad_(False) if freeze else clf
