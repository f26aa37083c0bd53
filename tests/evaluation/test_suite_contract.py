"""MetricSuite's contract beyond the metric values (lit_propulse/evaluation/suite.py): its defaults, the
types of what ``compute`` returns, and the one-line error for a weights file that exists but cannot be
used (it names the file, what it should be, and the loader's own first line of complaint)."""

from __future__ import annotations

import re

import pytest
import torch

from lit_propulse.core.batch import SRBatch
from lit_propulse.core.downscale import downscale
from lit_propulse.core.errors import WeightsFileError
from lit_propulse.core.outputs import ImageOutput
from lit_propulse.evaluation.suite import MetricSuite


def test_defaults_are_pulse_eps_and_inception_fid():
    """ε = 2e-3 (PULSE's official code) and FID on Inception features (Table I): without the Inception
    weights the FID is skipped with that reason, not computed on other features."""
    suite = MetricSuite(niqe=False)
    assert suite.eps == 2e-3
    assert suite.labels["fid"] == "FID (Inception)"
    assert suite.skipped["fid"].startswith("no Inception weights")


def test_compute_returns_the_image_count_as_an_int_and_the_rest_as_floats():
    g = torch.Generator().manual_seed(0)
    hr = torch.rand(3, 3, 16, 16, generator=g) * 2 - 1
    suite = MetricSuite(fid="none", niqe=False)
    suite.update("m", ImageOutput((hr + 0.1).clamp(-1, 1)), SRBatch(hr=hr, lr=downscale(hr, 4), index=torch.arange(3)))
    r = suite.compute("m")
    assert type(r["count"]) is int and r["count"] == 3
    assert {k for k, v in r.items() if type(v) is not float} == {"count"}


@pytest.mark.parametrize(
    "error, detail",
    [
        (RuntimeError("bad magic number\nsecond line of the loader's complaint"), "bad magic number"),
        (KeyError(), "KeyError"),  # no message: its type names it
        (ValueError("x" * 300), "x" * 200),  # one line of at most 200 characters
    ],
)
def test_an_unusable_weights_file_raises_one_line_naming_it(tmp_path, monkeypatch, error, detail):
    import lit_propulse.core.weights as weights

    def fail(path, *args, **kwargs):
        raise error

    monkeypatch.setattr(weights, "load_module", fail)
    path = tmp_path / "attributes.pt"
    path.write_bytes(b"not a network")
    expected = f"{path}: not usable as an attribute classifier ({detail}); fix the path, or leave it out to skip the metric"
    with pytest.raises(WeightsFileError, match=f"^{re.escape(expected)}$"):
        MetricSuite(fid="none", niqe=False, attribute_classifier=str(path))


#: metric key -> (constructor argument, what the file is, the hint naming the config key and file) as the
#: report's "Skipped metrics" section prints them
SKIP_REASONS = {
    "attr_diff": (
        "attribute_classifier",
        "an attribute classifier",
        "metrics.attribute_classifier: attributes.pt, written by experiments/toy/attributes.yaml or experiments/attributes.yaml",
    ),
    "identity": ("identity_weights", "identity weights", "metrics.identity_weights: ArcFace model_ir_se50.pth or FaceNet's VGGFace2 file"),
    "lpips": ("lpips_weights", "LPIPS backbone weights", "metrics.lpips_weights: torchvision's alexnet-owt-7be5be79.pth"),
    "fid": ("inception_weights", "Inception weights", "metrics.inception_weights: torch-fidelity's weights-inception-2015-12-05-6726825d.pth"),
    "niqe": (
        "niqe_params",
        "a NIQE pristine model",
        "metrics.niqe_params: an .npz from python -m lit_propulse.metrics.niqe --fit, or null for the published one",
    ),
}


def test_skipped_metrics_say_which_setting_and_file_they_need(tmp_path):
    """No file given: "no <what> (<setting>: <file>)"; a path that does not exist: "<path>: file not
    found; it should be <what> (<hint>)". Nothing of a skipped metric is loaded."""
    suite = MetricSuite(niqe=False)
    for key, (_, what, hint) in SKIP_REASONS.items():
        if key != "niqe":
            assert suite.skipped[key] == f"no {what} ({hint})", key
    assert suite.skipped["niqe"] == "switched off (metrics.niqe: false)"
    assert (suite.classifier, suite.identity, suite.lpips_net, suite.fid_features, suite.niqe_model, suite.attr_names) == (None, None, None, None, None, [])
    absent = {arg: str(tmp_path / f"absent_{key}") for key, (arg, _, _) in SKIP_REASONS.items()}
    suite = MetricSuite(**absent)
    for key, (arg, what, hint) in SKIP_REASONS.items():
        assert suite.skipped[key] == f"{absent[arg]}: file not found; it should be {what} ({hint})", key
    assert MetricSuite(fid="none", niqe=False).skipped["fid"] == "switched off (metrics.fid: none)"
    assert (
        MetricSuite(fid="attributes", niqe=False).skipped["fid"]
        == f"FID on attribute-classifier features needs the attribute classifier (no {SKIP_REASONS['attr_diff'][1]} ({SKIP_REASONS['attr_diff'][2]}))"
    )


def test_bad_choices_are_refused_by_value():
    with pytest.raises(ValueError, match=r"fid must be 'inception', 'attributes' or 'none', got 'clip'"):
        MetricSuite(fid="clip")
    for eps in (0.0, -1e-3):
        with pytest.raises(ValueError, match=rf"eps must be > 0, got {eps}"):
            MetricSuite(eps=eps, niqe=False)


class _Classifier(torch.nn.Module):
    """A stand-in attribute classifier with a parameter (to see it frozen)."""

    num_attributes, num_features, image_size = 3, 3, 16

    def __init__(self, names):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))
        if names != "absent":
            self.attr_names = names

    def features(self, x):
        return self.scale * x.mean((2, 3))

    def scores(self, x):
        return (self.features(x) + 1) / 2


def _file(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"stand-in")
    return str(path)


@pytest.mark.parametrize("names, expected", [(["a", "b", "c"], ["a", "b", "c"]), (None, ["attr0", "attr1", "attr2"]), ("absent", ["attr0", "attr1", "attr2"])])
def test_the_attribute_classifier_is_loaded_frozen_and_its_attributes_named(tmp_path, monkeypatch, names, expected):
    import lit_propulse.core.weights as weights

    calls = []
    monkeypatch.setattr(weights, "load_module", lambda path, **kw: calls.append((path, kw)) or _Classifier(names))
    path = _file(tmp_path, "attributes.pt")
    suite = MetricSuite(fid="attributes", niqe=False, attribute_classifier=path)
    assert calls == [(path, {"what": "attribute classifier"})]
    assert suite.attr_names == expected and not suite.classifier.training
    assert not any(p.requires_grad for p in suite.classifier.parameters())
    assert suite.labels["fid"] == "FID (attribute-classifier features)" and "fid" not in suite.skipped
    assert suite.fid_features.name == "attribute-classifier features" and suite.fid_features.net is suite.classifier
    unused = MetricSuite(fid="none", niqe=False, attribute_classifier=path).classifier  # frozen when loaded, not only by its users
    assert not unused.training and not any(p.requires_grad for p in unused.parameters())


def test_identity_and_lpips_networks_are_built_from_their_files_as_configured(tmp_path, monkeypatch):
    import lit_propulse.networks.feature_nets as feature_nets

    calls = []

    def identity(kind, path, **kw):
        calls.append(("identity", kind, path))
        return torch.nn.Linear(3, 3)

    class LPIPS(torch.nn.Module):
        def __init__(self, path, net="alex"):
            super().__init__()
            calls.append(("lpips", net, path))

    monkeypatch.setattr(feature_nets, "build_identity_net", identity)
    monkeypatch.setattr(feature_nets, "LPIPSNetwork", LPIPS)
    ident, alex = _file(tmp_path, "model_ir_se50.pth"), _file(tmp_path, "alexnet.pth")
    suite = MetricSuite(fid="none", niqe=False, identity_weights=ident, lpips_weights=alex)
    assert calls == [("identity", "arcface", ident), ("lpips", "alex", alex)]  # the defaults: ArcFace (the paper's), AlexNet
    assert not suite.identity.training and not any(p.requires_grad for p in suite.identity.parameters())
    calls.clear()
    MetricSuite(fid="none", niqe=False, identity_weights=ident, identity_kind="facenet", lpips_weights=alex, lpips_net="vgg")
    assert calls == [("identity", "facenet", ident), ("lpips", "vgg", alex)]


@pytest.mark.parametrize(
    "arg, what",
    [
        ("identity_weights", "arcface identity weights"),
        ("lpips_weights", "LPIPS backbone weights"),
        ("inception_weights", "the FID Inception weights"),
        ("niqe_params", "a NIQE pristine model (.npz)"),
    ],
)
def test_an_unusable_network_or_model_file_names_what_it_should_be(tmp_path, monkeypatch, arg, what):
    import lit_propulse.evaluation.suite as suite_module
    import lit_propulse.networks.feature_nets as feature_nets
    from lit_propulse.metrics.niqe import NIQEParams

    def fail(*args, **kwargs):
        raise RuntimeError("unexpected key in state dict")

    monkeypatch.setattr(feature_nets, "build_identity_net", fail)
    monkeypatch.setattr(feature_nets, "LPIPSNetwork", fail)
    monkeypatch.setattr(suite_module, "InceptionFeatures", fail)
    monkeypatch.setattr(NIQEParams, "load", staticmethod(fail))
    path = _file(tmp_path, "weights.pth")
    kwargs = {"fid": "inception" if arg == "inception_weights" else "none", "niqe": arg == "niqe_params", arg: path}
    with pytest.raises(WeightsFileError, match=re.escape(f"{path}: not usable as {what} (unexpected key in state dict)")):
        MetricSuite(**kwargs)


def test_a_foreign_attribute_classifier_file_is_refused_naming_what_it_should_be(tmp_path):
    path = tmp_path / "attributes.pt"
    torch.save({"format": "something else"}, path)
    with pytest.raises(WeightsFileError, match=re.escape(f"{path}: not a lit_propulse attribute classifier file")):
        MetricSuite(fid="none", niqe=False, attribute_classifier=str(path))


def test_the_suite_checkpoints_metric_states_only():
    """The device probe is not part of the state (an evaluation checkpoint loads into any suite)."""
    suite = MetricSuite(fid="none", niqe=False)
    suite.add_method("m")
    assert not [k for k in suite.state_dict() if "device_probe" in k]
