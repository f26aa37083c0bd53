"""The evaluation's metric wiring on pairs whose answer is known and non-zero.

``MetricSuite.update(name, out, batch)`` must score the method's output ``out`` against the ground
truth ``batch.hr`` (and its LR ``batch.lr``): a suite that compared the output with itself, or the GT
with itself, gives FID 0, identity 1, attribute difference 0, LPIPS 0 — values a test on SR = GT
cannot tell from the right ones. Every test here feeds an output that differs from the GT by a known
amount and checks the suite's number against a value derived independently in the test:

* FID (Pro-PULSE Table I): the closed form between Gaussians, ||m1 - m2||² + Tr(S1 + S2 - 2 (S1 S2)^½),
  with scipy, on samples built to have exactly the chosen means and covariances; and from the
  features of a real method output. GT is FID's *real* set, SR its *fake* one (the value is
  symmetric, the states are not: they are checked).
* identity cosine (Sec. IV-D): embeddings rotated by known angles -> mean of their cosines.
* attribute-score difference (Sec. IV-E, Fig. 8): a known score change per attribute, and each side
  output scored against DS(GT) at its resolution.
* LPIPS: the reference ``lpips`` package on a swapped pair (the GT batch rolled by one image).
* L_DS / success rate, PSNR, SSIM, NIQE: a bicubic method output, each metric against its direct
  computation on the output, and away from the value the GT would get.

Stand-in networks (a fixed projection of the pixels: the mean colour) replace the attribute classifier
and the identity network where a known answer needs known features; they are handed to the suite
through its own loaders (monkeypatched), so the suite's construction and wiring are the real ones.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import Tensor, nn

from lit_propulse.core.batch import SRBatch
from lit_propulse.core.downscale import downscale
from lit_propulse.core.outputs import ImageOutput
from lit_propulse.evaluation.methods import BicubicMethod
from lit_propulse.evaluation.suite import MetricSuite

ROOT = Path(__file__).resolve().parents[2]
TOY_NIQE = str(ROOT / "lit_propulse" / "data" / "niqe_toy_pristine.npz")


pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------------------------
# Stand-in networks with known outputs


class MeanColourClassifier(nn.Module):
    """A stand-in attribute classifier: ``features`` = the mean colour [B, 3] (a fixed projection of the
    pixels, the FID features of ``fid="attributes"``), with ``edges`` also 10 x the mean absolute horizontal
    and vertical pixel difference [B, 2] (so blur moves the features); ``scores`` = (mean colour + 1) / 2,
    one attribute per channel, so a colour change of δ changes that attribute's score by δ / 2."""

    num_attributes = 3
    attr_names = ["red", "green", "blue"]

    def __init__(self, image_size: int, edges: bool = False) -> None:
        super().__init__()
        self.image_size = image_size
        self.edges = edges
        self.num_features = 5 if edges else 3

    def features(self, x: Tensor) -> Tensor:
        return mean_colour_features(x, self.edges)

    def scores(self, x: Tensor) -> Tensor:
        return (x.float().mean((2, 3)) + 1) / 2  # [B, 3] in [0, 1]

    def forward(self, x: Tensor) -> Tensor:
        return self.scores(x)


def mean_colour_features(x: Tensor, edges: bool = False) -> Tensor:
    """[B, 3, H, W] -> mean colour [B, 3] (+ 10 x mean |dx|, mean |dy| [B, 2] with ``edges``)."""
    f = [x.float().mean((2, 3))]
    if edges:
        f += [10 * x.float().diff(dim=d).abs().mean((1, 2, 3))[:, None] for d in (3, 2)]
    return torch.cat(f, 1)


class MeanColourEmbedding(nn.Module):
    """A stand-in identity network: the mean colour [B, 3] as the embedding."""

    def forward(self, x: Tensor) -> Tensor:
        return x.float().mean((2, 3))


@pytest.fixture
def stand_ins(tmp_path, monkeypatch):
    """``make(**suite_kwargs)``: a MetricSuite whose attribute classifier / identity network are the
    stand-ins above (their "files" exist; the suite's loaders return the stand-ins)."""
    import lit_propulse.core.weights as weights
    import lit_propulse.networks.feature_nets as feature_nets

    def make(image_size: int, edges: bool = False, **kwargs) -> MetricSuite:
        monkeypatch.setattr(weights, "load_module", lambda path, *a, **k: MeanColourClassifier(image_size, edges))
        monkeypatch.setattr(feature_nets, "build_identity_net", lambda kind, path, **k: MeanColourEmbedding())
        for name in ("classifier.pt", "identity.pth"):
            (tmp_path / name).write_bytes(b"stand-in")
        kwargs = {
            "fid": "attributes",
            "attribute_classifier": str(tmp_path / "classifier.pt"),
            "identity_weights": str(tmp_path / "identity.pth"),
            "niqe": False,
            **kwargs,
        }
        return MetricSuite(**kwargs)

    return make


def flat_images(colours: Tensor, size: int) -> Tensor:
    """[B, 3] colours in [-1, 1] -> constant images [B, 3, size, size]."""
    assert colours.abs().max() <= 1
    return colours.float()[:, :, None, None].expand(-1, -1, size, size).contiguous()


def batch_of(hr: Tensor, lr_size: int) -> SRBatch:
    return SRBatch(hr=hr, lr=downscale(hr, lr_size), index=torch.arange(hr.shape[0]), name=[f"{i}.png" for i in range(hr.shape[0])])


def frechet_distance(m1: np.ndarray, s1: np.ndarray, m2: np.ndarray, s2: np.ndarray) -> float:
    """||m1 - m2||² + Tr(S1 + S2 - 2 (S1 S2)^½), with scipy's matrix square root."""
    root = scipy.linalg.sqrtm(s1 @ s2)
    return float(np.sum((m1 - m2) ** 2) + np.trace(s1 + s2 - 2 * np.real(root)))


def fid_of_features(real: Tensor, fake: Tensor) -> float:
    """The closed form on the sample means and (unbiased) covariances of two feature sets [N, D]."""
    r, f = real.double().numpy(), fake.double().numpy()
    return frechet_distance(r.mean(0), np.cov(r, rowvar=False), f.mean(0), np.cov(f, rowvar=False))


def samples_with_moments(mean: np.ndarray, cov: np.ndarray, n: int, seed: int) -> Tensor:
    """n samples whose sample mean and unbiased sample covariance are exactly ``mean`` and ``cov``."""
    z = np.random.default_rng(seed).standard_normal((n, len(mean)))
    z -= z.mean(0)
    z = z @ np.linalg.inv(np.linalg.cholesky(np.cov(z, rowvar=False))).T  # sample covariance I
    return torch.from_numpy(mean + z @ np.linalg.cholesky(cov).T)


# ----------------------------------------------------------------------------------------------
# FID


M_REAL = np.array([0.10, -0.20, 0.05])
S_REAL = np.array([[0.020, 0.010, 0.000], [0.010, 0.030, 0.005], [0.000, 0.005, 0.010]])
M_FAKE = M_REAL + np.array([0.15, 0.10, -0.10])
S_FAKE = np.array([[0.010, -0.004, 0.002], [-0.004, 0.015, 0.000], [0.002, 0.000, 0.025]])


def test_fid_is_the_closed_form_between_gaussians_with_known_moments(stand_ins):
    """GT colours ~ (M_REAL, S_REAL), SR colours ~ (M_FAKE, S_FAKE) exactly (sample moments): the
    suite's FID is the Fréchet distance of those two Gaussians, far from 0 (the output against itself)."""
    expected = frechet_distance(M_REAL, S_REAL, M_FAKE, S_FAKE)
    assert expected > 0.05
    gt = flat_images(samples_with_moments(M_REAL, S_REAL, 48, seed=0), 16)
    sr = flat_images(samples_with_moments(M_FAKE, S_FAKE, 48, seed=1), 16)
    suite = stand_ins(16)
    assert "fid" not in suite.skipped
    suite.add_method("m", keys=["fid"])
    for i in range(0, 48, 16):  # three batches: the sums accumulate
        suite.update("m", ImageOutput(sr[i : i + 16]), batch_of(gt[i : i + 16], 4))
    assert suite.compute("m")["fid"] == pytest.approx(expected, rel=1e-4)


def test_fid_feeds_the_ground_truth_as_real_and_the_output_as_fake(stand_ins):
    """The value is symmetric in (real, fake); the metric's states are not: the real sums hold the
    GT's features, the fake sums the method output's."""
    gt = flat_images(samples_with_moments(M_REAL, S_REAL, 16, seed=2), 16)
    sr = flat_images(samples_with_moments(M_FAKE, S_FAKE, 16, seed=3), 16)
    suite = stand_ins(16)
    suite.add_method("m", keys=["fid"])
    suite.update("m", ImageOutput(sr), batch_of(gt, 4))
    fid = suite.add_method("m")["fid"]
    torch.testing.assert_close(fid.real_features_sum, gt.double().mean((2, 3)).sum(0))
    torch.testing.assert_close(fid.fake_features_sum, sr.double().mean((2, 3)).sum(0))
    assert int(fid.real_features_num_samples) == int(fid.fake_features_num_samples) == 16


# ----------------------------------------------------------------------------------------------
# identity, attribute difference, LPIPS


def test_identity_cosine_of_embeddings_rotated_by_known_angles(stand_ins):
    """SR embeddings = the GT's rotated by θ_i in a plane that contains them: identity = mean cos θ_i."""
    angles = torch.tensor([0.3, 0.9, 1.5, 2.4], dtype=torch.float64)
    radius = torch.tensor([0.8, 0.5, 0.9, 0.6], dtype=torch.float64)
    phase = torch.tensor([0.1, 1.0, 2.0, -2.5], dtype=torch.float64)
    plane = lambda a: torch.stack([radius * torch.cos(a), radius * torch.sin(a), torch.zeros_like(a)], 1)  # noqa: E731
    gt, sr = flat_images(plane(phase), 16), flat_images(plane(phase + angles), 16)
    suite = stand_ins(16)
    suite.add_method("m", keys=["identity"])
    suite.update("m", ImageOutput(sr), batch_of(gt, 4))
    expected = float(torch.cos(angles).mean())
    assert abs(expected - 1) > 0.5
    assert suite.compute("m")["identity"] == pytest.approx(expected, abs=1e-5)


def test_attribute_difference_of_a_known_score_change_and_per_side_against_ds_gt(stand_ins):
    """Colour changes δ -> score changes |δ| / 2 per attribute (Fig. 8b); each side output is scored
    against DS(GT) at its resolution (Fig. 8a), not against the final image or itself."""
    g = torch.tensor([[0.2, -0.4, 0.6], [-0.5, 0.1, 0.0], [0.3, 0.3, -0.7]])
    delta = torch.tensor([[0.4, 0.2, -0.2], [0.2, -0.6, 0.1], [-0.2, 0.0, 0.3]])
    side_delta = {4: torch.tensor([0.5, -0.3, 0.2]), 8: torch.tensor([-0.1, 0.4, -0.2])}
    gt, sr = flat_images(g, 16), flat_images(g + delta, 16)
    sides = {r: flat_images(g + d, r) for r, d in side_delta.items()}
    suite = stand_ins(16)
    assert suite.attr_names == ["red", "green", "blue"]
    suite.add_method("m", keys=["attr_diff"])
    suite.update("m", ImageOutput(sr, sides), batch_of(gt, 4))
    r = suite.compute("m")
    per_attribute = (delta.abs() / 2).mean(0)  # [3]
    assert r["attr_diff"] == pytest.approx(float(per_attribute.mean()), abs=1e-5)
    assert r["attr_diff_per_attribute"] == pytest.approx(dict(zip(["red", "green", "blue"], per_attribute.tolist())), abs=1e-5)
    assert r["attr_diff_side"] == pytest.approx({s: float(d.abs().mean() / 2) for s, d in side_delta.items()}, abs=1e-5)


def test_attribute_difference_per_side_can_be_switched_off(stand_ins):
    g = torch.tensor([[0.2, -0.4, 0.6], [-0.5, 0.1, 0.0]])
    suite = stand_ins(16, side_resolutions=False)
    suite.add_method("m", keys=["attr_diff"])
    suite.update("m", ImageOutput(flat_images(g + 0.2, 16), {8: flat_images(g, 8)}), batch_of(flat_images(g, 16), 4))
    r = suite.compute("m")
    assert r["attr_diff"] == pytest.approx(0.1, abs=1e-5) and "attr_diff_side" not in r


def test_lpips_of_a_swapped_pair_matches_the_lpips_package(tmp_path):
    """SR = the GT batch rolled by one image (every pair two different images): the suite's LPIPS is
    the mean of the reference package's per-pair distances with the same backbone, not 0."""
    lpips = pytest.importorskip("lpips")

    torch.manual_seed(0)
    ref = lpips.LPIPS(net="alex", pretrained=True, pnet_rand=True, verbose=False).eval()  # random backbone
    backbone = {}  # the reference's backbone as a torchvision AlexNet ``features`` state dict
    for sl in (ref.net.slice1, ref.net.slice2, ref.net.slice3, ref.net.slice4, ref.net.slice5):
        for name, mod in sl.named_children():
            backbone.update({f"features.{name}.{k}": v.clone() for k, v in mod.state_dict().items()})
    torch.save(backbone, tmp_path / "alexnet.pth")
    g = torch.Generator().manual_seed(1)
    gt = (torch.rand(3, 3, 64, 64, generator=g) * 2 - 1).clamp(-1, 1)
    sr = gt.roll(1, dims=0)
    suite = MetricSuite(fid="none", niqe=False, lpips_weights=str(tmp_path / "alexnet.pth"))
    suite.add_method("m", keys=["lpips"])
    suite.update("m", ImageOutput(sr), batch_of(gt, 16))
    with torch.no_grad():
        expected = float(ref(sr, gt).mean())
    assert expected > 1e-3
    assert suite.compute("m")["lpips"] == pytest.approx(expected, rel=1e-4, abs=1e-6)


# ----------------------------------------------------------------------------------------------
# A method output through the whole suite


@pytest.fixture(scope="module")
def toy_batch() -> SRBatch:
    from datamodules.toy_faces import ToyFacesDataset

    ds = ToyFacesDataset("test", hr_size=64, lr_size=16, num_train=20000, num_test=12)
    hr = torch.stack([ds[i]["hr"] for i in range(12)])
    return batch_of(hr, 16)


def test_a_method_output_is_scored_against_the_ground_truth_by_every_metric(stand_ins, toy_batch):
    """A bicubic method's output (SR != GT) through every metric the suite builds here: each value
    equals its direct computation on (SR, GT) or (SR, LR), and differs from the value the GT itself
    gets, so no metric compares the output with itself, the GT with itself, or the GT with the LR."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    from lit_propulse.losses.pulse import DownscaleLoss
    from lit_propulse.metrics.niqe import NIQE

    batch = toy_batch
    sr = BicubicMethod().upsample(batch).image
    gt, lr = batch.hr, batch.lr
    l_ds = DownscaleLoss()(sr, lr).double()  # [B]: DS(SR) against the LR
    eps = float(l_ds.sort().values[5:7].mean())  # half the images succeed
    suite = stand_ins(64, edges=True, niqe=True, niqe_params=TOY_NIQE, eps=eps)
    assert set(suite.available()) == set(suite.keys) - {"lpips"}
    for name, image in (("method", sr), ("gt", gt)):
        suite.add_method(name)
        suite.update(name, ImageOutput(image), batch)
    r, perfect = suite.compute("method"), suite.compute("gt")

    assert r["count"] == perfect["count"] == 12
    assert r["l_ds"] == pytest.approx(float(l_ds.mean()), rel=1e-5) and r["l_ds"] > 1e-5 and perfect["l_ds"] < 1e-10
    assert r["success_rate"] == 0.5 and perfect["success_rate"] == 1.0

    unit_sr, unit_gt = (sr.double() + 1) / 2, (gt.double() + 1) / 2
    psnr = (10 * torch.log10(1 / (unit_sr.clamp(0, 1) - unit_gt).square().mean((1, 2, 3)))).mean()
    assert r["psnr"] == pytest.approx(float(psnr), abs=1e-3) and r["psnr"] < 40
    assert math.isinf(perfect["psnr"]) or perfect["psnr"] > 60
    ssim = structural_similarity_index_measure(unit_sr.float().clamp(0, 1), unit_gt.float(), data_range=1.0)
    assert r["ssim"] == pytest.approx(float(ssim), abs=1e-5) and r["ssim"] < 0.99 and perfect["ssim"] == pytest.approx(1.0, abs=1e-6)

    assert r["fid"] == pytest.approx(fid_of_features(mean_colour_features(gt, True), mean_colour_features(sr, True)), rel=1e-4)
    assert r["fid"] > 1e-3 and abs(perfect["fid"]) < 1e-6
    f_sr, f_gt = sr.double().mean((2, 3)), gt.double().mean((2, 3))
    cos = torch.nn.functional.cosine_similarity(f_sr, f_gt, dim=1).mean()
    assert r["identity"] == pytest.approx(float(cos), abs=1e-6) and perfect["identity"] == pytest.approx(1.0, abs=1e-6)
    attr = ((f_sr - f_gt).abs() / 2).mean()
    assert r["attr_diff"] == pytest.approx(float(attr), abs=1e-6) and r["attr_diff"] > 1e-6 and perfect["attr_diff"] == 0.0

    niqe_sr, niqe_gt = NIQE(params=TOY_NIQE), NIQE(params=TOY_NIQE)
    niqe_sr.update(sr)
    niqe_gt.update(gt)
    assert r["niqe"] == pytest.approx(float(niqe_sr.compute()), rel=1e-6)
    assert perfect["niqe"] == pytest.approx(float(niqe_gt.compute()), rel=1e-6)
    assert abs(r["niqe"] - perfect["niqe"]) > 0.1


def test_methods_are_scored_apart_and_reset_alone(stand_ins):
    """Two methods' collections never mix: each holds its own output's score; resetting one leaves the other."""
    g = torch.tensor([[0.2, -0.4, 0.6], [-0.5, 0.1, 0.0]])
    batch = batch_of(flat_images(g, 16), 4)
    suite = stand_ins(16)
    for name, shift in (("a", 0.2), ("b", -0.4)):
        suite.add_method(name, keys=["attr_diff"])
        suite.update(name, ImageOutput(flat_images(g + shift, 16)), batch)
    assert suite.compute("a")["attr_diff"] == pytest.approx(0.1, abs=1e-6)
    assert suite.compute("b")["attr_diff"] == pytest.approx(0.2, abs=1e-6)
    suite.reset("a")
    assert math.isnan(suite.compute("a")["attr_diff"]) and suite.compute("b")["attr_diff"] == pytest.approx(0.2, abs=1e-6)
    suite.reset()
    assert math.isnan(suite.compute("b")["attr_diff"])
