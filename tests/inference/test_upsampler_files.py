"""``ProPulseUpsampler``, the inference network (lit_propulse/inference.py): what it accepts, that it stays
frozen in eval mode, its noise setting, and ``from_files``: the stage exports (gds.pt, ew.pt,
ewplus.pt) put together, with every wrong or missing file refused by a message naming it.

Networks are the tiny branded ones of :mod:`tests.inference.test_eq10_rows` (E_W's rows read -7, the
E_W+ branch of scale j reads 1000 + 100 j), so a composed w+ says where each row came from.
"""

from __future__ import annotations

import re

import pytest
import torch

from lit_propulse.core.errors import UserFacingError, WeightsFileError
from lit_propulse.core.weights import save_module
from lit_propulse.inference import ProPulseUpsampler
from lit_propulse.networks.attribute_classifier import AttributeClassifier
from tests.inference.test_eq10_rows import EW_VALUE, SCALES_64, expected_rows, make_encoders, make_gds, row_values

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """gds.pt, ew.pt, ewplus.pt (saved at the progressive scale 32 < 64) and ewplus_noscale.pt (no
    scale recorded) for LR 8 -> 64, plus the networks and an LR batch."""
    d = tmp_path_factory.mktemp("exports")
    gds = make_gds(64, 8, ch=4)
    with torch.no_grad():  # noise strengths start at 0 in StyleGAN2: make the noise visible
        for name, p in gds.named_parameters():
            if name.endswith("noise.weight"):
                p.fill_(0.5)
    ew, ewp = make_encoders(8, gds.num_ws, SCALES_64)
    gds.save(d / "gds.pt")
    save_module(ew, str(d / "ew.pt"))
    save_module(ewp, str(d / "ewplus.pt"), extra={"active_scale": 32})
    save_module(ewp, str(d / "ewplus_noscale.pt"))
    lr = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    return d, gds, ew, ewp, lr


def test_ew_only_export_is_eq4_at_the_output_size(files):
    d, gds, ew, _, lr = files
    up = ProPulseUpsampler.from_files(d / "gds.pt", d / "ew.pt")
    assert up.ew_encoder is None and up.scale == 64 and up.noise == "const"
    with torch.no_grad():
        assert row_values(up.encode(lr)) == [EW_VALUE] * gds.num_ws
        torch.testing.assert_close(up(lr).image, ProPulseUpsampler(gds, ew)(lr).image)


def test_ewplus_export_uses_its_saved_scale_else_the_output_size(files):
    d, *_, lr = files
    up = ProPulseUpsampler.from_files(d / "gds.pt", d / "ewplus.pt", ew=d / "ew.pt", noise="random")
    assert up.scale == 32 and up.noise == "random" and up.guidance == "ew"
    with torch.no_grad():
        assert row_values(up.encode(lr)) == expected_rows(64, SCALES_64, 32, EW_VALUE)
    assert ProPulseUpsampler.from_files(d / "gds.pt", d / "ewplus_noscale.pt", ew=d / "ew.pt").scale == 64


def test_ewplus_below_the_output_size_needs_ew_unless_latent_avg(files):
    d, *_ = files
    with pytest.raises(ValueError, match="^" + re.escape("an E_W+ upsampler at scale 32 < 64 with guidance='ew' needs ew_encoder (the trained E_W)") + "$"):
        ProPulseUpsampler.from_files(d / "gds.pt", d / "ewplus.pt")
    up = ProPulseUpsampler.from_files(d / "gds.pt", d / "ewplus.pt", guidance="latent_avg")
    assert up.ew_encoder is None and up.scale == 32


@pytest.mark.parametrize("which", ["gds", "encoder", "ew"])
def test_a_missing_export_is_named_with_what_it_should_be(files, tmp_path, which):
    d, *_ = files
    paths = {"gds": d / "gds.pt", "encoder": d / "ewplus.pt", "ew": d / "ew.pt"}
    paths[which] = tmp_path / f"absent_{which}.pt"
    what = {"gds": "G_ds export (gds.pt)", "encoder": "encoder export (ew.pt / ewplus.pt)", "ew": "E_W export (ew.pt)"}[which]
    with pytest.raises(UserFacingError, match=re.escape(f"{paths[which]}: {what} not found; the pipeline / fit of that stage writes it")):
        ProPulseUpsampler.from_files(paths["gds"], paths["encoder"], ew=paths["ew"])


def test_files_of_the_wrong_kind_are_refused_by_name(files, tmp_path):
    d, *_ = files
    clf = tmp_path / "attributes.pt"
    save_module(AttributeClassifier(3, 64, channels=2, input_size=8), str(clf))
    with pytest.raises(UserFacingError, match=re.escape(f"{clf}: holds a AttributeClassifier, expected an E_W or E_W+ encoder")):
        ProPulseUpsampler.from_files(d / "gds.pt", clf)
    with pytest.raises(WeightsFileError, match=re.escape(f"{d / 'ewplus.pt'}: holds a EWPlusEncoder, expected a EWEncoder")):
        ProPulseUpsampler.from_files(d / "gds.pt", d / "ewplus.pt", ew=d / "ewplus.pt")
    foreign = tmp_path / "foreign.pt"
    torch.save({"format": "something else"}, foreign)
    with pytest.raises(WeightsFileError, match=re.escape(f"{foreign}: not a lit_propulse encoder file")):
        ProPulseUpsampler.from_files(d / "gds.pt", foreign)
    with pytest.raises(WeightsFileError, match=re.escape(f"{foreign}: not a lit_propulse E_W encoder file")):
        ProPulseUpsampler.from_files(d / "gds.pt", d / "ewplus.pt", ew=foreign)


def test_an_encoder_for_another_lr_size_is_refused_naming_both(files, tmp_path):
    d, gds, *_ = files
    ew16, _ = make_encoders(16, gds.num_ws, [32, 64])
    save_module(ew16, str(tmp_path / "ew16.pt"))
    with pytest.raises(UserFacingError, match=re.escape(f"{tmp_path / 'ew16.pt'}: encoder takes LR 16, but {d / 'gds.pt'} was trained for LR 8")):
        ProPulseUpsampler.from_files(d / "gds.pt", tmp_path / "ew16.pt")


def test_upsampler_is_frozen_in_eval_mode_and_checks_its_input(files):
    d, gds, ew, ewp, lr = files
    up = ProPulseUpsampler(make_gds(64, 8, ch=4), ewp, ew, scale=32)
    assert not any(p.requires_grad for p in up.parameters())
    up.train()
    assert not up.training and not any(m.training for m in up.modules())
    for bad in (lr[:, :, :, :4], lr[:, :, :4, :], lr[:, :1], lr[None], lr[0]):  # width, height, channels, 5-D, 3-D
        with pytest.raises(ValueError, match=re.escape("expected LR [B, 3, 8, 8], got")):
            up.encode(bad)


def test_noise_setting_reaches_the_generator(files):
    """ "const" (the stored noise maps): the same LR gives the same image; "random": fresh noise per call."""
    d, *_, lr = files
    with torch.no_grad():
        const = ProPulseUpsampler.from_files(d / "gds.pt", d / "ewplus.pt", ew=d / "ew.pt")
        torch.testing.assert_close(const(lr).image, const(lr).image, rtol=0, atol=0)
        rand = ProPulseUpsampler.from_files(d / "gds.pt", d / "ewplus.pt", ew=d / "ew.pt", noise="random")
        assert not torch.equal(rand(lr).image, rand(lr).image)
        assert not torch.equal(rand(lr).image, const(lr).image)
