"""Pro-PULSE's LR-image encoders built from RCAN's residual channel attention blocks.

* :class:`EWEncoder` — the base encoder E_W (Sec. III-D, Fig. 3): LR image -> one w, repeated over
  every row of w+ (Eq. (4)).
* :class:`EWPlusEncoder` — the scale-specific encoder E_W+ (Sec. III-E, Fig. 4): LR image -> the rows
  of w+ owned by each progressive scale r_i, composed with E_W's repeated w by Eq. (10)
  (:func:`compose_wplus`).
* :func:`scale_rows` — the one place that says which rows of w+ a scale owns (it asks
  :func:`lit_propulse.networks.stylegan2.num_ws_up_to`).

Architecture as we read Sec. III-F and Fig. 3 (the paper's text under-determines it; every choice is
named here and in the class docstrings):

1. Head: 3x3 conv (stride 1, padding 1) -> 3x3 transposed conv. Sec. III-F says the transposed conv
   has "the same kernel size and stride" (stride 1), but with a stride-1 head the three output convs
   (kernel, stride) = (4, 4), (4, 4), (2, 1) cannot end at 1x1 for a 16x16 LR (16 -> 4 -> 1 -> error:
   a 2x2 kernel does not fit a 1x1 map). A x2 transposed conv fits exactly, 16 -> 32 -> 8 -> 2 -> 1,
   and 32 = 2 x LR is also the first progressive scale of Fig. 2. So we read the head as bringing
   the map to :data:`FEATURE_SIZE` = 32 for every LR size:
   LR 16: 3x3 transposed conv, stride 2, padding 1, output_padding 1 (the paper's setting);
   LR 8:  4x4 transposed conv, stride 4, padding 0 (our extension; a 3x3 kernel with stride 4 would
          leave rows and columns no input reaches);
   LR 32: 3x3 transposed conv, stride 1, padding 1 (the paper's text taken literally).
   No activation inside the head (as RCAN's head conv).
2. Body (RCAN, Zhang et al. ECCV 2018, Sec. 3): ``num_groups`` residual groups, each
   ``rcabs_per_group`` RCABs + a 3x3 conv + the group's short skip, then a 3x3 conv and the long skip
   from the head output ("a residual connection after the RCABs"). We keep RCAN's per-group conv and
   short skip (the paper defers the details to RCAN).
3. Output convs, no padding: (4, 4) -> LeakyReLU(0.2) -> (4, 4) -> LeakyReLU(0.2) -> (2, 1), all
   ``out_channels`` (512) wide: 32 -> 8 -> 2 -> 1, a [B, 512, 1, 1] map reshaped to one code.
   The activations between them are ours (the paper names none); the last conv is linear, since w is
   an unbounded vector. A linear layer to ``w_dim`` follows only when ``out_channels != w_dim`` (for
   FFHQ config-f w_dim = 512, so none).

Images are float [-1, 1] NCHW RGB.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from lit_propulse.core.weights import record_init_args
from lit_propulse.networks.stylegan2 import num_ws_up_to

__all__ = [
    "FEATURE_SIZE",
    "EWEncoder",
    "EWPlusEncoder",
    "EncoderHead",
    "OutputConvs",
    "RCAB",
    "ResidualGroup",
    "compose_wplus",
    "scale_rows",
]

#: Side of the feature map every encoder works on after its head (2 x LR for the paper's LR 16).
FEATURE_SIZE = 32

# lr_size -> (kernel, stride, padding, output_padding) of the head's transposed conv, each giving
# (lr - 1) * stride - 2 * padding + kernel + output_padding = FEATURE_SIZE.
_UPSAMPLE = {
    8: (4, 4, 0, 0),
    16: (3, 2, 1, 1),
    32: (3, 1, 1, 0),
}


def _check_positive(**values: int) -> None:
    bad = {k: v for k, v in values.items() if not isinstance(v, int) or v < 1}
    if bad:
        raise ValueError(f"expected positive integers, got {bad}")


def _check_lr(lr: Tensor, lr_size: int) -> None:
    if lr.ndim != 4 or lr.shape[1] != 3 or tuple(lr.shape[-2:]) != (lr_size, lr_size):
        raise ValueError(f"encoder expects an LR image [B, 3, {lr_size}, {lr_size}], got {tuple(lr.shape)}")


# ----------------------------------------------------------------------------------------------
# RCAN blocks.


class ChannelAttention(nn.Module):
    """RCAN's channel attention (Zhang et al. ECCV 2018, Sec. 3.3, Eq. (9)-(10)): global average
    pool -> 1x1 conv down by ``reduction`` -> ReLU -> 1x1 conv up -> sigmoid -> rescale x.

    Args:
        channels: feature channels.
        reduction: channel reduction of the squeeze (16 in RCAN); channels // reduction must be >= 1.
    """

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        _check_positive(channels=channels, reduction=reduction)
        if channels // reduction < 1:
            raise ValueError(f"channels // reduction must be >= 1, got channels={channels}, reduction={reduction}")
        self.body = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels, channels // reduction, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels // reduction, channels, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x * self.body(x)  # [B, C, H, W] * [B, C, 1, 1]


class RCAB(nn.Module):
    """Residual channel attention block (RCAN, Sec. 3.4, Eq. (11)): x + CA(conv(ReLU(conv(x)))).

    Args:
        channels: feature channels (kept).
        reduction: channel-attention reduction (16 in RCAN).
        kernel_size: size of both convs (odd; "same" padding).
    """

    def __init__(self, channels: int, reduction: int = 16, kernel_size: int = 3) -> None:
        super().__init__()
        _check_positive(channels=channels, kernel_size=kernel_size)
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (same padding), got {kernel_size}")
        pad = kernel_size // 2
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, kernel_size, padding=pad),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, kernel_size, padding=pad),
            ChannelAttention(channels, reduction),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)  # [B, C, H, W]


class ResidualGroup(nn.Module):
    """RCAN's residual group (Sec. 3.2, Eq. (5)): ``num_rcabs`` RCABs, a 3x3 conv, and the group's
    short skip connection.

    Args:
        channels: feature channels.
        num_rcabs: RCABs in the group (2 in Pro-PULSE's E_W, Sec. III-F).
        reduction: channel-attention reduction.
        kernel_size: conv size inside the RCABs and of the closing conv.
    """

    def __init__(self, channels: int, num_rcabs: int = 2, reduction: int = 16, kernel_size: int = 3) -> None:
        super().__init__()
        _check_positive(num_rcabs=num_rcabs)
        self.rcabs = nn.Sequential(*[RCAB(channels, reduction, kernel_size) for _ in range(num_rcabs)])
        self.conv = nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(self.rcabs(x))  # [B, C, H, W]


# ----------------------------------------------------------------------------------------------
# Shared pieces of E_W and E_W+.


class EncoderHead(nn.Module):
    """3x3 conv then the transposed conv that brings an LR image to FEATURE_SIZE x FEATURE_SIZE
    (Sec. III-F, Fig. 3; the choice per LR size is in the module docstring).

    Args:
        lr_size: LR side, one of 8, 16, 32.
        channels: feature channels.
    """

    def __init__(self, lr_size: int, channels: int) -> None:
        super().__init__()
        if lr_size not in _UPSAMPLE:
            raise ValueError(f"lr_size must be one of {sorted(_UPSAMPLE)} (the head brings it to {FEATURE_SIZE}x{FEATURE_SIZE}), got {lr_size}")
        _check_positive(channels=channels)
        k, s, p, op = _UPSAMPLE[lr_size]
        self.lr_size = lr_size
        self.conv = nn.Conv2d(3, channels, 3, stride=1, padding=1)
        self.upsample = nn.ConvTranspose2d(channels, channels, k, stride=s, padding=p, output_padding=op)

    def forward(self, lr: Tensor) -> Tensor:
        _check_lr(lr, self.lr_size)
        return self.upsample(self.conv(lr))  # [B, C, FEATURE_SIZE, FEATURE_SIZE]


class OutputConvs(nn.Module):
    """The three output convs of Fig. 3, (kernel, stride) = (4, 4), (4, 4), (2, 1), no padding,
    LeakyReLU(0.2) between them: [B, C, 32, 32] -> [B, rows * out_channels, 1, 1] -> ``rows`` codes,
    then a linear layer to w_dim shared by the rows, only when out_channels != w_dim.

    Args:
        in_channels: channels of the 32x32 feature map.
        out_channels: width of the convs (512 in the paper) and of each row's code before the linear.
        w_dim: width of w.
        rows: codes produced (1 for E_W; the rows a scale owns for E_W+); the last conv has
            rows * out_channels channels.
    """

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, rows: int = 1) -> None:
        super().__init__()
        _check_positive(in_channels=in_channels, out_channels=out_channels, w_dim=w_dim, rows=rows)
        self.rows, self.out_channels, self.w_dim = rows, out_channels, w_dim
        self.convs = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 4, stride=4),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(out_channels, out_channels, 4, stride=4),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(out_channels, rows * out_channels, 2, stride=1),
        )
        self.linear = nn.Linear(out_channels, w_dim) if out_channels != w_dim else None

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or tuple(x.shape[-2:]) != (FEATURE_SIZE, FEATURE_SIZE):
            raise ValueError(f"output convs expect [B, C, {FEATURE_SIZE}, {FEATURE_SIZE}], got {tuple(x.shape)}")
        out = self.convs(x)  # [B, rows * out_channels, 1, 1]
        out = out.reshape(x.shape[0], self.rows, self.out_channels)  # [B, rows, out_channels]
        if self.linear is not None:
            out = self.linear(out)
        return out  # [B, rows, w_dim]


# ----------------------------------------------------------------------------------------------
# E_W.


@record_init_args
class EWEncoder(nn.Module):
    """Base encoder E_W (Pro-PULSE Sec. III-D, Eq. (4); architecture Sec. III-F, Fig. 3).

    LR [B, 3, lr, lr] -> head (3x3 conv, transposed conv to 32x32) -> ``num_groups`` RCAN residual
    groups of ``rcabs_per_group`` RCABs (each group closed by a 3x3 conv and a short skip, as in
    RCAN) -> 3x3 conv + long skip from the head -> output convs (4,4), (4,4), (2,1) -> one w.
    Paddings and the transposed conv per LR size: see the module docstring (LR 16: 3x3, stride 2).

    Args:
        lr_size: LR side: 16 (the paper), 8, or 32; anything else raises ValueError.
        w_dim: width of w (512 for FFHQ config-f).
        num_ws: rows of w+ the generator takes (18 at 1024); ``forward_ws`` repeats w this many times.
        channels: feature channels of the head and RCAN body (64 in RCAN).
        num_groups: residual groups (4 in the paper).
        rcabs_per_group: RCABs per group (2 in the paper).
        out_channels: width of the three output convs (512 in the paper); when != w_dim a linear
            layer maps the code to w_dim.
        reduction: channel-attention reduction (16 in RCAN); channels // reduction must be >= 1.
    """

    def __init__(
        self,
        lr_size: int,
        w_dim: int,
        num_ws: int,
        channels: int = 64,
        num_groups: int = 4,
        rcabs_per_group: int = 2,
        out_channels: int = 512,
        reduction: int = 16,
    ) -> None:
        super().__init__()
        _check_positive(w_dim=w_dim, num_ws=num_ws, channels=channels, num_groups=num_groups, rcabs_per_group=rcabs_per_group)
        self.lr_size, self.w_dim, self.num_ws = lr_size, w_dim, num_ws
        self.channels, self.out_channels = channels, out_channels
        self.head = EncoderHead(lr_size, channels)
        self.groups = nn.Sequential(*[ResidualGroup(channels, rcabs_per_group, reduction) for _ in range(num_groups)])
        self.body_conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.out = OutputConvs(channels, out_channels, w_dim, rows=1)
        # added to every code: zeros (the paper) or the generator's mean latent (start_from_latent_avg,
        # pSp's habit): the encoder then predicts an offset from the average face
        self.register_buffer("w_offset", torch.zeros(w_dim))

    def forward(self, lr: Tensor) -> Tensor:
        feat = self.head(lr)  # [B, C, 32, 32]
        feat = feat + self.body_conv(self.groups(feat))  # long skip, [B, C, 32, 32]
        w = self.out(feat)[:, 0] + self.w_offset  # [B, w_dim]
        return w

    def forward_ws(self, lr: Tensor) -> Tensor:
        """R_q(E_W(I_LR)) of Eq. (4): w repeated over the generator's num_ws rows."""
        w = self.forward(lr)  # [B, w_dim]
        return w.unsqueeze(1).expand(-1, self.num_ws, -1)  # [B, num_ws, w_dim]


# ----------------------------------------------------------------------------------------------
# E_W+.


def scale_rows(scales: Sequence[int], num_ws: int) -> dict[int, tuple[int, int]]:
    """Which rows [start, stop) of w+ each progressive scale r_i owns (Sec. III-E, Eq. (10)).

    The first scale owns every row up to and including its resolution, [0, num_ws_up_to(r_0)); each
    later scale r_i owns [num_ws_up_to(r_{i-1}), num_ws_up_to(r_i)) — the rows
    :func:`~lit_propulse.networks.stylegan2.num_ws_up_to` adds between them. Rows past the last
    scale belong to no scale (Eq. (10) fills them with E_W's w).

    Args:
        scales: strictly increasing powers of two >= 4 (e.g. [32, 64, ..., 1024] for LR 16).
        num_ws: rows of the generator's w+ (18 at 1024); num_ws_up_to(scales[-1]) must not exceed it.
    """
    scales = [int(s) for s in scales]
    if not scales:
        raise ValueError("scales must list at least one resolution")
    if any(b <= a for a, b in zip(scales, scales[1:])):
        raise ValueError(f"scales must be strictly increasing, got {scales}")
    bounds = [num_ws_up_to(s) for s in scales]  # raises for non powers of two
    if bounds[-1] > num_ws:
        raise ValueError(f"scale {scales[-1]} needs {bounds[-1]} rows of w+, but the generator has num_ws={num_ws}")
    starts = [0] + bounds[:-1]
    return {s: (a, b) for s, a, b in zip(scales, starts, bounds)}


def compose_wplus(partial: Tensor, w: Tensor, num_ws: int) -> Tensor:
    """C(w+^{r_i}, R(w)) of Eq. (10): the leading rows from E_W+, the rest E_W's w repeated.

    partial: [B, k, w_dim] rows [0, k) of w+ (k <= num_ws, k = 0 allowed); w: [B, w_dim].
    Returns [B, num_ws, w_dim].
    """
    if partial.ndim != 3 or w.ndim != 2 or partial.shape[0] != w.shape[0] or partial.shape[2] != w.shape[1]:
        raise ValueError(f"expected partial [B, k, w_dim] and w [B, w_dim], got {tuple(partial.shape)} and {tuple(w.shape)}")
    k = partial.shape[1]
    if k > num_ws:
        raise ValueError(f"partial w+ has {k} rows, more than num_ws={num_ws}")
    rest = w.unsqueeze(1).expand(-1, num_ws - k, -1)  # [B, num_ws - k, w_dim]
    return torch.cat([partial, rest], dim=1)  # [B, num_ws, w_dim]


class ScaleBranch(nn.Module):
    """One scale of E_W+ (Fig. 4): ``num_rcabs`` RCABs then the output convs, producing ``rows`` codes.
    A container: :meth:`EWPlusEncoder.forward_scales` calls ``rcabs`` and ``out`` separately, since
    with ``chain_branches`` the RCAB output also feeds the next branch."""

    def __init__(self, channels: int, out_channels: int, w_dim: int, rows: int, num_rcabs: int, reduction: int) -> None:
        super().__init__()
        self.rcabs = nn.Sequential(*[RCAB(channels, reduction) for _ in range(num_rcabs)])
        self.out = OutputConvs(channels, out_channels, w_dim, rows=rows)


@record_init_args
class EWPlusEncoder(nn.Module):
    """Scale-specific encoder E_W+ (Pro-PULSE Sec. III-E, Eq. (10); architecture Sec. III-F, Fig. 4).

    A shared head (the same 3x3 conv + transposed conv as E_W, to 32x32), then one branch per
    progressive scale r_i: ``rcabs_per_branch`` RCABs and the three output convs of E_W, whose last
    conv produces one code per row the scale owns (:func:`scale_rows`: the first scale owns rows
    [0, num_ws_up_to(r_0)), every later one the two rows its resolution adds). Branches read the head
    features in parallel (our reading of Fig. 4, "repeating two RCABs and the subsequent three
    convolutional layers"), or, with ``chain_branches``, each branch's RCABs read the previous
    branch's RCAB output.

    Args:
        lr_size: LR side: 16 (the paper), 8, or 32.
        w_dim: width of w.
        num_ws: rows of the generator's w+ (18 at 1024).
        scales: the progressive scales r_i, strictly increasing powers of two (e.g. [32, 64, ..., 1024]
            for LR 16); scales past the generator's resolution raise ValueError.
        channels: feature channels of the head and the branches' RCABs.
        rcabs_per_branch: RCABs in each branch (2 in the paper).
        out_channels: width of the output convs (512); a linear to w_dim follows when != w_dim.
        reduction: channel-attention reduction (16).
        chain_branches: False = every branch reads the head features; True = branch i reads the RCAB
            output of branch i-1 (a deeper path for finer scales).
    """

    def __init__(
        self,
        lr_size: int,
        w_dim: int,
        num_ws: int,
        scales: Sequence[int],
        channels: int = 64,
        rcabs_per_branch: int = 2,
        out_channels: int = 512,
        reduction: int = 16,
        chain_branches: bool = False,
    ) -> None:
        super().__init__()
        _check_positive(w_dim=w_dim, num_ws=num_ws, channels=channels, rcabs_per_branch=rcabs_per_branch)
        self.rows = scale_rows(scales, num_ws)
        self.scales = list(self.rows)
        self.lr_size, self.w_dim, self.num_ws = lr_size, w_dim, num_ws
        self.channels, self.out_channels = channels, out_channels
        self.chain_branches = chain_branches
        self.head = EncoderHead(lr_size, channels)
        self.branches = nn.ModuleDict(
            {str(s): ScaleBranch(channels, out_channels, w_dim, b - a, rcabs_per_branch, reduction) for s, (a, b) in self.rows.items()}
        )
        self.register_buffer("w_offset", torch.zeros(w_dim))  # as EWEncoder.w_offset

    @property
    def total_rows(self) -> int:
        """Rows of w+ produced by all scales (num_ws_up_to(scales[-1]))."""
        return self.rows[self.scales[-1]][1]

    def forward_scales(self, lr: Tensor, upto: int) -> Tensor:
        """Rows [0, num_ws_up_to(upto)) of w+, running only the branches of scales <= ``upto``
        (the progressive stage r_i = upto of Eq. (10)); ``upto`` must be one of ``scales``."""
        if upto not in self.rows:
            raise ValueError(f"upto must be one of the encoder's scales {self.scales}, got {upto}")
        feat = self.head(lr)  # [B, C, 32, 32]
        codes = []
        for s in self.scales:
            if s > upto:
                break
            branch = self.branches[str(s)]
            branch_feat = branch.rcabs(feat)  # [B, C, 32, 32]
            codes.append(branch.out(branch_feat))  # [B, rows_s, w_dim]
            if self.chain_branches:
                feat = branch_feat
        out = torch.cat(codes, dim=1) + self.w_offset
        assert out.shape[1:] == (self.rows[upto][1], self.w_dim)
        return out  # [B, num_ws_up_to(upto), w_dim]

    def forward(self, lr: Tensor) -> Tensor:
        return self.forward_scales(lr, self.scales[-1])  # [B, total_rows, w_dim]

    @torch.no_grad()
    def init_from_ew(self, ew: EWEncoder) -> None:
        """Warm start from a trained E_W (a choice of ours, not the paper's): copy its head, give every
        branch the RCABs of E_W's first residual group and E_W's output convs, the last conv tiled
        over the branch's rows, so each row starts as E_W's code computed on different features.
        The architectures must agree (lr_size, channels, out_channels, w_dim, enough RCABs)."""
        mine = (self.lr_size, self.channels, self.out_channels, self.w_dim)
        theirs = (ew.lr_size, ew.channels, ew.out_channels, ew.w_dim)
        if mine != theirs:
            raise ValueError(f"E_W (lr_size, channels, out_channels, w_dim) = {theirs} does not match E_W+'s {mine}")
        ew_rcabs = ew.groups[0].rcabs
        n = len(next(iter(self.branches.values())).rcabs)
        if len(ew_rcabs) < n:
            raise ValueError(f"E_W's groups have {len(ew_rcabs)} RCABs, E_W+'s branches need {n}")
        self.head.load_state_dict(ew.head.state_dict())
        self.w_offset.copy_(ew.w_offset)
        src = ew.out
        for branch in self.branches.values():
            for i, rcab in enumerate(branch.rcabs):
                rcab.load_state_dict(ew_rcabs[i].state_dict())
            dst, rows = branch.out, branch.out.rows
            for i in (0, 2):
                dst.convs[i].load_state_dict(src.convs[i].state_dict())
            dst.convs[4].weight.copy_(src.convs[4].weight.repeat(rows, 1, 1, 1))
            dst.convs[4].bias.copy_(src.convs[4].bias.repeat(rows))
            if dst.linear is not None:
                dst.linear.load_state_dict(src.linear.state_dict())
