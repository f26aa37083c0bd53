"""NIQE: basicsr's own values on fixture images, the Metric's reduction over batches, refused image
sizes, and a pristine model fitted on toy faces (fit, score, save and load)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from datamodules.toy_faces import render_toy_face
from lit_propulse.metrics.niqe import NIQE, NIQEParams, fit_pristine_model, gaussian_window, main

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
REFERENCE = json.loads((FIXTURES / "niqe_reference.json").read_text())  # benchmarks/niqe_reference.py


def load_png(path: Path) -> torch.Tensor:
    """8-bit RGB file -> [1, 3, H, W] float32 in [-1, 1]."""
    pixels = np.asarray(Image.open(path).convert("RGB"))
    return torch.from_numpy(pixels.copy()).permute(2, 0, 1)[None].float() / 127.5 - 1


def toy_faces(indices: range, size: int = 64) -> torch.Tensor:
    """[N, 3, size, size] toy faces of domain 0 in [-1, 1]."""
    faces = [torch.from_numpy(render_toy_face(0, i, size)[0].copy()).permute(2, 0, 1) for i in indices]
    return torch.stack(faces).float() / 127.5 - 1


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    r = int(3 * sigma)
    k = torch.exp(-(torch.arange(-r, r + 1.0) ** 2) / (2 * sigma**2))
    k = (k[:, None] * k[None]) / k.sum() ** 2
    return F.conv2d(F.pad(images, (r, r, r, r), mode="reflect"), k.expand(3, 1, -1, -1), groups=3)


# ---- against basicsr --------------------------------------------------------------------------------
def _entry_id(entry: dict) -> str:
    return f"{Path(entry['file']).stem}-crop{entry['crop_border']}-{entry['convert_to']}"


@pytest.mark.parametrize("entry", REFERENCE["entries"], ids=_entry_id)
def test_matches_basicsr(entry):
    """basicsr 1.4.2 ``calculate_niqe`` values (max difference measured: 2e-6 on the AMD EPYC where the
    references were computed). The toy faces (large flat areas) are sensitive to the rounding of
    basicsr's float32 BLAS calls in its half-scale resize (see the module docstring): on an Intel Xeon
    the same code differs from the stored references by up to 0.029 on the three toy faces with Y
    conversion, while every other entry stays within 1e-3. So the toy faces get 0.05, the rest 1e-3."""
    image = load_png(FIXTURES / entry["file"])
    assert image.shape[-2:] == (entry["height"], entry["width"])
    metric = NIQE(crop_border=entry["crop_border"], convert_to=entry["convert_to"])
    tol = 0.05 if Path(entry["file"]).stem.startswith("toyface") else 1e-3
    assert metric.per_image(image).item() == pytest.approx(entry["niqe"], abs=tol)


def test_reference_uses_the_packaged_parameters():
    import hashlib

    from lit_propulse.metrics.niqe import PRISTINE_PARAMS

    assert hashlib.sha256(PRISTINE_PARAMS.read_bytes()).hexdigest() == REFERENCE["pristine_params_sha256"]
    params = NIQEParams.load()
    assert params.block_size == 96 and params.mu.shape == (36,) and params.cov.shape == (36, 36)
    torch.testing.assert_close(gaussian_window(), params.window, rtol=0, atol=1e-15)


# ---- the Metric ---------------------------------------------------------------------------------------
def test_metric_mean_over_batches_is_the_mean_of_images():
    files = sorted({e["file"] for e in REFERENCE["entries"] if (e["height"], e["width"]) == (192, 192)})[:5]
    images = torch.cat([load_png(FIXTURES / f) for f in files])
    metric = NIQE()
    singles = torch.cat([metric.per_image(image[None]) for image in images])
    metric.update(images[:2])
    metric.update(images[2:])
    assert metric.count.item() == len(files)
    assert metric.compute().item() == pytest.approx(singles.mean().item(), rel=1e-9)
    # batched scores equal one-at-a-time scores
    torch.testing.assert_close(metric.per_image(images), singles, rtol=1e-9, atol=0)
    metric.reset()
    metric.update(images[:1])
    assert metric.compute().item() == pytest.approx(singles[0].item(), rel=1e-9)
    assert NIQE.higher_is_better is False


def test_too_small_images_are_refused_clearly():
    with pytest.raises(ValueError, match=r"96x96 block.*64x64.*fit_pristine_model"):
        NIQE().update(torch.zeros(2, 3, 64, 64))
    with pytest.raises(ValueError, match=r"100x100 \(92x92 after cropping crop_border=4"):
        NIQE(crop_border=4).update(torch.zeros(1, 3, 100, 100))
    one_block = NIQE()  # one block is enough: a finite score (basicsr: NaN, no sample covariance)
    one_block.update(torch.rand(1, 3, 96, 96, generator=torch.Generator().manual_seed(0)) * 2 - 1)
    assert torch.isfinite(one_block.compute())


def test_invalid_arguments_are_refused():
    with pytest.raises(ValueError, match="fitted with 96x96 blocks"):
        NIQE(block_size=32)
    with pytest.raises(ValueError, match="convert_to"):
        NIQE(convert_to="rgb")
    with pytest.raises(ValueError, match="even number >= 8"):
        fit_pristine_model(toy_faces(range(2)), block_size=15)
    with pytest.raises(ValueError, match=r"\[B, 3 or 1, H, W\]"):
        NIQE().update(torch.zeros(3, 96, 96))


# ---- a pristine model for the 64x64 toy faces ------------------------------------------------------
@pytest.fixture(scope="module")
def toy_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("toy_faces")
    for i in range(48):
        Image.fromarray(render_toy_face(0, i, 64)[0]).save(folder / f"{i:03d}.png")
    return folder


@pytest.fixture(scope="module")
def toy_params(toy_folder) -> NIQEParams:
    return fit_pristine_model(toy_folder, block_size=16)


def test_fit_on_toy_faces_is_finite_and_matches_tensor_input(toy_params):
    assert toy_params.block_size == 16
    assert toy_params.mu.shape == (36,) and toy_params.cov.shape == (36, 36)
    assert torch.isfinite(toy_params.mu).all() and torch.isfinite(toy_params.cov).all()
    torch.testing.assert_close(toy_params.cov, toy_params.cov.T)
    assert torch.linalg.eigvalsh(toy_params.cov).min() > 0
    from_tensors = fit_pristine_model([toy_faces(range(24)), toy_faces(range(24, 48))], block_size=16)
    torch.testing.assert_close(from_tensors.mu, toy_params.mu)
    torch.testing.assert_close(from_tensors.cov, toy_params.cov)


def test_fitted_model_prefers_clean_toy_faces(toy_params):
    clean = toy_faces(range(100, 116))  # not among the fitted faces
    noisy = (clean + 0.3 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))).clamp(-1, 1)
    blurred = gaussian_blur(clean, 1.5)
    metric = NIQE(params=toy_params)
    scores = {name: metric.per_image(x) for name, x in [("clean", clean), ("noisy", noisy), ("blurred", blurred)]}
    assert all(torch.isfinite(s).all() for s in scores.values())
    assert scores["clean"].mean() < scores["noisy"].mean() - 3
    assert scores["clean"].mean() < scores["blurred"].mean() - 1
    assert (scores["clean"] < scores["noisy"]).all()


def test_fitted_model_save_load_round_trip(toy_params, toy_folder, tmp_path):
    path = tmp_path / "niqe16.npz"
    toy_params.save(path)
    with np.load(path) as data:
        assert set(data.files) == {"mu_pris_param", "cov_pris_param", "gaussian_window", "block_size"}
        assert data["mu_pris_param"].shape == (1, 36) and int(data["block_size"]) == 16
    loaded = NIQEParams.load(path)
    assert loaded.block_size == 16
    for a, b in [(loaded.mu, toy_params.mu), (loaded.cov, toy_params.cov), (loaded.window, toy_params.window)]:
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    faces = toy_faces(range(200, 204))
    from_file = NIQE(params=path)
    assert from_file.block_size == 16
    torch.testing.assert_close(from_file.per_image(faces), NIQE(params=toy_params).per_image(faces))
    # the command line writes the same model
    main([str(toy_folder), str(tmp_path / "cli.npz"), "--block-size", "16"])
    torch.testing.assert_close(NIQEParams.load(tmp_path / "cli.npz").cov, toy_params.cov, rtol=0, atol=0)


@pytest.mark.gpu
def test_cuda_matches_cpu():
    """Textured images to 1e-3; toy faces (large flat areas) only to 0.1: their NIQE hangs on float32
    rounding in flat areas, which cuBLAS does not round as the CPU does."""
    entries = [e for e in REFERENCE["entries"] if e["crop_border"] == 0 and e["convert_to"] == "y"]
    metric = NIQE().to("cuda")
    for entry in entries:
        value = metric.per_image(load_png(FIXTURES / entry["file"]).cuda()).item()
        tolerance = 0.1 if "toyface" in entry["file"] else 1e-3
        assert value == pytest.approx(entry["niqe"], abs=tolerance), entry["file"]
