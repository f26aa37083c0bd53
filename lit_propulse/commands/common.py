"""What the photo commands share: ``upsample`` and ``edit`` (Pro-PULSE on photos, Sec. III-F / Fig. 9)
and ``pulse`` (the PULSE baseline).

* the LR convention (:class:`LRRule`, one rule for the three commands, documented in
  docs/photos-editing.md "Which inputs are LRs"): an input smaller than the generator's output is
  the LR as it is; ``--lr-size N`` makes every input an HR brought to N×N with DS first; other
  inputs are photos (``upsample`` / ``edit`` detect their faces; ``pulse`` refuses them);
* arguments: the model flags (stage exports, device, batch size) and the input flags (folder,
  ``--lr-size``, ``--photos``, face selection) of ``upsample`` / ``edit``, and their checks;
* inputs: the image files of a folder (:data:`~lit_propulse.core.images.IMAGE_EXTENSIONS`, natural
  order, not recursive), the output folder (checked and created before any model loads), the device;
* the model: stage exports found in a run directory and loaded as a
  :class:`~lit_propulse.inference.ProPulseUpsampler`;
* photos -> LRs: :class:`InputPreparer` (the LR as it is, DS of an HR, or MTCNN detection, FFHQ
  alignment and DS), one :class:`Record` per file for the report, and the batching of the results;
* the run and report of ``upsample`` / ``edit``: the LR batches (:func:`photo_batches`), the
  settings they share, ``report.json`` and the exit code.

Every error the user must fix is a :class:`~lit_propulse.core.errors.UserFacingError`.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor

from lit_propulse.core.errors import UserFacingError
from lit_propulse.core.images import IMAGE_EXTENSIONS, natural_key
from lit_propulse.core.reports import write_json

if TYPE_CHECKING:
    from lit_propulse.inference import ProPulseUpsampler

#: export file names a pipeline / stage run directory holds, directly or in <stage>/<stage>.pt
EXPORTS = ("gds", "ew", "ewplus")


# ----------------------------------------------------------------------------------------------
# The LR convention: which inputs are LRs (one rule for ``pulse``, ``upsample`` and ``edit``).

#: what an input is: the LR as it is, an HR made LR with DS (``--lr-size``), or a photo (detection)
InputRole = Literal["lr", "hr", "photo"]


@dataclass(frozen=True)
class LRRule:
    """Which inputs are the LR as they are, which are HRs made LR with DS, which are photos.

    * ``lr_size`` set (``--lr-size N``): every input is an HR (e.g. a ground truth to test against):
      centre-cropped to a square and made N×N with DS; an input smaller than N is skipped.
    * ``all_photos`` (``--photos``, upsample / edit): every input is a photo (faces are detected).
    * otherwise an input smaller than the generator's output is the LR as it is (``upsample`` /
      ``edit``: a square one; a non-square image is a photo). Its side must divide the generator's
      size (PULSE) and equal the encoder's LR size (Pro-PULSE); anything else is a one-line
      :class:`UserFacingError` naming the file and the sizes. The other inputs are photos for the
      commands that detect faces; ``pulse`` refuses them (give ``--lr-size``).

    Args:
        size: the generator's output side (the HR).
        model_lr: the LR side the Pro-PULSE encoder takes; None = PULSE (any side dividing ``size``).
        lr_size: ``--lr-size``: every input is made this size with DS first; None = off.
        detects: the command detects faces in photos (``upsample``, ``edit``); False = ``pulse``.
        all_photos: ``--photos``: every input is a photo, whatever its size.
    """

    size: int
    model_lr: int | None = None
    lr_size: int | None = None
    detects: bool = False
    all_photos: bool = False

    def role(self, name: str, width: int, height: int) -> tuple[InputRole | None, str]:
        """What the input ``name`` of ``width`` x ``height`` pixels is: (role, "") or (None, why it is
        skipped). An LR of a size the model cannot take raises :class:`UserFacingError`."""
        side, square = min(width, height), width == height
        if self.lr_size is not None:
            if side < self.lr_size:
                return None, f"{width}x{height} is smaller than --lr-size {self.lr_size}"
            return "hr", ""
        if self.all_photos:
            return "photo", ""
        if side < self.size and (square or not self.detects):
            self.check_lr(name, side)
            return "lr", ""
        if self.detects:
            return "photo", ""
        raise UserFacingError(
            f"{name}: {width}x{height} is not smaller than the generator's {self.size}x{self.size} output, "
            f"so it is not an LR; give --lr-size N to make every input NxN with DS first"
        )

    def check_lr(self, name: str, side: int) -> None:
        """An input of ``side`` px taken as the LR: it must divide the generator's size (and be the encoder's LR size)."""
        if self.model_lr is not None and side != self.model_lr:
            hint = f"give --lr-size {self.model_lr} to make every input {self.model_lr}x{self.model_lr} with DS"
            if self.detects:
                hint += ", or --photos to detect faces in every input"
            raise UserFacingError(
                f"{name}: {side}x{side} is taken as the LR (smaller than the generator's {self.size}x{self.size} "
                f"output), but the encoder takes {self.model_lr}x{self.model_lr} LRs; {hint}"
            )
        if self.size % side:
            raise UserFacingError(
                f"{name}: {side}x{side} is taken as the LR (smaller than the generator's {self.size}x{self.size} "
                f"output), but {self.size}/{side} is not a whole factor; an LR side must divide {self.size}"
            )

    def describe(self) -> str:
        """One line for the reports."""
        if self.lr_size is not None:
            return f"every input an HR, centre-cropped and made {self.lr_size}x{self.lr_size} with DS (--lr-size)"
        if self.all_photos:
            return "every input a photo: faces detected and aligned (--photos)"
        lr = f"{self.model_lr}x{self.model_lr}" if self.model_lr is not None else f"a divisor of {self.size}"
        rest = "larger or non-square inputs are photos (faces detected)" if self.detects else "larger inputs are refused"
        square = "square " if self.detects else ""
        return f"{square}inputs smaller than the generator's {self.size}x{self.size} output are the LR as they are ({lr}); {rest}"


def add_lr_arguments(g: argparse._ArgumentGroup, detects: bool) -> None:
    """``--lr-size``, ``--photos`` (commands that detect faces) and the deprecated ``--as-lr``."""
    g.add_argument(
        "--lr-size",
        type=int,
        default=None,
        metavar="N",
        help="every input is an HR (e.g. a ground truth to test against): centre-cropped and made NxN with DS first"
        + ("; N must be the encoder's LR size" if detects else "")
        + ". Without it, "
        + ("square " if detects else "")
        + "inputs smaller than the generator's output are "
        + "the LR as they are, and other inputs "
        + ("are photos (faces detected)" if detects else "are refused"),
    )
    if detects:
        g.add_argument("--photos", action="store_true", help="every input is a photo: detect faces even in inputs small enough to be LRs")
    g.add_argument(
        "--as-lr",
        action="store_true",
        help="deprecated: " + ("the same as --lr-size <the encoder's LR size>" if detects else "the default (inputs are the LR as they are)"),
    )


def check_lr_flags(args: argparse.Namespace) -> None:
    """``--lr-size`` / ``--photos`` / ``--as-lr`` among themselves (before any model loads)."""
    lr_size, photos = args.lr_size, bool(getattr(args, "photos", False))
    if lr_size is not None and lr_size < 1:
        raise UserFacingError(f"--lr-size must be >= 1, got {lr_size}")
    if args.as_lr and (lr_size is not None or photos):
        raise UserFacingError(f"--as-lr (deprecated) contradicts {'--lr-size' if lr_size is not None else '--photos'}; drop --as-lr")
    if lr_size is not None and photos:
        raise UserFacingError("--lr-size makes every input an HR, --photos every input a photo: give one of them")


def lr_rule(args: argparse.Namespace, size: int, model_lr: int | None, detects: bool) -> LRRule:
    """The :class:`LRRule` of the parsed ``--lr-size`` / ``--photos`` / ``--as-lr`` for a generator of
    ``size`` px (and an encoder taking ``model_lr`` px LRs, Pro-PULSE); checks them against the model."""
    check_lr_flags(args)
    lr_size, photos = args.lr_size, bool(getattr(args, "photos", False))
    if args.as_lr:
        if detects:
            lr_size = model_lr
        print(
            "note: --as-lr is deprecated: inputs smaller than the generator's output are the LR as they are; "
            + (f"it now means --lr-size {model_lr}" if detects else "drop it")
            + " (docs/photos-editing.md)",
            file=sys.stderr,
        )
    if lr_size is not None:
        if model_lr is not None and lr_size != model_lr:
            raise UserFacingError(f"--lr-size {lr_size}: the encoder takes {model_lr}x{model_lr} LRs; give --lr-size {model_lr}")
        if not 1 <= lr_size < size or size % lr_size:
            raise UserFacingError(f"--lr-size {lr_size}: the LR side must be smaller than the generator's {size}x{size} output and divide it")
    return LRRule(int(size), model_lr, lr_size, detects, photos)


def header_size(path: Path) -> tuple[int, int] | None:
    """(width, height) from the file's header, or None when it cannot be read (it is skipped later)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.size
    except Exception:  # noqa: BLE001 - an unreadable file is reported when it is read
        return None


def check_lr_sizes(files: Sequence[Path], rule: LRRule) -> None:
    """Apply ``rule`` to every input's header size before any work, so an LR of the wrong size stops
    the command at once (a :class:`UserFacingError` naming the file and the sizes)."""
    for f in files:
        wh = header_size(f)
        if wh is not None:
            rule.role(str(f), *wh)


# ----------------------------------------------------------------------------------------------
# Arguments of ``upsample`` and ``edit``.


def photo_parser(command: str, description: str) -> argparse.ArgumentParser:
    """The parser of ``python -m lit_propulse <command>`` (``upsample``, ``edit``) with the model and
    input flags they share; the command adds its own groups."""
    p = argparse.ArgumentParser(prog=f"python -m lit_propulse {command}", description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_model_arguments(p)
    add_input_arguments(p)
    return p


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model (stage exports)")
    g.add_argument(
        "--checkpoint",
        default=None,
        metavar="DIR",
        help="a pipeline / stage run directory holding gds.pt, ew.pt, ewplus.pt directly or as "
        "<stage>/<stage>.pt (e.g. runs/toy); E_W+ is used when present, else E_W. "
        "--gds/--encoder/--ew override what it finds",
    )
    g.add_argument("--gds", default=None, help="G_ds export (gds.pt)")
    g.add_argument("--encoder", default=None, help="encoder export: ewplus.pt (E_W+) or ew.pt (E_W)")
    g.add_argument("--ew", default=None, help="E_W export (ew.pt): fills the w+ rows E_W+ does not produce")
    g.add_argument(
        "--guidance", default="ew", choices=["ew", "latent_avg"], help="what fills the w+ rows past E_W+'s scale: E_W's w (the paper) or the mean latent"
    )
    g.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1, ...")
    g.add_argument("--batch-size", type=int, default=8, help="images through the upsampler at once")


def add_input_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("input (which inputs are LRs: docs/photos-editing.md)")
    g.add_argument("--input", required=True, help="folder of images (png/jpg/jpeg/webp; not recursive)")
    g.add_argument("--output", required=True, help="output folder (created)")
    add_lr_arguments(g, detects=True)
    g.add_argument("--faces", default="largest", choices=["largest", "all"], help="with several faces in a photo: upsample only the largest, or every one")
    g.add_argument("--min-prob", type=float, default=0.9, help="minimum MTCNN face probability")
    g.add_argument("--min-face-size", type=int, default=20, help="smallest face MTCNN searches for, in pixels")


def check_input_arguments(args: argparse.Namespace) -> None:
    if args.batch_size < 1:
        raise UserFacingError(f"--batch-size must be >= 1, got {args.batch_size}")
    if not 0.0 <= args.min_prob <= 1.0:
        raise UserFacingError(f"--min-prob must be in [0, 1], got {args.min_prob}")
    if args.min_face_size < 12:
        raise UserFacingError(f"--min-face-size must be >= 12 (MTCNN's smallest window), got {args.min_face_size}")
    check_lr_flags(args)


# ----------------------------------------------------------------------------------------------
# Inputs, output folder, device.


def list_inputs(folder: str | os.PathLike) -> list[Path]:
    """The image files directly in ``folder`` (hidden files skipped), in natural order."""
    d = Path(folder)
    if not d.exists():
        raise UserFacingError(f"--input {str(d)!r} does not exist")
    if not d.is_dir():
        raise UserFacingError(f"--input {str(d)!r} is not a folder")
    files = [f for f in d.iterdir() if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in IMAGE_EXTENSIONS]
    if not files:
        raise UserFacingError(f"--input {str(d)!r} holds no images ({', '.join(IMAGE_EXTENSIONS)}; subfolders are not searched)")
    return sorted(files, key=lambda f: natural_key(f.name))


def prepare_output_dir(folder: str | os.PathLike) -> Path:
    """Create ``--output`` (and its parents) if needed; a file in its place or a folder that cannot be
    created is a one-line error, raised before any model loads."""
    d = Path(folder)
    if d.exists() and not d.is_dir():
        raise UserFacingError(f"--output {str(d)!r} exists and is not a folder")
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserFacingError(f"--output {str(d)!r}: cannot create the folder ({e.strerror or e})") from None
    if not os.access(d, os.W_OK | os.X_OK):
        raise UserFacingError(f"--output {str(d)!r}: the folder is not writable")
    return d


def resolve_device(spec: str) -> torch.device:
    """``--device``: "auto" = cuda when available, else cpu; any torch device string otherwise."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(spec)
    except RuntimeError as e:
        raise UserFacingError(f"--device {spec!r}: {e}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserFacingError(f"--device {spec!r}: CUDA is not available on this machine")
    return dev


# ----------------------------------------------------------------------------------------------
# The model: stage exports -> ProPulseUpsampler.


def find_exports(checkpoint: str | os.PathLike) -> dict[str, str]:
    """Stage exports in a run directory: ``{"gds": path, "ew": path, "ewplus": path}`` (those found),
    looking at ``DIR/<name>.pt`` then ``DIR/<name>/<name>.pt`` (the pipeline's layout)."""
    root = Path(checkpoint)
    if not root.is_dir():
        raise UserFacingError(
            f"--checkpoint {str(root)!r} is not a directory (expected a pipeline / stage run directory such as runs/toy, holding gds.pt, ew.pt, ewplus.pt)"
        )
    found = {}
    for name in EXPORTS:
        for cand in (root / f"{name}.pt", root / name / f"{name}.pt"):
            if cand.is_file():
                found[name] = str(cand)
                break
    return found


#: the packaged toy files (``lit_propulse/data``): stage exports (may be absent) and the toy StyleGAN2
PACKAGED_EXPORTS = {"gds": "toy_gds_64.pt", "ewplus": "toy_ewplus_64.pt", "ew": "toy_ew_64.pt"}
PACKAGED_GENERATOR = "toy_stylegan2_64.pt"


def packaged(name: str) -> str | None:
    """The packaged file ``lit_propulse/data/<name>``, or None when this install does not ship it."""
    path = Path(__file__).resolve().parent.parent / "data" / name
    return str(path) if path.is_file() else None


def default_model_files(args: argparse.Namespace) -> tuple[dict[str, str | None], list[str]]:
    """``--gds/--encoder/--ew`` filled with the packaged toy exports when none of ``--checkpoint``,
    ``--gds``, ``--encoder`` was given; returns the defaults used and the packaged files absent."""
    if args.checkpoint or args.gds or args.encoder:
        return {}, []
    gds, ewplus, ew = (packaged(PACKAGED_EXPORTS[k]) for k in ("gds", "ewplus", "ew"))
    used = {"gds": gds, "encoder": ewplus or ew, "ew": ew if ewplus else None}
    absent = [f"lit_propulse/data/{PACKAGED_EXPORTS['gds']}"] if gds is None else []
    if ewplus is None and ew is None:
        absent.append(f"lit_propulse/data/{PACKAGED_EXPORTS['ewplus']} or {PACKAGED_EXPORTS['ew']}")
    if args.ew is None and used["ew"] is not None:
        args.ew = used["ew"]
    args.gds, args.encoder = used["gds"], used["encoder"]
    return used, absent


def resolve_model_files(args: argparse.Namespace) -> tuple[str, str, str | None]:
    """(gds, encoder, ew) from --checkpoint and the explicit flags (flags win); with none of
    ``--checkpoint``, ``--gds``, ``--encoder``, the toy exports packaged in ``lit_propulse/data`` when
    this install ships them (:func:`default_model_files`)."""
    used, absent = default_model_files(args)
    if used and not absent:
        print(f"model: none given; the toy exports packaged in lit_propulse/data ({used['gds']}, {used['encoder']}): 64x64 toy faces")
    found = find_exports(args.checkpoint) if args.checkpoint else {}
    gds = args.gds or found.get("gds")
    encoder = args.encoder or found.get("ewplus") or found.get("ew")
    ew = args.ew or (found.get("ew") if encoder != found.get("ew") else None)
    missing = [flag for flag, v in (("--gds (gds.pt)", gds), ("--encoder (ewplus.pt or ew.pt)", encoder)) if v is None]
    if missing:
        where = (
            f"--checkpoint {args.checkpoint!r} holds {sorted(found) or 'none of gds.pt, ew.pt, ewplus.pt'}"
            if args.checkpoint
            else "give them, or --checkpoint DIR (a pipeline run directory such as runs/toy)"
            + (f"; this install packages no toy exports ({', '.join(absent)})" if absent else "")
        )
        raise UserFacingError(f"missing {' and '.join(missing)}: {where}")
    return gds, encoder, ew


def load_upsampler(model_files: tuple[str, str, str | None], guidance: str, device: torch.device) -> tuple[ProPulseUpsampler, dict[str, str | None]]:
    """The :class:`~lit_propulse.inference.ProPulseUpsampler` of ``model_files`` (from
    :func:`resolve_model_files`) on ``device``, and the files it came from (for the report)."""
    from lit_propulse.inference import ProPulseUpsampler

    gds, encoder, ew = model_files
    try:
        up = ProPulseUpsampler.from_files(gds, encoder, ew=ew, guidance=guidance)
    except ValueError as e:
        if isinstance(e, UserFacingError):
            raise
        raise UserFacingError(f"{encoder}: {e}; give --ew (the E_W export) or --guidance latent_avg") from None
    print(
        f"model: G_ds {gds} ({up.size}x{up.size}, side outputs {up.gds.resolutions}), "
        f"{type(up.encoder).__name__} {encoder}" + (f" + E_W {ew}" if up.ew_encoder is not None else "") + f", LR {up.lr_size}x{up.lr_size}, on {device}"
    )
    return up.to(device), {"gds": gds, "encoder": encoder, "ew": ew if up.ew_encoder is not None else None}


@dataclass
class PhotoJob:
    """What ``upsample`` / ``edit`` establish before loading a model: the parsed arguments, the input
    files, the model files (gds, encoder, ew), the device and the (created) output folder."""

    args: argparse.Namespace
    files: list[Path]
    model_files: tuple[str, str, str | None]
    device: torch.device
    out_dir: Path


def read_photo_job(args: argparse.Namespace) -> PhotoJob:
    """Check the arguments, find the inputs and model files, create the output folder; loads nothing."""
    check_input_arguments(args)
    model_files = resolve_model_files(args)
    files = list_inputs(args.input)
    device = resolve_device(args.device)
    return PhotoJob(args, files, model_files, device, prepare_output_dir(args.output))


# ----------------------------------------------------------------------------------------------
# Photos -> LRs.


@dataclass
class Item:
    """One LR for the upsampler. source: the aligned crop (label "aligned") or the square HR input
    (label "input", ``--lr-size``) it was made from, None when the input was the LR as it is.
    photo and quad: for a face of a photo kept for pasting back, the whole photo [3, H, W] and the
    crop's quad [4, 2] in its pixels; None otherwise."""

    name: str
    lr: Tensor  # [3, l, l]
    source: Tensor | None  # [3, s, s]
    source_label: str
    face: dict[str, Any] | None = None
    photo: Tensor | None = None  # [3, H, W]
    quad: Tensor | None = None  # [4, 2]


@dataclass
class Record:
    """What happened to one input file (a row of report.json)."""

    file: str
    status: str = "ok"  # "ok" | "skipped"
    kind: str = ""  # skip kind: unreadable | no_face | face_too_small | too_small | duplicate_name
    reason: str = ""
    note: str = ""
    taken_as: str = ""  # the LR convention's role: "lr" | "hr" | "photo" ("" = not read)
    faces_found: int | None = None  # None for inputs that are no photos (no detection)
    faces_used: int = 0
    outputs: list[dict[str, Any]] = field(default_factory=list)
    restored: dict[str, Any] | None = None  # upsample --paste-back: the whole photo with its faces pasted back

    def skip(self, kind: str, reason: str) -> Record:
        self.status, self.kind, self.reason = "skipped", kind, reason
        return self

    def add_output(self, item: Item, files: list[str]) -> None:
        """Note the files written for ``item`` (one LR of this input; with its face for photos)."""
        self.outputs.append({"name": item.name, "files": files, **({"face": item.face} if item.face else {})})

    def as_dict(self) -> dict[str, Any]:
        d = {"file": self.file, "status": self.status}
        if self.status == "skipped":
            d.update(kind=self.kind, reason=self.reason)
        if self.note:
            d["note"] = self.note
        if self.taken_as:
            d["taken_as"] = self.taken_as
        if self.faces_found is not None:
            d.update(faces_found=self.faces_found, faces_used=self.faces_used)
        d["outputs"] = self.outputs
        if self.restored is not None:
            d["restored"] = self.restored
        return d


def read_rgb(path: Path) -> tuple[Tensor | None, str]:
    """The whole image as [3, H, W] in [-1, 1] (EXIF orientation applied), or (None, reason)."""
    import numpy as np
    from PIL import Image, ImageOps

    from lit_propulse.core.images import BadFile, check_image, to_rgb, uint8_to_tensor

    info = check_image(path, scan_mode="full")
    if isinstance(info, BadFile):
        return None, info.reason
    try:
        with Image.open(path) as im:
            im.load()
            rgb = to_rgb(ImageOps.exif_transpose(im))
            arr = np.array(rgb, dtype=np.uint8)
    except Exception as e:  # noqa: BLE001 - any decoding failure skips this one file
        return None, f"cannot decode ({type(e).__name__}: {e})"
    return uint8_to_tensor(arr), ""


def center_square(img: Tensor) -> tuple[Tensor, str]:
    """The centred square crop of a [3, H, W] image (the data pipeline's crop) and a note when it
    was not square already ("" otherwise)."""
    h, w = img.shape[-2:]
    if h == w:
        return img, ""
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    return img[:, top : top + s, left : left + s], f"non-square {w}x{h}, centre-cropped"


class InputPreparer:
    """Turns input files into :class:`Item` s (the LRs) and :class:`Record` s, one file at a time, by
    the LR convention (:class:`LRRule`): an LR is used as it is, an HR (``--lr-size``) is made the
    LR with DS, a photo's faces are detected (MTCNN, loaded at the first photo), aligned and made LR.

    Args:
        rule: the LR convention, with the model's sizes (``rule.model_lr`` the encoder's LR side).
        faces: "largest" or "all" faces per photo.
        min_prob: minimum MTCNN probability.
        min_face_size: MTCNN's smallest face, pixels.
        device: where detection and alignment run.
        keep_photo: keep each photo and crop quad on its faces' items (for pasting back).
    """

    def __init__(self, rule: LRRule, faces: str, min_prob: float, min_face_size: int, device: torch.device, keep_photo: bool = False) -> None:
        if rule.model_lr is None:
            raise ValueError("InputPreparer needs the encoder's LR size (rule.model_lr)")
        self.rule, self.lr_size, self.crop_size = rule, int(rule.model_lr), int(rule.size)
        self.faces, self.min_prob, self.min_face_size, self.device = faces, float(min_prob), int(min_face_size), device
        self.keep_photo = bool(keep_photo)
        self.detector = None
        self.names: set[str] = set()

    def __call__(self, path: Path) -> tuple[Record, list[Item]]:
        from lit_propulse.core.downscale import downscale

        rec = Record(str(path))
        stem = path.stem
        if stem in self.names:
            return rec.skip("duplicate_name", f"another input is also named {stem!r} (outputs are named by file stem)"), []
        img, reason = read_rgb(path)
        if img is None:
            return rec.skip("unreadable", reason), []
        self.names.add(stem)
        role, reason = self.rule.role(str(path), img.shape[-1], img.shape[-2])
        if role is None:
            return rec.skip("too_small", reason), []
        rec.taken_as = role
        if role == "photo":
            return self._faces(rec, img.to(self.device), stem)
        img, rec.note = center_square(img)
        img = img.to(self.device)
        side = img.shape[-1]
        if role == "lr":
            return rec, [Item(stem, img, None, "input")]
        lr = downscale(img[None], self.lr_size)[0]
        if side > self.lr_size:
            rec.note = "; ".join(filter(None, [rec.note, f"made LR from {side}x{side} with DS"]))
        return rec, [Item(stem, lr, img if side > self.lr_size else None, "input")]

    def _faces(self, rec: Record, img: Tensor, stem: str) -> tuple[Record, list[Item]]:
        from lit_propulse.core.downscale import downscale
        from lit_propulse.faces import FaceDetector, align_face, select_faces

        if self.detector is None:
            self.detector = FaceDetector(min_face_size=self.min_face_size, device=self.device)
        found = self.detector(img)
        rec.faces_found = len(found)
        if not found:
            return rec.skip("no_face", "no face found"), []
        chosen = select_faces(found, self.faces, self.min_prob)
        if not chosen:
            best = max(f.prob for f in found)
            return rec.skip(
                "no_face", f"no face with probability >= {self.min_prob:g} ({len(found)} candidate(s), best {best:.3f}; lower --min-prob to accept them)"
            ), []
        confident = sum(f.prob >= self.min_prob for f in found)
        if self.faces == "largest" and confident > 1:
            rec.note = f"{confident} faces found; the largest was used (--faces all upsamples every one)"
        items, too_small = [], []
        for k, face in enumerate(chosen):
            aligned = align_face(img, face.landmarks.to(img.device), self.crop_size)
            name = stem if self.faces == "largest" else f"{stem}_face{k}"
            info = {
                **face.as_dict(),
                "index": k,
                "crop_quad": [[round(float(v), 2) for v in c] for c in aligned.quad],
                "crop_source_px": round(aligned.source_px, 1),
                "crop_outside_fraction": round(aligned.outside, 4),
            }
            if aligned.source_px < self.lr_size:
                too_small.append(f"face {k}: its crop spans {aligned.source_px:.0f} px of the photo, less than the LR's {self.lr_size} px")
                continue
            if aligned.outside > 0.25:
                info["warning"] = f"{100 * aligned.outside:.0f}% of the crop lies outside the photo (filled by reflection)"
            crop = aligned.image.clamp(-1, 1)  # bicubic overshoot clipped, like the data pipeline's 8-bit HR
            lr = downscale(crop[None], self.lr_size)[0]
            items.append(Item(name, lr, crop, "aligned", info, img if self.keep_photo else None, aligned.quad if self.keep_photo else None))
        rec.faces_used = len(items)
        if not items:
            return rec.skip("face_too_small", "; ".join(too_small)), []
        if too_small:
            rec.note = "; ".join(filter(None, [rec.note, *too_small]))
        return rec, items


def batched(items: Iterator[tuple[Record, list[Item]]], batch_size: int) -> Iterator[list[tuple[Record, Item]]]:
    """Group the items of a stream of (record, items) into lists of at most ``batch_size``."""
    pending: list[tuple[Record, Item]] = []
    for rec, its in items:
        for it in its:
            pending.append((rec, it))
            if len(pending) == batch_size:
                yield pending
                pending = []
    if pending:
        yield pending


def prepare_all(
    files: Sequence[Path], prep: InputPreparer, records: list[Record], describe: Callable[[Record, list[Item]], str]
) -> Iterator[tuple[Record, list[Item]]]:
    """``prep`` over ``files``, lazily: appends each file's :class:`Record` to ``records`` and prints
    one progress line per file (skips on stderr, with the reason; else ``describe(record, items)``)."""
    n = len(files)
    for i, f in enumerate(files, 1):
        rec, items = prep(f)
        records.append(rec)
        if rec.status == "skipped":
            print(f"[{i}/{n}] {f.name}: skipped: {rec.reason}", file=sys.stderr)
        else:
            print(f"[{i}/{n}] {f.name}: {describe(rec, items)}" + (f" ({rec.note})" if rec.note else ""))
        yield rec, items


def input_counts(records: Sequence[Record], done_key: str) -> dict[str, Any]:
    """The report's per-input counts: inputs, ``done_key`` (inputs used), skipped inputs, and the
    skipped ones by kind."""
    skipped = [r for r in records if r.status == "skipped"]
    return {
        "inputs": len(records),
        done_key: len(records) - len(skipped),
        "skipped_inputs": len(skipped),
        "skipped_by_kind": dict(Counter(r.kind for r in skipped)),
    }


# ----------------------------------------------------------------------------------------------
# Running ``upsample`` / ``edit`` and their report.


def photo_batches(
    job: PhotoJob, rule: LRRule, records: list[Record], describe: Callable[[Record, list[Item]], str], keep_photo: bool = False
) -> Iterator[tuple[list[tuple[Record, Item]], Tensor]]:
    """Every input of ``job`` prepared by ``rule`` (:class:`InputPreparer`, one progress line per file,
    each :class:`Record` appended to ``records``), in batches of ``--batch-size``: the batch's
    (record, item) pairs and their LRs [B, 3, l, l] on the job's device. ``keep_photo``: keep each
    face's photo for pasting back. An LR of the wrong size stops the command before any work."""
    args = job.args
    check_lr_sizes(job.files, rule)
    prep = InputPreparer(rule, args.faces, args.min_prob, args.min_face_size, job.device, keep_photo=keep_photo)
    for batch in batched(prepare_all(job.files, prep, records, describe), args.batch_size):
        yield batch, torch.stack([it.lr for _, it in batch]).to(job.device)  # [B, 3, l, l]


def photo_settings(job: PhotoJob, up: ProPulseUpsampler, model_files: dict[str, str | None], rule: LRRule) -> dict[str, Any]:
    """The report settings ``upsample`` and ``edit`` share: the model files, the guidance, the sizes,
    the LR convention and the face selection."""
    args = job.args
    return {
        **model_files,
        "guidance": args.guidance,
        "size": up.size,
        "lr_size": up.lr_size,
        "inputs": rule.describe(),
        "lr_size_option": rule.lr_size,
        "photos": rule.all_photos,
        "faces": args.faces,
        "min_prob": args.min_prob,
    }


def write_photo_report(job: PhotoJob, settings: dict[str, Any], summary: dict[str, Any], records: Sequence[Record]) -> Path:
    """``<output>/report.json``: the settings, the summary and one entry per input; returns its path."""
    path = job.out_dir / "report.json"
    write_json(path, {"settings": settings, "summary": summary, "inputs": [r.as_dict() for r in records]})
    return path


def exit_code(done: int, verb: str) -> int:
    """0 when anything was ``verb`` (e.g. "upsampled"); else the error line and 1."""
    if not done:
        print(f"error: nothing was {verb} (every input was skipped, reasons above and in report.json)", file=sys.stderr)
        return 1
    return 0
