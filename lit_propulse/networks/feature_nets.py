"""Frozen pretrained feature networks: the perceptual (VGG-16) and identity (ArcFace, FaceNet) nets.

* :class:`VGGPerceptual` — VGG-16 conv4_2 features for the perceptual loss L_pp of Pro-PULSE
  Eq. (3) (Sec. III-C).
* :class:`ArcFaceIdentity` — ArcFace IR-SE50 embeddings for the identity loss L_id of Eq. (7)
  (Sec. III-D, "a pre-trained ArcFace network [8]"), in the layout of the ``model_ir_se50.pth`` that
  pSp / e4e ship (TreB1eN/InsightFace_Pytorch's ``Backbone(112, 50, 'ir_se')``), our own code.
* :class:`FaceNetIdentity` — facenet-pytorch's InceptionResnetV1 (VGGFace2) embeddings, an
  alternative identity net.
* :class:`LPIPSNetwork` — LPIPS (Zhang et al. 2018) for evaluation: torchmetrics' LPIPS network with
  its packaged linear layers and the torchvision AlexNet/VGG-16 backbone read from the user's file.
* :func:`inception_fid_extractor` — the FID Inception-v3 (torch-fidelity's port of the TF graph)
  from the user's ``weights-inception-2015-12-05-6726825d.pth``.

Every network is built from a weights file the user gives — nothing is ever downloaded. A missing
file raises :class:`~lit_propulse.core.errors.MissingFilesError` saying what the file is and where it comes
from; a file with other keys raises :class:`WeightsFileError` listing them. The nets are frozen
(no parameter requires grad) and stay in eval mode even when a parent module calls ``.train()``,
but gradients flow to their input image, as L_id and L_pp need.

Images are float [-1, 1] NCHW RGB.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_propulse.core.errors import MissingFilesError, WeightsFileError
from lit_propulse.core.files import needs_file
from lit_propulse.core.weights import safe_load, state_dict_mismatch

__all__ = [
    "ARCFACE_WEIGHTS",
    "ArcFaceIdentity",
    "FACENET_WEIGHTS",
    "INCEPTION_FID_WEIGHTS",
    "LPIPSNetwork",
    "LPIPS_BACKBONE_WEIGHTS",
    "inception_fid_extractor",
    "FaceNetIdentity",
    "PSP_FACE_CROP",
    "VGG16_LAYERS",
    "VGG16_WEIGHTS",
    "VGGPerceptual",
    "WeightsFileError",
    "build_identity_net",
    "crop_fraction",
    "load_weights_file",
]

#: What each weights file is and where it comes from (used in error messages and the README).
VGG16_WEIGHTS = (
    "torchvision's VGG-16 ImageNet weights, vgg16-397923af.pth, from "
    "https://download.pytorch.org/models/vgg16-397923af.pth (the full model state dict or its "
    "'features' part)"
)
ARCFACE_WEIGHTS = (
    "the ArcFace IR-SE50 weights model_ir_se50.pth (TreB1eN/InsightFace_Pytorch), as linked from the "
    "READMEs of eladrich/pixel2style2pixel and omertov/encoder4editing ('IR-SE50 Model')"
)
FACENET_WEIGHTS = (
    "facenet-pytorch's VGGFace2 InceptionResnetV1 weights, 20180402-114759-vggface2.pt, from "
    "https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/20180402-114759-vggface2.pt"
)

INCEPTION_FID_WEIGHTS = (
    "the FID Inception-v3 weights weights-inception-2015-12-05-6726825d.pth (torch-fidelity's conversion of "
    "the TensorFlow FID graph), from https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
    "weights-inception-2015-12-05-6726825d.pth"
)
LPIPS_BACKBONE_WEIGHTS = {
    "alex": "torchvision's AlexNet ImageNet weights alexnet-owt-7be5be79.pth (https://download.pytorch.org/models/alexnet-owt-7be5be79.pth)",
    "vgg": "torchvision's VGG-16 ImageNet weights vgg16-397923af.pth (https://download.pytorch.org/models/vgg16-397923af.pth)",
}

#: pSp's ArcFace face crop ``x[:, :, 35:223, 32:220]`` of a 256x256 FFHQ-aligned image
#: (criteria/id_loss.py), as fractions of the side: (top, bottom, left, right).
PSP_FACE_CROP: tuple[float, float, float, float] = (35 / 256, 223 / 256, 32 / 256, 220 / 256)

CropBox = tuple[float, float, float, float]


# ----------------------------------------------------------------------------------------------
# Loading and freezing.


def load_weights_file(path: str | os.PathLike, what: str) -> dict[str, Tensor]:
    """The state dict in ``path``, read with :func:`~lit_propulse.core.weights.safe_load` (no file runs code).

    ``what`` says what the file is and where it comes from; it goes into the errors: MissingFilesError
    when the file does not exist, WeightsFileError when it is unreadable or holds no state dict.
    A ``{"state_dict": ...}`` wrapper and a DataParallel ``module.`` prefix are unwrapped.
    """
    path = str(path)
    if not os.path.isfile(path):
        raise MissingFilesError(f"{path}: not found. Expected {what}. Copy it to this path (nothing is downloaded).")
    state = safe_load(path, f"expected {what}")
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        kind = type(state).__name__ if not isinstance(state, dict) else "dict with non-tensor values"
        raise WeightsFileError(f"{path}: holds a {kind}, not a state dict. Expected {what}.")
    if state and all(str(k).startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def _load_exact(module: nn.Module, state: dict[str, Tensor], path: str, what: str) -> None:
    """Copy ``state`` into ``module`` requiring exactly its keys and shapes (a missing BatchNorm
    ``num_batches_tracked`` is tolerated: files written before PyTorch 0.4.1 lack it and it is unused
    in eval). Otherwise one WeightsFileError naming the first few missing/unexpected/mis-shaped keys."""
    own = module.state_dict()
    problem = state_dict_mismatch(own, state, may_lack=lambda k: k.endswith("num_batches_tracked"), shown=5)
    if problem:
        raise WeightsFileError(f"{path}: does not match the network: {problem}. Expected {what}.")
    with torch.no_grad():
        for k, v in own.items():
            if k in state:
                v.copy_(state[k])


def _check_source(weights_path: str | os.PathLike | None, random_init: bool, what: str) -> None:
    if weights_path is None and not random_init:
        raise ValueError(f"weights_path is required: {what}. (random_init=True builds an untrained net, for tests only.)")
    if weights_path is not None and random_init:
        raise ValueError(f"give either weights_path ({weights_path!r}) or random_init=True, not both")


class _Frozen(nn.Module):
    """A pretrained net used as a fixed function: no parameter requires grad, always in eval mode."""

    def _freeze(self) -> None:
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> _Frozen:
        return super().train(False)  # BatchNorm / Dropout must keep their pretrained behaviour


def _check_image(x: Tensor, who: str) -> None:
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"{who} expects images [B, 3, H, W] in [-1, 1], got {tuple(x.shape)}")


# ----------------------------------------------------------------------------------------------
# Face crop.


def _check_crop(crop: CropBox | None) -> CropBox | None:
    if crop is None:
        return None
    crop = tuple(float(c) for c in crop)
    if len(crop) != 4 or not (0 <= crop[0] < crop[1] <= 1 and 0 <= crop[2] < crop[3] <= 1):
        raise ValueError(f"crop must be (top, bottom, left, right) fractions with 0 <= top < bottom <= 1 and 0 <= left < right <= 1, got {crop}")
    return crop  # type: ignore[return-value]


def crop_fraction(x: Tensor, box: CropBox) -> Tensor:
    """x[..., round(top*H):round(bottom*H), round(left*W):round(right*W)] — a crop given as
    fractions of the side, so the same box serves every resolution (PSP_FACE_CROP at 256 is pSp's
    literal ``35:223, 32:220``)."""
    h, w = x.shape[-2:]
    top, bottom, left, right = box
    t, b, lft, r = round(top * h), round(bottom * h), round(left * w), round(right * w)
    if b - t < 1 or r - lft < 1:
        raise ValueError(f"crop {box} of a {h}x{w} image is empty")
    return x[..., t:b, lft:r]


# ----------------------------------------------------------------------------------------------
# VGG-16 perceptual features.


_VGG16_CFG: list[int | str] = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


def _vgg16_layer_table() -> dict[str, tuple[int, int, int]]:
    """name -> (index in torchvision's ``vgg16().features``, channels, number of pools before it)."""
    table: dict[str, tuple[int, int, int]] = {}
    idx, block, conv, pools, ch = 0, 1, 1, 0, 3
    for v in _VGG16_CFG:
        if v == "M":
            table[f"pool{block}"] = (idx, ch, pools + 1)
            idx, block, conv, pools = idx + 1, block + 1, 1, pools + 1
        else:
            ch = int(v)
            table[f"conv{block}_{conv}"] = (idx, ch, pools)
            table[f"relu{block}_{conv}"] = (idx + 1, ch, pools)
            idx, conv = idx + 2, conv + 1
    return table


#: VGG-16 layer names ("conv4_2", "relu4_2", "pool3", ...) -> (features index, channels, pools).
VGG16_LAYERS = _vgg16_layer_table()


@needs_file("weights_path", "VGG-16 weights for the perceptual loss (Eq. (3))", VGG16_WEIGHTS)
class VGGPerceptual(_Frozen):
    """VGG-16 features up to ``layer`` for the perceptual loss (Pro-PULSE Eq. (3), Sec. III-C: "the
    features produced by conv4_2 layer of the VGG-16 network").

    torchvision's ``vgg16().features`` truncated after ``layer``, same module indices (so its state
    dict keys are torchvision's ``features.N.*``). Inputs in [-1, 1] are mapped to [0, 1] and
    ImageNet-normalised. "conv4_2" is the conv output before its ReLU (the paper's name taken
    literally); "relu4_2" is the rectified one.

    Args:
        weights_path: torchvision's ``vgg16-397923af.pth`` (the full model's state dict, classifier
            ignored, or only the ``features`` part, with or without the ``features.`` prefix).
            None only together with random_init=True.
        layer: last layer kept, a name of VGG16_LAYERS ("conv4_2": [B, 512, H/8, W/8]).
        random_init: build with torchvision's random initialisation instead of loading (tests only).
    """

    def __init__(self, weights_path: str | os.PathLike | None, layer: str = "conv4_2", random_init: bool = False) -> None:
        super().__init__()
        if layer not in VGG16_LAYERS:
            raise ValueError(f"layer must be one of {list(VGG16_LAYERS)}, got {layer!r}")
        _check_source(weights_path, random_init, VGG16_WEIGHTS)
        self.layer = layer
        last, self.out_channels, self.num_pools = VGG16_LAYERS[layer]
        modules: list[nn.Module] = []
        in_ch = 3
        for v in _VGG16_CFG:
            if v == "M":
                modules.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                modules += [nn.Conv2d(in_ch, int(v), kernel_size=3, padding=1), nn.ReLU(inplace=True)]
                in_ch = int(v)
        self.features = nn.Sequential(*modules[: last + 1])
        for m in self.features:
            if isinstance(m, nn.Conv2d):  # torchvision's VGG initialisation
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)
        if weights_path is not None:
            self._load(str(weights_path))
        self._freeze()

    def _load(self, path: str) -> None:
        state = load_weights_file(path, VGG16_WEIGHTS)
        if any(k.startswith("features.") for k in state):
            state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
        else:
            state = {f"features.{k}": v for k, v in state.items()}
        # the file's layers past ``layer`` are the rest of VGG-16, not foreign keys
        n_kept = len(self.features)
        later = {f"features.{i}.{p}" for i in range(n_kept, VGG16_LAYERS["pool5"][0]) for p in ("weight", "bias")}
        state = {k: v for k, v in state.items() if k not in later}
        _load_exact(self, state, path, VGG16_WEIGHTS)

    def forward(self, x: Tensor) -> Tensor:
        _check_image(x, "VGGPerceptual")
        h, w = x.shape[-2:]
        f = 2**self.num_pools
        if h < f or w < f:
            raise ValueError(f"VGGPerceptual({self.layer!r}) needs images of at least {f}x{f}, got {h}x{w}")
        x = ((x + 1) / 2 - self.mean.to(x.dtype)) / self.std.to(x.dtype)  # [B, 3, H, W], ImageNet-normalised
        out = self.features(x)
        assert out.shape[1:] == (self.out_channels, h // f, w // f)
        return out  # [B, 512, H/8, W/8] for conv4_2


# ----------------------------------------------------------------------------------------------
# ArcFace IR-SE50 (TreB1eN/InsightFace_Pytorch ``Backbone(112, 50, 'ir_se')``, as in pSp/e4e).


class SEModule(nn.Module):
    """Squeeze-and-excitation: avg pool, 1x1 conv ``fc1`` down by ``reduction``, ReLU, 1x1 conv
    ``fc2`` up, sigmoid, rescale (no biases, as in model_ir_se50.pth)."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, channels // reduction, kernel_size=1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(channels // reduction, channels, kernel_size=1, bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: Tensor) -> Tensor:
        return x * self.sigmoid(self.fc2(self.relu(self.fc1(self.avg_pool(x)))))


class BottleneckIRSE(nn.Module):
    """Improved residual unit with SE (``bottleneck_IR_SE``): res = BN, 3x3 conv, PReLU, 3x3 conv with
    ``stride``, BN, SE; shortcut = MaxPool2d(1, stride) when the width is kept, else 1x1 conv with
    ``stride`` + BN; output res + shortcut."""

    def __init__(self, in_channel: int, depth: int, stride: int) -> None:
        super().__init__()
        if in_channel == depth:
            self.shortcut_layer: nn.Module = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(nn.Conv2d(in_channel, depth, 1, stride, bias=False), nn.BatchNorm2d(depth))
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(in_channel),
            nn.Conv2d(in_channel, depth, 3, 1, 1, bias=False),
            nn.PReLU(depth),
            nn.Conv2d(depth, depth, 3, stride, 1, bias=False),
            nn.BatchNorm2d(depth),
            SEModule(depth, 16),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


#: IR-SE50 stages: (in_channel, depth, units); the first unit of each stage has stride 2.
_IR50_STAGES = [(64, 64, 3), (64, 128, 4), (128, 256, 14), (256, 512, 3)]


@needs_file("weights_path", "ArcFace IR-SE50 weights for the identity loss (Eq. (7))", ARCFACE_WEIGHTS)
class ArcFaceIdentity(_Frozen):
    """ArcFace IR-SE50 face embeddings for the identity loss L_id (Pro-PULSE Eq. (7), Sec. III-D).

    Our own code reproducing, key for key, TreB1eN/InsightFace_Pytorch's
    ``Backbone(input_size=112, num_layers=50, mode='ir_se')`` whose weights pSp / e4e ship as
    ``model_ir_se50.pth`` (the file loads with every key and shape matched): ``input_layer`` (3x3 conv
    3->64, BN, PReLU), ``body`` (24 IR-SE units: 3, 4, 14, 3 of widths 64, 128, 256, 512, first unit
    of each stage stride 2), ``output_layer`` (BN, Dropout, Flatten, Linear 512*7*7 -> 512, BN1d),
    then L2 normalisation.

    Input [B, 3, H, W] in [-1, 1] (ArcFace's own normalisation). Like pSp's IDLoss, the face region
    ``crop`` is cut out, then brought to 112x112 by adaptive average pooling (pSp's ``face_pool``)
    when it is at least 112 on each side, by bilinear interpolation when smaller.

    Args:
        weights_path: ``model_ir_se50.pth``; None only together with random_init=True.
        crop: (top, bottom, left, right) face box as fractions of the side; PSP_FACE_CROP (default) is
            pSp's ``[35:223, 32:220]`` at 256 for FFHQ-aligned faces; None = the whole image.
        random_init: build with PyTorch's default initialisation instead of loading (tests only).
    """

    input_size = 112

    def __init__(self, weights_path: str | os.PathLike | None, crop: CropBox | None = PSP_FACE_CROP, random_init: bool = False) -> None:
        super().__init__()
        _check_source(weights_path, random_init, ARCFACE_WEIGHTS)
        self.crop = _check_crop(crop)
        self.input_layer = nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.PReLU(64))
        units: list[nn.Module] = []
        for in_ch, depth, n in _IR50_STAGES:
            units.append(BottleneckIRSE(in_ch, depth, 2))
            units += [BottleneckIRSE(depth, depth, 1) for _ in range(n - 1)]
        self.body = nn.Sequential(*units)
        self.output_layer = nn.Sequential(
            nn.BatchNorm2d(512),
            nn.Dropout(0.6),  # pSp's drop_ratio; inactive, the net stays in eval
            nn.Flatten(),
            nn.Linear(512 * 7 * 7, 512),
            nn.BatchNorm1d(512),
        )
        if weights_path is not None:
            path = str(weights_path)
            _load_exact(self, load_weights_file(path, ARCFACE_WEIGHTS), path, ARCFACE_WEIGHTS)
        self._freeze()

    def preprocess(self, x: Tensor) -> Tensor:
        """Face crop and resize: [B, 3, H, W] -> [B, 3, 112, 112]."""
        _check_image(x, "ArcFaceIdentity")
        if self.crop is not None:
            x = crop_fraction(x, self.crop)
        s = self.input_size
        if tuple(x.shape[-2:]) == (s, s):
            return x
        if min(x.shape[-2:]) >= s:
            return F.adaptive_avg_pool2d(x, (s, s))
        return F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False)

    def forward(self, x: Tensor) -> Tensor:
        x = self.preprocess(x)  # [B, 3, 112, 112]
        x = self.body(self.input_layer(x))  # [B, 512, 7, 7]
        emb = self.output_layer(x)  # [B, 512]
        return F.normalize(emb, p=2, dim=1)  # [B, 512], unit norm


# ----------------------------------------------------------------------------------------------
# FaceNet (facenet-pytorch InceptionResnetV1, VGGFace2).


@needs_file("weights_path", "FaceNet weights for the identity loss (Eq. (7))", FACENET_WEIGHTS)
class FaceNetIdentity(_Frozen):
    """FaceNet (InceptionResnetV1, VGGFace2) embeddings from facenet-pytorch, an alternative identity
    net for L_id (Eq. (7)).

    ``InceptionResnetV1(pretrained=None, classify=False)`` — with ``pretrained=None`` facenet-pytorch
    downloads nothing — then the user's state dict is loaded (its classifier ``logits.*`` is
    ignored). Input [-1, 1] -> optional ``crop`` -> bilinear antialiased resize to 160 -> facenet's
    ``fixed_image_standardization`` ((pixel - 127.5) / 128, i.e. x * 127.5 / 128).

    Args:
        weights_path: ``20180402-114759-vggface2.pt``; None only together with random_init=True.
        crop: (top, bottom, left, right) face box as fractions of the side; None (default) = the
            whole image (facenet was trained on MTCNN crops with a margin, close to a whole
            FFHQ-aligned image); PSP_FACE_CROP = pSp's ArcFace box.
        random_init: build with facenet-pytorch's default initialisation (tests only).
    """

    input_size = 160

    def __init__(self, weights_path: str | os.PathLike | None, crop: CropBox | None = None, random_init: bool = False) -> None:
        super().__init__()
        from facenet_pytorch import InceptionResnetV1

        _check_source(weights_path, random_init, FACENET_WEIGHTS)
        self.crop = _check_crop(crop)
        self.net = InceptionResnetV1(pretrained=None, classify=False)
        if weights_path is not None:
            path = str(weights_path)
            state = load_weights_file(path, FACENET_WEIGHTS)
            state = {k: v for k, v in state.items() if not k.startswith("logits.")}
            _load_exact(self.net, state, path, FACENET_WEIGHTS)
        self._freeze()

    def preprocess(self, x: Tensor) -> Tensor:
        """Crop, resize and standardise: [B, 3, H, W] in [-1, 1] -> [B, 3, 160, 160]."""
        _check_image(x, "FaceNetIdentity")
        if self.crop is not None:
            x = crop_fraction(x, self.crop)
        s = self.input_size
        if tuple(x.shape[-2:]) != (s, s):
            x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
        return x * (127.5 / 128.0)

    def forward(self, x: Tensor) -> Tensor:
        emb = self.net(self.preprocess(x))  # L2-normalised by facenet-pytorch (classify=False)
        assert emb.shape[1:] == (512,)
        return emb  # [B, 512], unit norm


# ----------------------------------------------------------------------------------------------


_IDENTITY_NETS: dict[str, Callable[..., nn.Module]] = {"arcface": ArcFaceIdentity, "facenet": FaceNetIdentity}


def build_identity_net(kind: Literal["arcface", "facenet"], weights_path: str | os.PathLike | None, **kwargs: Any) -> nn.Module:
    """The identity net id(.) of Eq. (7): "arcface" (the paper's, IR-SE50) or "facenet"; ``kwargs``
    go to the class (``crop``, ``random_init``). Both return L2-normalised [B, 512] embeddings."""
    if kind not in _IDENTITY_NETS:
        raise ValueError(f"kind must be one of {list(_IDENTITY_NETS)}, got {kind!r}")
    return _IDENTITY_NETS[kind](weights_path, **kwargs)


# ----------------------------------------------------------------------------------------------
# Evaluation networks: LPIPS and the FID Inception.


class LPIPSNetwork(_Frozen):
    """LPIPS distance (Zhang et al. 2018, "lin" version) between two image batches: [B,3,H,W] x2 -> [B].

    The calibrated linear layers are the ones torchmetrics ships inside its package (the official
    LPIPS v0.1 weights); the backbone (AlexNet or VGG-16 ``features``) is read from ``weights_path``,
    a torchvision ImageNet state dict (:data:`LPIPS_BACKBONE_WEIGHTS`), instead of being downloaded.
    Inputs in [-1, 1], as LPIPS itself expects.

    Args:
        weights_path: the torchvision backbone weights file (None only with ``random_init``).
        net: "alex" (the LPIPS default) or "vgg".
        random_init: random backbone, for tests only.
    """

    def __init__(self, weights_path: str | os.PathLike | None, net: Literal["alex", "vgg"] = "alex", random_init: bool = False) -> None:
        super().__init__()
        from torchmetrics.functional.image.lpips import _LPIPS

        if net not in LPIPS_BACKBONE_WEIGHTS:
            raise ValueError(f"net must be one of {list(LPIPS_BACKBONE_WEIGHTS)}, got {net!r}")
        what = LPIPS_BACKBONE_WEIGHTS[net]
        _check_source(weights_path, random_init, what)
        self.net_type = net
        self.lpips = _LPIPS(pretrained=True, net=net, pnet_rand=True)  # packaged linear layers, random backbone
        if weights_path is not None:
            state = load_weights_file(weights_path, what)
            state = {k[len("features.") :]: v for k, v in state.items() if k.startswith("features.")} or state
            backbone = self.lpips.net
            mapped = {}
            for key in backbone.state_dict():
                _, idx, param = key.split(".")  # "slice2.3.weight" -> torchvision features "3.weight"
                if f"{idx}.{param}" in state:
                    mapped[key] = state[f"{idx}.{param}"]
            _load_exact(backbone, mapped, str(weights_path), what)
        self._freeze()

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        _check_image(x, "LPIPSNetwork")
        _check_image(y, "LPIPSNetwork")
        return self.lpips(x.float(), y.float()).flatten()  # [B]


def inception_fid_extractor(weights_path: str | os.PathLike) -> str:
    """Check the FID Inception weights file exists and return its path for torchmetrics'
    ``FrechetInceptionDistance(feature_extractor_weights_path=...)`` (which needs torch-fidelity)."""
    path = str(weights_path)
    if not os.path.isfile(path):
        raise MissingFilesError(f"{path}: not found. Expected {INCEPTION_FID_WEIGHTS}. Copy it to this path (nothing is downloaded).")
    return path
