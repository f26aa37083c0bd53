"""Reference NIQE values from basicsr's own ``calculate_niqe``, for ``tests/test_niqe.py``.

Writes deterministic test images to ``tests/fixtures/niqe/*.png`` (8-bit RGB) and basicsr's NIQE of
each to ``tests/fixtures/niqe_reference.json``; the test then needs neither basicsr nor this script.
The images: smooth random textures, 1/f ("pink") noise, dead-leaves images (occluding discs with
power-law radii, a classic model of natural-image statistics), some of them degraded (noise, blur,
JPEG), and toy faces rendered at 192x192 (``datamodules.toy_faces.render_toy_face``); one image is
200x296, which is not a whole number of 96x96 blocks.

basicsr is not installed (it pulls heavy dependencies): its four modules that NIQE uses are loaded from
an unpacked sdist by file path, under stub packages. It needs OpenCV for ``import cv2``, kept out of the
project's dependencies::

    pip download --no-deps --no-binary :all: --no-build-isolation basicsr==1.4.2 -d /tmp/basicsr
    tar xzf /tmp/basicsr/basicsr-1.4.2.tar.gz -C /tmp/basicsr
    pip install --no-deps --target /tmp/niqe_ref_deps opencv-python-headless
    python benchmarks/niqe_reference.py --basicsr /tmp/basicsr/basicsr-1.4.2 --extra-path /tmp/niqe_ref_deps

The exact call, per image read as RGB uint8 and flipped to BGR (basicsr's order)::

    calculate_niqe(bgr, crop_border=entry["crop_border"], input_order="HWC", convert_to=entry["convert_to"])

It uses basicsr's packaged ``niqe_pris_params.npz``, which must equal the project's copy (checked).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import io
import json
import sys
import types
import warnings
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from datamodules.toy_faces import render_toy_face  # noqa: E402

FIXTURES = REPO / "tests" / "fixtures"
IMAGE_DIR = FIXTURES / "niqe"
REFERENCE = FIXTURES / "niqe_reference.json"
PROJECT_PARAMS = REPO / "lit_propulse" / "data" / "niqe_pris_params.npz"


# ---- image recipes (seeded numpy; each returns [H, W, 3] uint8 RGB) ----------------------------------
def _to_uint8(x: np.ndarray, low: float = 1.0, high: float = 99.0) -> np.ndarray:
    """Stretch percentiles ``low``..``high`` of ``x`` to 0..255."""
    lo, hi = np.percentile(x, [low, high])
    return np.clip((x - lo) / (hi - lo) * 255, 0, 255).round().astype(np.uint8)


def smooth_texture(seed: int, h: int, w: int) -> np.ndarray:
    """Gaussian-filtered white noise at three scales, each channel its own mix."""
    rng = np.random.default_rng(seed)
    layers = [gaussian_filter(rng.standard_normal((h, w, 3)), (s, s, 0), mode="wrap") * s for s in (1.0, 3.0, 8.0)]
    return _to_uint8(sum(layers))


def pink_noise(seed: int, h: int, w: int) -> np.ndarray:
    """1/f amplitude spectrum (natural images' power law), a shared luminance plus weaker colour."""
    rng = np.random.default_rng(seed)
    fy, fx = np.fft.fftfreq(h)[:, None], np.fft.fftfreq(w)[None, :]
    amplitude = 1.0 / np.maximum(np.hypot(fy, fx), 1.0 / max(h, w))

    def field() -> np.ndarray:
        return np.real(np.fft.ifft2(np.fft.fft2(rng.standard_normal((h, w))) * amplitude))

    luma = field()
    return _to_uint8(np.stack([luma + 0.3 * field() for _ in range(3)], -1))


def dead_leaves(seed: int, h: int, w: int, discs: int = 800) -> np.ndarray:
    """Occluding shaded discs with radii of density r^-3 in [2, 64], light sensor noise, antialiased."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.full((h, w, 3), 128.0)
    r_min, r_max = 2.0, 64.0
    for _ in range(discs):
        u = rng.random()
        r = (r_min**-2 - u * (r_min**-2 - r_max**-2)) ** -0.5  # inverse CDF of density r^-3
        cy, cx = rng.uniform(-r, h + r), rng.uniform(-r, w + r)
        inside = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        colour = rng.uniform(20, 235, 3)
        slope = rng.normal(0, 0.6, 2)
        shade = slope[0] * (yy - cy) + slope[1] * (xx - cx)
        img[inside] = colour + shade[inside][:, None]
    img = gaussian_filter(img, (0.7, 0.7, 0)) + rng.normal(0, 2.0, img.shape)
    return np.clip(img, 0, 255).round().astype(np.uint8)


def add_noise(img: np.ndarray, seed: int, std: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(img + rng.normal(0, std, img.shape), 0, 255).round().astype(np.uint8)


def blur(img: np.ndarray, sigma: float) -> np.ndarray:
    return np.clip(gaussian_filter(img.astype(np.float64), (sigma, sigma, 0)), 0, 255).round().astype(np.uint8)


def jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(buf).convert("RGB"))


def toy_face(seed: int, index: int, size: int) -> np.ndarray:
    return render_toy_face(seed, index, size)[0]


# name -> (recipe description, builder); every builder is deterministic
IMAGES = {
    "texture_s0": ("smooth_texture(seed=0, 192, 192)", lambda: smooth_texture(0, 192, 192)),
    "pink_s1": ("pink_noise(seed=1, 192, 192)", lambda: pink_noise(1, 192, 192)),
    "pink_s2_noise15": ("add_noise(pink_noise(seed=2, 192, 192), seed=2, std=15)", lambda: add_noise(pink_noise(2, 192, 192), 2, 15.0)),
    "leaves_s3": ("dead_leaves(seed=3, 192, 192)", lambda: dead_leaves(3, 192, 192)),
    "leaves_s3_blur2": ("blur(dead_leaves(seed=3, 192, 192), sigma=2)", lambda: blur(dead_leaves(3, 192, 192), 2.0)),
    "leaves_s4_jpeg10": ("jpeg(dead_leaves(seed=4, 192, 192), quality=10)", lambda: jpeg(dead_leaves(4, 192, 192), 10)),
    "leaves_s5_200x296": ("dead_leaves(seed=5, 200, 296)", lambda: dead_leaves(5, 200, 296)),
    "toyface_0_0": ("render_toy_face(seed=0, index=0, size=192)", lambda: toy_face(0, 0, 192)),
    "toyface_0_1": ("render_toy_face(seed=0, index=1, size=192)", lambda: toy_face(0, 1, 192)),
    "toyface_1_7": ("render_toy_face(seed=1, index=7, size=192)", lambda: toy_face(1, 7, 192)),
}

# (image, crop_border, convert_to) scored by basicsr
CASES = [(name, 0, "y") for name in IMAGES] + [
    ("leaves_s5_200x296", 4, "y"),
    ("pink_s1", 0, "gray"),
    ("leaves_s5_200x296", 4, "gray"),
    ("toyface_0_1", 0, "gray"),
]


# ---- basicsr, loaded by file path ---------------------------------------------------------------------
def load_basicsr_niqe(root: Path) -> types.ModuleType:
    """``basicsr.metrics.niqe`` from an unpacked sdist, without running basicsr's package ``__init__``s."""
    for package in ("basicsr", "basicsr.utils", "basicsr.metrics"):
        stub = types.ModuleType(package)
        stub.__path__ = []
        sys.modules[package] = stub

    def load(name: str) -> types.ModuleType:
        spec = importlib.util.spec_from_file_location(name, root / (name.replace(".", "/") + ".py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return module

    sys.modules["basicsr.utils"].bgr2ycbcr = load("basicsr.utils.color_util").bgr2ycbcr
    load("basicsr.utils.matlab_functions")
    load("basicsr.utils.registry")
    load("basicsr.metrics.metric_util")
    return load("basicsr.metrics.niqe")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--basicsr", type=Path, required=True, help="unpacked basicsr sdist (holds basicsr/metrics/niqe.py)")
    parser.add_argument("--extra-path", action="append", default=[], help="folder put on sys.path first (e.g. where cv2 is)")
    args = parser.parse_args()
    sys.path[:0] = args.extra_path
    warnings.filterwarnings("ignore", category=DeprecationWarning)  # scipy.ndimage.filters, imported by basicsr

    basicsr_params = args.basicsr / "basicsr" / "metrics" / "niqe_pris_params.npz"
    if sha256(basicsr_params) != sha256(PROJECT_PARAMS):
        raise SystemExit(f"{basicsr_params} differs from {PROJECT_PARAMS}")
    basicsr_niqe = load_basicsr_niqe(args.basicsr)
    version = (args.basicsr / "PKG-INFO").read_text().split("Version: ")[1].split()[0] if (args.basicsr / "PKG-INFO").exists() else "?"

    IMAGE_DIR.mkdir(parents=True, exist_ok=True)
    recipes = {}
    for name, (recipe, build) in IMAGES.items():
        Image.fromarray(build()).save(IMAGE_DIR / f"{name}.png", optimize=True)
        recipes[name] = recipe

    entries = []
    for name, crop_border, convert_to in CASES:
        rgb = np.asarray(Image.open(IMAGE_DIR / f"{name}.png").convert("RGB"))
        bgr = np.ascontiguousarray(rgb[..., ::-1])
        value = float(basicsr_niqe.calculate_niqe(bgr, crop_border=crop_border, input_order="HWC", convert_to=convert_to))
        entries.append(
            {
                "file": f"niqe/{name}.png",
                "recipe": recipes[name],
                "height": rgb.shape[0],
                "width": rgb.shape[1],
                "crop_border": crop_border,
                "convert_to": convert_to,
                "niqe": value,
            }
        )
        print(f"{name:20s} crop {crop_border} {convert_to:4s} NIQE {value:.6f}")

    REFERENCE.write_text(
        json.dumps(
            {
                "source": f"basicsr {version} basicsr/metrics/niqe.py::calculate_niqe(bgr_uint8, crop_border, input_order='HWC', convert_to)",
                "pristine_params_sha256": sha256(PROJECT_PARAMS),
                "generator": "benchmarks/niqe_reference.py",
                "entries": entries,
            },
            indent=1,
        )
        + "\n"
    )
    print(f"wrote {REFERENCE} and {len(IMAGES)} images in {IMAGE_DIR}")


if __name__ == "__main__":
    main()
