"""``python -m lit_propulse demo`` (issue 17, item 3): the page's work (:class:`DemoSession`: the LR
convention, Pro-PULSE with side outputs, PULSE, samples, the zip; issue 16: Pro-PULSE's many answers
with their spread map, the refinement to ε), the model defaults (packaged
toy exports, PULSE alone with ``--generator``, one-line errors), and the page itself in a real
headless Chromium driven by Selenium (upload an image, wait for the outputs, download the zip).

The browser test needs ``chromium`` and ``chromedriver`` (Debian packages; CI installs them) and is
skipped, saying so, only when they are absent. Tiny random stage exports from
tests/test_upsample_edit.py."""

from __future__ import annotations

import io
import json
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from benchmarks.demo_screenshot import browser_binaries, open_browser, running_demo, upload_and_run
from lit_propulse.commands import common, demo
from lit_propulse.core.downscale import downscale
from lit_propulse.core.errors import UserFacingError
from lit_propulse.core.images import load_image, to_uint8
from lit_propulse.inference import ProPulseUpsampler
from lit_propulse.networks.stylegan2 import NoiseInjection
from lit_propulse.refine import RefineConfig, RefinedUpsampler
from lit_propulse.samples import SampleConfig, sample_answers, spread_image
from tests.helpers import LR, SIZE, run

TOY_G = Path(demo.__file__).resolve().parent.parent / "data" / common.PACKAGED_GENERATOR


def write_png(path: Path, side: int, seed: int = 0, height: int | None = None) -> Path:
    arr = (np.random.default_rng(seed).random((height or side, side, 3)) * 255).astype(np.uint8)
    Image.fromarray(arr).save(path)
    return path


def models_for(*argv: str):
    return demo.load_models(demo.build_parser().parse_args([str(a) for a in argv]))


@pytest.fixture()
def no_packaged_exports(monkeypatch):
    """As in an install that ships no toy stage exports (only the toy StyleGAN2)."""
    real = common.packaged
    monkeypatch.setattr(common, "packaged", lambda name: None if name in common.PACKAGED_EXPORTS.values() else real(name))


def test_session_lr_pulse_and_samples(stage_exports, tmp_path):  # noqa: F811
    session = demo.DemoSession(models_for("--checkpoint", stage_exports), tmp_path / "out", cache_dir=str(tmp_path / "cache"))
    lr_file = write_png(tmp_path / "face.png", LR)
    res = session.run(lr_file, "auto", use_pulse=True, samples=2, steps=5, seed=3)
    assert res.status.startswith(f"**Taken as** the LR as it is ({LR}x{LR})") and "**PULSE:** 2 search(es) of 5 steps" in res.status
    up = ProPulseUpsampler.from_files(stage_exports / "gds" / "gds.pt", stage_exports / "ewplus" / "ewplus.pt", ew=stage_exports / "ew" / "ew.pt")
    lr = load_image(lr_file)
    with torch.no_grad():
        ref = up(lr[None])
    torch.testing.assert_close(res.lr, lr)
    torch.testing.assert_close(res.hr, ref.image[0])
    assert sorted(res.sides) == [16, 32] and all(res.sides[r].shape == (3, r, r) for r in res.sides)
    torch.testing.assert_close(res.sides[32], ref.side_images[32][0])
    assert res.aligned is None and res.pulse.shape == (3, SIZE, SIZE)
    captions = [c for _, c in res.samples]
    assert [c.split(":")[0] for c in captions[:2]] == ["Pro-PULSE answer 1", "Pro-PULSE answer 2"] and all(c.startswith("PULSE sample") for c in captions[2:])
    assert len(captions) == 4 and res.spread.shape == (3, SIZE, SIZE)
    with zipfile.ZipFile(res.archive) as z:
        names = set(z.namelist())
        assert names == {"lr.png", "hr.png", "pulse.png", "spread.png", "side_16.png", "side_32.png", "report.json", *(f"sample_{k}.png" for k in range(4))}
        hr_png = np.asarray(Image.open(io.BytesIO(z.read("hr.png"))))
        assert "sample_0.png: Pro-PULSE answer 1: L_DS" in z.read("report.json").decode()
    assert np.array_equal(hr_png, to_uint8(res.hr).permute(1, 2, 0).numpy())
    assert demo.to_display(res.lr, demo.display_size(SIZE)).shape == (256, 256, 3)
    # the random generator's noise strengths are 0 (as initialised); with noise that matters, fresh maps change the render
    for module in session.models.upsampler.modules():
        if isinstance(module, NoiseInjection):
            module.weight.fill_(0.5)
    res = session.run(lr_file, "auto", samples=2, seed=3)
    assert not torch.equal(res.samples[0][0], res.hr) and not torch.equal(res.samples[0][0], res.samples[1][0])


def test_session_answers_with_spread_and_refinement(stage_exports, tmp_path):  # noqa: F811
    """The Pro-PULSE answers are samples.sample_answers' (seeded by the page's seed) with their L_DS in
    the captions and their spread map; "refine" shows RefinedUpsampler's answer and its record."""
    cfg = RefineConfig(max_steps=3, eps=1e-9)  # unreachable: every image takes all 3 steps
    session = demo.DemoSession(models_for("--checkpoint", stage_exports), tmp_path / "out", refine_config=cfg)
    lr_file = write_png(tmp_path / "face.png", LR)
    lr = load_image(lr_file)[None]
    up = ProPulseUpsampler.from_files(stage_exports / "gds" / "gds.pt", stage_exports / "ewplus" / "ewplus.pt", ew=stage_exports / "ew" / "ew.pt")
    res = session.run(lr_file, "auto", samples=3, seed=5)
    want = sample_answers(up, lr, SampleConfig(num_samples=3, seed=5), [0])
    assert len(res.samples) == 3
    for k, (img, caption) in enumerate(res.samples):
        torch.testing.assert_close(img, want.images[0, k].clamp(-1, 1))
        assert caption == f"Pro-PULSE answer {k + 1}: L_DS {float(want.l_ds[0, k]):.2e}"
    torch.testing.assert_close(res.spread, spread_image(want.spread)[0])
    assert float(res.spread.max()) == 1.0 and "**Pro-PULSE answers:** 3" in res.status
    assert "**Refined**" not in res.status
    # refined: the HR and side outputs are RefinedUpsampler's, the status says it missed ε after 3 steps
    res = session.run(lr_file, "auto", refine=True)
    with torch.no_grad():
        ref = RefinedUpsampler(up, cfg)(lr)
    torch.testing.assert_close(res.hr, ref.image[0])
    torch.testing.assert_close(res.sides[32], ref.side_images[32][0])
    assert "**Refined** (wplus" in res.status and "not within ε after 3 steps" in res.status and res.spread is None
    with zipfile.ZipFile(res.archive) as z:
        refined = json.loads(z.read("report.json"))["refine"]
    assert refined["steps"] == 3 and refined["success"] is False and refined["l_ds"] <= refined["l_ds_encoder"]
    # a reachable ε: the encoder's answer already meets it, 0 steps
    session.refine_config = RefineConfig(eps=10.0)
    res = session.run(lr_file, "auto", samples=2, refine=True)
    assert "within ε after 0 step(s)" in res.status and "each refined to ε" in res.status
    assert all(c.endswith("(within ε)") for _, c in res.samples)


def test_session_fidelity_dial(stage_exports, tmp_path):  # noqa: F811
    """The dial's ends are E_W (0) and Pro-PULSE as trained (1); between, DialedUpsampler's blend, which
    the refinement then starts from. An E_W-only model has no dial."""
    from lit_propulse.dial import DialedUpsampler

    session = demo.DemoSession(models_for("--checkpoint", stage_exports), tmp_path / "out", refine_config=RefineConfig(max_steps=2, eps=1e-9))
    assert session.can_dial
    lr_file = write_png(tmp_path / "face.png", LR)
    lr = load_image(lr_file)[None]
    up = ProPulseUpsampler.from_files(stage_exports / "gds" / "gds.pt", stage_exports / "ewplus" / "ewplus.pt", ew=stage_exports / "ew" / "ew.pt")
    ew_only = ProPulseUpsampler.from_files(stage_exports / "gds" / "gds.pt", stage_exports / "ew" / "ew.pt")
    with torch.no_grad():
        full, e_w, half = up(lr).image[0], ew_only(lr).image[0], DialedUpsampler(up, alpha=0.5)(lr).image[0]
    torch.testing.assert_close(session.run(lr_file, "auto", dial=1.0).hr, full)
    res = session.run(lr_file, "auto", dial=0.0)
    torch.testing.assert_close(res.hr, e_w)
    res = session.run(lr_file, "auto", dial=0.5)
    torch.testing.assert_close(res.hr, half)
    assert not torch.allclose(half, full) and not torch.allclose(half, e_w)
    assert "blend dial: w+ = 0.5·E_W + 0.5·E_W+" in res.status
    with zipfile.ZipFile(res.archive) as z:
        assert json.loads(z.read("report.json"))["dial"] == 0.5
    res = session.run(lr_file, "auto", dial=0.5, refine=True)  # refined from the dialled code
    with torch.no_grad():
        torch.testing.assert_close(res.hr, RefinedUpsampler(DialedUpsampler(up, alpha=0.5), session.refine_config)(lr).image[0])
    assert session.run(lr_file, "auto", dial=1.5).status.startswith("**Cannot use this dial:** the dial goes from 0 (E_W) to 1")
    plain = demo.DemoSession(models_for("--gds", stage_exports / "gds" / "gds.pt", "--encoder", stage_exports / "ew" / "ew.pt"), tmp_path / "out2")
    assert not plain.can_dial and plain.run(lr_file, "auto", dial=0.5).status.startswith("**Cannot use this dial:** the dial moves between E_W and E_W+")


def test_session_modes_and_refusals(stage_exports, tmp_path):  # noqa: F811
    session = demo.DemoSession(models_for("--checkpoint", stage_exports), tmp_path / "out")
    hr_file = write_png(tmp_path / "crop.png", 48, seed=1)
    res = session.run(hr_file, "hr")
    assert "an HR crop, made 8x8 with DS" in res.status
    torch.testing.assert_close(res.aligned, load_image(hr_file))
    torch.testing.assert_close(res.lr, downscale(load_image(hr_file)[None], LR)[0])
    res = session.run(write_png(tmp_path / "small.png", 16), "auto")  # taken as the LR, but the encoder takes 8x8
    assert res.status.startswith("**Cannot use this image:**") and "the encoder takes 8x8 LRs" in res.status and res.hr is None
    res = session.run(write_png(tmp_path / "noise.png", 160, height=200), "auto")  # a photo without a face
    assert res.status == "**Skipped:** no face found" and res.archive is None
    assert session.run(None).status == "Upload a photo or an LR first."


@pytest.mark.slow  # trains the stage exports when no other test has
def test_model_defaults_and_errors(stage_exports, tmp_path, monkeypatch, no_packaged_exports, capsys):  # noqa: F811
    # nothing given, nothing packaged: one line with the remedies
    with pytest.raises(UserFacingError, match=r"no Pro-PULSE stage exports given.*--checkpoint DIR.*--generator .*toy_stylegan2_64\.pt"):
        models_for()
    assert run("demo") == 2  # the command stops before serving
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: no Pro-PULSE stage exports given")
    assert run("demo", "--generator", TOY_G, "--port", "0") == 2
    assert capsys.readouterr().err.strip() == "error: --port must be in 1..65535, got 0"
    # only a generator: PULSE alone, saying what is missing
    m = models_for("--generator", TOY_G)
    assert m.upsampler is None and m.lr_size == 8 and m.size == 64 and len(m.missing) == 1 and "PULSE only" in m.missing[0]
    assert "**Missing:** Pro-PULSE" in demo.header(m)
    res = demo.DemoSession(m, tmp_path / "out", cache_dir=str(tmp_path / "cache")).run(write_png(tmp_path / "lr.png", 8), "auto", True, 1, 3)
    assert res.hr is None and not res.sides and res.pulse is not None
    # packaged toy exports, when an install ships them, are the defaults
    files = {
        common.PACKAGED_EXPORTS["gds"]: stage_exports / "gds" / "gds.pt",
        common.PACKAGED_EXPORTS["ewplus"]: stage_exports / "ewplus" / "ewplus.pt",
        common.PACKAGED_EXPORTS["ew"]: stage_exports / "ew" / "ew.pt",
    }
    monkeypatch.setattr(common, "packaged", lambda name: str(files[name]) if name in files else None)
    m = models_for()
    assert m.upsampler is not None and m.files["gds"] == str(files["toy_gds_64.pt"]) and m.files["ew"] == str(files["toy_ew_64.pt"])
    assert not m.missing and "packaged toy exports" in demo.header(m)
    with pytest.raises(UserFacingError, match="--lr-size 16: the encoder takes 8x8"):
        models_for("--lr-size", 16)


@pytest.mark.slow
def test_page_in_headless_chromium(stage_exports, tmp_path):  # noqa: F811
    if browser_binaries() is None:
        pytest.skip("chromium and chromedriver are not installed (Debian: apt-get install chromium chromium-driver)")
    from selenium.webdriver.common.by import By

    lr_file = write_png(tmp_path / "lr.png", LR)
    with running_demo(["--checkpoint", stage_exports, "--cache-dir", tmp_path / "cache"], tmp_path / "demo.log") as url:
        driver = open_browser()
        try:
            status = upload_and_run(driver, url, lr_file, timeout=300)
            assert "Taken as the LR as it is (8x8)" in status and "Pro-PULSE: EWPlusEncoder + G_ds" in status
            hr = driver.find_element(By.CSS_SELECTOR, "#hr img")
            assert hr.get_attribute("naturalWidth") == "256"  # the 64x64 HR shown at 256x256
            assert len(driver.find_elements(By.CSS_SELECTOR, "#sides img")) == 2  # side 16, side 32
            href = driver.find_element(By.CSS_SELECTOR, "#download a").get_attribute("href")
            with urllib.request.urlopen(href, timeout=30) as r:
                names = set(zipfile.ZipFile(io.BytesIO(r.read())).namelist())
            assert {"lr.png", "hr.png", "side_16.png", "side_32.png", "report.json"} <= names
            # again with PULSE and two samples (the screenshot script's path)
            status = upload_and_run(driver, url, lr_file, pulse=True, samples=2, steps=10, timeout=300)
            assert "PULSE: 2 search(es) of 10 steps" in status
            assert len(driver.find_elements(By.CSS_SELECTOR, "#gallery img")) >= 4  # 2 Pro-PULSE noise samples + 2 PULSE searches
            assert driver.find_elements(By.CSS_SELECTOR, "#pulse img")
        finally:
            driver.quit()
