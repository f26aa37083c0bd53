"""Toy faces: a procedural, labelled face domain for fast CPU experiments with PULSE / Pro-PULSE.

Each face is a deterministic function of ``(seed, index)``: the factors (:class:`ToyFaceFactors`) are
drawn from ``numpy.random.default_rng([seed, index])`` and the face is painted with vectorised
masks (ellipses, super-ellipses, segments, parabolic arcs) on a ``size·supersample`` canvas, then
box-averaged down to ``size × size`` uint8 RGB. Painting writes palette indices into a uint8 label
map restricted to each shape's bounding box, which keeps a 64² face at about 1 ms.

The factors mirror CelebA attributes where they correspond (``Eyeglasses``, ``Wearing_Hat``,
``Smiling``, ...), so attribute-conditioned metrics and thin-structure failure cases (1-px
eyeglass frames at 64²) can be studied without downloading a face data set. The geometry is in
canvas-relative units, so the same ``(seed, index)`` gives the same face at 64² and 256².

:class:`ToyFacesDataset` serves HR/LR pairs (LR = ``DS(HR)``, :mod:`lit_propulse.core.downscale`) with a
split fixed by render index; :class:`ToyFacesDataModule` wraps it in :class:`~datamodules.base.SRDataModule`.
"""

from __future__ import annotations

import colorsys
import dataclasses
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from datamodules.base import SRDataModule
from lit_propulse.core.downscale import downscale

log = logging.getLogger(__name__)

#: Bumped whenever the drawing changes, so on-disk caches of older renders are never reused.
TOY_FACES_VERSION = 1

#: Binary labels returned by :func:`toy_attributes`, in this order (CelebA names where they exist).
TOY_ATTRIBUTES: tuple[str, ...] = (
    "Bald",
    "Bangs",
    "Black_Hair",
    "Blond_Hair",
    "Brown_Hair",
    "Gray_Hair",
    "Long_Hair",
    "Eyeglasses",
    "Sunglasses",
    "Wearing_Hat",
    "Wearing_Earrings",
    "Smiling",
    "Mouth_Slightly_Open",
    "Mustache",
    "Rosy_Cheeks",
    "Wide_Face",
    "Pale_Skin",
    "Dark_Skin",
)

RGB = tuple[int, int, int]

# Skin tones from pale (0) to dark (5): tone 0 is ``Pale_Skin``, tones 4-5 are ``Dark_Skin``.
SKIN_TONES: tuple[RGB, ...] = (
    (250, 226, 208),
    (236, 196, 164),
    (206, 154, 114),
    (172, 120, 82),
    (128, 86, 56),
    (88, 58, 38),
)
SKIN_PROBS = (0.15, 0.30, 0.20, 0.15, 0.10, 0.10)
HAIR_COLORS: dict[str, RGB] = {
    "black": (28, 22, 22),
    "brown": (104, 62, 32),
    "blond": (228, 192, 112),
    "red": (176, 72, 34),
    "gray": (168, 168, 172),
}
HAIR_PROBS = (0.30, 0.30, 0.20, 0.10, 0.10)
HAIR_STYLES = ("short", "long", "bald")
HAT_STYLES = ("beanie", "brimmed")
EARRING_STYLES = ("stud", "hoop")
FRAME_COLORS: tuple[RGB, ...] = ((18, 18, 22), (70, 40, 22), (28, 36, 96), (150, 22, 34), (60, 60, 64))
EARRING_COLORS: tuple[RGB, ...] = ((236, 196, 60), (214, 216, 226), (250, 246, 236), (60, 200, 220))

# Geometry constants, in canvas units (the canvas is [0, 1]², y pointing down).
FRAME_WIDTH = 1.0 / 64.0  # eyeglass frame and temple thickness: one pixel at 64²
WIDE_FACE_ASPECT = 0.8  # sampled aspects are in [0.69, 0.76] (narrow) or [0.83, 0.90] (wide)


@dataclass(frozen=True)
class ToyFaceFactors:
    """Every random choice behind one toy face. Booleans are the labelled factors.

    Overriding a field (``render_toy_face(..., overrides={"eyeglasses": True})``) re-renders the same
    face with only that factor changed, because all fields are drawn unconditionally.
    """

    # scene
    background: RGB
    clothing: RGB
    light: tuple[float, float]  # relative brightness slope along x and y (global lighting)
    # face geometry
    cx: float  # face centre x
    cy: float  # face centre y
    face_ry: float  # face half-height
    face_aspect: float  # face half-width / half-height; >= WIDE_FACE_ASPECT is ``Wide_Face``
    skin_tone: int  # index into SKIN_TONES
    skin_jitter: tuple[int, int, int]  # per-channel offset added to the tone
    # hair
    hair_color: str  # key of HAIR_COLORS
    hair_jitter: tuple[int, int, int]
    hair_style: str  # one of HAIR_STYLES
    bangs: bool
    hairline: float  # hairline height offset
    part_tilt: float  # hairline slope (side parting)
    bangs_phase: float  # phase of the fringe's jagged edge
    # eyes and brows
    eye_y: float  # eye height offset from the default
    eye_size: float  # eye scale
    iris: RGB
    gaze: float  # horizontal iris offset in eye half-widths
    brow_tilt: float
    nose_dx: float  # nose tip horizontal offset
    # mouth
    smiling: bool
    mouth_open: bool
    mouth_width: float  # mouth half-width scale
    lip_tint: RGB  # mixed with the shaded skin colour
    mustache: bool
    rosy_cheeks: bool
    # accessories
    eyeglasses: bool
    sunglasses: bool
    lens_round: bool  # round (True) or rounded-rectangle (False) lenses
    lens_scale: float
    frame: RGB  # replaced by black / white when too close to the skin (see ``frame_rgb``)
    sun_lens: RGB
    hat: bool
    hat_style: str  # one of HAT_STYLES
    hat_color: RGB  # darkened / lightened when too close to the hair (see ``hat_rgb``)
    hat_band: RGB
    earrings: bool
    earring_style: str  # one of EARRING_STYLES
    earring_color: RGB

    def __post_init__(self) -> None:
        if self.eyeglasses and self.sunglasses:
            raise ValueError("eyeglasses and sunglasses are mutually exclusive, both are True")
        if self.hair_style not in HAIR_STYLES:
            raise ValueError(f"hair_style must be one of {HAIR_STYLES}, got {self.hair_style!r}")
        if self.hair_color not in HAIR_COLORS:
            raise ValueError(f"hair_color must be one of {tuple(HAIR_COLORS)}, got {self.hair_color!r}")
        if self.hair_style == "bald" and (self.bangs or self.hat):
            raise ValueError(f"a bald face cannot have bangs or a hat (bangs={self.bangs}, hat={self.hat}): the label would not be visible")
        if self.hat_style not in HAT_STYLES:
            raise ValueError(f"hat_style must be one of {HAT_STYLES}, got {self.hat_style!r}")
        if self.earring_style not in EARRING_STYLES:
            raise ValueError(f"earring_style must be one of {EARRING_STYLES}, got {self.earring_style!r}")
        if not 0 <= self.skin_tone < len(SKIN_TONES):
            raise ValueError(f"skin_tone must be in [0, {len(SKIN_TONES)}), got {self.skin_tone}")

    # colours derived at draw time, so overriding a factor (skin tone, hair colour) stays consistent
    @property
    def skin(self) -> RGB:
        return _offset(SKIN_TONES[self.skin_tone], self.skin_jitter)

    @property
    def hair(self) -> RGB:
        return _offset(HAIR_COLORS[self.hair_color], self.hair_jitter)

    @property
    def lips(self) -> RGB:
        return _mix(_scale(self.skin, 0.8), self.lip_tint, 0.55)

    @property
    def frame_rgb(self) -> RGB:
        """Frame colour, forced to stand out against the skin."""
        if abs(_luma(self.frame) - _luma(self.skin)) >= 70:
            return self.frame
        return (236, 236, 240) if _luma(self.skin) < 110 else (18, 18, 22)

    @property
    def hat_rgb(self) -> RGB:
        """Hat colour, forced away from the hair colour so a hat never reads as hair."""
        if sum(abs(a - b) for a, b in zip(self.hat_color, self.hair)) >= 150:
            return self.hat_color
        if _luma(self.hat_color) > 110:
            return _scale(self.hat_color, 0.35)
        return _mix(self.hat_color, (245, 245, 245), 0.7)


def _hsv(h: float, s: float, v: float) -> RGB:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, s, v)
    return int(round(r * 255)), int(round(g * 255)), int(round(b * 255))


def _offsets(rng: np.random.Generator, amount: int) -> tuple[int, int, int]:
    return tuple(int(d) for d in rng.integers(-amount, amount + 1, size=3))  # type: ignore[return-value]


def _offset(rgb: RGB, d: tuple[int, int, int]) -> RGB:
    return tuple(int(np.clip(c + e, 0, 255)) for c, e in zip(rgb, d))  # type: ignore[return-value]


def _jitter(rgb: RGB, rng: np.random.Generator, amount: int) -> RGB:
    return _offset(rgb, _offsets(rng, amount))


def _mix(a: RGB, b: RGB, t: float) -> RGB:
    return tuple(int(round((1 - t) * x + t * y)) for x, y in zip(a, b))  # type: ignore[return-value]


def _scale(rgb: RGB, f: float) -> RGB:
    return tuple(int(np.clip(round(c * f), 0, 255)) for c in rgb)  # type: ignore[return-value]


def _luma(rgb: RGB) -> float:
    return 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]


def sample_toy_factors(seed: int, index: int) -> ToyFaceFactors:
    """Draw the factors of face ``index`` of the domain ``seed`` (a pure function of both).

    Every field is drawn, in a fixed order, whether or not it is used, so that overriding one factor
    leaves all others unchanged. Marginals: eyeglasses 27 %, sunglasses 10 % (exclusive), hat 20 %,
    bald 10 % (never with a hat or bangs), bangs ~27 %, long hair ~40 %, earrings 30 %,
    smiling 50 %, mouth open 40 %, mustache 15 %, rosy cheeks 25 %, wide face 40 %,
    pale skin 15 %, dark skin 20 %, hair black/brown/blond/red/gray 30/30/20/10/10 %.
    """
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be >= 0, got seed={seed}, index={index}")
    rng = np.random.default_rng([int(seed), int(index)])
    u = rng.random

    background = _hsv(u(), 0.15 + 0.45 * u(), 0.45 + 0.5 * u())
    clothing = _hsv(u(), 0.2 + 0.6 * u(), 0.2 + 0.7 * u())
    light = (float(rng.uniform(-0.3, 0.3)), float(rng.uniform(-0.2, 0.2)))

    cx = 0.5 + float(rng.uniform(-0.035, 0.035))
    cy = 0.52 + float(rng.uniform(-0.03, 0.03))
    face_ry = float(rng.uniform(0.26, 0.30))
    wide_face = bool(u() < 0.4)
    face_aspect = float(rng.uniform(0.83, 0.90) if wide_face else rng.uniform(0.69, 0.76))
    skin_tone = int(rng.choice(len(SKIN_TONES), p=SKIN_PROBS))
    skin_jitter = _offsets(rng, 6)

    hair_color = list(HAIR_COLORS)[int(rng.choice(len(HAIR_COLORS), p=HAIR_PROBS))]
    hair_jitter = _offsets(rng, 8)
    hat = bool(u() < 0.2)
    bald = (not hat) and bool(u() < 0.125)
    long_hair = bool(u() < 0.45)
    hair_style = "bald" if bald else ("long" if long_hair else "short")
    bangs = (not bald) and bool(u() < 0.3)
    hairline = float(rng.uniform(-0.04, 0.04))
    part_tilt = float(rng.uniform(-0.35, 0.35))
    bangs_phase = float(u() * 2 * np.pi)

    eye_y = float(rng.uniform(-0.012, 0.012))
    eye_size = float(rng.uniform(0.9, 1.12))
    iris = _hsv(0.05 + 0.55 * u(), 0.4 + 0.4 * u(), 0.25 + 0.35 * u())
    gaze = float(rng.uniform(-0.3, 0.3))
    brow_tilt = float(rng.uniform(-0.008, 0.012))
    nose_dx = float(rng.uniform(-0.01, 0.01))

    smiling = bool(u() < 0.5)
    mouth_open = bool(u() < 0.4)
    mouth_width = float(rng.uniform(0.9, 1.15))
    lip_tint = _jitter((170, 50, 60), rng, 20)
    mustache = bool(u() < 0.15)
    rosy_cheeks = bool(u() < 0.25)

    g = u()
    eyeglasses, sunglasses = bool(g < 0.27), bool(0.27 <= g < 0.37)
    lens_round = bool(u() < 0.5)
    lens_scale = float(rng.uniform(0.92, 1.1))
    frame = FRAME_COLORS[int(rng.integers(len(FRAME_COLORS)))]
    sun_lens = _jitter((26, 28, 34), rng, 12)
    hat_style = HAT_STYLES[int(rng.integers(len(HAT_STYLES)))]
    hat_color = _hsv(u(), 0.3 + 0.6 * u(), 0.25 + 0.65 * u())
    hat_band = _hsv(u(), 0.5, 0.3 + 0.6 * u())
    earrings = bool(u() < 0.3)
    earring_style = EARRING_STYLES[int(rng.integers(len(EARRING_STYLES)))]
    earring_color = EARRING_COLORS[int(rng.integers(len(EARRING_COLORS)))]

    return ToyFaceFactors(
        background=background,
        clothing=clothing,
        light=light,
        cx=cx,
        cy=cy,
        face_ry=face_ry,
        face_aspect=face_aspect,
        skin_tone=skin_tone,
        skin_jitter=skin_jitter,
        hair_color=hair_color,
        hair_jitter=hair_jitter,
        hair_style=hair_style,
        bangs=bangs,
        hairline=hairline,
        part_tilt=part_tilt,
        bangs_phase=bangs_phase,
        eye_y=eye_y,
        eye_size=eye_size,
        iris=iris,
        gaze=gaze,
        brow_tilt=brow_tilt,
        nose_dx=nose_dx,
        smiling=smiling,
        mouth_open=mouth_open,
        mouth_width=mouth_width,
        lip_tint=lip_tint,
        mustache=mustache,
        rosy_cheeks=rosy_cheeks,
        eyeglasses=eyeglasses,
        sunglasses=sunglasses,
        lens_round=lens_round,
        lens_scale=lens_scale,
        frame=frame,
        sun_lens=sun_lens,
        hat=hat,
        hat_style=hat_style,
        hat_color=hat_color,
        hat_band=hat_band,
        earrings=earrings,
        earring_style=earring_style,
        earring_color=earring_color,
    )


def toy_attributes(f: ToyFaceFactors) -> dict[str, int]:
    """The binary labels of :data:`TOY_ATTRIBUTES` for factors ``f`` (0/1 ints, in that order)."""
    labels = {
        "Bald": f.hair_style == "bald",
        "Bangs": f.bangs,
        "Black_Hair": f.hair_color == "black",
        "Blond_Hair": f.hair_color == "blond",
        "Brown_Hair": f.hair_color == "brown",
        "Gray_Hair": f.hair_color == "gray",
        "Long_Hair": f.hair_style == "long",
        "Eyeglasses": f.eyeglasses,
        "Sunglasses": f.sunglasses,
        "Wearing_Hat": f.hat,
        "Wearing_Earrings": f.earrings,
        "Smiling": f.smiling,
        "Mouth_Slightly_Open": f.mouth_open,
        "Mustache": f.mustache,
        "Rosy_Cheeks": f.rosy_cheeks,
        "Wide_Face": f.face_aspect >= WIDE_FACE_ASPECT,
        "Pale_Skin": f.skin_tone == 0,
        "Dark_Skin": f.skin_tone >= 4,
    }
    return {name: int(labels[name]) for name in TOY_ATTRIBUTES}


class _Window:
    """A bounding-box view of the canvas: ``x`` is [1, w], ``y`` is [h, 1] (pixel centres)."""

    __slots__ = ("ys", "xs", "x", "y")

    def __init__(self, ys: slice, xs: slice, x: np.ndarray, y: np.ndarray) -> None:
        self.ys, self.xs, self.x, self.y = ys, xs, x, y


class _Canvas:
    """Paints palette indices into a supersampled uint8 label map, one bounding box at a time."""

    def __init__(self, n: int, background: RGB) -> None:
        self.n = n
        self.grid = (np.arange(n, dtype=np.float32) + 0.5) / n
        self.labels = np.zeros((n, n), dtype=np.uint8)
        self.palette: list[RGB] = [background]

    def window(self, x0: float, x1: float, y0: float, y1: float) -> _Window | None:
        n = self.n
        j0, j1 = max(0, int(np.floor(x0 * n))), min(n, int(np.ceil(x1 * n)))
        i0, i1 = max(0, int(np.floor(y0 * n))), min(n, int(np.ceil(y1 * n)))
        if j0 >= j1 or i0 >= i1:
            return None
        return _Window(slice(i0, i1), slice(j0, j1), self.grid[None, j0:j1], self.grid[i0:i1, None])

    def paint(self, win: _Window | None, mask: np.ndarray | None, rgb: RGB) -> None:
        """Give colour ``rgb`` to the pixels of ``win`` where ``mask`` (None = the whole window)."""
        if win is None:
            return
        if len(self.palette) == 256:
            raise RuntimeError("toy face palette overflow (more than 256 colours)")
        self.palette.append(rgb)
        sub = self.labels[win.ys, win.xs]
        if mask is None:
            sub[...] = len(self.palette) - 1
        else:
            np.copyto(sub, np.uint8(len(self.palette) - 1), where=mask)

    # ---- shapes: each returns (window, mask) so masks can be combined before painting ----
    def superellipse(self, cx: float, cy: float, rx: float, ry: float, p: float = 2.0):
        win = self.window(cx - rx, cx + rx, cy - ry, cy + ry)
        if win is None:
            return None, None
        return win, _superellipse(win, cx, cy, rx, ry, p)

    def fill_superellipse(self, cx, cy, rx, ry, rgb: RGB, p: float = 2.0) -> None:
        self.paint(*self.superellipse(cx, cy, rx, ry, p), rgb)

    def ring(self, cx, cy, rx, ry, width: float, rgb: RGB, p: float = 2.0) -> None:
        """Outline of a super-ellipse, ``width`` thick (centred on the nominal curve)."""
        h = width / 2
        win = self.window(cx - rx - h, cx + rx + h, cy - ry - h, cy + ry + h)
        if win is None:
            return
        outer = _superellipse(win, cx, cy, rx + h, ry + h, p)
        inner = _superellipse(win, cx, cy, rx - h, ry - h, p)
        self.paint(win, outer & ~inner, rgb)

    def segment(self, ax, ay, bx, by, width: float, rgb: RGB) -> None:
        """A capsule (line with round caps) from a to b, ``width`` thick."""
        r = width / 2
        win = self.window(min(ax, bx) - r, max(ax, bx) + r, min(ay, by) - r, max(ay, by) + r)
        if win is None:
            return
        dx, dy = bx - ax, by - ay
        px, py = win.x - ax, win.y - ay
        t = np.clip((px * dx + py * dy) / max(dx * dx + dy * dy, 1e-12), 0.0, 1.0)
        ex, ey = px - t * dx, py - t * dy
        self.paint(win, ex * ex + ey * ey <= r * r, rgb)

    def arc(self, cx, cy, half_w: float, depth: float, width: float, rgb: RGB) -> None:
        """Parabola y = cy + depth·(1 - u²), u = (x - cx) / half_w ∈ [-1, 1], ``width`` thick."""
        h = width / 2
        win = self.window(cx - half_w, cx + half_w, cy + min(0.0, depth) - h * 2, cy + max(0.0, depth) + h * 2)
        if win is None:
            return
        u = (win.x - cx) / half_w
        curve = cy + depth * (1 - u * u)  # [1, w]
        slope = -2 * depth * u / half_w
        tol = h * np.sqrt(1 + slope * slope)
        self.paint(win, np.abs(win.y - curve) <= tol, rgb)

    def image(self, size: int, supersample: int) -> np.ndarray:
        """Box-average the label map down to [size, size, 3] uint8."""
        s = supersample
        dtype = np.uint16 if s * s * 255 < 2**16 else np.uint32
        pal = np.asarray(self.palette, dtype=dtype)
        channels = []
        for ch in range(3):  # per-channel lookups and strided adds: ~6x faster than a 5-D .sum()
            x = pal[:, ch][self.labels].reshape(size, s, size, s)
            rows = x[:, 0].copy()
            for k in range(1, s):
                rows += x[:, k]
            block = rows[..., 0].copy()
            for k in range(1, s):
                block += rows[..., k]
            channels.append((block + (s * s) // 2) // (s * s))
        return np.stack(channels, axis=-1).astype(np.uint8)


def _superellipse(win: _Window, cx: float, cy: float, rx: float, ry: float, p: float) -> np.ndarray:
    if rx <= 0 or ry <= 0:
        return np.zeros((win.y.shape[0], win.x.shape[1]), dtype=bool)
    if p == 2.0:
        qx, qy = ((win.x - cx) / rx) ** 2, ((win.y - cy) / ry) ** 2
    else:
        qx, qy = np.abs((win.x - cx) / rx) ** p, np.abs((win.y - cy) / ry) ** p
    return qx + qy <= 1.0


def draw_toy_face(f: ToyFaceFactors, size: int = 64, supersample: int = 4) -> np.ndarray:
    """Paint factors ``f`` as a [size, size, 3] uint8 RGB image (see the module docstring)."""
    if size < 16:
        raise ValueError(f"toy face size must be >= 16, got {size}")
    if supersample < 1:
        raise ValueError(f"supersample must be >= 1, got {supersample}")
    c = _Canvas(size * supersample, f.background)
    cx, cy, ry = f.cx, f.cy, f.face_ry
    rx = ry * f.face_aspect
    skin, hair, lips, frame = f.skin, f.hair, f.lips, f.frame_rgb
    skin_shadow = _scale(skin, 0.82)
    hair_dark = _scale(hair, 0.6)
    eye_y = cy - 0.035 + f.eye_y
    ew = rx * 0.19 * f.eye_size  # eye half-width
    eh = ew * 0.55  # eye half-height
    eye_dx = rx * 0.42
    brow_y = eye_y - eh - 0.032
    hairline_y = cy - ry * 0.5 + f.hairline
    ear_y = eye_y + 0.025
    mouth_y = cy + ry * 0.56
    mw = rx * 0.36 * f.mouth_width

    # body: shoulders, long hair behind the head, neck, ears, face
    torso_top = cy + ry + 0.05
    c.fill_superellipse(cx, torso_top + 0.3, rx * 2.2, 0.3, f.clothing, p=2.5)
    if f.hair_style == "long":
        c.fill_superellipse(cx, cy + ry * 0.2, rx * 1.32, ry * 1.3, hair, p=3.0)
    win = c.window(cx - rx * 0.42, cx + rx * 0.42, cy + ry * 0.5, torso_top + 0.02)
    c.paint(win, None, skin_shadow)
    c.fill_superellipse(cx, torso_top + 0.02, rx * 0.42, 0.04, skin_shadow)
    for side in (-1, 1):
        c.fill_superellipse(cx + side * rx * 0.97, ear_y, 0.032, 0.055, skin)
        c.fill_superellipse(cx + side * rx * 0.99, ear_y, 0.014, 0.03, skin_shadow)
    c.fill_superellipse(cx, cy, rx, ry, skin)

    # hair on top of the head
    if f.hair_style == "bald":
        win, cap = c.superellipse(cx, cy - ry * 0.05, rx * 1.1, ry * 1.0)
        if win is not None:
            inside_face = _superellipse(win, cx, cy, rx, ry, 2.0)
            band = (win.y > cy - ry * 0.45) & (win.y < ear_y)
            c.paint(win, cap & ~inside_face & band, hair)
    else:
        win, cap = c.superellipse(cx, cy - ry * 0.1, rx * 1.1, ry * 1.04)
        if win is not None:
            inside_face = _superellipse(win, cx, cy, rx, ry, 2.0)
            above_line = win.y < hairline_y + f.part_tilt * (win.x - cx)
            sides = win.y < ear_y - 0.03
            c.paint(win, cap & (above_line | (~inside_face & sides)), hair)
        if f.bangs:
            fringe_y = brow_y - 0.018
            win = c.window(cx - rx * 1.05, cx + rx * 1.05, cy - ry * 1.2, fringe_y + 0.02)
            if win is not None:
                jag = fringe_y + 0.01 * np.sin((win.x - cx) * (2 * np.pi / 0.06) + f.bangs_phase)
                head = _superellipse(win, cx, cy - ry * 0.02, rx * 1.05, ry * 1.04, 2.0)
                c.paint(win, head & (win.y < jag), hair)

    # cheeks, brows, eyes, nose
    if f.rosy_cheeks:
        for side in (-1, 1):
            c.fill_superellipse(cx + side * rx * 0.56, cy + ry * 0.2, 0.04, 0.03, _mix(skin, (232, 80, 96), 0.4))
    for side in (-1, 1):
        ex = cx + side * eye_dx
        inner, outer = ex - side * ew * 0.9, ex + side * ew * 1.05
        c.segment(inner, brow_y + f.brow_tilt, outer, brow_y - f.brow_tilt * 0.5, 0.022, hair_dark)
        c.fill_superellipse(ex, eye_y, ew + 0.01, eh + 0.009, (40, 26, 24))  # lids / lashes
        win, eye = c.superellipse(ex, eye_y, ew, eh)
        if win is not None:
            c.paint(win, eye, (246, 244, 238))
            ix = ex + f.gaze * ew
            c.paint(win, eye & _superellipse(win, ix, eye_y, eh * 1.05, eh * 1.05, 2.0), f.iris)
            c.paint(win, eye & _superellipse(win, ix, eye_y, eh * 0.5, eh * 0.5, 2.0), (14, 12, 14))
    nose_y = cy + ry * 0.28
    c.segment(cx, eye_y + 0.02, cx + f.nose_dx, nose_y - 0.006, 0.012, skin_shadow)
    c.fill_superellipse(cx + f.nose_dx, nose_y, 0.028, 0.011, skin_shadow)

    # mustache and mouth
    if f.mustache:
        c.fill_superellipse(cx, mouth_y - 0.032, mw * 1.15, 0.02, hair_dark, p=2.5)
    mouth_dark = (76, 16, 26)
    if f.smiling and f.mouth_open:  # "D": open smile with teeth
        d = 0.045
        win, outer = c.superellipse(cx, mouth_y, mw + 0.01, d + 0.01)
        if win is not None:
            c.paint(win, outer & (win.y > mouth_y - 0.012), lips)
            inner = _superellipse(win, cx, mouth_y, mw, d, 2.0) & (win.y > mouth_y - 0.002)
            c.paint(win, inner, mouth_dark)
            c.paint(win, inner & (win.y < mouth_y + 0.014), (246, 246, 240))
    elif f.mouth_open:  # small "o"
        c.fill_superellipse(cx, mouth_y, mw * 0.62 + 0.012, 0.034 + 0.012, lips)
        c.fill_superellipse(cx, mouth_y, mw * 0.62, 0.034, mouth_dark)
    elif f.smiling:
        c.arc(cx, mouth_y - 0.01, mw * 1.05, 0.032, 0.024, lips)
    else:
        c.segment(cx - mw, mouth_y, cx + mw, mouth_y, 0.022, lips)

    # glasses: lenses around the eyes, a bridge, temples to the ears
    if f.eyeglasses or f.sunglasses:
        p = 2.0 if f.lens_round else 4.0
        lrx = ew * 1.6 * f.lens_scale
        lry = (ew * 1.25 if f.lens_round else ew * 1.05) * f.lens_scale
        ly = eye_y + 0.004
        for side in (-1, 1):
            lx = cx + side * eye_dx
            if f.sunglasses:
                c.fill_superellipse(lx, ly, lrx, lry, f.sun_lens, p=p)
            c.ring(lx, ly, lrx, lry, FRAME_WIDTH, frame, p=p)
            bar_y = ly - lry * 0.35
            c.segment(lx + side * lrx, bar_y, cx + side * rx * 0.985, bar_y - 0.004, FRAME_WIDTH, frame)
        c.segment(cx - eye_dx + lrx, ly - lry * 0.35, cx + eye_dx - lrx, ly - lry * 0.35, FRAME_WIDTH, frame)

    # hat
    if f.hat:
        brim_y = hairline_y + 0.012
        if f.hat_style == "beanie":
            win, cap = c.superellipse(cx, brim_y, rx * 1.15, ry * 0.85)
            if win is not None:
                c.paint(win, cap & (win.y < brim_y), f.hat_rgb)
                c.paint(win, cap & (win.y < brim_y) & (win.y > brim_y - 0.045), f.hat_band)
        else:
            win, crown = c.superellipse(cx, brim_y - ry * 0.35, rx * 0.82, ry * 0.5, p=4.0)
            if win is not None:
                c.paint(win, crown & (win.y < brim_y), f.hat_rgb)
                c.paint(win, crown & (win.y < brim_y) & (win.y > brim_y - 0.04), f.hat_band)
            c.fill_superellipse(cx, brim_y, rx * 1.6, 0.028, _scale(f.hat_rgb, 0.85))

    # earrings hang below the lobes
    if f.earrings:
        for side in (-1, 1):
            ex, ey = cx + side * rx * 0.98, ear_y + 0.055
            if f.earring_style == "stud":
                c.fill_superellipse(ex, ey + 0.012, 0.016, 0.016, f.earring_color)
            else:
                c.ring(ex, ey + 0.026, 0.024, 0.026, 0.012, f.earring_color)

    img = c.image(size, supersample)
    # global lighting: a gentle linear brightness gradient (computed at output resolution)
    g = (np.arange(size, dtype=np.float32) + 0.5) / size - 0.5
    gain = 1.0 + f.light[0] * g[None, :, None] + f.light[1] * g[:, None, None]
    return np.clip(img * gain + 0.5, 0, 255).astype(np.uint8)


def render_toy_face(
    seed: int,
    index: int,
    size: int = 64,
    supersample: int = 4,
    *,
    overrides: Mapping[str, Any] | None = None,
) -> tuple[np.ndarray, dict[str, int]]:
    """Render toy face ``index`` of the domain ``seed``.

    Args:
        seed: domain seed; (seed, index) fully determines the face.
        index: face index, >= 0.
        size: output side in pixels, >= 16 (64 and 256 are the tested sizes).
        supersample: the face is painted at ``size·supersample`` and box-averaged down (1 = aliased).
        overrides: replace some :class:`ToyFaceFactors` fields (e.g. ``{"eyeglasses": True}``) and
            keep every other factor: the hook for counterfactual renders. None = no change.

    Returns:
        ``(image, labels)``: [size, size, 3] uint8 RGB and ``{attribute: 0 | 1}`` over
        :data:`TOY_ATTRIBUTES`.
    """
    factors = sample_toy_factors(seed, index)
    if overrides:
        unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(ToyFaceFactors)})
        if unknown:
            raise ValueError(f"unknown toy face factors in overrides: {unknown}")
        factors = dataclasses.replace(factors, **overrides)
    return draw_toy_face(factors, size, supersample), toy_attributes(factors)


#: cache modes that keep renders in memory (or not at all); any other string is a cache directory
_MEMORY_MODES = ("lazy", "memory", "none")


def _check_toy_args(split: str, hr_size: int, lr_size: int, seed: int, num_train: int, num_test: int, cache: str, supersample: int) -> None:
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if hr_size < 16:
        raise ValueError(f"hr_size must be >= 16, got {hr_size}")
    if lr_size < 1 or lr_size >= hr_size or hr_size % lr_size != 0:
        raise ValueError(f"lr_size must be positive, smaller than hr_size and divide it, got hr_size={hr_size}, lr_size={lr_size}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if num_train < 1 or num_test < 1:
        raise ValueError(f"num_train and num_test must be >= 1, got num_train={num_train}, num_test={num_test}")
    if supersample < 1:
        raise ValueError(f"supersample must be >= 1, got {supersample}")
    if not isinstance(cache, str) or cache == "":
        raise ValueError(f"cache must be 'lazy', 'memory', 'none' or a directory path, got {cache!r}")
    if cache not in _MEMORY_MODES and os.path.exists(cache) and not os.path.isdir(cache):
        raise ValueError(f"cache directory {cache!r} exists and is not a directory")


class ToyFacesDataset(Dataset):
    """HR/LR pairs of toy faces (:func:`render_toy_face`), split by render index.

    The train split is render indices ``[0, num_train)``, the test split
    ``[num_train, num_train + num_test)``, so no face is in both. Item ``i`` of a split is
    ``{"hr": [3, hr, hr] in [-1, 1], "lr": DS(hr) [3, lr, lr], "attrs": [A] float 0/1,
    "index": i, "name": "toy_<render index>.png"}``. ``lr`` is exactly
    ``downscale(hr, lr_size)``, not clamped: bicubic may overshoot [-1, 1] by a little.

    Args:
        split: "train" or "test".
        hr_size: HR side in pixels, >= 16 (64 = default toy setting).
        lr_size: LR side in pixels; must divide hr_size and be smaller (8 = 8x, 4 = 16x at 64²).
        seed: domain seed; (seed, render index) determines every face.
        num_train: number of train faces (also the render index where the test split starts).
        num_test: number of test faces.
        cache: "lazy" (default) = render each item on its first access and keep it as uint8, so a run
            that reads part of the split renders only that part (a short toy stage reads a third of
            it); "memory" = render the whole split on first access and keep it; "none" = render
            every item on each access; any other string = a directory holding an ``.npy`` cache keyed
            by version/seed/size/index range (written on first use, then memory-mapped). Every mode
            gives the same items.
        supersample: supersampling factor of the renderer (4 = antialiased; 1 = aliased).
    """

    def __init__(
        self,
        split: str = "train",
        hr_size: int = 64,
        lr_size: int = 8,
        seed: int = 0,
        num_train: int = 20000,
        num_test: int = 1000,
        cache: str = "lazy",
        supersample: int = 4,
    ) -> None:
        _check_toy_args(split, hr_size, lr_size, seed, num_train, num_test, cache, supersample)
        self.split = split
        self.hr_size = hr_size
        self.lr_size = lr_size
        self.seed = seed
        self.cache = cache
        self.supersample = supersample
        self.start = 0 if split == "train" else num_train  # render index of item 0
        self.length = num_train if split == "train" else num_test
        self._images: np.ndarray | None = None  # [N, H, W, 3] uint8 once materialised
        self._attrs: np.ndarray | None = None  # [N, A] uint8 once materialised
        self._rendered: np.ndarray | None = None  # [N] bool: which items "lazy" has rendered

    @property
    def attr_names(self) -> tuple[str, ...]:
        return TOY_ATTRIBUTES

    def __len__(self) -> int:
        return self.length

    def render_index(self, i: int) -> int:
        """The render index of item ``i`` of this split."""
        return self.start + i

    def cache_files(self) -> tuple[Path, Path] | None:
        """(images, attrs) ``.npy`` paths of a directory cache; None for "memory" / "none"."""
        if self.cache in _MEMORY_MODES:
            return None
        key = f"toy_faces_v{TOY_FACES_VERSION}_seed{self.seed}_hr{self.hr_size}_ss{self.supersample}_idx{self.start}-{self.start + self.length}"
        root = Path(self.cache)
        return root / f"{key}_images.npy", root / f"{key}_attrs.npy"

    def _render_into(self, images: np.ndarray, attrs: np.ndarray) -> None:
        step = max(1, self.length // 10)
        for i in range(self.length):
            img, labels = render_toy_face(self.seed, self.start + i, self.hr_size, self.supersample)
            images[i] = img
            attrs[i] = list(labels.values())
            if (i + 1) % step == 0 or i + 1 == self.length:
                log.info("toy faces %s: rendered %d / %d", self.split, i + 1, self.length)

    def materialize(self) -> None:
        """Render (or load) the whole split now; a no-op with ``cache="none"`` or ``"lazy"`` (which
        renders per item) or when done."""
        if self.cache in ("none", "lazy") or self._images is not None:
            return
        shape = (self.length, self.hr_size, self.hr_size, 3)
        files = self.cache_files()
        if files is None:
            images = np.empty(shape, np.uint8)
            attrs = np.empty((self.length, len(TOY_ATTRIBUTES)), np.uint8)
            self._render_into(images, attrs)
            self._images, self._attrs = images, attrs
            return
        img_path, attr_path = files
        if not (img_path.exists() and attr_path.exists()):
            img_path.parent.mkdir(parents=True, exist_ok=True)
            tag = f".tmp{os.getpid()}"
            tmp_img = img_path.with_name(img_path.name + tag)
            tmp_attr = attr_path.with_name(attr_path.name + tag)
            images = np.lib.format.open_memmap(tmp_img, mode="w+", dtype=np.uint8, shape=shape)
            attrs = np.empty((self.length, len(TOY_ATTRIBUTES)), np.uint8)
            self._render_into(images, attrs)
            images.flush()
            del images
            with open(tmp_attr, "wb") as fh:
                np.save(fh, attrs)
            os.replace(tmp_attr, attr_path)  # atomic: concurrent ranks write identical files
            os.replace(tmp_img, img_path)
        images = np.load(img_path, mmap_mode="r")
        attrs = np.load(attr_path)
        if images.shape != shape or attrs.shape != (self.length, len(TOY_ATTRIBUTES)):
            raise ValueError(f"toy faces cache {img_path} holds shape {images.shape} / {attrs.shape}, expected {shape} / {(self.length, len(TOY_ATTRIBUTES))}")
        self._images, self._attrs = images, attrs

    def __getitem__(self, i: int) -> dict[str, Any]:
        if not 0 <= i < self.length:
            raise IndexError(f"index {i} out of range for {self.length} {self.split} faces")
        if self.cache == "none":
            img, labels = render_toy_face(self.seed, self.start + i, self.hr_size, self.supersample)
            attrs = np.asarray(list(labels.values()), np.float32)
        elif self.cache == "lazy":
            if self._images is None:  # np.empty: pages are only touched as items are rendered
                self._images = np.empty((self.length, self.hr_size, self.hr_size, 3), np.uint8)
                self._attrs = np.empty((self.length, len(TOY_ATTRIBUTES)), np.uint8)
                self._rendered = np.zeros(self.length, bool)
            if not self._rendered[i]:  # type: ignore[index]
                img, labels = render_toy_face(self.seed, self.start + i, self.hr_size, self.supersample)
                self._images[i], self._attrs[i] = img, list(labels.values())  # type: ignore[index]
                self._rendered[i] = True  # type: ignore[index]
            img, attrs = self._images[i], self._attrs[i]  # type: ignore[index]
        else:
            self.materialize()
            img, attrs = self._images[i], self._attrs[i]  # type: ignore[index]
        hr = torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 127.5 - 1.0  # [3, H, W]
        lr = downscale(hr[None], self.lr_size)[0]  # [3, h, w]
        return {
            "hr": hr,
            "lr": lr,
            "attrs": torch.as_tensor(np.asarray(attrs), dtype=torch.float32),
            "index": i,
            "name": f"toy_{self.start + i:06d}.png",
        }


class ToyFacesDataModule(SRDataModule):
    """Toy faces HR/LR pairs (:class:`ToyFacesDataset`) behind the shared :class:`SRDataModule`.

    Args:
        hr_size: HR side in pixels, >= 16.
        lr_size: LR side in pixels; divides hr_size and is smaller (8 = 8x at 64², 4 = 16x).
        render_seed: domain seed of the faces (the dataset's ``seed``); distinct from ``seed``,
            which only drives the train order and flips.
        num_train: number of train faces (render indices [0, num_train)).
        num_test: number of test faces (render indices [num_train, num_train + num_test)).
        cache: "lazy" (default: render each face when first read, keep it; DataLoader workers keep
            their own), "memory" (render each split once, in ``setup``), "none" (render per item) or
            a directory for an ``.npy`` cache written in ``prepare_data``.
        supersample: renderer supersampling factor (4 = antialiased).
        **kwargs: loader settings of :class:`~datamodules.base.SRDataModule` (batch_size,
            num_workers, val_batch_size, pin_memory, seed, val_subset, shuffle_train,
            drop_last_train, hflip).
    """

    def __init__(
        self,
        hr_size: int = 64,
        lr_size: int = 8,
        render_seed: int = 0,
        num_train: int = 20000,
        num_test: int = 1000,
        cache: str = "lazy",
        supersample: int = 4,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        _check_toy_args("train", hr_size, lr_size, render_seed, num_train, num_test, cache, supersample)
        self.hr_size = hr_size
        self.lr_size = lr_size
        self.render_seed = render_seed
        self.num_train = num_train
        self.num_test = num_test
        self.cache = cache
        self.supersample = supersample
        self.save_hyperparameters()

    @property
    def attr_names(self) -> tuple[str, ...]:
        return TOY_ATTRIBUTES

    def _make(self, split: str) -> ToyFacesDataset:
        return ToyFacesDataset(
            split=split,
            hr_size=self.hr_size,
            lr_size=self.lr_size,
            seed=self.render_seed,
            num_train=self.num_train,
            num_test=self.num_test,
            cache=self.cache,
            supersample=self.supersample,
        )

    def prepare_data(self) -> None:
        """Write the directory cache (rank 0 only, as Lightning calls it); nothing for memory / none."""
        if self.cache not in _MEMORY_MODES:
            for split in ("train", "test"):
                self._make(split).materialize()

    def build_dataset(self, split: str) -> Dataset:
        ds = self._make(split)
        ds.materialize()  # in the main process, before DataLoader workers fork and share it
        return ds
