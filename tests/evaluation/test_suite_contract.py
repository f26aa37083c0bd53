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
