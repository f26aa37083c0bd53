"""The feature networks of Eq. (3) and (7) against references run here, with the same random weights
(copied in with a strict ``load_state_dict`` of a state dict in the reference's own key layout;
reading weights files is covered by tests/test_feature_nets.py):

* VGG-16 conv4_2 (Eq. (3), Sec. III-C) against ``torchvision.models.vgg16(weights=None).features``.
* ArcFace IR-SE50 (Eq. (7), Sec. III-D) against an independent, purely functional restatement of
  TreB1eN/InsightFace_Pytorch's ``Backbone(112, 50, 'ir_se')`` as pSp ships it
  (models/encoders/model_irse.py + helpers.py; criteria/id_loss.py for the face crop and pooling),
  reading the state dict by pSp's key names. Every BatchNorm gets random statistics and affine
  parameters and every PReLU random slopes, so no block is an identity by accident.
* FaceNet (alternative identity net) against ``facenet_pytorch.InceptionResnetV1`` with facenet's
  ``fixed_image_standardization`` on [0, 255] pixels.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
import torchvision

from lit_propulse.networks.feature_nets import PSP_FACE_CROP, ArcFaceIdentity, FaceNetIdentity, VGGPerceptual

pytestmark = pytest.mark.usefixtures("one_thread")


def _images(b: int, size: int, seed: int) -> torch.Tensor:
    return torch.rand(b, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


# ----------------------------------------------------------------------------------------------
# VGG-16


@pytest.fixture(scope="module")
def tv_vgg16_features():
    """torchvision's vgg16().features, built by the very function vgg16() uses (cfg "D"), without
    the 100M-weight classifier that vgg16(weights=None) would initialise for nothing."""
    torch.manual_seed(0)
    return torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["D"]).eval()


# torchvision's vgg16().features indices: conv1_2 2, conv4_1 17, conv4_2 19 (its ReLU 20), pool4 23.
@pytest.mark.parametrize("layer,index", [("conv4_2", 19), ("relu4_2", 20), ("conv1_2", 2)])
def test_vgg16_matches_torchvision(tv_vgg16_features, layer, index):
    """Ours keeps torchvision's layers up to ``layer`` (same indices, so the state dict loads
    strictly) and maps [-1, 1] to ImageNet-normalised [0, 1]."""
    feats = tv_vgg16_features
    if layer == "conv4_2":
        assert isinstance(feats[19], torch.nn.Conv2d) and sum(isinstance(m, torch.nn.MaxPool2d) for m in feats[:19]) == 3
        assert (feats[19].in_channels, feats[19].out_channels) == (512, 512)
    ours = VGGPerceptual(None, layer=layer, random_init=True)
    ours.load_state_dict({f"features.{k}": v for k, v in feats[: index + 1].state_dict().items()}, strict=True)
    x = _images(2, 32, 0)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = feats[: index + 1](((x + 1) / 2 - mean) / std)
        got = ours(x)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    if layer == "conv4_2":
        assert got.shape == (2, 512, 4, 4) and (got < 0).any()  # before the ReLU, as the paper names it


# ----------------------------------------------------------------------------------------------
# ArcFace IR-SE50, restated


#: IR-SE50 stages (in_channel, depth, units); the first unit of each stage has stride 2.
IRSE50_STAGES = [(64, 64, 3), (64, 128, 4), (128, 256, 14), (256, 512, 3)]


def irse50_units() -> list[tuple[int, int, int]]:
    units = []
    for cin, depth, n in IRSE50_STAGES:
        units.append((cin, depth, 2))
        units += [(depth, depth, 1)] * (n - 1)
    return units


def random_irse50_state(seed: int) -> dict[str, torch.Tensor]:
    """A random state dict with pSp's model_ir_se50.pth key names and shapes."""
    g = torch.Generator().manual_seed(seed)
    s: dict[str, torch.Tensor] = {}

    def conv(key: str, cout: int, cin: int, k: int) -> None:
        s[key] = torch.randn(cout, cin, k, k, generator=g) * math.sqrt(1.0 / (cin * k * k))

    def bn(prefix: str, c: int) -> None:
        s[prefix + ".weight"] = 0.5 + torch.rand(c, generator=g)
        s[prefix + ".bias"] = 0.1 * torch.randn(c, generator=g)
        s[prefix + ".running_mean"] = 0.1 * torch.randn(c, generator=g)
        s[prefix + ".running_var"] = 0.5 + torch.rand(c, generator=g)
        s[prefix + ".num_batches_tracked"] = torch.tensor(100)

    def prelu(key: str, c: int) -> None:
        s[key] = 0.5 * torch.rand(c, generator=g)

    conv("input_layer.0.weight", 64, 3, 3)
    bn("input_layer.1", 64)
    prelu("input_layer.2.weight", 64)
    for i, (cin, depth, _) in enumerate(irse50_units()):
        p = f"body.{i}."
        if cin != depth:
            conv(p + "shortcut_layer.0.weight", depth, cin, 1)
            bn(p + "shortcut_layer.1", depth)
        bn(p + "res_layer.0", cin)
        conv(p + "res_layer.1.weight", depth, cin, 3)
        prelu(p + "res_layer.2.weight", depth)
        conv(p + "res_layer.3.weight", depth, depth, 3)
        bn(p + "res_layer.4", depth)
        conv(p + "res_layer.5.fc1.weight", depth // 16, depth, 1)
        conv(p + "res_layer.5.fc2.weight", depth, depth // 16, 1)
    bn("output_layer.0", 512)
    s["output_layer.3.weight"] = torch.randn(512, 512 * 7 * 7, generator=g) / math.sqrt(512 * 7 * 7)
    s["output_layer.3.bias"] = 0.1 * torch.randn(512, generator=g)
    bn("output_layer.4", 512)
    return s


def ref_irse50(s: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Backbone(112, 50, 'ir_se') forward in eval mode, written with torch.nn.functional only:
    input conv/BN/PReLU; 24 units res(x) + shortcut(x) where res = BN, 3x3 conv (stride 1), PReLU,
    3x3 conv (unit stride), BN, squeeze-excitation (avg pool, 1x1 fc1, ReLU, 1x1 fc2, sigmoid,
    rescale) and shortcut = x subsampled by the stride (MaxPool2d(1, stride)) when the width is
    kept, else 1x1 conv with the stride + BN; then BN, flatten, linear, BN1d, L2 normalisation."""

    def bn(v: torch.Tensor, p: str) -> torch.Tensor:
        return F.batch_norm(v, s[p + ".running_mean"], s[p + ".running_var"], s[p + ".weight"], s[p + ".bias"], False, 0.0, 1e-5)

    x = F.conv2d(x, s["input_layer.0.weight"], padding=1)
    x = F.prelu(bn(x, "input_layer.1"), s["input_layer.2.weight"])
    for i, (cin, depth, stride) in enumerate(irse50_units()):
        p = f"body.{i}."
        if cin == depth:
            short = x[:, :, ::stride, ::stride]
        else:
            short = bn(F.conv2d(x, s[p + "shortcut_layer.0.weight"], stride=stride), p + "shortcut_layer.1")
        r = bn(x, p + "res_layer.0")
        r = F.prelu(F.conv2d(r, s[p + "res_layer.1.weight"], padding=1), s[p + "res_layer.2.weight"])
        r = bn(F.conv2d(r, s[p + "res_layer.3.weight"], stride=stride, padding=1), p + "res_layer.4")
        se = r.mean(dim=(2, 3), keepdim=True)
        se = torch.sigmoid(F.conv2d(F.relu(F.conv2d(se, s[p + "res_layer.5.fc1.weight"])), s[p + "res_layer.5.fc2.weight"]))
        x = r * se + short
    x = bn(x, "output_layer.0").flatten(1)
    x = bn(F.linear(x, s["output_layer.3.weight"], s["output_layer.3.bias"]), "output_layer.4")
    return x / x.norm(dim=1, keepdim=True)


@pytest.fixture(scope="module")
def irse50():
    """The restated state dict and the project's ArcFace carrying it (a strict load: every pSp key
    name and shape must match)."""
    state = random_irse50_state(0)
    net = ArcFaceIdentity(None, random_init=True)
    net.load_state_dict(state, strict=True)
    return state, net


def test_arcface_irse50_matches_restated_backbone(irse50):
    state, net = irse50
    net.train()  # a parent's .train() must not switch BatchNorm / Dropout to training behaviour
    x = torch.cat([_images(1, 112, 1), _images(1, 112, 2)])
    crop, net.crop = net.crop, None
    try:
        with torch.no_grad():
            got = net(x)
    finally:
        net.crop = crop
    with torch.no_grad():
        expected = ref_irse50(state, x)
    assert got.shape == (2, 512)
    assert (expected[0] - expected[1]).norm() > 0.3  # the two faces embed far apart: the check is sensitive
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=2e-5)


def test_arcface_psp_crop_and_pool(irse50):
    """pSp's IDLoss at 256: x[:, :, 35:223, 32:220], AdaptiveAvgPool2d(112), then the backbone."""
    state, net = irse50
    assert net.crop == PSP_FACE_CROP  # the default
    x = _images(1, 256, 3)
    with torch.no_grad():
        got = net(x)
        expected = ref_irse50(state, F.adaptive_avg_pool2d(x[:, :, 35:223, 32:220], (112, 112)))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=2e-5)


# ----------------------------------------------------------------------------------------------
# FaceNet


def test_facenet_matches_facenet_pytorch():
    from facenet_pytorch import InceptionResnetV1, fixed_image_standardization

    torch.manual_seed(0)
    ref = InceptionResnetV1(pretrained=None, classify=False)
    # BatchNorm statistics from one pass over random images (cumulative average): the random net then
    # normalises like a trained one, and its embeddings depend on the input (with the default
    # statistics two different images embed almost alike and the comparison would be blind)
    ref.train()
    for m in ref.modules():
        if isinstance(m, torch.nn.BatchNorm2d | torch.nn.BatchNorm1d):
            m.momentum = None
            m.reset_running_stats()
    with torch.no_grad():
        ref(fixed_image_standardization((_images(2, 160, 7) + 1) * 127.5))
    ref.eval()
    ours = FaceNetIdentity(None, random_init=True)
    ours.net.load_state_dict(ref.state_dict(), strict=True)
    ours.train()  # stays in eval
    x, other = _images(1, 160, 4), _images(1, 224, 5)
    with torch.no_grad():
        got = ours(x)
        expected = ref(fixed_image_standardization((x + 1) * 127.5))  # [-1, 1] -> [0, 255] pixels
        # another size: bilinear, antialiased resize to 160 first
        got_other = ours(other)
        resized = F.interpolate(other, size=(160, 160), mode="bilinear", align_corners=False, antialias=True)
        exp_other = ref(fixed_image_standardization((resized + 1) * 127.5))
    assert (expected - exp_other).norm() > 0.1  # different images embed apart: the check is sensitive
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=2e-5)
    torch.testing.assert_close(got_other, exp_other, rtol=1e-4, atol=2e-5)
