"""Faces pasted back (issue 17): the inverse of the FFHQ alignment (:func:`lit_propulse.faces.warp_face_back`,
:func:`~lit_propulse.faces.paste_faces`), the feathered mask, the colour match, the photo's scale and
the background hook, and ``upsample --paste-back`` on scikit-image's sample photographs (astronaut:
one face; chelsea: a cat, no human face) with the tiny random stage exports of
tests/test_upsample_edit.py (the restored faces are nonsense: the geometry is what is tested)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image

from lit_propulse.core.images import load_image, uint8_to_tensor
from lit_propulse.faces import (
    FaceDetector,
    align_face,
    canvas_size,
    crop_mask,
    feather_mask,
    match_colour,
    paste_faces,
    paste_scale,
    resize_background,
)
from tests.helpers import LR, SIZE, by_file, report, run

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow]  # end-to-end runs: outside `pytest -m "not slow"`


def smooth_image(h: int, w: int) -> torch.Tensor:
    """A smooth synthetic picture in [-0.9, 0.9]: different sinusoids per channel, nothing repeats
    within a face's crop, so a misplaced paste shows."""
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    return 0.9 * torch.stack([torch.sin(xx / 17) * torch.cos(yy / 23), torch.cos((xx + 2 * yy) / 31), torch.sin(xx / 40 + yy / 13)])


def rotated_landmarks(angle_deg: float, scale: float, centre: tuple[float, float]) -> torch.Tensor:
    """Eyes, nose, mouth corners of an upright face turned by ``angle_deg`` about the eye midpoint."""
    canon = torch.tensor([[-20.0, 0], [20, 0], [1, 22], [-17, 42], [17, 42]], dtype=torch.float64)
    t = math.radians(angle_deg)
    rot = torch.tensor([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]], dtype=torch.float64)
    return canon @ rot.T * scale + torch.tensor(centre, dtype=torch.float64)


# ----------------------------------------------------------------------------------------------
# geometry, mask, colour, scale (pure functions)


@pytest.mark.parametrize(
    "crop,scale,angle,face_scale",
    [
        (128, 1.0, 0.0, 1.0),  # the crop a little finer than the photo
        (64, 1.0, 17.0, 1.0),  # the crop coarser than the photo (pasted enlarged)
        (256, 2.0, -30.0, 1.0),  # a canvas twice the photo
        (64, 1.5, 40.0, 0.5),  # a small face: the crop (64) is finer than the face (~53 px) and pasted antialiased
    ],
)
def test_align_then_paste_back_recovers_the_picture_inside_the_mask(crop, scale, angle, face_scale):
    img = smooth_image(300, 360)
    lm = rotated_landmarks(angle, face_scale, (175, 130))
    aligned = align_face(img, lm, crop)
    res = paste_faces(img, [aligned.image], [aligned.quad], scale, colour="none")
    size = canvas_size((300, 360), scale)
    assert res.image.shape == (3, *size) and res.mask.shape == size
    background = resize_background(img, size)
    inside, outside = res.mask >= 0.999, res.mask == 0
    # the fully pasted region covers most of the eroded quad: (1 - 2 * (0.05 + 0.1))² of its area
    expected_area = (aligned.source_px * scale * (1 - 2 * 0.15)) ** 2
    assert 0.9 * expected_area < int(inside.sum()) < 1.1 * expected_area
    err = (res.image - background)[:, inside].abs()
    assert float(err.max()) < 0.015 and float(err.mean()) < 0.004, (float(err.max()), float(err.mean()))
    assert torch.equal(res.image[:, outside], background[:, outside])  # untouched outside the mask
    # the check can fail: the crop of landmarks 4 px off, pasted at the true quad, is visibly wrong
    shifted = align_face(img, lm + torch.tensor([4.0, 0.0], dtype=torch.float64), crop).image
    wrong = paste_faces(img, [shifted], [aligned.quad], scale, colour="none")
    assert float((wrong.image - background)[:, inside].abs().max()) > 10 * float(err.max())


def test_the_mask_is_an_eroded_square_with_soft_edges():
    m = crop_mask(100, erode=0.05, feather=0.1)
    assert m.shape == (100, 100) and float(m.min()) == 0.0 and float(m.max()) == 1.0
    assert float(m[:, :5].max()) == 0.0 and float(m[:5].max()) == 0.0  # the eroded band along the edges
    assert float(m[15:85, 15:85].min()) == 1.0  # the inside, past erode + feather
    row = m[50, :50]
    assert bool((row[1:] >= row[:-1]).all()) and 0 < float(row[10]) < 1  # a ramp, not a step
    for same in (m.flip(0), m.flip(1), m.T):  # symmetric (to float rounding)
        torch.testing.assert_close(same, m, atol=1e-6, rtol=0)
    disc = crop_mask(100, shape="ellipse")
    assert float(disc[0, 0]) == float(disc[10, 10]) == 0.0 and float(disc[50, 50]) == 1.0 and float(disc[50, 15]) == 1.0
    hard = crop_mask(100, erode=0.1, feather=0.0)
    assert set(hard.unique().tolist()) == {0.0, 1.0}
    outside = feather_mask(torch.tensor([[-3.0, 50.0], [120.0, 50.0]]), 100)
    assert outside.tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="erode"):
        crop_mask(10, erode=0.3, feather=0.3)


def test_paste_scale_follows_the_largest_face_and_is_capped():
    def quad(side: float) -> torch.Tensor:
        return torch.tensor([[0, 0], [0, side], [side, side], [side, 0]], dtype=torch.float64)

    assert paste_scale((300, 400), [quad(40)], 64) == pytest.approx(1.6)  # 64 px crop of a 40 px face
    assert paste_scale((300, 400), [quad(40), quad(20)], 64) == pytest.approx(1.6)  # the largest face decides
    assert paste_scale((300, 400), [quad(8)], 64) == 4.0  # capped by max_scale
    assert paste_scale((300, 400), [quad(8)], 64, max_scale=1.0) == 1.0  # keep the photo's size
    assert paste_scale((2000, 1000), [quad(10)], 64) == pytest.approx(4096 / 2000)  # capped by the long side
    assert paste_scale((300, 400), [quad(200)], 64) == 1.0  # never shrunk
    assert paste_scale((300, 400), [], 64) == 1.0
    with pytest.raises(ValueError, match="max_scale"):
        paste_scale((300, 400), [quad(40)], 64, max_scale=0.5)
    assert canvas_size((300, 400), 1.6) == (480, 640)


def test_colour_match_at_the_lr_size_keeps_detail_and_fixes_a_cast():
    g = torch.Generator().manual_seed(0)
    ref = torch.nn.functional.interpolate(torch.rand(1, 3, 8, 8, generator=g) * 1.6 - 0.8, size=64, mode="bilinear")[0]
    checker = 0.1 * (torch.arange(64)[:, None] + torch.arange(64)[None]).remainder(2).float().mul(2).sub(1)  # ±0.1 per pixel
    detailed = (ref + checker).clamp(-1, 1)  # ref plus detail that vanishes at the LR size
    torch.testing.assert_close(match_colour(detailed, ref, at_size=8), detailed, atol=2e-3, rtol=0)  # left as it is
    assert float((match_colour(detailed, ref) - detailed).abs().max()) > 0.01  # at full size the detail counts as contrast
    cast = (0.5 * ref + torch.tensor([0.3, -0.2, 0.1])[:, None, None]).clamp(-1, 1)  # a colour cast and lost contrast
    torch.testing.assert_close(match_colour(cast, ref, at_size=8), ref, atol=0.02, rtol=0)
    weight = torch.zeros(64, 64)
    weight[16:48, 16:48] = 1  # statistics from the middle only
    out = match_colour(cast, ref, weight)
    torch.testing.assert_close(out[:, 16:48, 16:48].mean((1, 2)), ref[:, 16:48, 16:48].mean((1, 2)), atol=1e-4, rtol=0)


def test_the_background_upsampler_is_a_hook():
    img = smooth_image(120, 160)
    aligned = align_face(img, rotated_landmarks(0, 0.6, (80, 50)), 64)
    calls = []

    def flat_grey(photo, size):
        calls.append((tuple(photo.shape), size))
        return torch.full((3, *size), 0.25)

    res = paste_faces(img, [aligned.image], [aligned.quad], 2.0, colour="none", background_upsampler=flat_grey)
    assert calls == [((3, 120, 160), (240, 320))]
    assert bool((res.image[:, res.mask == 0] == 0.25).all()) and bool((res.image[:, res.mask >= 0.999] != 0.25).any())
    with pytest.raises(ValueError, match="background upsampler returned"):
        paste_faces(img, [aligned.image], [aligned.quad], 2.0, colour="none", background_upsampler=lambda p, s: p)
    with pytest.raises(ValueError, match="reference"):
        paste_faces(img, [aligned.image], [aligned.quad], 1.0)  # colour="match" without the photo's crops


# ----------------------------------------------------------------------------------------------
# real photographs (scikit-image's samples)


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return skimage.data.astronaut()  # [512, 512, 3] uint8: one face (Eileen Collins)


def small(photo: np.ndarray, side: int) -> np.ndarray:
    return np.asarray(Image.fromarray(photo).resize((side, side), Image.BICUBIC))


def test_paste_back_on_the_astronaut(astronaut):
    det = FaceDetector()
    assert det(uint8_to_tensor(skimage.data.chelsea())) == []  # a cat: no human face
    for photo in (astronaut, small(astronaut, 128)):
        img = uint8_to_tensor(photo)
        (face,) = det(img)
        aligned = align_face(img, face.landmarks, SIZE)
        restored = -aligned.image  # a "restoration" that differs everywhere: the negative
        scale = paste_scale(tuple(img.shape[-2:]), [aligned.quad], SIZE)
        assert scale == (1.0 if photo.shape[0] == 512 else pytest.approx(SIZE / aligned.source_px))
        res = paste_faces(img, [restored], [aligned.quad], scale, colour="none")
        size = canvas_size(tuple(img.shape[-2:]), scale)
        background = resize_background(img, size)
        assert res.image.shape == (3, *size)
        assert torch.equal(res.image[:, res.mask == 0], background[:, res.mask == 0])
        inside = res.mask >= 0.999
        assert 0.02 < float(inside.float().mean()) < 0.5
        assert float((res.image - background)[:, inside].abs().mean()) > 0.3
        # a restoration with a colour cast and too little contrast: the colour match brings back the photo's colours
        cast = (0.4 * aligned.image + torch.tensor([0.4, -0.3, 0.2])[:, None, None]).clamp(-1, 1)
        plain = paste_faces(img, [cast], [aligned.quad], scale, colour="none")
        matched = paste_faces(img, [cast], [aligned.quad], scale, references=[aligned.image], colour_size=LR)
        before = float((plain.image - background)[:, inside].abs().mean())
        after = float((matched.image - background)[:, inside].abs().mean())
        assert after < 0.25 * before, (after, before)


def test_upsample_paste_back_command(stage_exports, astronaut, tmp_path, capsys):  # noqa: F811 - the fixture
    d = tmp_path / "photos"
    d.mkdir()
    Image.fromarray(astronaut).save(d / "astronaut.png")
    Image.fromarray(small(astronaut, 128)).save(d / "small.png")
    Image.fromarray(skimage.data.chelsea()).save(d / "chelsea.png")
    lr = np.asarray(Image.fromarray(astronaut).resize((LR, LR), Image.BICUBIC))
    Image.fromarray(lr).save(d / "lr.png")  # an LR: upsampled, nothing to paste back into
    out = tmp_path / "out"
    assert run("upsample", "--checkpoint", stage_exports, "--input", d, "--output", out, "--paste-back") == 0
    rep = report(out)
    assert rep["settings"]["paste_back"]["colour"] == "match" and rep["summary"]["restored_photos"] == 2
    rows = by_file(rep)
    assert rows["chelsea.png"]["kind"] == "no_face" and not (out / "chelsea_restored.png").exists()
    assert "restored" not in rows["lr.png"] and (out / "lr" / "hr.png").is_file()
    for name, side in (("astronaut", 512), ("small", 128)):
        row = rows[f"{name}.png"]
        assert row["faces_used"] == 1 and (out / name / "hr.png").is_file()  # the per-face outputs are still there
        restored = row["restored"]
        assert restored["file"] == f"{name}_restored.png"
        scale = restored["scale"]
        quad = torch.tensor(row["outputs"][0]["face"]["crop_quad"], dtype=torch.float64)
        want = 1.0 if side == 512 else SIZE / float((quad[3] - quad[0]).norm())
        assert scale == pytest.approx(want, abs=1e-3)
        got = load_image(out / restored["file"])
        size = canvas_size((side, side), scale)
        assert got.shape == (3, *size) and restored["size"] == [size[1], size[0]]
        background = resize_background(load_image(d / f"{name}.png"), size)
        # outside the face's quad (2 px margin) the photo is unchanged, up to the plain resize and 8-bit rounding
        qc = (quad + 0.5) * scale - 0.5
        box = torch.ones(size, dtype=torch.bool)
        y0, x0 = (max(0, math.floor(float(qc[:, k].min())) - 2) for k in (1, 0))
        y1, x1 = (math.ceil(float(qc[:, k].max())) + 3 for k in (1, 0))
        box[y0:y1, x0:x1] = False
        assert bool(box.any()) and float((got - background)[:, box].abs().max()) <= 1.01 / 127.5
        # inside the face the restoration (here a random generator's) replaced the photo
        face = torch.zeros(size, dtype=torch.bool)
        cy, cx = (round(float(qc[:, k].mean())) for k in (1, 0))
        r = max(2, round(0.2 * float((qc[3] - qc[0]).norm())))
        face[cy - r : cy + r, cx - r : cx + r] = True
        assert float((got - background)[:, face].abs().mean()) > 0.05
    capsys.readouterr()
    for extra, words in ((["--lr-size", str(LR)], "--paste-back puts faces back into photos"), (["--paste-max-scale", "0.5"], ">= 1")):
        assert run("upsample", "--checkpoint", stage_exports, "--input", d, "--output", tmp_path / "bad", "--paste-back", *extra) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and words in err and err.count("\n") == 1, err


@pytest.mark.gpu
def test_paste_back_runs_on_the_photo_s_device(astronaut):
    img = uint8_to_tensor(small(astronaut, 128))
    (face,) = FaceDetector()(img)
    aligned = align_face(img, face.landmarks, SIZE)
    scale = paste_scale(tuple(img.shape[-2:]), [aligned.quad], SIZE)
    cpu = paste_faces(img, [-aligned.image], [aligned.quad], scale, references=[aligned.image], colour_size=LR)
    gpu = paste_faces(img.cuda(), [-aligned.image.cuda()], [aligned.quad], scale, references=[aligned.image.cuda()], colour_size=LR)
    assert gpu.image.device.type == "cuda" and gpu.mask.device.type == "cuda"
    torch.testing.assert_close(gpu.image.cpu(), cpu.image, atol=2e-3, rtol=0)
    torch.testing.assert_close(gpu.mask.cpu(), cpu.mask, atol=1e-5, rtol=0)
