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

Coordinates are pixels with pixel centres at integers (x = column, y = row): what MTCNN returns.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Sequence

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
        self.mtcnn = MTCNN(keep_all=True, min_face_size=self.min_face_size, thresholds=[float(t) for t in thresholds],
                           select_largest=True, post_process=False)
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
        faces = [
            Face(torch.as_tensor(b.astype("float32")), float(p), torch.as_tensor(lm.astype("float32")))
            for b, p, lm in zip(boxes, probs, points)
        ]
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
