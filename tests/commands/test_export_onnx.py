"""``python -m lit_propulse export`` (issue 17, item 4): the whole LR -> HR network (E_W+ / E_W ->
G_ds, every side output, w+, noise fixed) as TorchScript and ONNX, each run on the CPU (torch.jit /
onnxruntime) and compared with eager PyTorch: max abs difference <= 1e-4 for the HR, every side
output and w+, at batch sizes other than the traced one. Tiny random stage exports from
tests/test_upsample_edit.py."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from lit_propulse.commands.export import output_names, parity, read_metadata, run_exported
from lit_propulse.inference import ProPulseUpsampler
from lit_propulse.networks.stylegan2 import ModulatedConv2d
from tests.helpers import LR, SIZE, run

pytestmark = pytest.mark.slow  # end-to-end runs: outside `pytest -m "not slow"`

TOL = 1e-4
OUTPUTS = ["hr", "side_16", "side_32", "ws"]


def upsampler_of(stage_exports, encoder: str = "ewplus") -> ProPulseUpsampler:  # noqa: F811
    enc = stage_exports / encoder / f"{encoder}.pt"
    return ProPulseUpsampler.from_files(stage_exports / "gds" / "gds.pt", enc, ew=stage_exports / "ew" / "ew.pt" if encoder == "ewplus" else None)


def random_lr(batch: int, seed: int) -> torch.Tensor:
    return torch.rand(batch, 3, LR, LR, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def check_metadata(meta: dict, encoder: str) -> None:
    assert meta["format"] == "lit_propulse.export/1"
    assert meta["inputs"] == {"lr": ["B", 3, LR, LR]}
    assert meta["output_order"] == OUTPUTS
    assert meta["outputs"]["hr"] == ["B", 3, SIZE, SIZE] and meta["outputs"]["side_16"] == ["B", 3, 16, 16]
    assert meta["outputs"]["ws"] == ["B", 10, 32] and meta["noise"] == "const"
    assert meta["encoder"] == encoder and "[-1, 1]" in meta["range"]


@pytest.mark.parametrize("encoder", ["ewplus", "ew"])
def test_torchscript_export_matches_pytorch(stage_exports, tmp_path, monkeypatch, capsys, encoder):  # noqa: F811
    # the per-sample modulated-conv path everywhere: a trace must not bake the example's batch size into it
    monkeypatch.setattr(ModulatedConv2d, "weight_path_min_elements", 1)
    out = tmp_path / "model.pt"
    flags = ["--checkpoint", stage_exports] if encoder == "ewplus" else ["--gds", stage_exports / "gds" / "gds.pt", "--encoder", stage_exports / "ew" / "ew.pt"]
    assert run("export", "--format", "torchscript", *flags, "--output", out) == 0
    assert "checked against PyTorch" in capsys.readouterr().out
    check_metadata(read_metadata(out, "torchscript"), "EWPlusEncoder" if encoder == "ewplus" else "EWEncoder")
    up = upsampler_of(stage_exports, encoder)
    for batch in (1, 5):
        diffs = parity(up, out, "torchscript", random_lr(batch, batch))
        assert list(diffs) == OUTPUTS
        assert max(diffs.values()) <= TOL, diffs
    outs = run_exported(out, "torchscript", random_lr(2, 0))
    assert [tuple(o.shape) for o in outs] == [(2, 3, SIZE, SIZE), (2, 3, 16, 16), (2, 3, 32, 32), (2, 10, 32)]


def test_torchscript_loads_without_lit_propulse(stage_exports, tmp_path):  # noqa: F811
    out = tmp_path / "model.pt"
    assert run("export", "--checkpoint", stage_exports, "--output", out, "--no-verify") == 0  # format from the suffix
    code = (
        "import sys, warnings, torch; warnings.simplefilter('ignore'); m = torch.jit.load(sys.argv[1]); "
        f"hr, s16, s32, ws = m(torch.zeros(2, 3, {LR}, {LR})); "
        "assert 'lit_propulse' not in sys.modules; print(tuple(hr.shape), tuple(ws.shape))"
    )
    res = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip() == f"(2, 3, {SIZE}, {SIZE}) (2, 10, 32)"


@pytest.mark.slow
def test_onnx_export_runs_in_onnxruntime(stage_exports, tmp_path, capsys):  # noqa: F811
    for mod in ("onnx", "onnxscript", "onnxruntime"):
        pytest.importorskip(mod, reason="the [export] extra (onnx, onnxscript, onnxruntime) is not installed")
    import onnx
    import onnxruntime as ort

    out = tmp_path / "model.onnx"
    assert (
        run(
            "export",
            "--gds",
            stage_exports / "gds" / "gds.pt",
            "--encoder",
            stage_exports / "ewplus" / "ewplus.pt",
            "--ew",
            stage_exports / "ew" / "ew.pt",
            "--output",
            out,
        )
        == 0
    )
    assert "checked against PyTorch" in capsys.readouterr().out
    onnx.checker.check_model(onnx.load(str(out)))
    check_metadata(read_metadata(out, "onnx"), "EWPlusEncoder")
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    assert inp.name == "lr" and inp.shape[1:] == [3, LR, LR] and not isinstance(inp.shape[0], int)  # dynamic batch
    assert [o.name for o in session.get_outputs()] == OUTPUTS == output_names([16, 32])
    assert session.get_outputs()[0].shape[1:] == [3, SIZE, SIZE]
    up = upsampler_of(stage_exports)
    for batch in (1, 4):
        diffs = parity(up, out, "onnx", random_lr(batch, 10 + batch))
        assert max(diffs.values()) <= TOL, diffs
    assert json.loads({p.key: p.value for p in onnx.load(str(out)).metadata_props}["lit_propulse"])["size"] == SIZE


def test_export_errors_are_one_line(stage_exports, tmp_path, capsys):  # noqa: F811
    assert run("export", "--checkpoint", stage_exports, "--output", tmp_path / "model.bin") == 2
    assert "give --format onnx or --format torchscript" in capsys.readouterr().err
    assert run("export", "--format", "torchscript", "--checkpoint", stage_exports, "--output", tmp_path) == 2
    assert "is a folder" in capsys.readouterr().err
    assert run("export", "--format", "torchscript", "--encoder", stage_exports / "ew" / "ew.pt", "--output", tmp_path / "m.pt") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: missing --gds")
