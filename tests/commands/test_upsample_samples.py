"""``upsample --samples`` / ``--dial`` (issue 16, items 3 and 4): N answers per input, each written with
its L_DS in report.json, and the spread map; the dial's answer and its end points (E_W, E_W+); the
flags' errors. Tiny random stage exports (the stage_exports fixture of tests/conftest.py)."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lit_propulse.core.images import load_image, to_uint8
from lit_propulse.inference import ProPulseUpsampler
from lit_propulse.refine import RefineConfig
from lit_propulse.samples import SampleConfig, sample_answers, spread_image
from tests.helpers import LR, SIZE, report, run

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow]  # end-to-end runs: outside `pytest -m "not slow"`


@pytest.fixture(scope="module")
def lrs(tmp_path_factory) -> Path:
    """Three LRs (taken as they are: no face detection)."""
    d = tmp_path_factory.mktemp("lrs")
    for i in range(3):
        Image.fromarray((np.random.default_rng(i).random((LR, LR, 3)) * 255).astype(np.uint8)).save(d / f"lr{i}.png")
    return d


def upsampler(exports: Path, encoder: str = "ewplus") -> ProPulseUpsampler:
    return ProPulseUpsampler.from_files(
        exports / "gds" / "gds.pt", exports / encoder / f"{encoder}.pt", ew=exports / "ew" / "ew.pt" if encoder == "ewplus" else None
    )


def png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB")).astype(np.int16)


def as_png(img: torch.Tensor) -> np.ndarray:
    return to_uint8(img).permute(1, 2, 0).numpy().astype(np.int16)


def test_samples_are_written_with_their_l_ds_and_spread(stage_exports, lrs, tmp_path):
    out = tmp_path / "out"
    assert run("upsample", "--checkpoint", stage_exports, "--input", lrs, "--output", out, "--samples", 3, "--samples-seed", 4, "--batch-size", 2) == 0
    rep = report(out)
    settings = rep["settings"]["samples"]
    assert settings["num_samples"] == 3 and settings["seed"] == 4 and settings["refined"] is None and rep["settings"]["dial"] is None
    assert f"noise maps above {LR}x{LR}, w+ rows of the layers above {4 * LR}x{4 * LR}" in settings["resampled"]
    up = upsampler(stage_exports)
    plain = tmp_path / "plain"
    assert run("upsample", "--checkpoint", stage_exports, "--input", lrs, "--output", plain, "--batch-size", 2) == 0  # same batches: bit-equal
    for row in rep["inputs"]:
        (o,) = row["outputs"]
        name = o["name"]
        assert np.array_equal(png(out / name / "hr.png"), png(plain / name / "hr.png"))  # the answer itself is unchanged
        # the answers are sample_answers' for this LR, seeded by the input's name (not its batch)
        lr = load_image(out / name / "lr.png")[None]
        with torch.no_grad():
            want = sample_answers(up, lr, SampleConfig(num_samples=3, seed=4), [zlib.crc32(name.encode())])
        entry = o["samples"]
        assert [a["file"] for a in entry["answers"]] == [f"{name}/sample_{k}.png" for k in range(3)]
        for k, a in enumerate(entry["answers"]):
            assert a["l_ds"] == pytest.approx(float(want.l_ds[0, k]), rel=1e-4, abs=1e-7)
            assert np.abs(png(out / a["file"]) - as_png(want.images[0, k])).max() <= 1
        assert not np.array_equal(png(out / name / "sample_0.png"), png(out / name / "sample_1.png"))
        assert entry["spread"]["file"] == f"{name}/spread.png"
        assert entry["spread"]["max"] == pytest.approx(float(want.spread.max()), rel=1e-4) and entry["spread"]["mean"] > 0
        assert np.abs(png(out / name / "spread.png") - as_png(spread_image(want.spread)[0])).max() <= 1
        assert Image.open(out / entry["panel"]).size[0] > 5 * SIZE  # LR | 3 answers | spread


def test_samples_with_refine_are_each_refined(stage_exports, lrs, tmp_path):
    out = tmp_path / "out"
    flags = ["--refine", "--refine-steps", 2, "--refine-eps", 1e-9]  # unreachable: every answer takes both steps
    assert run("upsample", "--checkpoint", stage_exports, "--input", lrs, "--output", out, "--samples", 2, *flags) == 0
    rep = report(out)
    assert "stop per image at L_DS <= ε = 1e-09, at most 2 steps" in rep["settings"]["samples"]["refined"]
    assert rep["settings"]["refine"]["images"] == 3  # the answer itself refined too
    up = upsampler(stage_exports)
    lr = load_image(out / "lr0" / "lr.png")[None]
    key = [zlib.crc32(b"lr0")]
    want = sample_answers(up, lr, SampleConfig(num_samples=2), key, RefineConfig(max_steps=2, eps=1e-9))
    unrefined = sample_answers(up, lr, SampleConfig(num_samples=2), key)
    got = [a["l_ds"] for a in rep["inputs"][0]["outputs"][0]["samples"]["answers"]]
    assert got == pytest.approx(want.l_ds[0].tolist(), rel=1e-4, abs=1e-7)
    assert all(g < u for g, u in zip(got, unrefined.l_ds[0].tolist()))


def test_dial_answers_and_end_points(stage_exports, lrs, tmp_path):
    def hr(*flags) -> dict[str, np.ndarray]:
        out = tmp_path / "_".join(map(str, flags or ["plain"]))
        assert run("upsample", "--checkpoint", stage_exports, "--input", lrs, "--output", out, *flags) == 0
        return {f"lr{i}": png(out / f"lr{i}" / "hr.png") for i in range(3)}, report(out)["settings"]["dial"]

    plain, dial = hr()
    assert dial is None
    ew_only = tmp_path / "ew_only"
    assert run("upsample", "--gds", stage_exports / "gds" / "gds.pt", "--encoder", stage_exports / "ew" / "ew.pt", "--input", lrs, "--output", ew_only) == 0
    one, dial = hr("--dial", 1)
    assert "blend dial" in dial and all(np.array_equal(one[k], plain[k]) for k in plain)  # alpha 1 = E_W+
    zero, _ = hr("--dial", 0)
    assert all(np.array_equal(zero[k], png(ew_only / k / "hr.png")) for k in plain)  # alpha 0 = E_W
    scales0, dial = hr("--dial-scales", 0)
    assert "scale dial: position 0 of 3" in dial and all(np.array_equal(scales0[k], zero[k]) for k in plain)
    half, _ = hr("--dial", 0.5)
    up = upsampler(stage_exports)
    with torch.no_grad():
        lr = load_image(tmp_path / "plain" / "lr0" / "lr.png")[None]
        ws = torch.lerp(upsampler(stage_exports, "ew").encode(lr), up.encode(lr), 0.5)
        want = up.render(ws).image[0]
    assert np.abs(half["lr0"] - as_png(want)).max() <= 1
    assert not np.array_equal(half["lr0"], plain["lr0"]) and not np.array_equal(half["lr0"], zero["lr0"])


def test_samples_and_dial_flag_errors(stage_exports, lrs, tmp_path, capsys):
    gds, ew = stage_exports / "gds" / "gds.pt", stage_exports / "ew" / "ew.pt"
    cases = [
        (["--checkpoint", stage_exports, "--samples", "-1"], "--samples must be >= 0"),
        (["--checkpoint", stage_exports, "--samples", "2", "--samples-strength", "2"], "--samples: strength must be in [0, 1]"),
        (["--checkpoint", stage_exports, "--samples", "2", "--samples-rows-above", "12"], "--samples: rows_above must be None or a power of two"),
        (["--checkpoint", stage_exports, "--dial", "1.5"], "--dial: alpha must be in [0, 1]"),
        (["--checkpoint", stage_exports, "--dial-scales", "4"], "--dial-scales: dial position must be in [0, 3]"),
        (["--gds", gds, "--encoder", ew, "--dial", "0.5"], "--dial: the dial moves between E_W and E_W+"),
    ]
    for extra, message in cases:
        assert run("upsample", "--input", lrs, "--output", tmp_path / "x", *extra) == 2, extra
        err = capsys.readouterr().err
        assert message in err and err.startswith("error: ") and "Traceback" not in err, (extra, err)
    with pytest.raises(SystemExit) as info:  # one dial at a time (argparse)
        run("upsample", "--checkpoint", stage_exports, "--input", lrs, "--output", tmp_path / "y", "--dial", "0.5", "--dial-scales", "1")
    assert info.value.code == 2 and "not allowed with argument" in capsys.readouterr().err
