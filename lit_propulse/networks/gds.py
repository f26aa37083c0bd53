"""Pro-PULSE's deeply-supervised generator G_ds (Sec. III-C, Fig. 2; branch design Sec. III-F).

A frozen pretrained StyleGAN2 whose style blocks each get a side-output branch, so one w+ renders
the same face at every resolution from 2x the LR side to half the output size: the side outputs
I_o^r of Eq. (2)/(3), returned in a :class:`~lit_propulse.core.outputs.ImageOutput`. Only the
branches train; their loss, Eq. (1)-(3), is :class:`lit_propulse.losses.propulse.GdsLoss`.

Files: :meth:`DeeplySupervisedGenerator.save` writes the generator in the port's layout
(:func:`lit_propulse.networks.checkpoints.write_generator`) plus ``side_heads`` (the branches'
state dict) and ``side_arch`` (``lr_size``, ``head_hidden``, ``residual_skip``); :func:`load_gds`
reads it (``class_path: lit_propulse.networks.gds.load_gds`` in the experiment configs).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

from torch import Tensor, nn

from lit_propulse.core.errors import CheckpointError
from lit_propulse.core.files import needs_file
from lit_propulse.core.outputs import ImageOutput
from lit_propulse.networks.checkpoints import SG2_SOURCE, load_checkpoint_file, load_exact
from lit_propulse.networks.stylegan2 import Discriminator, Generator, NoiseArg

__all__ = ["DeeplySupervisedGenerator", "SideOutputHead", "load_gds", "side_resolutions"]


class SideOutputHead(nn.Module):
    """One side-output branch: three 1x1 convs (128, 64, 3 channels; Sec. III-F) with LeakyReLU(0.2)
    between them (the paper does not name the activation) mapping a style block's feature map to RGB.

    Args:
        in_channels: channels of the block's feature map.
        hidden: widths of the first two 1x1 convs ((128, 64) in the paper).
        residual_skip: add the head's output to the block's running skip RGB (our option, off in
            the paper's configs: the branch then only learns a correction, so it trains much faster;
            the head's last conv starts at zero so the initial side output is that skip RGB).
    """

    def __init__(self, in_channels: int, hidden: Sequence[int] = (128, 64), residual_skip: bool = False) -> None:
        super().__init__()
        widths = [in_channels, *hidden, 3]
        layers: list[nn.Module] = []
        for i in range(len(widths) - 1):
            layers.append(nn.Conv2d(widths[i], widths[i + 1], 1))
            if i < len(widths) - 2:
                layers.append(nn.LeakyReLU(0.2))
        self.net = nn.Sequential(*layers)
        self.residual_skip = residual_skip
        if residual_skip:
            nn.init.zeros_(self.net[-1].weight)
            nn.init.zeros_(self.net[-1].bias)

    def forward(self, feature: Tensor, skip: Tensor) -> Tensor:
        # feature: [B, C_r, r, r], skip: [B, 3, r, r] -> [B, 3, r, r]
        out = self.net(feature.float() if feature.dtype != self.net[0].weight.dtype else feature)
        return out + skip if self.residual_skip else out


def side_resolutions(size: int, lr_size: int) -> list[int]:
    """Resolutions that get a side-output branch: 2*lr_size, ..., size/2 (32..512 for 16 -> 1024)."""
    size, lr_size = int(size), int(lr_size)
    if lr_size < 1 or lr_size & (lr_size - 1) or 2 * lr_size > size:
        raise ValueError(f"lr_size must be a power of two with 2*lr_size <= size; got lr_size={lr_size}, size={size}")
    return [2**k for k in range(int(math.log2(2 * lr_size)), int(math.log2(size)))]


class DeeplySupervisedGenerator(nn.Module):
    """G_ds: a frozen StyleGAN2 plus one side-output branch per style block (Sec. III-C, Fig. 2).

    The generator's parameters never train here (``requires_grad`` False); gradients still flow
    through it to w+ (encoders, Eq. (4)/(10)) and to the branches.

    Args:
        generator: the pretrained StyleGAN2 (frozen in place).
        lr_size: LR side; branches at 2*lr_size ... size/2.
        head_hidden: widths of the branches' first two 1x1 convs ((128, 64)).
        residual_skip: see :class:`SideOutputHead` (False = the paper's branch).
    """

    def __init__(self, generator: Generator, lr_size: int, head_hidden: Sequence[int] = (128, 64), residual_skip: bool = False) -> None:
        super().__init__()
        self.generator = generator.requires_grad_(False)
        self.lr_size = int(lr_size)
        self.head_hidden = [int(h) for h in head_hidden]
        self.residual_skip = bool(residual_skip)
        self.resolutions = side_resolutions(generator.size, lr_size)
        ch = generator.synthesis.channels
        self.heads = nn.ModuleDict({str(r): SideOutputHead(ch[r], head_hidden, residual_skip) for r in self.resolutions})

    @property
    def size(self) -> int:
        return self.generator.size

    @property
    def num_ws(self) -> int:
        return self.generator.num_ws

    @property
    def w_dim(self) -> int:
        return self.generator.w_dim

    def train(self, mode: bool = True) -> DeeplySupervisedGenerator:
        super().train(mode)
        self.generator.eval()  # frozen: no train-mode behaviour
        return self

    def forward(self, ws: Tensor, noise: NoiseArg = "const") -> ImageOutput:
        """w+ [B, num_ws, w_dim] -> final image and side outputs. ``noise`` defaults to the
        generator's stored maps, so an encoder's output image is deterministic."""
        out = self.generator.synthesis(ws, noise=noise)
        side = {r: self.heads[str(r)](out.features[r], out.skips[r]) for r in self.resolutions}
        return ImageOutput(image=out.image, side_images=side)

    def save(self, path: str | os.PathLike, discriminator: Discriminator | None = None) -> None:
        """The generator in the port's layout (readable by the port and by ``Generator.from_checkpoint``)
        plus ``side_heads`` / ``side_arch`` for :func:`load_gds`."""
        extra = {
            "side_heads": {k: v.detach().cpu() for k, v in self.heads.state_dict().items()},
            "side_arch": {"lr_size": self.lr_size, "head_hidden": list(self.head_hidden), "residual_skip": self.residual_skip},
        }
        self.generator.save(path, discriminator=discriminator, extra=extra)


@needs_file(
    "path",
    "G_ds: a StyleGAN2 checkpoint, with trained side-output branches unless require_heads is false",
    "the G_ds stage writes it (python -m lit_propulse fit --config experiments/gds.yaml -> gds.pt); for that stage itself, " + SG2_SOURCE,
)
def load_gds(
    path: str,
    lr_size: int | None = None,
    head_hidden: Sequence[int] = (128, 64),
    residual_skip: bool = False,
    require_heads: bool = True,
    reset_heads: bool = False,
) -> DeeplySupervisedGenerator:
    """Load G_ds written by the G_ds stage (generator + trained branches).

    With ``require_heads=False`` a plain StyleGAN2 checkpoint is accepted too and gets fresh branches
    (``lr_size``, ``head_hidden``, ``residual_skip``): how the G_ds stage itself starts, and the
    "without G_ds" ablation. A file's own ``side_arch`` wins over the arguments; ``lr_size`` given
    and different from the file's is an error. ``reset_heads`` keeps the file's branch architecture
    but starts the branches afresh (the E2E ablation, whose branches train with the encoder).
    """
    ckpt = load_checkpoint_file(path)
    G = Generator.from_checkpoint(path)
    arch = ckpt.get("side_arch")
    if arch is None:
        if require_heads:
            raise CheckpointError(
                f"{path}: has no trained side-output branches ('side_heads'); it is a plain StyleGAN2 checkpoint. "
                f"Train G_ds first (experiments/gds.yaml) and give its export (gds.pt), or set require_heads: false"
            )
        if lr_size is None:
            raise ValueError("load_gds: lr_size is needed to build fresh branches on a plain StyleGAN2 checkpoint")
        return DeeplySupervisedGenerator(G, lr_size, head_hidden, residual_skip)
    if lr_size is not None and int(lr_size) != int(arch["lr_size"]):
        raise CheckpointError(f"{path}: its branches were trained for LR {arch['lr_size']}, but lr_size={lr_size} was asked")
    gds = DeeplySupervisedGenerator(G, int(arch["lr_size"]), arch["head_hidden"], bool(arch["residual_skip"]))
    if reset_heads:
        return gds
    load_exact(gds.heads, ckpt["side_heads"], str(path), ignore=set(), port_names=False)
    return gds
