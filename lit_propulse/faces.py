"""Faces in photos: MTCNN detection and FFHQ-style alignment, the front end of ``upsample`` / ``edit``.

Pro-PULSE (and PULSE) super-resolve *aligned* faces: the LR inputs of the papers are CelebA-HQ / FFHQ
crops downscaled with DS. A photo therefore goes through

1. :class:`FaceDetector` — MTCNN (Zhang et al. 2016) from facenet-pytorch, whose P/R/O-Net weights
   ship inside the wheel (``facenet_pytorch/data/*.pt``; nothing is downloaded). It gives each face's
   box, probability and 5 landmarks: the eye centres and the mouth corners (+ the nose tip).
2. :func:`select_faces` — keep detections above a probability, all of them or only the largest.
3. :func:`align_face` — the FFHQ recipe (Karras et al. 2019, ``ffhq-dataset``'s alignment step)
   written from its description, as a pure function of the 5 landmarks (:func:`ffhq_quad`):

       eye_avg = (eye_left + eye_right) / 2            eye_to_eye   = eye_right - eye_left
       mouth_avg = (mouth_left + mouth_right) / 2      eye_to_mouth = mouth_avg - eye_avg
       x = eye_to_eye - rot90(eye_to_mouth)            (rot90(v) = (-v_y, v_x): the mouth direction
                                                        turned to point along the eye line)
       x = x / |x| * max(2 |eye_to_eye|, 1.8 |eye_to_mouth|)
       y = rot90(x)                                    (x turned 90° to point from the eyes down)
       c = eye_avg + 0.1 eye_to_mouth
       quad = c - x - y, c - x + y, c + x + y, c + x - y   (top-left, bottom-left, bottom-right, top-right)

   and the oriented square ``quad`` (side ``2|x|``) is resampled to ``size × size``. FFHQ takes the
   eye centres and mouth corners from dlib's 68 points (means of the eye contours, points 48/54);
   MTCNN gives them directly. Resampling: when the quad is much larger than the output the image is
   first shrunk by an integer factor (as FFHQ does) with the project's antialiased bicubic
   :func:`~lit_propulse.core.downscale.downscale`; the quad is then sampled bilinearly on a grid about one
   source pixel apart (``size·k``) and reduced to ``size`` with the same ``downscale``, so the crop
   is antialiased at any scale. Outside the photo the crop is filled by reflection (FFHQ pads by
   reflection too, then blurs and fades the padding; that fade is not reproduced);
   :attr:`AlignedFace.outside` says how much of the crop that is.

4. :func:`paste_faces` — the way back (``upsample --paste-back``): each restored crop is warped into
   the photo by the inverse of the alignment (:func:`warp_face_back`: every output pixel mapped into
   the crop with :func:`source_to_crop` and sampled with ``grid_sample``) and blended in through a
   feathered mask (:func:`feather_mask`: an eroded square with smoothstep edges, evaluated exactly at
   the warped positions); its colour statistics are matched to the photo's face at the LR size
   (:func:`match_colour`); the photo around it is enlarged by :func:`paste_scale` with a plain
   bicubic filter (:func:`resize_background`) or any ``background_upsampler`` callable.

Coordinates are pixels with pixel centres at integers (x = column, y = row): what MTCNN returns.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_propulse.core.downscale import downscale

#: the 5 landmarks, in MTCNN's order; left / right are the image's (eye_left = the subject's right eye)
LANDMARK_NAMES: tuple[str, ...] = ("eye_left", "eye_right", "nose", "mouth_left", "mouth_right")

FaceSelection = Literal["all", "largest"]


@dataclass
class Face:
    """One detection. box: [4] (x0, y0, x1, y1) pixels, may extend past the image; prob: MTCNN's
    O-Net face probability; landmarks: [5, 2] (x, y) pixels in :data:`LANDMARK_NAMES` order.
    Small CPU float32 tensors whatever device the detector ran on."""

    box: Tensor
    prob: float
    landmarks: Tensor

    @property
    def area(self) -> float:
        w, h = float(self.box[2] - self.box[0]), float(self.box[3] - self.box[1])
        return max(w, 0.0) * max(h, 0.0)

    def as_dict(self) -> dict:
        return {
            "box": [round(float(v), 2) for v in self.box],
            "prob": round(self.prob, 5),
            "landmarks": {n: [round(float(v), 2) for v in p] for n, p in zip(LANDMARK_NAMES, self.landmarks)},
        }


class FaceDetector(nn.Module):
    """MTCNN (facenet-pytorch 2.5.3) with the weights packaged in its wheel.

    Args:
        min_face_size: smallest face side MTCNN looks for, in pixels (its image pyramid starts there; 20).
        thresholds: P-Net, R-Net, O-Net score thresholds of MTCNN's cascade ((0.6, 0.7, 0.7), its
            defaults); :func:`select_faces` applies the final ``min_prob`` on top.
        device: where the networks run; None = the device of each input image (the networks move
            there on the first call and when it changes).
    """

    def __init__(
        self,
        min_face_size: int = 20,
        thresholds: Sequence[float] = (0.6, 0.7, 0.7),
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        from facenet_pytorch import MTCNN  # its P/R/O-Net weights are files of the installed package

        if int(min_face_size) < 12:
            raise ValueError(f"min_face_size must be >= 12 (MTCNN's 12-pixel P-Net window), got {min_face_size}")
        if len(thresholds) != 3 or not all(0.0 <= t <= 1.0 for t in thresholds):
            raise ValueError(f"thresholds must be three probabilities (P-, R-, O-Net), got {list(thresholds)}")
        self.min_face_size = int(min_face_size)
        self.fixed_device = torch.device(device) if device is not None else None
        self.mtcnn = MTCNN(keep_all=True, min_face_size=self.min_face_size, thresholds=[float(t) for t in thresholds], select_largest=True, post_process=False)
        self.requires_grad_(False).eval()
        if self.fixed_device is not None:
            self._move(self.fixed_device)

    def _move(self, device: torch.device) -> None:
        self.mtcnn.to(device)
        self.mtcnn.device = device  # MTCNN puts its inputs and intermediate tensors there

    @torch.no_grad()
    def forward(self, image: Tensor) -> list[Face]:
        """image [3, H, W] in [-1, 1] -> every face MTCNN finds, largest (box area) first."""
        if image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"expected one RGB image [3, H, W] in [-1, 1], got {tuple(image.shape)}")
        device = self.fixed_device or image.device
        if self.mtcnn.device != device or next(self.mtcnn.parameters()).device != device:
            self._move(device)
        if min(image.shape[-2:]) < self.min_face_size:
            return []  # MTCNN's pyramid would be empty
        hwc = ((image.to(device, torch.float32).clamp(-1, 1) + 1) * 127.5).permute(1, 2, 0)  # [H, W, 3] in 0..255
        boxes, probs, points = self.mtcnn.detect(hwc, landmarks=True)
        if boxes is None:
            return []
        faces = [Face(torch.as_tensor(b.astype("float32")), float(p), torch.as_tensor(lm.astype("float32"))) for b, p, lm in zip(boxes, probs, points)]
        return sorted(faces, key=lambda f: f.area, reverse=True)


def select_faces(faces: Sequence[Face], mode: FaceSelection = "all", min_prob: float = 0.9) -> list[Face]:
    """Detections with ``prob >= min_prob``, largest first: all of them, or only the largest."""
    if mode not in ("all", "largest"):
        raise ValueError(f"mode must be 'all' or 'largest', got {mode!r}")
    if not 0.0 <= min_prob <= 1.0:
        raise ValueError(f"min_prob must be in [0, 1], got {min_prob}")
    kept = sorted((f for f in faces if f.prob >= min_prob), key=lambda f: f.area, reverse=True)
    return kept[:1] if mode == "largest" else kept


# ----------------------------------------------------------------------------------------------
# Alignment.


def _rot90(v: Tensor) -> Tensor:
    """(v_x, v_y) -> (-v_y, v_x): 90° clockwise on screen (y down). FFHQ's ``flipud(v) * [-1, 1]``."""
    return torch.stack([-v[..., 1], v[..., 0]], dim=-1)


def ffhq_quad(landmarks: Tensor) -> Tensor:
    """The FFHQ crop of a face: landmarks [5, 2] (:data:`LANDMARK_NAMES`) -> quad [4, 2] (float64),
    corners top-left, bottom-left, bottom-right, top-right in source pixels. See the module docstring."""
    lm = torch.as_tensor(landmarks, dtype=torch.float64).cpu()
    if lm.shape != (5, 2) or not bool(torch.isfinite(lm).all()):
        raise ValueError(f"expected 5 finite (x, y) landmarks [5, 2] in order {LANDMARK_NAMES}, got shape {tuple(lm.shape)}")
    eye_left, eye_right, _, mouth_left, mouth_right = lm
    eye_avg = (eye_left + eye_right) / 2
    eye_to_eye = eye_right - eye_left
    eye_to_mouth = (mouth_left + mouth_right) / 2 - eye_avg
    x = eye_to_eye - _rot90(eye_to_mouth)
    scale = max(2.0 * float(eye_to_eye.norm()), 1.8 * float(eye_to_mouth.norm()))
    if float(x.norm()) < 1e-6 or scale < 1e-6:
        raise ValueError(f"degenerate landmarks (eyes and mouth coincide): {lm.tolist()}")
    x = x / x.norm() * scale
    y = _rot90(x)
    c = eye_avg + 0.1 * eye_to_mouth
    return torch.stack([c - x - y, c - x + y, c + x + y, c + x - y])  # [4, 2]


def _check_quad(quad: Tensor) -> Tensor:
    q = torch.as_tensor(quad, dtype=torch.float64).cpu()
    if q.shape != (4, 2):
        raise ValueError(f"expected a quad [4, 2] (top-left, bottom-left, bottom-right, top-right), got {tuple(q.shape)}")
    return q


def source_to_crop(points: Tensor, quad: Tensor, size: int) -> Tensor:
    """Where source-pixel points [..., 2] land in the ``size``-pixel crop of ``quad`` (float64)."""
    q = _check_quad(quad)
    tl, bl, tr = q[0], q[1], q[3]
    basis = torch.stack([tr - tl, bl - tl], dim=1)  # columns: u axis, v axis (source pixels per unit)
    uv = (torch.as_tensor(points, dtype=torch.float64).cpu() - tl) @ torch.linalg.inv(basis).T  # [..., 2] in [0, 1]
    return uv * size - 0.5


def crop_to_source(points: Tensor, quad: Tensor, size: int) -> Tensor:
    """Inverse of :func:`source_to_crop`: crop pixels [..., 2] -> source pixels (float64)."""
    q = _check_quad(quad)
    tl, bl, tr = q[0], q[1], q[3]
    uv = (torch.as_tensor(points, dtype=torch.float64).cpu() + 0.5) / size
    return tl + uv[..., :1] * (tr - tl) + uv[..., 1:] * (bl - tl)


@dataclass
class AlignedFace:
    """image: [C, size, size] crop; quad: [4, 2] its corners in the source (see :func:`ffhq_quad`);
    source_px: the quad's side in source pixels (how much detail the photo really holds);
    outside: fraction of the crop that lay outside the photo (filled by reflection)."""

    image: Tensor
    quad: Tensor
    source_px: float
    outside: float


def crop_quad(image: Tensor, quad: Tensor, size: int) -> AlignedFace:
    """Resample the oriented square ``quad`` of ``image`` [C, H, W] to [C, size, size] (antialiased;
    see the module docstring). Runs on the image's device."""
    if image.ndim != 3:
        raise ValueError(f"expected one image [C, H, W], got {tuple(image.shape)}")
    if int(size) < 1:
        raise ValueError(f"size must be positive, got {size}")
    size = int(size)
    q = _check_quad(quad)
    side = float((q[3] - q[0]).norm())
    if side <= 0 or abs(float((q[1] - q[0]).norm()) - side) > 1e-6 * max(side, 1.0):
        raise ValueError(f"quad must be a non-empty square, got {q.tolist()}")
    src = image if image.dtype in (torch.float32, torch.float64) else image.float()
    h, w = src.shape[-2:]
    # FFHQ's shrink: bring a large face near 2-4 source pixels per output pixel first
    shrink = int(math.floor(side / size * 0.5))
    qs = q
    if shrink >= 2:
        nh, nw = max(1, round(h / shrink)), max(1, round(w / shrink))
        src = downscale(src[None], (nh, nw))[0]
        sx, sy = nw / w, nh / h
        qs = torch.stack([(q[:, 0] + 0.5) * sx - 0.5, (q[:, 1] + 0.5) * sy - 0.5], dim=1)
        h, w = nh, nw
    k = max(1, math.ceil(float((qs[3] - qs[0]).norm()) / size))  # supersampling: ~1 source pixel per sample
    n = size * k
    t = (torch.arange(n, dtype=torch.float64) + 0.5) / n  # [n] sample positions in quad units
    tl, bl, tr = qs[0], qs[1], qs[3]
    pts = tl + t[None, :, None] * (tr - tl) + t[:, None, None] * (bl - tl)  # [n(v), n(u), 2] source pixels
    outside = ((pts[..., 0] < -0.5) | (pts[..., 0] > w - 0.5) | (pts[..., 1] < -0.5) | (pts[..., 1] > h - 0.5)).double().mean()
    grid = torch.stack([(2 * pts[..., 0] + 1) / w - 1, (2 * pts[..., 1] + 1) / h - 1], dim=-1)  # align_corners=False
    grid = grid.to(src.device, src.dtype)[None]  # [1, n, n, 2]
    out = F.grid_sample(src[None], grid, mode="bilinear", padding_mode="reflection", align_corners=False)  # [1, C, n, n]
    out = downscale(out, size)[0]  # [C, size, size]
    return AlignedFace(out.to(image.dtype) if image.dtype.is_floating_point else out, q.float(), side, float(outside))


def align_face(image: Tensor, landmarks: Tensor, size: int) -> AlignedFace:
    """FFHQ-aligned ``size × size`` crop of the face with these 5 landmarks (:func:`ffhq_quad`)."""
    return crop_quad(image, ffhq_quad(landmarks), size)


def ffhq_template(size: int, eye_to_mouth_over_eye_to_eye: float = 1.0) -> Tensor:
    """Where the FFHQ crop puts the eye centres and the mouth centre of an upright face whose
    eye-to-mouth distance is ``ratio`` times its eye-to-eye distance: [3, 2] (eye_left, eye_right,
    mouth_avg) in crop pixels. The eyes are level and symmetric about the centre column; the scale is
    set by ``max(2·eye_to_eye, 1.8·eye_to_mouth)``, so the template depends only on that ratio."""
    e, m = 1.0, float(eye_to_mouth_over_eye_to_eye)
    lm = torch.tensor([[-e / 2, 0.0], [e / 2, 0.0], [0.0, m / 2], [-e / 2, m], [e / 2, m]], dtype=torch.float64)
    quad = ffhq_quad(lm)
    pts = torch.stack([lm[0], lm[1], (lm[3] + lm[4]) / 2])
    return source_to_crop(pts, quad, size)


# ----------------------------------------------------------------------------------------------
# Paste-back: restored crops warped back into the photo (the inverse of the alignment).

MaskShape = Literal["square", "ellipse"]
ColourMode = Literal["match", "none"]
#: ``(photo [C, H, W] in [-1, 1], (height, width)) -> [C, height, width]``: what enlarges the photo
#: around the pasted faces (e.g. a Real-ESRGAN wrapper); None = :func:`resize_background`.
BackgroundUpsampler = Callable[[Tensor, tuple[int, int]], Tensor]


def quad_side(quad: Tensor) -> float:
    """Side of a crop quad in source pixels (:attr:`AlignedFace.source_px`)."""
    q = _check_quad(quad)
    return float((q[3] - q[0]).norm())


def paste_scale(photo_hw: tuple[int, int], quads: Sequence[Tensor], crop_size: int, max_scale: float = 4.0, max_side: int = 4096) -> float:
    """How much the photo is enlarged when its restored faces are pasted back.

    The ratio of the HR crop to the largest face's quad in the photo (``crop_size / side``), so that
    face keeps the generator's full detail; capped at ``max_scale`` and at a long side of
    ``max_side`` pixels, and never below 1 (the photo is never shrunk; faces larger in the photo
    than the crop are pasted at the photo's resolution). No faces: 1.

    Args:
        photo_hw: the photo's (height, width).
        quads: each pasted face's crop quad [4, 2] in photo pixels.
        crop_size: the HR crop's side (the generator's size).
        max_scale: the largest enlargement; 1 = keep the photo's size.
        max_side: the largest long side of the result, in pixels.
    """
    if max_scale < 1:
        raise ValueError(f"max_scale must be >= 1 (1 = keep the photo's size), got {max_scale}")
    if not quads:
        return 1.0
    largest = max(quad_side(q) for q in quads)
    return max(1.0, min(crop_size / largest, float(max_scale), max_side / max(photo_hw)))


def canvas_size(photo_hw: tuple[int, int], scale: float) -> tuple[int, int]:
    """(height, width) of the photo enlarged by ``scale`` (rounded to whole pixels)."""
    return max(1, round(photo_hw[0] * scale)), max(1, round(photo_hw[1] * scale))


def resize_background(photo: Tensor, size: tuple[int, int]) -> Tensor:
    """The plain background filter: bicubic (antialiased when shrinking) from [C, H, W] to
    [C, *size], clamped to [-1, 1]; the photo itself when the size is unchanged."""
    h, w = photo.shape[-2:]
    if (h, w) == tuple(size):
        return photo
    if size[0] <= h and size[1] <= w:
        return downscale(photo[None], tuple(size))[0]
    out = F.interpolate(photo[None].float(), size=tuple(size), mode="bicubic", align_corners=False)[0]
    return out.clamp(-1, 1).to(photo.dtype)


def _smoothstep(t: Tensor) -> Tensor:
    t = t.clamp(0, 1)
    return t * t * (3 - 2 * t)


def feather_mask(points: Tensor, size: int, erode: float = 0.05, feather: float = 0.1, shape: MaskShape = "square") -> Tensor:
    """The soft paste mask at crop-pixel positions ``points`` [..., 2] (x, y) of a ``size`` crop -> [...] in [0, 1].

    ``d`` is the distance to the crop's edge as a fraction of its side (``square``: to the nearest
    border; ``ellipse``: to the inscribed circle), 0 on the edge, 0.5 at the centre. The mask is 0
    for ``d <= erode``, 1 for ``d >= erode + feather`` and a smoothstep between: an eroded square
    (or disc) with blurred edges, evaluated exactly at any position, so warping it back to the
    photo is just evaluating it at the warped coordinates. Outside the crop it is 0.

    Args:
        erode: the band along the edge kept out, fraction of the crop side (its reflection padding
            and the generator's least reliable pixels).
        feather: the width of the soft ramp, fraction of the crop side; 0 = a hard edge.
        shape: "square" (the whole FFHQ crop, hair included) or "ellipse" (the central disc).
    """
    if not (0 <= erode and 0 <= feather and erode + feather < 0.5):
        raise ValueError(f"erode and feather must be >= 0 with erode + feather < 0.5, got {erode}, {feather}")
    t = (points + 0.5) / size  # [..., 2] in [0, 1] across the crop
    if shape == "square":
        d = torch.minimum(t.amin(-1), (1 - t).amin(-1))
    elif shape == "ellipse":
        d = 0.5 - (t - 0.5).norm(dim=-1)
    else:
        raise ValueError(f"shape must be 'square' or 'ellipse', got {shape!r}")
    if feather == 0:
        return (d > erode).to(points.dtype)
    return _smoothstep((d - erode) / feather)


def crop_mask(size: int, erode: float = 0.05, feather: float = 0.1, shape: MaskShape = "square") -> Tensor:
    """:func:`feather_mask` on the crop's own pixel grid: [size, size]."""
    c = torch.arange(size, dtype=torch.float32)
    pts = torch.stack(torch.meshgrid(c, c, indexing="xy"), dim=-1)  # [size(y), size(x), 2] (x, y)
    return feather_mask(pts, size, erode, feather, shape)


def match_colour(image: Tensor, reference: Tensor, weight: Tensor | None = None, at_size: int | None = None) -> Tensor:
    """Per-channel mean and standard deviation of ``image`` [C, S, S] matched to ``reference`` [C, S, S]
    (Reinhard-style colour transfer), measured where ``weight`` [S, S] is large.

    ``at_size``: measure both at this side after DS (the LR size: there the restored face and the
    photo's face hold the same band of detail, so a restoration that is LR-consistent is left almost
    unchanged and its extra detail does not count as contrast to remove); None = at full size. The
    per-channel gain is clamped to [1/4, 4] so a nearly flat restoration is not blown up.
    """
    if image.shape != reference.shape or image.ndim != 3:
        raise ValueError(f"expected two images [C, S, S] of one shape, got {tuple(image.shape)} and {tuple(reference.shape)}")
    w = torch.ones(image.shape[-2:], device=image.device) if weight is None else weight.to(image.device, torch.float32)
    a, b = image.float()[None], reference.float()[None]
    if at_size is not None:
        a, b, w = downscale(a, at_size), downscale(b, at_size), downscale(w[None, None], at_size)[0, 0]
    w = w.clamp_min(0)
    w = w / w.sum().clamp_min(1e-8)

    def stats(x: Tensor) -> tuple[Tensor, Tensor]:
        mean = (x[0] * w).sum((-2, -1))  # [C]
        var = (((x[0] - mean[:, None, None]) ** 2) * w).sum((-2, -1))
        return mean, var.sqrt()

    (ma, sa), (mb, sb) = stats(a), stats(b)
    gain = (sb / sa.clamp_min(1e-6)).clamp(0.25, 4.0)
    out = (image.float() - ma[:, None, None]) * gain[:, None, None] + mb[:, None, None]
    return out.clamp(-1, 1).to(image.dtype)


def _crop_affine(quad_canvas: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """(A [2, 2], b [2]) with crop_px = A @ canvas_px + b (:func:`source_to_crop` as one affine map)."""
    q = _check_quad(quad_canvas)
    tl, bl, tr = q[0], q[1], q[3]
    inv = torch.linalg.inv(torch.stack([tr - tl, bl - tl], dim=1))  # canvas px -> quad units
    a = inv * size
    return a, -a @ tl - 0.5


@dataclass
class WarpedFace:
    """One restored crop warped into the canvas: its window ``[top:top+h, left:left+w]``,
    ``image`` [C, h, w] and ``mask`` [h, w] (the feathered mask, 0 where the crop does not reach)."""

    top: int
    left: int
    image: Tensor
    mask: Tensor


def warp_face_back(
    face: Tensor,
    quad: Tensor,
    photo_hw: tuple[int, int],
    canvas_hw: tuple[int, int],
    erode: float = 0.05,
    feather: float = 0.1,
    shape: MaskShape = "square",
) -> WarpedFace | None:
    """The inverse of :func:`crop_quad`: the crop ``face`` [C, S, S] of ``quad`` (photo pixels)
    resampled onto a canvas of ``canvas_hw`` covering the photo (``photo_hw``) at its scale.

    Each canvas pixel is mapped to the photo (pixel centres kept: ``x = (X + 0.5) / s - 0.5``), then
    into the crop (:func:`source_to_crop`), and the crop is sampled there bicubically
    (``grid_sample``); when the crop is finer than the canvas it is first shrunk with DS, so the
    paste is antialiased. Only the quad's bounding box is computed. None when it misses the canvas.
    """
    if face.ndim != 3 or face.shape[-1] != face.shape[-2]:
        raise ValueError(f"expected one square crop [C, S, S], got {tuple(face.shape)}")
    (ph, pw), (ch, cw) = photo_hw, canvas_hw
    sx, sy = cw / pw, ch / ph
    q = _check_quad(quad)
    qc = torch.stack([(q[:, 0] + 0.5) * sx - 0.5, (q[:, 1] + 0.5) * sy - 0.5], dim=1)  # [4, 2] canvas px
    x0, y0 = max(0, math.floor(float(qc[:, 0].min()))), max(0, math.floor(float(qc[:, 1].min())))
    x1, y1 = min(cw, math.ceil(float(qc[:, 0].max())) + 1), min(ch, math.ceil(float(qc[:, 1].max())) + 1)
    if x1 <= x0 or y1 <= y0:
        return None
    size = face.shape[-1]
    on_canvas = min(float((qc[3] - qc[0]).norm()), float((qc[1] - qc[0]).norm()))  # the crop's side in canvas px
    src = face.float()[None]
    if on_canvas < size:  # the crop is finer than the canvas: antialias with DS first
        size = max(1, math.ceil(on_canvas))
        src = downscale(src, size)
    a, b = _crop_affine(qc, size)
    ys = torch.arange(y0, y1, dtype=torch.float64)
    xs = torch.arange(x0, x1, dtype=torch.float64)
    pts = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)  # [h, w, 2] (x, y) canvas px
    uv = pts @ a.T + b  # [h, w, 2] crop px
    mask = feather_mask(uv, size, erode, feather, shape).to(face.device, torch.float32)  # [h, w]
    grid = ((2 * uv + 1) / size - 1).to(face.device, torch.float32)[None]  # [1, h, w, 2], align_corners=False
    img = F.grid_sample(src, grid, mode="bicubic", padding_mode="border", align_corners=False)[0].clamp(-1, 1)  # [C, h, w]
    return WarpedFace(y0, x0, img.to(face.dtype), mask)


@dataclass
class PastedPhoto:
    """The photo with its faces pasted back. image: [C, h, w]; mask: [h, w] in [0, 1], how much of
    each pixel comes from a restored face (0 = the resized photo); scale: the enlargement asked
    (the size is rounded to whole pixels)."""

    image: Tensor
    mask: Tensor
    scale: float


def paste_faces(
    photo: Tensor,
    faces: Sequence[Tensor],
    quads: Sequence[Tensor],
    scale: float = 1.0,
    references: Sequence[Tensor] | None = None,
    colour: ColourMode = "match",
    colour_size: int | None = None,
    erode: float = 0.05,
    feather: float = 0.1,
    shape: MaskShape = "square",
    background_upsampler: BackgroundUpsampler | None = None,
) -> PastedPhoto:
    """Paste restored face crops back into their photo (GFPGAN / facexlib's ``paste_faces_to_input_image``
    recipe, written from its description): the photo is enlarged by ``scale`` (``background_upsampler``,
    default :func:`resize_background`), every crop is warped back with :func:`warp_face_back` and blended
    in through its feathered mask, the first face last (on top: pass the largest first).

    Args:
        photo: [C, H, W] in [-1, 1].
        faces: the restored crops, [C, S, S] each.
        quads: their crop quads [4, 2] in photo pixels (:attr:`AlignedFace.quad`).
        scale: the enlargement of the photo (:func:`paste_scale`); 1 = its own size.
        references: the aligned crops of the photo the faces were made from ([C, S, S] each); needed
            by ``colour="match"``.
        colour: "match" = each face's colour statistics matched to its reference inside the mask
            (:func:`match_colour`); "none" = the generator's output as it is.
        colour_size: where the colours are measured (:func:`match_colour`'s ``at_size``; the LR size);
            None = at full size.
        erode, feather, shape: the mask (:func:`feather_mask`).
        background_upsampler: what enlarges the photo; None = :func:`resize_background` (bicubic).
    """
    if photo.ndim != 3:
        raise ValueError(f"expected one photo [C, H, W], got {tuple(photo.shape)}")
    if len(faces) != len(quads):
        raise ValueError(f"{len(faces)} faces but {len(quads)} quads")
    if colour not in ("match", "none"):
        raise ValueError(f"colour must be 'match' or 'none', got {colour!r}")
    if colour == "match" and (references is None or len(references) != len(faces)):
        raise ValueError("colour='match' needs one reference crop per face (references=...)")
    if scale <= 0:
        raise ValueError(f"scale must be positive, got {scale}")
    photo_hw = tuple(photo.shape[-2:])
    size = canvas_size(photo_hw, scale)
    resize = background_upsampler or resize_background
    canvas = resize(photo, size)
    if tuple(canvas.shape) != (photo.shape[0], *size):
        raise ValueError(f"the background upsampler returned {tuple(canvas.shape)}, expected {(photo.shape[0], *size)}")
    canvas = canvas.to(photo.device, torch.float32).clone()
    union = torch.zeros(size, device=photo.device)
    for k in reversed(range(len(faces))):
        face = faces[k].to(photo.device)
        if colour == "match":
            weight = crop_mask(face.shape[-1], erode, feather, shape)
            face = match_colour(face, references[k].to(photo.device), weight, colour_size)
        warped = warp_face_back(face, quads[k], photo_hw, size, erode, feather, shape)
        if warped is None:
            continue
        h, w = warped.mask.shape
        win = (slice(None), slice(warped.top, warped.top + h), slice(warped.left, warped.left + w))
        m = warped.mask[None]
        canvas[win] = m * warped.image.float() + (1 - m) * canvas[win]
        union[win[1:]] = torch.maximum(union[win[1:]], warped.mask)
    return PastedPhoto(canvas.to(photo.dtype), union, float(scale))
