"""Untrusted export files (reliability issue, item 1): an export names the class it rebuilds, and only
the network classes in ``EXPORTABLE`` may be built. A weights-only-safe file that names any other
callable -- ``lit_propulse.cli.main`` with an ``argv`` that runs a command writing where the file
chooses, the way it was exploited -- is refused by name before anything is imported or called."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

import lit_propulse.cli
from lit_propulse.cli import main
from lit_propulse.core.errors import UserFacingError
from lit_propulse.core.weights import EXPORTABLE, FORMAT, load_module, record_init_args, save_module
from lit_propulse.networks.encoders import EWEncoder
from lit_propulse.networks.gds import DeeplySupervisedGenerator
from lit_propulse.networks.stylegan2 import Generator

TINY_G = dict(size=64, style_dim=32, n_mlp=1, channels={4: 8, 8: 8, 16: 8, 32: 8, 64: 8})


def payload(path: Path, cls: object, init_args: object) -> Path:
    torch.save({"format": FORMAT, "class": cls, "init_args": init_args, "state_dict": {}}, path)
    return path


@pytest.fixture
def spy(monkeypatch):
    """Replace the command entry point by a recorder: any call means the file ran code."""
    calls = []
    monkeypatch.setattr(lit_propulse.cli, "main", lambda *a, **k: calls.append((a, k)) or 0)
    return calls


@pytest.mark.parametrize(
    "cls",
    [
        "lit_propulse.cli.main",  # the reported exploit
        "lit_propulse.core.weights.save_module",  # any function under the package
        "lit_propulse.networks.stylegan2.Generator",  # a real network class, but not an export's
        "lit_propulse.networks.encoders.EWEncoder.__init__",
        "builtins.eval",
        "os.system",
        "lit_propulse.networks.encoders.EWEncoder ",  # near-miss spelling
        42,
    ],
)
def test_an_export_naming_anything_but_a_registered_network_is_refused(tmp_path, spy, cls):
    out = tmp_path / "written_by_the_file"
    bad = payload(tmp_path / "ew.pt", cls, {"argv": ["pulse", "--output", str(out)]})
    with pytest.raises(UserFacingError) as e:
        load_module(bad, what="E_W encoder")
    msg = str(e.value)
    assert "\n" not in msg and str(bad) in msg and repr(cls) in msg
    assert spy == [] and not out.exists()


def test_the_reported_exploit_through_the_upsample_command(tmp_path, capsys, spy):
    """The exploit as a user meets it: an ``--encoder`` file from someone else. Exit 2, one line naming
    the file and the class, and nothing written where the file asked."""
    torch.manual_seed(0)
    gds = tmp_path / "gds.pt"
    DeeplySupervisedGenerator(Generator(**TINY_G), 8, head_hidden=(8, 8)).save(gds)
    out = tmp_path / "chosen_by_the_file"
    evil = payload(tmp_path / "evil.pt", "lit_propulse.cli.main", {"argv": ["pulse", "--output", str(out)]})
    photos = tmp_path / "in"
    photos.mkdir()
    Image.new("RGB", (8, 8), (120, 90, 70)).save(photos / "lr.png")
    code = main(["upsample", "--gds", str(gds), "--encoder", str(evil), "--input", str(photos), "--output", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "evil.pt" in err[0] and "lit_propulse.cli.main" in err[0]
    assert spy == [] and not out.exists()


def test_malformed_arguments_and_state_are_one_line_errors(tmp_path):
    name = "lit_propulse.networks.encoders.EWEncoder"
    for init_args, state in (([1, 2], {}), ({"no_such_argument": 1}, {}), ({"lr_size": 8}, "not a dict")):
        torch.save({"format": FORMAT, "class": name, "init_args": init_args, "state_dict": state}, tmp_path / "x.pt")
        with pytest.raises(UserFacingError) as e:
            load_module(tmp_path / "x.pt")
        assert "\n" not in str(e.value) and "x.pt" in str(e.value)


def test_registered_classes_round_trip_and_unregistered_ones_cannot_be_saved(tmp_path):
    enc = EWEncoder(8, 32, 10, channels=8, num_groups=1, rcabs_per_group=1, reduction=4)
    save_module(enc, tmp_path / "ew.pt")
    back = load_module(tmp_path / "ew.pt", EWEncoder)
    assert all(torch.equal(a, b) for a, b in zip(enc.state_dict().values(), back.state_dict().values()))
    for stored, where in EXPORTABLE.items():  # every registered name resolves to a network class
        assert stored.rsplit(".", 1)[1] == where.rsplit(":", 1)[1]

    @record_init_args
    class Unlisted(torch.nn.Module):
        def __init__(self, width: int = 2) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(width, width)

    with pytest.raises(ValueError, match="EXPORTABLE"):
        save_module(Unlisted(), tmp_path / "u.pt")
