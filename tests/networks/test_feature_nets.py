"""Frozen feature nets (VGG-16 conv4_2, ArcFace IR-SE50, FaceNet): loading through the weights-file
route reproduces the net exactly, the file layouts the real weights use, clear errors for missing or
foreign files, no downloads, unit-norm embeddings, frozen yet differentiable w.r.t. the image."""

from __future__ import annotations

import pytest
import torch

from lit_propulse.core.errors import MissingFilesError, UserFacingError
from lit_propulse.networks.feature_nets import (
    PSP_FACE_CROP,
    ArcFaceIdentity,
    FaceNetIdentity,
    VGGPerceptual,
    WeightsFileError,
    build_identity_net,
    crop_fraction,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def img(b: int, s: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, s, s, generator=g) * 2 - 1


def perturb_bn_stats(net: torch.nn.Module) -> None:
    """Non-trivial BatchNorm running statistics, so a load that skipped them would show."""
    g = torch.Generator().manual_seed(1)
    for m in net.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)


@pytest.fixture(scope="module")
def arcface():
    torch.manual_seed(0)
    net = ArcFaceIdentity(None, random_init=True)
    perturb_bn_stats(net)
    return net


@pytest.fixture(scope="module")
def facenet():
    torch.manual_seed(0)
    net = FaceNetIdentity(None, random_init=True)
    perturb_bn_stats(net)
    return net


# -- VGG-16 ------------------------------------------------------------------------------------


def test_vgg_conv4_2_shape_and_torchvision_layout():
    vgg = VGGPerceptual(None, random_init=True)
    assert vgg(img(2, 64)).shape == (2, 512, 8, 8)  # [B, 512, H/8, W/8]
    keys = list(vgg.state_dict())
    assert keys[0] == "features.0.weight" and keys[-1] == "features.19.bias"  # conv4_2 = features[19]
    assert vgg.features[19].out_channels == 512 and len(vgg.features) == 20
    assert VGGPerceptual(None, layer="relu4_2", random_init=True)(img(1, 64)).min() >= 0


def test_vgg_loads_full_and_features_only_files(tmp_path):
    """torchvision's file is the full vgg16 state dict; features-only dicts (with or without the
    prefix) load too; the layers past conv4_2 and the classifier are ignored."""
    torch.manual_seed(0)
    src = VGGPerceptual(None, layer="pool5", random_init=True)  # all 13 convs
    full = {k: v.clone() for k, v in src.state_dict().items()}
    full["classifier.0.weight"] = torch.zeros(4, 25088)
    full["classifier.0.bias"] = torch.zeros(4)
    torch.save(full, tmp_path / "vgg16-397923af.pth")
    torch.save({k[len("features.") :]: v for k, v in src.state_dict().items()}, tmp_path / "features.pth")
    ref = VGGPerceptual(None, random_init=True)
    with torch.no_grad():
        for k, v in ref.state_dict().items():
            v.copy_(src.state_dict()[k])
    x = img(1, 32)
    for name in ("vgg16-397923af.pth", "features.pth"):
        vgg = VGGPerceptual(tmp_path / name)
        assert torch.equal(vgg(x), ref(x))


def test_vgg_matches_torchvision_features(tmp_path):
    """An independent reference: torchvision's own VGG-16 ("D") feature stack, saved with the full
    model's key prefix and loaded through the file route, gives the same conv4_2 features
    (torchvision's features[:20] on ImageNet-normalised input)."""
    from torchvision.models import vgg as tv_vgg

    torch.manual_seed(0)
    tv = tv_vgg.make_layers(tv_vgg.cfgs["D"]).eval()
    torch.save({f"features.{k}": v for k, v in tv.state_dict().items()}, tmp_path / "vgg16-397923af.pth")
    ours = VGGPerceptual(tmp_path / "vgg16-397923af.pth")
    x = img(1, 32)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        ref = tv[:20](((x + 1) / 2 - mean) / std)
    assert torch.allclose(ours(x), ref, atol=1e-5)


def test_vgg_missing_file_names_it_and_its_source(tmp_path):
    path = tmp_path / "vgg16-397923af.pth"
    with pytest.raises(MissingFilesError, match="vgg16-397923af.pth") as e:
        VGGPerceptual(path)
    assert str(path) in str(e.value) and "download.pytorch.org/models" in str(e.value)
    with pytest.raises(ValueError, match="weights_path is required"):
        VGGPerceptual(None)
    with pytest.raises(ValueError, match="layer must be one of"):
        VGGPerceptual(None, layer="conv6_1", random_init=True)


# -- ArcFace IR-SE50 ---------------------------------------------------------------------------


def test_arcface_key_layout_matches_model_ir_se50(arcface):
    """The layout of pSp/e4e's model_ir_se50.pth (TreB1eN Backbone(112, 50, 'ir_se'))."""
    sd = arcface.state_dict()
    assert sd["input_layer.0.weight"].shape == (64, 3, 3, 3) and "input_layer.0.bias" not in sd
    assert sd["input_layer.2.weight"].shape == (64,)  # PReLU
    units = {int(k.split(".")[1]) for k in sd if k.startswith("body.")}
    assert units == set(range(24))  # 3 + 4 + 14 + 3
    # a conv shortcut exactly where the width changes (first unit of stages 2, 3, 4); MaxPool elsewhere
    assert sorted({int(k.split(".")[1]) for k in sd if ".shortcut_layer." in k}) == [3, 7, 21]
    assert sd["body.3.shortcut_layer.0.weight"].shape == (128, 64, 1, 1)
    assert sd["body.21.res_layer.3.weight"].shape == (512, 512, 3, 3)
    assert sd["body.0.res_layer.5.fc1.weight"].shape == (4, 64, 1, 1)  # SE, reduction 16, no bias
    assert sd["body.23.res_layer.5.fc2.weight"].shape == (512, 32, 1, 1)
    assert sd["output_layer.3.weight"].shape == (512, 512 * 7 * 7)
    assert sd["output_layer.4.weight"].shape == (512,)  # BatchNorm1d, affine
    assert {k.split(".")[0] for k in sd} == {"input_layer", "body", "output_layer"}


def test_arcface_roundtrip_through_file_is_exact(arcface, tmp_path):
    path = tmp_path / "model_ir_se50.pth"
    # an old-PyTorch file without BatchNorm num_batches_tracked still loads
    torch.save({k: v for k, v in arcface.state_dict().items() if not k.endswith("num_batches_tracked")}, path)
    loaded = ArcFaceIdentity(path)
    x = img(2, 112)
    emb = loaded(x)
    assert torch.equal(emb, arcface(x))
    assert emb.shape == (2, 512) and torch.allclose(emb.norm(dim=1), torch.ones(2), atol=1e-5)


@pytest.mark.parametrize("side", [64, 256])
def test_arcface_crop_and_pool_path(arcface, side):
    x = img(1, side)
    assert arcface.preprocess(x).shape == (1, 3, 112, 112)
    emb = arcface(x)
    assert emb.shape == (1, 512) and torch.allclose(emb.norm(dim=1), torch.ones(1), atol=1e-5)


def test_psp_crop_is_resolution_relative():
    x = torch.arange(256.0).view(1, 1, 1, 256).expand(1, 3, 256, 256)
    y = torch.arange(256.0).view(1, 1, 256, 1).expand(1, 3, 256, 256)
    # at 256 the fractions are pSp's literal x[:, :, 35:223, 32:220]
    assert torch.equal(crop_fraction(x, PSP_FACE_CROP), x[:, :, 35:223, 32:220])
    assert torch.equal(crop_fraction(y, PSP_FACE_CROP), y[:, :, 35:223, 32:220])
    assert crop_fraction(img(1, 1024), PSP_FACE_CROP).shape[-2:] == (752, 752)  # 140:892, 128:880
    with pytest.raises(ValueError, match="crop must be"):
        ArcFaceIdentity(None, crop=(0.5, 0.4, 0.0, 1.0), random_init=True)


def test_arcface_foreign_file_lists_keys(tmp_path):
    vgg = VGGPerceptual(None, random_init=True)
    path = tmp_path / "not_arcface.pth"
    torch.save(vgg.state_dict(), path)
    with pytest.raises(WeightsFileError) as e:
        ArcFaceIdentity(path)
    msg = str(e.value)
    assert str(path) in msg and "missing keys" in msg and "input_layer.0.weight" in msg
    assert "unexpected keys" in msg and "features.0.weight" in msg and "model_ir_se50.pth" in msg
    assert isinstance(e.value, UserFacingError)


def test_arcface_missing_and_unreadable_files(tmp_path):
    with pytest.raises(MissingFilesError, match="model_ir_se50.pth"):
        ArcFaceIdentity(tmp_path / "model_ir_se50.pth")
    bad = tmp_path / "garbage.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsFileError, match="garbage.pth"):
        ArcFaceIdentity(bad)


def test_frozen_eval_but_differentiable_wrt_image(arcface):
    assert not any(p.requires_grad for p in arcface.parameters())
    parent = torch.nn.Sequential(arcface)
    parent.train()  # a LightningModule switching to training must not flip BatchNorm/Dropout
    assert not arcface.training and not any(m.training for m in arcface.modules())
    x = img(1, 128).requires_grad_(True)
    other = arcface(img(1, 128, seed=3)).detach()
    (1 - (arcface(x) * other).sum()).backward()  # L_id of Eq. (7)
    assert x.grad is not None and x.grad.abs().sum() > 0


# -- FaceNet -----------------------------------------------------------------------------------


def test_facenet_roundtrip_ignores_classifier_and_downloads_nothing(facenet, tmp_path, monkeypatch):
    import facenet_pytorch.models.inception_resnet_v1 as irv1

    def no_download(*a, **k):
        raise AssertionError("facenet-pytorch tried to download")

    monkeypatch.setattr(irv1, "download_url_to_file", no_download)
    state = dict(facenet.net.state_dict())
    state["logits.weight"] = torch.zeros(8631, 512)  # the VGGFace2 file carries its classifier
    state["logits.bias"] = torch.zeros(8631)
    path = tmp_path / "20180402-114759-vggface2.pt"
    torch.save(state, path)
    loaded = build_identity_net("facenet", path)
    assert isinstance(loaded, FaceNetIdentity) and not hasattr(loaded.net, "logits")
    x = img(1, 160)
    emb = loaded(x)
    assert torch.equal(emb, facenet(x))
    assert emb.shape == (1, 512) and torch.allclose(emb.norm(dim=1), torch.ones(1), atol=1e-5)


def test_facenet_resizes_frozen_differentiable(facenet):
    assert facenet.preprocess(img(1, 64)).shape == (1, 3, 160, 160)
    assert not any(p.requires_grad for p in facenet.parameters())
    facenet.train()
    assert not any(m.training for m in facenet.modules())
    x = img(1, 64).requires_grad_(True)
    facenet(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_facenet_missing_file_and_build_errors(tmp_path):
    with pytest.raises(MissingFilesError, match="20180402-114759-vggface2.pt"):
        FaceNetIdentity(tmp_path / "20180402-114759-vggface2.pt")
    with pytest.raises(ValueError, match="kind must be one of"):
        build_identity_net("vggface", None, random_init=True)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not both"):
        build_identity_net("arcface", tmp_path / "x.pth", random_init=True)
