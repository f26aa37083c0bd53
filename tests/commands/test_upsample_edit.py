"""Photos -> Pro-PULSE (issues 8, 17): FFHQ alignment geometry, MTCNN from its packaged weights (noise
and the project's toy faces), the ``upsample`` command end to end (good / no-face / corrupt files,
several faces, ``--lr-size``, bad arguments), semantic editing (direction shapes, linearity,
strength 0 = the plain render, the ``edit`` command's grid), and the LR convention shared by
``pulse``, ``upsample`` and ``edit`` (inputs smaller than the generator's output are the LR as they
are). Tiny stage exports are built here (the stage_exports fixture of tests/conftest.py, shared with the other command tests)."""

from __future__ import annotations

import json
import math
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from datamodules.toy_faces import render_toy_face, sample_toy_factors
from lit_propulse.core.downscale import downscale
from lit_propulse.core.images import load_image, uint8_to_tensor
from lit_propulse.editing import edit_grid, edit_ws, layer_direction, load_direction, render_edits
from lit_propulse.faces import Face, FaceDetector, align_face, crop_quad, ffhq_quad, ffhq_template, select_faces, source_to_crop
from lit_propulse.inference import ProPulseUpsampler
from tests.helpers import LR, PORT_G64, SIZE, W_DIM, by_file, report, run

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow]  # end-to-end runs: outside `pytest -m "not slow"`
#: toy faces MTCNN finds with probability > 0.99 at 256² (seed 0); measured, see test_mtcnn_on_toy_faces
CLEAR_FACES = (7, 10)


def u8(img: np.ndarray) -> torch.Tensor:
    return uint8_to_tensor(np.ascontiguousarray(img))


def read_u8(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB")).astype(np.int16)


# ----------------------------------------------------------------------------------------------
# (a) alignment geometry, without MTCNN


def canonical_landmarks(e: float, m: float, mouth_half: float, nose: tuple[float, float]) -> np.ndarray:
    """Upright face, eye midpoint at the origin: eyes (±e/2, 0), mouth corners (±mouth_half, m)."""
    return np.array([[-e / 2, 0], [e / 2, 0], list(nose), [-mouth_half, m], [mouth_half, m]], dtype=np.float64)


def similarity(points: np.ndarray, angle_deg: float, scale: float, shift: tuple[float, float]) -> np.ndarray:
    t = math.radians(angle_deg)
    rot = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    return points @ rot.T * scale + np.asarray(shift)


def expected_crop_positions(lm: np.ndarray, size: int) -> np.ndarray:
    """Hand derivation of the FFHQ recipe for an upright face (eyes level, eye midpoint at the
    origin, mouth straight below): x = (e + m, 0) normalised and scaled to s = max(2e, 1.8m), y = (0, s),
    c = (0, 0.1m); the crop spans [c - s, c + s] on both axes. Pixel centres at integers."""
    e = lm[1, 0] - lm[0, 0]
    m = (lm[3, 1] + lm[4, 1]) / 2
    s = max(2 * e, 1.8 * m)
    top_left = np.array([-s, 0.1 * m - s])
    return (lm - top_left) * size / (2 * s) - 0.5


def test_ffhq_quad_of_an_upright_face_by_hand():
    lm = canonical_landmarks(e=40, m=44, mouth_half=15, nose=(1, 20)) + [100, 50]
    quad = ffhq_quad(torch.tensor(lm))
    s = max(2 * 40, 1.8 * 44)  # 80: the eye distance sets the scale
    c = np.array([100, 50 + 4.4])
    want = np.array([c + [-s, -s], c + [-s, s], c + [s, s], c + [s, -s]])  # TL, BL, BR, TR
    np.testing.assert_allclose(quad.numpy(), want, atol=1e-9)
    # a long face (mouth far below the eyes): the eye-to-mouth distance sets the scale
    quad = ffhq_quad(torch.tensor(canonical_landmarks(e=40, m=60, mouth_half=15, nose=(0, 30))))
    assert float((quad[3] - quad[0]).norm()) == pytest.approx(2 * 1.8 * 60)


def blob_image(points: np.ndarray, h: int, w: int, sigma: float) -> torch.Tensor:
    """One channel per point: a Gaussian blob centred on it (pixel centres at integers)."""
    yy, xx = np.mgrid[:h, :w].astype(np.float64)
    chans = [np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2)) for x, y in points]
    return torch.tensor(np.stack(chans), dtype=torch.float32)


def centroids(img: torch.Tensor) -> np.ndarray:
    c, h, w = img.shape
    a = img.double().clamp_min(0).numpy()
    yy, xx = np.mgrid[:h, :w]
    return np.stack([[(a[i] * xx).sum() / a[i].sum(), (a[i] * yy).sum() / a[i].sum()] for i in range(c)])


@pytest.mark.parametrize(
    "angle,scale,shift,src",
    [
        (0.0, 1.0, (150, 140), 300),  # quad about 2.5x the crop: supersampled
        (23.0, 0.7, (120, 130), 260),  # rotated, smaller than the crop: upsampled
        (-35.0, 6.0, (900, 820), 1800),  # large: shrunk first (FFHQ's shrink), then supersampled
    ],
)
def test_alignment_puts_eyes_and_mouth_on_the_ffhq_template(angle, scale, shift, src):
    canon = canonical_landmarks(e=40, m=42, mouth_half=17, nose=(2, 22))
    lm = similarity(canon, angle, scale, shift)
    img = blob_image(lm, src, src, sigma=2.5 * scale)
    aligned = align_face(img, torch.tensor(lm), SIZE)
    assert aligned.image.shape == (5, SIZE, SIZE) and aligned.outside == 0.0
    assert aligned.source_px == pytest.approx(2 * max(2 * 40, 1.8 * 42) * scale)
    want = expected_crop_positions(canon, SIZE)  # the same for any rotation / scale / shift
    got = centroids(aligned.image)
    np.testing.assert_allclose(got, want, atol=0.15)
    # the eyes are level, symmetric about the centre column, and match ffhq_template
    tmpl = ffhq_template(SIZE, 42 / 40).numpy()
    np.testing.assert_allclose(got[:2], tmpl[:2], atol=0.15)
    np.testing.assert_allclose(got[3:].mean(0), tmpl[2], atol=0.15)
    # and source_to_crop agrees with where the pixels went
    np.testing.assert_allclose(source_to_crop(torch.tensor(lm), aligned.quad.double(), SIZE).numpy(), want, atol=1e-3)


def toy_landmarks(index: int, size: int) -> np.ndarray:
    """The toy face's drawn eye centres, nose tip and mouth ends, in pixels."""
    f = sample_toy_factors(0, index)
    rx = f.face_ry * f.face_aspect
    eye_y, eye_dx = f.cy - 0.035 + f.eye_y, rx * 0.42
    mouth_y, mw = f.cy + f.face_ry * 0.56, rx * 0.36 * f.mouth_width
    pts = [[f.cx - eye_dx, eye_y], [f.cx + eye_dx, eye_y], [f.cx + f.nose_dx, f.cy + f.face_ry * 0.28], [f.cx - mw, mouth_y], [f.cx + mw, mouth_y]]
    return np.array(pts) * size - 0.5


def test_alignment_undoes_a_rotation_of_a_real_picture():
    """A toy face, and the same face rotated by PIL (an independent resampler): the two aligned crops agree."""
    face = render_toy_face(0, 7, 256)[0]
    padded = np.pad(face, ((128, 128), (128, 128), (0, 0)), mode="edge")  # room to rotate without black corners
    lm = toy_landmarks(7, 256) + 128
    theta = 25.0
    rotated = np.asarray(Image.fromarray(padded).rotate(theta, resample=Image.BICUBIC))
    c = np.array([padded.shape[1] / 2 - 0.5, padded.shape[0] / 2 - 0.5])
    t = math.radians(theta)  # PIL turns counter-clockwise on screen (y down)
    d = lm - c
    lm_rot = c + np.stack([d[:, 0] * math.cos(t) + d[:, 1] * math.sin(t), -d[:, 0] * math.sin(t) + d[:, 1] * math.cos(t)], 1)
    a = align_face(u8(padded), torch.tensor(lm), SIZE).image
    b = align_face(u8(rotated), torch.tensor(lm_rot), SIZE).image
    inner = slice(4, -4)  # PIL leaves black in the rotated corners of the padded canvas
    diff = (a - b)[:, inner, inner].abs()
    assert float(diff.mean()) < 0.02 and float(diff.max()) < 0.5, (float(diff.mean()), float(diff.max()))
    # and the crop is not trivially uniform: it holds the face (compare with a shifted crop)
    c2 = align_face(u8(padded), torch.tensor(lm + [6, 0]), SIZE).image
    assert float((a - c2)[:, inner, inner].abs().mean()) > 5 * float(diff.mean())


def test_alignment_reports_the_part_outside_the_photo_and_refuses_degenerate_landmarks():
    lm = canonical_landmarks(e=40, m=42, mouth_half=17, nose=(0, 20)) + [10, 60]  # face at the left border
    aligned = align_face(torch.zeros(3, 120, 120), torch.tensor(lm), SIZE)
    assert 0.3 < aligned.outside < 0.6  # about the left half of the crop
    with pytest.raises(ValueError, match="degenerate"):
        ffhq_quad(torch.zeros(5, 2))
    with pytest.raises(ValueError, match=r"\[5, 2\]"):
        ffhq_quad(torch.zeros(4, 2))
    with pytest.raises(ValueError, match="square"):
        crop_quad(torch.zeros(3, 10, 10), torch.tensor([[0, 0], [0, 5], [9, 5], [9, 0]]), 8)


def test_select_faces():
    def face(side, prob):
        return Face(torch.tensor([0, 0, side, side], dtype=torch.float32), prob, torch.zeros(5, 2))

    faces = [face(30, 0.95), face(80, 0.5), face(50, 0.99)]
    assert [f.area for f in select_faces(faces, "all", 0.9)] == [2500, 900]
    assert [f.area for f in select_faces(faces, "largest", 0.9)] == [2500]
    assert [f.area for f in select_faces(faces, "largest", 0.4)] == [6400]
    assert select_faces(faces, "all", 0.999) == []
    with pytest.raises(ValueError, match="largest"):
        select_faces(faces, "biggest")


# ----------------------------------------------------------------------------------------------
# (b) MTCNN


@pytest.fixture(scope="module")
def detector():
    return FaceDetector()


def test_mtcnn_loads_its_packaged_weights_and_finds_no_face_on_noise(monkeypatch):
    import facenet_pytorch

    data = Path(facenet_pytorch.__file__).parent / "data"
    assert all((data / f"{n}.pt").is_file() for n in ("pnet", "rnet", "onet"))

    def no_network(*a, **k):
        raise AssertionError("MTCNN tried to download something")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    det = FaceDetector()
    onet = det.mtcnn.onet.conv1.weight
    assert float(onet.abs().sum()) > 0 and not onet.requires_grad
    noise = torch.rand(3, 256, 256, generator=torch.Generator().manual_seed(0)) * 2 - 1
    assert det(noise) == []
    assert det(torch.zeros(3, 16, 16)) == []  # smaller than min_face_size: no pyramid, no error
    with pytest.raises(ValueError, match=r"\[3, H, W\]"):
        det(torch.zeros(1, 3, 64, 64))


def test_mtcnn_on_toy_faces(detector):
    """Measured on seed 0, indices 0..29 at 256²: 24 detected (probability 0.79..1.0); eye landmarks
    within 15 % of the eye distance of the drawn eye centres (median 7 %)."""
    found, eye_err = 0, []
    for i in range(30):
        faces = detector(u8(render_toy_face(0, i, 256)[0]))
        if not faces:
            continue
        found += 1
        assert len(faces) == 1 and faces[0].prob > 0.7
        truth = toy_landmarks(i, 256)
        eye_dist = truth[1, 0] - truth[0, 0]
        eye_err.append(np.linalg.norm(faces[0].landmarks[:2].numpy() - truth[:2], axis=1).max() / eye_dist)
        box = faces[0].box.numpy()  # the box holds the eyes and mouth
        assert box[0] < truth[:, 0].min() and truth[:, 0].max() < box[2] and box[1] < truth[:, 1].min() < truth[:, 1].max() < box[3]
    assert found >= 20, found
    assert max(eye_err) < 0.2 and float(np.median(eye_err)) < 0.1, eye_err
    for i in CLEAR_FACES:
        assert detector(u8(render_toy_face(0, i, 256)[0]))[0].prob > 0.99


@pytest.mark.gpu
def test_detection_and_alignment_follow_the_input_to_cuda(detector):
    img = u8(render_toy_face(0, CLEAR_FACES[0], 256)[0])
    cpu = detector(img)[0]
    gpu = detector(img.to("cuda"))[0]
    assert next(detector.parameters()).device.type == "cuda"
    torch.testing.assert_close(gpu.landmarks, cpu.landmarks, atol=0.05, rtol=0)
    a = align_face(img.to("cuda"), gpu.landmarks, SIZE).image
    assert a.device.type == "cuda"
    torch.testing.assert_close(a.cpu(), align_face(img, gpu.landmarks, SIZE).image, atol=1e-4, rtol=0)
    detector(img)  # back to the CPU input's device
    assert next(detector.parameters()).device.type == "cpu"


# ----------------------------------------------------------------------------------------------
# tiny stage exports and input folders


@pytest.fixture(scope="module")
def upsampler(stage_exports) -> ProPulseUpsampler:
    return ProPulseUpsampler.from_files(stage_exports / "gds" / "gds.pt", stage_exports / "ewplus" / "ewplus.pt", ew=stage_exports / "ew" / "ew.pt")


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """A good photo, two faces in one photo, pure noise, a corrupt PNG, a text file (ignored)."""
    d = tmp_path_factory.mktemp("photos")
    Image.fromarray(render_toy_face(0, CLEAR_FACES[0], 256)[0]).save(d / "face.png")
    two = np.full((256, 480, 3), 128, np.uint8)
    two[:, :256] = render_toy_face(0, CLEAR_FACES[0], 256)[0]
    two[38:218, 290:470] = render_toy_face(0, CLEAR_FACES[1], 180)[0]
    Image.fromarray(two).save(d / "two.jpg", quality=95)
    noise = (np.random.default_rng(0).random((200, 160, 3)) * 255).astype(np.uint8)
    Image.fromarray(noise).save(d / "noise.png")
    good = (d / "face.png").read_bytes()
    (d / "corrupt.png").write_bytes(good[: len(good) // 3])
    (d / "notes.txt").write_text("not an image")
    return d


# ----------------------------------------------------------------------------------------------
# (c) the upsample command


def test_upsample_photos_end_to_end(stage_exports, photos, upsampler, tmp_path, capsys):
    out = tmp_path / "out"
    assert run("upsample", "--checkpoint", stage_exports, "--input", photos, "--output", out, "--batch-size", 2) == 0
    printed = capsys.readouterr()
    assert "[4/4]" in printed.out + printed.err and "skipped" in printed.err
    rep = report(out)
    assert rep["settings"]["encoder"].endswith("ewplus.pt") and rep["settings"]["ew"].endswith("ew.pt")
    assert rep["summary"] == {
        **rep["summary"],
        "inputs": 4,
        "upsampled_inputs": 2,
        "skipped_inputs": 2,
        "results": 2,
        "skipped_by_kind": {"unreadable": 1, "no_face": 1},
    }
    rows = by_file(rep)
    assert set(rows) == {"face.png", "two.jpg", "noise.png", "corrupt.png"}  # notes.txt is not an image
    assert rows["corrupt.png"]["status"] == "skipped" and "truncated" in rows["corrupt.png"]["reason"]
    assert rows["noise.png"]["kind"] == "no_face" and rows["noise.png"]["faces_found"] == 0
    assert rows["two.jpg"]["faces_found"] == 2 and rows["two.jpg"]["faces_used"] == 1
    assert "2 faces found; the largest was used" in rows["two.jpg"]["note"]
    good = rows["face.png"]
    assert good["status"] == "ok" and good["faces_found"] == 1
    (o,) = good["outputs"]
    assert o["name"] == "face" and o["face"]["prob"] > 0.99 and set(o["face"]["landmarks"]) >= {"eye_left", "mouth_right"}
    assert sorted(o["files"]) == sorted(f"face/{f}" for f in ("hr.png", "side_16.png", "side_32.png", "lr.png", "aligned.png", "panel.png"))
    sizes = {f: Image.open(out / f).size for f in o["files"]}
    assert sizes["face/hr.png"] == (64, 64) and sizes["face/side_16.png"] == (16, 16) and sizes["face/side_32.png"] == (32, 32)
    assert sizes["face/lr.png"] == (8, 8) and sizes["face/aligned.png"] == (64, 64)
    # the LR is DS of the aligned crop (to a level: both PNGs are rounded)
    aligned = load_image(out / "face" / "aligned.png")[None]
    lr_png = read_u8(out / "face" / "lr.png")
    want = ((downscale(aligned, LR)[0].clamp(-1, 1) + 1) * 127.5).round().permute(1, 2, 0).numpy()
    assert np.abs(lr_png - want).max() <= 1
    # the aligned crop is the FFHQ crop of the detected landmarks
    lm = torch.tensor([o["face"]["landmarks"][k] for k in ("eye_left", "eye_right", "nose", "mouth_left", "mouth_right")])
    crop = align_face(load_image(photos / "face.png"), lm, SIZE).image.clamp(-1, 1)
    assert float((crop - aligned[0]).abs().max()) < 0.01
    # the HR is the upsampler's output for that LR
    hr = upsampler(downscale(crop[None], LR)).image[0]
    assert np.abs(read_u8(out / "face" / "hr.png") - ((hr.clamp(-1, 1) + 1) * 127.5).permute(1, 2, 0).numpy()).max() <= 2

    # --faces all: both faces of two.jpg, largest first; --min-prob can reject everything
    out2 = tmp_path / "all"
    assert run("upsample", "--checkpoint", stage_exports, "--input", photos, "--output", out2, "--faces", "all", "--paste-back") == 0
    two = by_file(report(out2))["two.jpg"]
    assert two["faces_used"] == 2 and [o["name"] for o in two["outputs"]] == ["two_face0", "two_face1"]
    # --paste-back: both faces put back into the whole photo (its size: both faces span more than 64 px)
    assert two["restored"] == {**two["restored"], "file": "two_restored.png", "faces": 2, "scale": 1.0, "size": [480, 256]}
    assert Image.open(out2 / "two_restored.png").size == (480, 256)
    a0, a1 = (two["outputs"][k]["face"]["crop_source_px"] for k in (0, 1))
    assert a0 > a1 and (out2 / "two_face1" / "hr.png").is_file()


def write_lr_folder(d: Path) -> np.ndarray:
    """crop64.png (an aligned crop), lr8.png (its LR, 8-bit), tiny.png (4x4), wide.png (48x64); returns the LR."""
    d.mkdir()
    face64 = render_toy_face(0, 3, 64)[0]
    Image.fromarray(face64).save(d / "crop64.png")
    lr8 = ((downscale(u8(face64)[None], LR)[0] + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    Image.fromarray(lr8).save(d / "lr8.png")
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(d / "tiny.png")
    Image.fromarray(render_toy_face(0, 4, 64)[0][:, 8:56]).save(d / "wide.png")
    return lr8


@pytest.mark.parametrize("flag", ["--lr-size", "--as-lr"])
def test_upsample_lr_size_makes_every_input_an_hr(stage_exports, upsampler, tmp_path, capsys, flag):
    """``--lr-size 8`` (and the deprecated ``--as-lr``, its alias for upsample): no detection; each
    input centre-cropped and made the LR with DS, an input already at the LR size used as it is."""
    lr8 = write_lr_folder(tmp_path / "lrs")
    out = tmp_path / "out"
    argv = ["--lr-size", str(LR)] if flag == "--lr-size" else ["--as-lr"]
    assert (
        run(
            "upsample",
            "--gds",
            stage_exports / "gds" / "gds.pt",
            "--encoder",
            stage_exports / "ewplus" / "ewplus.pt",
            "--ew",
            stage_exports / "ew" / "ew.pt",
            "--input",
            tmp_path / "lrs",
            "--output",
            out,
            *argv,
        )
        == 0
    )
    assert ("deprecated" in capsys.readouterr().err) == (flag == "--as-lr")
    rep = report(out)
    assert rep["settings"]["lr_size_option"] == LR and rep["summary"]["taken_as"] == {"lr": 0, "hr": 3, "photo": 0}
    rows = by_file(rep)
    assert rows["tiny.png"]["kind"] == "too_small" and "4x4 is smaller than --lr-size 8" in rows["tiny.png"]["reason"]
    assert "faces_found" not in rows["lr8.png"] and rows["lr8.png"]["taken_as"] == "hr"  # no detection
    assert "centre-cropped" in rows["wide.png"]["note"]
    assert "input.png" not in " ".join(rows["lr8.png"]["outputs"][0]["files"])  # nothing larger than the LR
    assert "crop64/input.png" in rows["crop64.png"]["outputs"][0]["files"]
    assert np.array_equal(read_u8(out / "lr8" / "lr.png"), lr8.astype(np.int16))
    # the 64² crop made LR with DS gives (to rounding) the same LR and so the same HR as the 8² file
    assert np.abs(read_u8(out / "crop64" / "lr.png") - lr8).max() <= 1
    hr = upsampler(u8(lr8)[None]).image[0]
    assert np.abs(read_u8(out / "lr8" / "hr.png") - ((hr.clamp(-1, 1) + 1) * 127.5).permute(1, 2, 0).numpy()).max() <= 1


def test_upsample_ew_only_and_argument_errors(stage_exports, photos, tmp_path, capsys):
    gds, ew, ewp = stage_exports / "gds" / "gds.pt", stage_exports / "ew" / "ew.pt", stage_exports / "ewplus" / "ewplus.pt"
    assert run("upsample", "--gds", gds, "--encoder", ew, "--input", photos, "--output", tmp_path / "ew") == 0
    assert report(tmp_path / "ew")["settings"]["ew"] is None
    capsys.readouterr()
    cases = [
        (["--checkpoint", tmp_path / "nope"], "is not a directory"),
        (["--checkpoint", tmp_path], "missing --gds"),
        (["--gds", gds, "--encoder", ewp], "give --ew"),  # E_W+ without E_W, guidance ew
        (["--gds", tmp_path / "gone.pt", "--encoder", ew], "gone.pt"),
        (["--checkpoint", stage_exports, "--input", tmp_path / "nothing"], "does not exist"),
        (["--checkpoint", stage_exports, "--input", stage_exports / "gds"], "holds no images"),
        (["--checkpoint", stage_exports, "--batch-size", "0"], "--batch-size"),
        (["--gds", tmp_path / "gone.pt", "--encoder", ew, "--output", photos / "face.png"], "is not a folder"),  # before loading
    ]
    for extra, message in cases:
        argv = ["upsample", "--input", photos, "--output", tmp_path / "x", *extra]
        assert run(*argv) == 2, extra
        err = capsys.readouterr().err
        assert message in err and err.startswith("error: ") and "Traceback" not in err, (extra, err)
    # E_W+ with the mean latent instead of E_W is allowed
    assert run("upsample", "--gds", gds, "--encoder", ewp, "--guidance", "latent_avg", "--input", photos, "--output", tmp_path / "avg") == 0


def test_upsample_defaults_to_the_packaged_toy_exports(stage_exports, tmp_path, monkeypatch, capsys):
    """No --checkpoint/--gds/--encoder: the toy exports packaged in lit_propulse/data when the install
    ships them (here the fixture's, put in their place); without them, one error line naming the files."""
    from lit_propulse.commands import common

    d = tmp_path / "in"
    d.mkdir()
    lr = downscale(uint8_to_tensor(render_toy_face(0, 3, SIZE)[0])[None], LR)
    Image.fromarray(((lr[0].permute(1, 2, 0).clamp(-1, 1) + 1) * 127.5).round().byte().numpy()).save(d / "lr.png")
    monkeypatch.setattr(common, "packaged", lambda name: None)
    assert run("upsample", "--input", d, "--output", tmp_path / "none") == 2
    err = capsys.readouterr().err
    assert "this install packages no toy exports (lit_propulse/data/toy_gds_64.pt, lit_propulse/data/toy_ewplus_64.pt or toy_ew_64.pt)" in err
    files = {"toy_gds_64.pt": "gds/gds.pt", "toy_ewplus_64.pt": "ewplus/ewplus.pt", "toy_ew_64.pt": "ew/ew.pt"}
    monkeypatch.setattr(common, "packaged", lambda name: str(stage_exports / files[name]) if name in files else None)
    assert run("upsample", "--input", d, "--output", tmp_path / "out") == 0
    assert "the toy exports packaged in lit_propulse/data" in capsys.readouterr().out
    settings = report(tmp_path / "out")["settings"]
    assert settings["gds"] == str(stage_exports / "gds" / "gds.pt") and settings["ew"] == str(stage_exports / "ew" / "ew.pt")
    assert settings["encoder"] == str(stage_exports / "ewplus" / "ewplus.pt")


def test_upsample_everything_skipped_exits_1_with_a_report(stage_exports, tmp_path, capsys):
    d = tmp_path / "in"
    d.mkdir()
    Image.fromarray((np.random.default_rng(1).random((96, 96, 3)) * 255).astype(np.uint8)).save(d / "noise.png")
    assert run("upsample", "--checkpoint", stage_exports, "--input", d, "--output", tmp_path / "out") == 1
    assert "nothing was upsampled" in capsys.readouterr().err
    assert report(tmp_path / "out")["summary"]["skipped_by_kind"] == {"no_face": 1}


# ----------------------------------------------------------------------------------------------
# (d) editing


def test_direction_files_and_shapes(tmp_path):
    num_ws, w = 6, 4
    d = torch.randn(w)
    np.save(tmp_path / "flat.npy", d.numpy())
    np.save(tmp_path / "interfacegan.npy", d.numpy()[None])
    torch.save(torch.randn(num_ws, w), tmp_path / "per_layer.pt")
    torch.save({"direction": d}, tmp_path / "dict.pt")
    for name in ("flat.npy", "interfacegan.npy", "dict.pt"):
        full = layer_direction(load_direction(tmp_path / name), num_ws, w)
        assert full.shape == (num_ws, w) and torch.equal(full[3], d), name
    assert layer_direction(load_direction(tmp_path / "per_layer.pt"), num_ws, w).shape == (num_ws, w)
    with pytest.raises(ValueError, match=r"expected \[4\].*\[1, 4\].*\[6, 4\]"):
        layer_direction(torch.zeros(2, w), num_ws, w)
    with pytest.raises(ValueError, match=r"\[5\]"):
        layer_direction(torch.zeros(5), num_ws, w)
    np.save(tmp_path / "nan.npy", np.array([np.nan, 0, 0, 0]))
    torch.save({"a": d, "b": d}, tmp_path / "two.pt")
    for name, message in (("nan.npy", "non-finite"), ("two.pt", "exactly one"), ("x.txt", ".npy or .pt")):
        (tmp_path / "x.txt").write_text("")
        with pytest.raises(ValueError, match=message):
            load_direction(tmp_path / name)
    with pytest.raises(FileNotFoundError):
        load_direction(tmp_path / "missing.npy")


def test_edit_ws_is_linear_and_can_target_layers():
    torch.manual_seed(0)
    ws, d = torch.randn(2, 6, 4), torch.randn(4)
    strengths = [-3.0, -1.5, 0.0, 1.5, 3.0]
    out = edit_ws(ws, d, strengths)
    assert out.shape == (2, 5, 6, 4)
    assert torch.equal(out[:, 2], ws)  # strength 0: unchanged, exactly
    for k, s in enumerate(strengths):
        torch.testing.assert_close(out[:, k], ws + s * d, rtol=0, atol=1e-6)
    torch.testing.assert_close(out[:, 4] - out[:, 3], out[:, 1] - out[:, 0])  # equal steps, equal changes
    part = edit_ws(ws, d, [2.0], layers=[0, 1])
    assert torch.equal(part[:, 0, 2:], ws[:, 2:])
    torch.testing.assert_close(part[:, 0, :2], ws[:, :2] + 2 * d)
    per_layer = torch.randn(6, 4)
    torch.testing.assert_close(edit_ws(ws, per_layer, [1.0])[:, 0], ws + per_layer)
    with pytest.raises(ValueError, match=r"\[0, 6\)"):
        edit_ws(ws, d, [1.0], layers=[6])


def test_render_edits_strength_zero_is_the_plain_render(upsampler):
    lr = torch.rand(2, 3, LR, LR, generator=torch.Generator().manual_seed(0)) * 2 - 1
    plain = upsampler(lr)
    d = torch.randn(W_DIM, generator=torch.Generator().manual_seed(1))
    out = render_edits(upsampler, plain.ws, d, [-2.0, 0.0, 2.0], batch_size=4)
    assert out.resolutions == [16, 32, 64] and out.images[64].shape == (2, 3, 3, 64, 64)
    assert torch.equal(out.images[64][:, 1], plain.image)
    for r in (16, 32):
        assert torch.equal(out.images[r][:, 1], plain.side_images[r])
    assert float((out.images[64][:, 0] - plain.image).abs().mean()) > 1e-3  # the edit changes the render
    grid = edit_grid(out, index=1)
    assert grid.shape == (3, 3 * (64 + 2) + 2, 3 * (64 + 2) + 2)  # rows = resolutions, columns = strengths
    assert torch.equal(grid[:, 2 * 66 + 2 : 2 * 66 + 66, 66 + 2 : 66 + 66], plain.image[1].clamp(-1, 1))


def test_edit_command_writes_grids_and_renders(stage_exports, photos, tmp_path, capsys):
    np.save(tmp_path / "dir.npy", np.random.default_rng(0).standard_normal((1, W_DIM)).astype(np.float32))
    out = tmp_path / "edit"
    assert (
        run(
            "edit",
            "--checkpoint",
            stage_exports,
            "--input",
            photos,
            "--output",
            out,
            "--direction",
            tmp_path / "dir.npy",
            "--strengths",
            "-3,-1.5,0,1.5,3",
            "--layers",
            "0-3",
        )
        == 0
    )
    rep = report(out)
    assert rep["settings"]["grid_rows"] == [16, 32, 64] and rep["settings"]["grid_columns"] == [-3, -1.5, 0, 1.5, 3]
    assert rep["settings"]["layers"] == [0, 1, 2, 3]
    assert rep["summary"]["results"] == 2 and rep["summary"]["skipped_by_kind"] == {"unreadable": 1, "no_face": 1}
    assert Image.open(out / "face" / "grid.png").size == (5 * 66 + 2, 3 * 66 + 2)
    files = by_file(rep)["face.png"]["outputs"][0]["files"]
    assert {f"face/strength_{s}/{f}" for s in ("-3", "-1.5", "+0", "+1.5", "+3") for f in ("hr.png", "side_16.png", "side_32.png")} <= set(files)
    # strength 0 renders exactly what upsample writes for the same photo
    assert run("upsample", "--checkpoint", stage_exports, "--input", photos, "--output", tmp_path / "up") == 0
    assert np.array_equal(read_u8(out / "face" / "strength_+0" / "hr.png"), read_u8(tmp_path / "up" / "face" / "hr.png"))
    assert not np.array_equal(read_u8(out / "face" / "strength_+3" / "hr.png"), read_u8(tmp_path / "up" / "face" / "hr.png"))
    # a direction of the wrong width is refused before any work
    capsys.readouterr()
    np.save(tmp_path / "bad.npy", np.zeros(W_DIM + 1, np.float32))
    assert run("edit", "--checkpoint", stage_exports, "--input", photos, "--output", tmp_path / "bad", "--direction", tmp_path / "bad.npy") == 2
    err = capsys.readouterr().err
    assert f"expected [{W_DIM}]" in err and not (tmp_path / "bad" / "report.json").exists()
    assert (
        run("edit", "--checkpoint", stage_exports, "--input", photos, "--output", tmp_path / "bad", "--direction", tmp_path / "dir.npy", "--layers", "0-99")
        == 2
    )
    assert "rows must be in [0, 10)" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------
# (e) the LR convention, one rule for pulse, upsample and edit (commands.common.LRRule)


def test_lr_rule_roles():
    from lit_propulse.commands.common import LRRule
    from lit_propulse.core.errors import UserFacingError

    pro, pulse = LRRule(SIZE, model_lr=LR, detects=True), LRRule(SIZE)
    assert pro.role("a.png", 8, 8) == ("lr", "")  # smaller than the output and the encoder's size: the LR as it is
    assert pro.role("a.png", 64, 64)[0] == pro.role("a.png", 480, 256)[0] == pro.role("a.png", 40, 30)[0] == "photo"
    assert pulse.role("a.png", 16, 16) == pulse.role("a.png", 4, 4) == ("lr", "")  # any divisor of 64
    assert pulse.role("a.png", 32, 40) == ("lr", "")  # no detection in pulse: centre-cropped to 32
    for rule, (w, h), words in [
        (pro, (16, 16), ["b.png", "16x16", "encoder takes 8x8", "--lr-size 8", "--photos"]),
        (pulse, (24, 24), ["b.png", "24x24", "64/24 is not a whole factor"]),
        (pulse, (64, 64), ["b.png", "64x64 is not smaller than the generator's 64x64", "--lr-size N"]),
        (pulse, (100, 80), ["b.png", "100x80"]),
    ]:
        with pytest.raises(UserFacingError) as e:
            rule.role("b.png", w, h)
        assert all(word in str(e.value) for word in words) and "\n" not in str(e.value), str(e.value)
    hr = LRRule(SIZE, model_lr=LR, lr_size=LR, detects=True)
    assert hr.role("a.png", 8, 8) == hr.role("a.png", 300, 200) == ("hr", "")
    assert hr.role("a.png", 4, 4) == (None, "4x4 is smaller than --lr-size 8")
    assert LRRule(SIZE, model_lr=LR, detects=True, all_photos=True).role("a.png", 8, 8) == ("photo", "")


def write_lrs(d: Path, n: int = 2, side: int = LR) -> list[np.ndarray]:
    d.mkdir(parents=True, exist_ok=True)
    lrs = []
    for i in range(n):
        lr = ((downscale(u8(render_toy_face(0, i, 64)[0])[None], side)[0] + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
        Image.fromarray(lr).save(d / f"lr{i}.png")
        lrs.append(lr)
    return lrs


def test_upsample_and_edit_take_a_folder_of_lrs_as_they_are(stage_exports, upsampler, photos, tmp_path, capsys, monkeypatch):
    lrs = write_lrs(tmp_path / "lrs")

    def no_detector(*a, **k):
        raise AssertionError("MTCNN was loaded for a folder of LRs")

    monkeypatch.setattr("lit_propulse.faces.FaceDetector", no_detector)
    out = tmp_path / "up"
    assert run("upsample", "--checkpoint", stage_exports, "--input", tmp_path / "lrs", "--output", out) == 0
    rep = report(out)
    assert rep["summary"]["taken_as"] == {"lr": 2, "hr": 0, "photo": 0} and rep["summary"]["results"] == 2
    for i, lr in enumerate(lrs):
        row = by_file(rep)[f"lr{i}.png"]
        assert row["taken_as"] == "lr" and "faces_found" not in row
        assert np.array_equal(read_u8(out / f"lr{i}" / "lr.png"), lr.astype(np.int16))
        hr = upsampler(u8(lr)[None]).image[0]
        assert np.abs(read_u8(out / f"lr{i}" / "hr.png") - ((hr.clamp(-1, 1) + 1) * 127.5).permute(1, 2, 0).numpy()).max() <= 1
    np.save(tmp_path / "dir.npy", np.ones(W_DIM, np.float32))
    assert (
        run(
            "edit",
            "--checkpoint",
            stage_exports,
            "--input",
            tmp_path / "lrs",
            "--output",
            tmp_path / "edit",
            "--direction",
            tmp_path / "dir.npy",
            "--strengths",
            "0,1",
        )
        == 0
    )
    assert np.array_equal(read_u8(tmp_path / "edit" / "lr0" / "strength_+0" / "hr.png"), read_u8(out / "lr0" / "hr.png"))
    monkeypatch.undo()
    # a folder mixing LRs and photos: each taken by its size
    for f in ("face.png", "noise.png"):
        (tmp_path / "lrs" / f).write_bytes((photos / f).read_bytes())
    assert run("upsample", "--checkpoint", stage_exports, "--input", tmp_path / "lrs", "--output", tmp_path / "mixed") == 0
    rep = report(tmp_path / "mixed")
    assert rep["summary"]["taken_as"] == {"lr": 2, "hr": 0, "photo": 2} and rep["summary"]["results"] == 3
    assert by_file(rep)["face.png"]["faces_used"] == 1 and by_file(rep)["noise.png"]["kind"] == "no_face"
    # --photos: detection on every input; MTCNN finds no face in an 8x8 LR
    capsys.readouterr()
    assert run("upsample", "--checkpoint", stage_exports, "--input", tmp_path / "lrs", "--output", tmp_path / "ph", "--photos") == 0
    rep = report(tmp_path / "ph")
    assert rep["summary"]["taken_as"]["photo"] == 4 and by_file(rep)["lr0.png"]["kind"] == "no_face"


def test_an_lr_of_the_wrong_size_stops_every_command_in_one_line(stage_exports, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LIT_PROPULSE_CACHE", str(tmp_path / "cache"))
    write_lrs(tmp_path / "in")
    write_lrs(tmp_path / "in16", n=1, side=16)
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "in" / "x16.png")
    np.save(tmp_path / "dir.npy", np.ones(W_DIM, np.float32))
    fix = PORT_G64
    pulse = ["pulse", "--generator", fix, "--steps", "1", "--fit-samples", "2000"]
    cases = [
        (["upsample", "--checkpoint", stage_exports, "--input", tmp_path / "in"], ["x16.png: 16x16", "encoder takes 8x8", "--lr-size 8"]),
        (["edit", "--checkpoint", stage_exports, "--input", tmp_path / "in", "--direction", tmp_path / "dir.npy"], ["x16.png: 16x16", "encoder takes 8x8"]),
        (["upsample", "--checkpoint", stage_exports, "--input", tmp_path / "in16", "--lr-size", "16"], ["--lr-size 16", "encoder takes 8x8"]),
        (["upsample", "--checkpoint", stage_exports, "--input", tmp_path / "in", "--lr-size", "8", "--photos"], ["--lr-size", "--photos"]),
        ([*pulse, "--input", tmp_path / "in", "--lr-size", "24"], ["--lr-size 24", "divide"]),
    ]
    for k, (argv, words) in enumerate(cases):
        out = tmp_path / f"out{k}"
        assert run(*argv, "--output", out) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and all(w in err for w in words), (argv, err)
        assert not (out / "report.json").exists() and not list(out.glob("*/hr.png"))  # nothing was done
    Image.fromarray(np.zeros((24, 24, 3), np.uint8)).save(tmp_path / "in" / "x24.png")
    (tmp_path / "in" / "x16.png").unlink()
    assert run(*pulse, "--input", tmp_path / "in", "--output", tmp_path / "p24") == 2
    err = capsys.readouterr().err
    assert "x24.png: 24x24" in err and "64/24 is not a whole factor" in err and "Traceback" not in err
    (tmp_path / "in" / "x24.png").unlink()
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "in" / "hr64.png")
    assert run(*pulse, "--input", tmp_path / "in", "--output", tmp_path / "p64") == 2
    err = capsys.readouterr().err
    assert "hr64.png: 64x64 is not smaller than the generator's 64x64 output" in err and "--lr-size N" in err


def test_pulse_takes_a_folder_of_lrs_as_they_are(tmp_path, capsys, monkeypatch):
    """The issue's report: ``pulse --generator G64.pt --input lr_folder/`` with 8x8 PNGs answered
    "no usable images"; now every file is the LR as it is."""
    monkeypatch.setenv("LIT_PROPULSE_CACHE", str(tmp_path / "cache"))
    lrs = write_lrs(tmp_path / "lr_folder")
    fix = PORT_G64
    out = tmp_path / "out"
    assert run("pulse", "--generator", fix, "--input", tmp_path / "lr_folder", "--output", out, "--steps", "1", "--fit-samples", "2000") == 0
    printed = capsys.readouterr()
    assert "made LR with DS" not in printed.out and "deprecated" not in printed.err
    for i, lr in enumerate(lrs):
        assert np.array_equal(read_u8(out / "lr" / f"lr{i}.png"), lr.astype(np.int16))  # searched against the file itself
        assert Image.open(out / f"lr{i}_0.png").size == (SIZE, SIZE)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["searches"] == 2 and summary["settings"]["lr_size"] is None


def test_the_shipped_toy_exports_are_the_default_and_upsample_toy_faces(tmp_path, capsys):
    """The package ships long-trained toy exports (experiments/toy/long.yaml, float16 on disk):
    ``upsample`` with no model flags uses them, and on toy test faces they reconstruct the LR far
    better than the mean face does (Eq. (6) on the downscaled HR)."""
    from lit_propulse.commands import common

    files = {k: common.packaged(name) for k, name in common.PACKAGED_EXPORTS.items()}
    assert all(files.values()), f"the package ships no toy exports: {files}"
    faces = torch.stack([uint8_to_tensor(render_toy_face(0, 50_000 + i, 64)[0]) for i in range(8)])
    lr = downscale(faces, 8)
    d = tmp_path / "in"
    d.mkdir()
    for i in range(2):
        Image.fromarray(((lr[i].permute(1, 2, 0).clamp(-1, 1) + 1) * 127.5).round().byte().numpy()).save(d / f"lr{i}.png")
    assert run("upsample", "--input", d, "--output", tmp_path / "out") == 0
    assert "the toy exports packaged in lit_propulse/data" in capsys.readouterr().out
    assert report(tmp_path / "out")["settings"]["encoder"] == files["ewplus"]
    assert Image.open(tmp_path / "out" / "lr0" / "hr.png").size == (64, 64)
    up = ProPulseUpsampler.from_files(files["gds"], files["ewplus"], files["ew"])
    with torch.no_grad():
        hr = up(lr).image
        mean_face = up.render(up.gds.generator.latent_avg.expand(8, up.gds.generator.num_ws, -1)).image
    err = float((downscale(hr, 8) - lr).pow(2).mean())
    err_mean = float((downscale(mean_face, 8) - lr).pow(2).mean())
    assert err < 0.3 * err_mean, (err, err_mean)
