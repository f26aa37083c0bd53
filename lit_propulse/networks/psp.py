"""pSp's encoder (Richardson et al., "Encoding in Style", CVPR 2021), the baseline of Pro-PULSE
Table I: :class:`GradualStyleEncoder`, an IR-SE feature pyramid read by one ``map2style`` head per
row of w+, as an offset from the generator's average latent.

Our own code of the structure of pSp's ``GradualStyleEncoder(50, 'ir_se')`` (pSp Sec. 3, Fig. 2):

1. ``input_layer`` (3x3 conv 3->64, BN, PReLU) and ``body``: the IR-SE50 units of ArcFace
   (:class:`~lit_propulse.networks.feature_nets.BottleneckIRSE`, the same blocks and key names as
   :class:`~lit_propulse.networks.feature_nets.ArcFaceIdentity`), 4 stages of 3, 4, 14, 3 units of
   widths 64, 128, 256, 512, the first unit of each stage with stride 2. So pSp's initialisation
   from ``model_ir_se50.pth`` (:meth:`GradualStyleEncoder.load_backbone`) loads key for key.
2. The pyramid: c1, c2, c3 = the outputs of stages 2, 3, 4 (at 256 input: 64², 32², 16²);
   p2 = up(c3) + latlayer1(c2), p1 = up(p2) + latlayer2(c1) (bilinear, align_corners=True, 1x1
   lateral convs to stage 4's width).
3. ``map2style`` (pSp's ``GradualStyleBlock``): log2(spatial) stride-2 3x3 convs with LeakyReLU(0.01)
   down to 1x1, then an equalized-lr linear layer: rows [0, coarse_ind) read c3, rows
   [coarse_ind, middle_ind) read p2, the rest read p1 (3 and 7 of 18 in pSp).
4. w+ = map2style outputs + ``w_offset`` (pSp's ``start_from_latent_avg``: the generator's mean latent).

Super-resolution input (pSp Sec. 4.3; its ``SuperResTransforms``): the LR image upsampled to the
encoder's input size (bilinear, as torchvision's default ``Resize``); :meth:`GradualStyleEncoder.forward`
takes the LR and upsamples it, :meth:`GradualStyleEncoder.encode_image` takes the upsampled input.

Images are float [-1, 1] NCHW RGB.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_propulse.core.errors import WeightsFileError
from lit_propulse.core.weights import record_init_args
from lit_propulse.networks.feature_nets import _IR50_STAGES, ARCFACE_WEIGHTS, BottleneckIRSE, load_weights_file
from lit_propulse.networks.stylegan2 import EqualLinear

__all__ = ["GradualStyleBlock", "GradualStyleEncoder", "IR_SE50_STAGES"]

#: IR-SE50's stages as (width, units): ArcFace's table, so the backbone loads model_ir_se50.pth.
IR_SE50_STAGES: tuple[tuple[int, int], ...] = tuple((depth, units) for _, depth, units in _IR50_STAGES)


class GradualStyleBlock(nn.Module):
    """pSp's ``map2style`` head: a [B, in_channels, spatial, spatial] map -> one w row [B, w_dim].

    log2(spatial) 3x3 convs of stride 2 (padding 1), each followed by LeakyReLU(0.01) (PyTorch's
    default slope, as pSp), bring the map to 1x1; an equalized-lr linear layer w_dim -> w_dim follows.

    Args:
        in_channels: channels of the pyramid level read.
        w_dim: width of w (and of the convs).
        spatial: side of the map read, a power of two >= 2.
    """

    def __init__(self, in_channels: int, w_dim: int, spatial: int) -> None:
        super().__init__()
        if spatial < 2 or spatial & (spatial - 1):
            raise ValueError(f"map2style reads a map whose side is a power of two >= 2, got {spatial}")
        self.w_dim, self.spatial = w_dim, spatial
        layers: list[nn.Module] = []
        for i in range(int(math.log2(spatial))):
            layers += [nn.Conv2d(in_channels if i == 0 else w_dim, w_dim, 3, stride=2, padding=1), nn.LeakyReLU()]
        self.convs = nn.Sequential(*layers)
        self.linear = EqualLinear(w_dim, w_dim, lr_mul=1.0)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.spatial or x.shape[-2] != self.spatial:
            raise ValueError(f"map2style expects a {self.spatial}x{self.spatial} map, got {tuple(x.shape)}")
        x = self.convs(x)  # [B, w_dim, 1, 1]
        return self.linear(x.flatten(1))  # [B, w_dim]


@record_init_args
class GradualStyleEncoder(nn.Module):
    """pSp's encoder for super-resolution: LR -> upsampled input -> IR-SE pyramid -> w+ (module docstring).

    Args:
        lr_size: side of the LR images :meth:`forward` accepts (16 for 16 -> 1024).
        w_dim: width of w (512 for FFHQ config-f).
        num_ws: rows of w+ (18 at 1024), one map2style head each.
        input_size: side the LR is upsampled to before the backbone (256 in pSp); a multiple of 16
            whose pyramid levels (input_size / 4, / 8, / 16) are >= 2.
        stages: (width, units) of the four IR-SE stages; IR_SE50_STAGES (default) = IR-SE50, the
            only layout :meth:`load_backbone` accepts; narrower tables serve the toy domain.
        coarse_ind: rows [0, coarse_ind) read c3 (3 in pSp).
        middle_ind: rows [coarse_ind, middle_ind) read p2, rows [middle_ind, num_ws) read p1 (7 in pSp);
            0 < coarse_ind < middle_ind <= num_ws.
        upsample_mode: how the LR is brought to ``input_size`` ("bilinear", torchvision's Resize
            default that pSp's transforms use; or "bicubic").
    """

    def __init__(
        self,
        lr_size: int,
        w_dim: int,
        num_ws: int,
        input_size: int = 256,
        stages: Sequence[Sequence[int]] = IR_SE50_STAGES,
        coarse_ind: int = 3,
        middle_ind: int = 7,
        upsample_mode: str = "bilinear",
    ) -> None:
        super().__init__()
        stages = [tuple(int(v) for v in s) for s in stages]
        if len(stages) != 4 or any(len(s) != 2 or s[0] < 16 or s[1] < 1 for s in stages):
            raise ValueError(f"stages must be four (width >= 16, units >= 1) pairs, got {stages}")
        if input_size % 16 or input_size // 16 < 2:
            raise ValueError(f"input_size must be a multiple of 16 and >= 32 (the pyramid is input/4, /8, /16), got {input_size}")
        if not 0 < coarse_ind < middle_ind <= num_ws:
            raise ValueError(f"need 0 < coarse_ind < middle_ind <= num_ws, got coarse_ind={coarse_ind}, middle_ind={middle_ind}, num_ws={num_ws}")
        if upsample_mode not in ("bilinear", "bicubic"):
            raise ValueError(f"upsample_mode must be 'bilinear' or 'bicubic', got {upsample_mode!r}")
        if lr_size < 1 or lr_size > input_size:
            raise ValueError(f"lr_size must be in [1, input_size={input_size}], got {lr_size}")
        self.lr_size, self.w_dim, self.num_ws, self.input_size = lr_size, w_dim, num_ws, input_size
        self.stages = stages
        self.coarse_ind, self.middle_ind = coarse_ind, middle_ind
        self.upsample_mode = upsample_mode

        self.input_layer = nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.PReLU(64))
        units: list[nn.Module] = []
        self._stage_ends: list[int] = []  # index in body of each stage's last unit
        in_ch = 64
        for depth, n in stages:
            units.append(BottleneckIRSE(in_ch, depth, 2))
            units += [BottleneckIRSE(depth, depth, 1) for _ in range(n - 1)]
            self._stage_ends.append(len(units) - 1)
            in_ch = depth
        self.body = nn.Sequential(*units)

        top = stages[3][0]
        self.latlayer1 = nn.Conv2d(stages[2][0], top, 1)
        self.latlayer2 = nn.Conv2d(stages[1][0], top, 1)
        c1, c2, c3 = input_size // 4, input_size // 8, input_size // 16  # sides of p1, p2, c3
        self.styles = nn.ModuleList(GradualStyleBlock(top, w_dim, c3 if i < coarse_ind else c2 if i < middle_ind else c1) for i in range(num_ws))
        self.register_buffer("w_offset", torch.zeros(w_dim))  # the generator's mean latent (start_from_latent_avg)

    @property
    def pyramid_sizes(self) -> tuple[int, int, int]:
        """Sides of (p1, p2, c3): input_size / 4, / 8, / 16."""
        return self.input_size // 4, self.input_size // 8, self.input_size // 16

    def upsample_lr(self, lr: Tensor) -> Tensor:
        """The SR input of pSp: LR [B, 3, l, l] -> [B, 3, input_size, input_size]."""
        if lr.ndim != 4 or lr.shape[1] != 3 or tuple(lr.shape[-2:]) != (self.lr_size, self.lr_size):
            raise ValueError(f"pSp encoder expects an LR image [B, 3, {self.lr_size}, {self.lr_size}], got {tuple(lr.shape)}")
        s = self.input_size
        return F.interpolate(lr, size=(s, s), mode=self.upsample_mode, align_corners=False)

    def pyramid(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Input [B, 3, S, S] -> (p1 [B, C4, S/4, S/4], p2 [B, C4, S/8, S/8], c3 [B, C4, S/16, S/16])."""
        s = self.input_size
        if x.ndim != 4 or x.shape[1] != 3 or tuple(x.shape[-2:]) != (s, s):
            raise ValueError(f"pSp encoder expects its input [B, 3, {s}, {s}], got {tuple(x.shape)}")
        x = self.input_layer(x)  # [B, 64, S, S]
        feats = []
        for i, unit in enumerate(self.body):
            x = unit(x)
            if i in self._stage_ends:
                feats.append(x)
        _, c1, c2, c3 = feats  # stage outputs at S/2, S/4, S/8, S/16
        p2 = F.interpolate(c3, size=c2.shape[-2:], mode="bilinear", align_corners=True) + self.latlayer1(c2)
        p1 = F.interpolate(p2, size=c1.shape[-2:], mode="bilinear", align_corners=True) + self.latlayer2(c1)
        return p1, p2, c3

    def encode_image(self, x: Tensor) -> Tensor:
        """The upsampled input [B, 3, S, S] -> w+ [B, num_ws, w_dim] (offsets + ``w_offset``)."""
        p1, p2, c3 = self.pyramid(x)
        rows = [
            head(c3 if i < self.coarse_ind else p2 if i < self.middle_ind else p1)  # [B, w_dim]
            for i, head in enumerate(self.styles)
        ]
        ws = torch.stack(rows, dim=1) + self.w_offset  # [B, num_ws, w_dim]
        return ws

    def forward(self, lr: Tensor) -> Tensor:
        """LR [B, 3, l, l] -> w+ [B, num_ws, w_dim]."""
        return self.encode_image(self.upsample_lr(lr))

    def load_backbone(self, path: str | os.PathLike) -> None:
        """pSp's initialisation: ``input_layer`` and ``body`` from ArcFace's ``model_ir_se50.pth``
        (pSp loads it with strict=False; here every backbone key must be in the file with its shape,
        the file's ArcFace head (``output_layer.*``) is ignored). Only for the IR-SE50 layout."""
        if tuple(self.stages) != IR_SE50_STAGES:
            raise ValueError(f"load_backbone needs the IR-SE50 stages {IR_SE50_STAGES}, this encoder has {tuple(self.stages)}")
        path = str(path)
        state = load_weights_file(path, ARCFACE_WEIGHTS)
        own = {k: v for k, v in self.state_dict().items() if k.startswith(("input_layer.", "body."))}
        missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
        wrong = [k for k in own if k in state and state[k].shape != own[k].shape]
        if missing or wrong:
            raise WeightsFileError(f"{path}: not an IR-SE50 backbone: missing {missing[:4]}, mis-shaped {wrong[:4]}. Expected {ARCFACE_WEIGHTS}.")
        with torch.no_grad():
            for k, v in own.items():
                if k in state:
                    v.copy_(state[k])
