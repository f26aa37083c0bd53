"""The attribute classifier, its training module and the attribute-score difference (Pro-PULSE Sec. IV-E,
Fig. 8): network shapes and gradients, save/load, training through the CLI on the shrunk toy YAML,
the metric against hand-computed values, and the shipped toy classifier on toy test faces."""

from __future__ import annotations

import csv
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from datamodules.toy_faces import TOY_ATTRIBUTES, render_toy_face
from lit_propulse.cli import main
from lit_propulse.core.errors import MissingFilesError
from lit_propulse.core.files import missing_files
from lit_propulse.core.weights import save_module
from lit_propulse.metrics.attributes import AttributeScoreDifference, attribute_score_difference
from lit_propulse.modules.attribute_module import AttributeClassifierModule
from lit_propulse.networks.attribute_classifier import AttributeClassifier, load_attribute_classifier
from tests.helpers import QUIET_TRAINER

pytestmark = pytest.mark.slow  # end-to-end runs: outside `pytest -m "not slow"`

ROOT = Path(__file__).resolve().parents[2]
TOY_YAML = ROOT / "experiments" / "toy" / "attributes.yaml"
SHIPPED = ROOT / "lit_propulse" / "data" / "toy_attributes_64.pt"
LOADER = "lit_propulse.networks.attribute_classifier.load_attribute_classifier"


def tiny(num_attributes: int = 5, image_size: int = 32, **kw) -> AttributeClassifier:
    return AttributeClassifier(num_attributes, image_size, channels=4, max_channels=16, **kw)


def images(n: int, size: int, seed: int = 0) -> Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


# -- network ------------------------------------------------------------------------------------


def test_classifier_shapes_and_gradients():
    net = tiny(input_size=16, blocks=2)
    x = images(3, 32).requires_grad_(True)
    logits = net(x)
    assert logits.shape == (3, 5)
    assert net.features(x).shape == (3, net.num_features) and net.num_features == 8  # widths 4 @16, 8 @8
    s = net.eval().scores(x)
    assert s.shape == (3, 5) and bool(((s > 0) & (s < 1)).all())
    net.train()
    net(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is not None for p in net.parameters())


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"input_size": 24}, "8 \\* 2\\*\\*k"),
        ({"input_size": 64}, "at most image_size"),
        ({"attr_names": ["a", "b"]}, "2 names"),
    ],
)
def test_classifier_refuses_bad_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        tiny(**kw)


def test_classifier_refuses_other_image_sizes():
    with pytest.raises(ValueError, match=r"expects \[B, 3, 32, 32\]"):
        tiny()(images(1, 64))


def test_save_load_round_trip(tmp_path):
    net = tiny(attr_names=list("abcde")).eval()
    path = tmp_path / "clf.pt"
    save_module(net, path)
    back = load_attribute_classifier(str(path))
    x = images(2, 32)
    assert torch.equal(back(x), net(x))
    assert back.attr_names == list("abcde") and not back.training
    assert not any(p.requires_grad for p in back.parameters())


def test_missing_classifier_file_is_named_with_its_command(tmp_path):
    path = str(tmp_path / "nope.pt")
    with pytest.raises(MissingFilesError, match="experiments/toy/attributes.yaml"):
        load_attribute_classifier(path)
    found = missing_files({"metric": {"class_path": LOADER, "init_args": {"path": path}}})
    assert len(found) == 1 and "nope.pt" in found[0] and "experiments/toy/attributes.yaml" in found[0]


# -- training module ----------------------------------------------------------------------------


def test_module_trains_through_the_cli_and_exports(tmp_path):
    argv = [
        "fit",
        "--config",
        str(TOY_YAML),
        "--model.init_args.classifier.init_args.channels",
        "4",
        "--model.init_args.classifier.init_args.max_channels",
        "16",
        "--data.init_args.num_train",
        "32",
        "--data.init_args.num_test",
        "16",
        "--data.init_args.batch_size",
        "8",
        "--data.init_args.val_subset",
        "16",
        "--trainer.max_steps",
        "4",
        "--trainer.val_check_interval",
        "4",
        "--trainer.log_every_n_steps",
        "1",
        *QUIET_TRAINER,
        "--trainer.default_root_dir",
        str(tmp_path),
        "--trainer.logger.init_args.save_dir",
        str(tmp_path),
    ]
    assert main(argv) == 0
    clf = load_attribute_classifier(str(tmp_path / "attributes.pt"))
    assert clf.attr_names == list(TOY_ATTRIBUTES) and clf.image_size == 64
    exported = torch.load(tmp_path / "attributes.pt", weights_only=True)
    assert 0.0 <= exported["metrics"]["val/auroc"] <= 1.0
    with open(tmp_path / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert any(r.get("train/loss") for r in rows)
    val = [r for r in rows if r.get("val/acc")]
    assert val and all(k in val[-1] and val[-1][k] for k in ("val/auroc", "val/acc/Eyeglasses", "val/auroc/Eyeglasses"))


def test_paper_yaml_on_a_tiny_celeba_hq(tmp_path):
    """experiments/attributes.yaml (CelebA-HQ, 40 attributes, augmentation, cosine schedule) shrunk to
    16 px synthetic CelebA-HQ files, with a pos_weight per attribute."""
    from tests.datamodules.test_celeba_ffhq import ATTRS, make_celeba_hq

    root = make_celeba_hq(tmp_path / "celeba_hq")
    argv = [
        "fit",
        "--config",
        str(ROOT / "experiments" / "attributes.yaml"),
        "--model.init_args.classifier.init_args.image_size",
        "16",
        "--model.init_args.classifier.init_args.input_size",
        "8",
        "--model.init_args.classifier.init_args.channels",
        "4",
        "--model.init_args.classifier.init_args.max_channels",
        "16",
        "--model.init_args.augment_shift",
        "1",
        "--model.init_args.pos_weight",
        str([2.0] * 40),
        "--data.init_args.root",
        str(root),
        "--data.init_args.hr_size",
        "16",
        "--data.init_args.lr_size",
        "4",
        "--data.init_args.prepared_dir",
        "null",
        "--data.init_args.num_workers",
        "0",
        "--data.init_args.batch_size",
        "2",
        "--data.init_args.val_subset",
        "2",
        "--trainer.max_steps",
        "2",
        "--trainer.val_check_interval",
        "2",
        "--trainer.devices",
        "1",
        *QUIET_TRAINER,
        "--trainer.default_root_dir",
        str(tmp_path / "run"),
        "--trainer.logger.init_args.save_dir",
        str(tmp_path / "run"),
    ]
    assert main(argv) == 0
    clf = load_attribute_classifier(str(tmp_path / "run" / "attributes.pt"))
    assert clf.attr_names == ATTRS and clf.num_attributes == 40


def test_module_refuses_data_without_attributes():
    module = AttributeClassifierModule(tiny(), channels_last=False)
    no_attrs = types.SimpleNamespace(attr_names=(), hr_size=32)
    module.trainer = types.SimpleNamespace(datamodule=no_attrs)
    with pytest.raises(ValueError, match="no attribute labels"):
        module.setup("fit")
    module.trainer = types.SimpleNamespace(datamodule=types.SimpleNamespace(attr_names=tuple("abc"), hr_size=32))
    with pytest.raises(ValueError, match="3 attributes"):
        module.setup("fit")
    batch = types.SimpleNamespace(hr=images(2, 32), attrs=None)
    with pytest.raises(ValueError, match="no attrs"):
        module.training_step(batch, 0)


def test_module_refuses_wrong_pos_weight():
    with pytest.raises(ValueError, match="pos_weight needs 5"):
        AttributeClassifierModule(tiny(), pos_weight=[1.0, 2.0])


# -- metric -------------------------------------------------------------------------------------


class ChannelMeanScores(nn.Module):
    """Hand-built classifier: attribute c's score is (mean of channel c + 1) / 2, so constant images
    have known scores."""

    num_attributes = 3
    image_size = 16
    attr_names = ["red", "green", "blue"]

    def scores(self, x: Tensor) -> Tensor:
        assert x.shape[-1] == self.image_size
        return (x.mean(dim=(2, 3)) + 1) / 2  # [B, 3]


def test_metric_is_zero_when_sr_equals_gt():
    m = AttributeScoreDifference(tiny().eval())
    x = images(4, 32)
    m.update(x, x.clone())
    out = m.compute()
    assert torch.equal(out["per_attribute"], torch.zeros(5)) and float(out["mean"]) == 0.0
    assert AttributeScoreDifference.higher_is_better is False


def test_metric_matches_hand_computed_values():
    rng = np.random.default_rng(0)
    sr, gt = rng.uniform(-1, 1, (6, 3, 16, 16)), rng.uniform(-1, 1, (6, 3, 16, 16))
    expected = np.abs((sr.mean(axis=(2, 3)) + 1) / 2 - (gt.mean(axis=(2, 3)) + 1) / 2).mean(axis=0)  # [3]
    m = AttributeScoreDifference(ChannelMeanScores())
    m.update(torch.tensor(sr, dtype=torch.float32), torch.tensor(gt, dtype=torch.float32))
    out = m.compute()
    torch.testing.assert_close(out["per_attribute"], torch.tensor(expected, dtype=torch.float32), atol=1e-6, rtol=0)
    torch.testing.assert_close(out["mean"], out["per_attribute"].mean())
    assert m.named(out)["green"] == pytest.approx(expected[1], abs=1e-6)


def test_metric_upsamples_low_resolution_inputs():
    # a 4x4 side output and the 16x16 GT, both constant: bicubic keeps constants, scores are exact
    sr = torch.tensor([0.5, -0.5, 0.0]).view(1, 3, 1, 1).expand(2, 3, 4, 4)
    gt = torch.tensor([-0.5, -0.5, 1.0]).view(1, 3, 1, 1).expand(2, 3, 16, 16)
    m = AttributeScoreDifference(ChannelMeanScores())
    m.update(sr, gt)
    torch.testing.assert_close(m.compute()["per_attribute"], torch.tensor([0.5, 0.0, 0.5]), atol=1e-6, rtol=0)
    d = attribute_score_difference(torch.tensor([[0.9, 0.1]]), torch.tensor([[0.4, 0.3]]))
    torch.testing.assert_close(d, torch.tensor([[0.5, 0.2]]))


def test_metric_accumulates_like_one_big_batch():
    clf = tiny().eval()
    sr, gt = images(10, 32, seed=1), images(10, 32, seed=2)
    split, whole = AttributeScoreDifference(clf), AttributeScoreDifference(clf)
    for i in range(0, 10, 3):
        split.update(sr[i : i + 3], gt[i : i + 3])
    whole.update(sr, gt)
    a, b = split.compute(), whole.compute()
    torch.testing.assert_close(a["per_attribute"], b["per_attribute"], atol=1e-6, rtol=0)
    assert int(split.count) == 10


def test_metric_keeps_the_classifier_frozen_and_out_of_its_state():
    m = AttributeScoreDifference(tiny())
    m.train()
    assert not m.classifier.training and not any(p.requires_grad for p in m.classifier.parameters())
    sd = m.state_dict()
    assert not any(k.startswith("classifier.") for k in sd)
    parent = nn.ModuleDict({"attr": m})
    parent.load_state_dict(parent.state_dict(), strict=True)


# -- the shipped toy classifier -----------------------------------------------------------------


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mann-Whitney AUROC: P(score of a positive > score of a negative), ties counted half."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    return float(((pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum()) / (len(pos) * len(neg)))


def test_shipped_toy_classifier_on_toy_test_faces():
    assert SHIPPED.stat().st_size < 3_000_000
    clf = load_attribute_classifier(str(SHIPPED))
    assert clf.attr_names == list(TOY_ATTRIBUTES) and clf.image_size == 64
    # toy test faces of experiments/toy/attributes.yaml: render indices from num_train = 20000 on
    faces = [render_toy_face(0, 20000 + i, 64) for i in range(300)]
    x = torch.from_numpy(np.stack([f[0] for f in faces])).permute(0, 3, 1, 2).float() / 127.5 - 1
    y = np.array([list(f[1].values()) for f in faces])
    with torch.no_grad():
        s = clf.scores(x).numpy()
    per_auroc = np.array([auroc(s[:, a], y[:, a]) for a in range(y.shape[1])])
    acc = ((s > 0.5) == y).mean(axis=0)
    eyeglasses = TOY_ATTRIBUTES.index("Eyeglasses")
    # measured on these 300 faces: macro AUROC 0.9995, mean accuracy 0.997, Eyeglasses 1.0 / 1.0; the
    # weakest is Bangs (AUROC 0.990, accuracy 0.953: a hat brim hides the fringe of most misses)
    assert per_auroc.mean() > 0.99, dict(zip(TOY_ATTRIBUTES, per_auroc.round(3)))
    assert acc.mean() > 0.98, dict(zip(TOY_ATTRIBUTES, acc.round(3)))
    assert per_auroc[eyeglasses] > 0.99 and acc[eyeglasses] > 0.97
