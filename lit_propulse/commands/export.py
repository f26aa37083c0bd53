"""``python -m lit_propulse export``: trained Pro-PULSE as one file, ONNX or TorchScript (issue 17).

The whole inference network, :class:`~lit_propulse.inference.ProPulseUpsampler` (LR -> E_W / E_W+
-> w+, Eq. (4)/(10) -> G_ds with every side output, Sec. III-C), with the generator's noise fixed
to its stored maps (``noise="const"``, as in training and ``upsample``), exported as:

* ``--format onnx``: through ``torch.onnx.export(dynamo=True)`` (needs ``onnx`` and ``onnxscript``;
  run with ``onnxruntime``); the batch dimension is dynamic;
* ``--format torchscript``: ``torch.jit.trace``, loadable with ``torch.jit.load`` without this
  package; the batch dimension is dynamic too.

One input, ``lr`` [B, 3, l, l] float32 in [-1, 1]; outputs, in this order: ``hr`` [B, 3, S, S],
``side_<r>`` [B, 3, r, r] for every side resolution r (2l ... S/2), ``ws`` [B, num_ws, w_dim] (the
w+ the generator received), images in the generator's range, nominally [-1, 1] (not clamped).
The same facts travel in the file as JSON: ONNX ``metadata_props["lit_propulse"]``, TorchScript
extra file ``lit_propulse.json``. docs/export.md has the details.

After writing, the file is run on a random LR batch and compared with the eager network (every
output, max abs difference <= ``--tolerance``, 1e-4); ``--no-verify`` skips that.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor, nn

from lit_propulse.cli import register_command
from lit_propulse.core.errors import UserFacingError

if TYPE_CHECKING:
    from lit_propulse.inference import ProPulseUpsampler

ExportFormat = Literal["onnx", "torchscript"]

#: the metadata's format tag
FORMAT = "lit_propulse.export/1"
#: what the optional dependencies of each format are, and how to get them
EXTRA_HINT = "pip install 'lit_propulse[export]' (onnx, onnxscript, onnxruntime)"


class FlatUpsampler(nn.Module):
    """:class:`~lit_propulse.inference.ProPulseUpsampler` with a flat, export-friendly signature:
    ``lr`` [B, 3, l, l] -> (hr [B, 3, S, S], side_r [B, 3, r, r] for r in ``resolutions``, ws [B, num_ws, w_dim]).

    Args:
        upsampler: the trained network (its noise setting is kept: "const" for a deterministic file).
    """

    def __init__(self, upsampler: ProPulseUpsampler) -> None:
        super().__init__()
        self.up = upsampler
        self.resolutions = [int(r) for r in upsampler.gds.resolutions]

    def forward(self, lr: Tensor) -> tuple[Tensor, ...]:
        out = self.up(lr)
        return (out.image, *[out.side_images[r] for r in self.resolutions], out.ws)


def output_names(resolutions: Sequence[int]) -> list[str]:
    """The exported outputs, in order: ``hr``, ``side_<r>`` per side resolution, ``ws``."""
    return ["hr", *[f"side_{r}" for r in resolutions], "ws"]


def describe(up: ProPulseUpsampler, files: dict[str, str | None] | None = None) -> dict[str, Any]:
    """The facts written into the exported file (names, shapes, range, sizes)."""
    lr, s = up.lr_size, up.size
    g = up.gds.generator
    outputs = {"hr": ["B", 3, s, s], **{f"side_{r}": ["B", 3, r, r] for r in up.gds.resolutions}, "ws": ["B", g.num_ws, g.w_dim]}
    return {
        "format": FORMAT,
        "inputs": {"lr": ["B", 3, lr, lr]},
        "outputs": outputs,
        "output_order": list(outputs),
        "dtype": "float32",
        "range": "inputs in [-1, 1] (RGB, (x / 127.5) - 1); image outputs in the generator's range, nominally [-1, 1], not clamped",
        "lr_size": lr,
        "size": s,
        "side_resolutions": list(up.gds.resolutions),
        "num_ws": g.num_ws,
        "w_dim": g.w_dim,
        "encoder": type(up.encoder).__name__,
        "scale": up.scale,
        "guidance": up.guidance,
        "noise": up.noise,
        "files": files or {},
    }


@contextlib.contextmanager
def dense_modulated_convs() -> Iterator[None]:
    """Make every modulated convolution take its batch-generic formulation while tracing/exporting.

    :class:`~lit_propulse.networks.stylegan2.ModulatedConv2d` switches to a per-sample loop for large
    activations (a speed choice, same math); a trace would bake the example's batch size into that
    loop. Raising the switch's threshold for the duration keeps the exported graph valid for every
    batch size."""
    from lit_propulse.networks.stylegan2 import ModulatedConv2d

    old = ModulatedConv2d.weight_path_min_elements
    ModulatedConv2d.weight_path_min_elements = sys.maxsize
    try:
        yield
    finally:
        ModulatedConv2d.weight_path_min_elements = old


def example_lr(up: ProPulseUpsampler, batch: int = 2, seed: int = 0) -> Tensor:
    """A random LR batch in [-1, 1] (what the export traces and the parity check runs)."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, up.lr_size, up.lr_size, generator=g) * 2 - 1


def export_onnx(up: ProPulseUpsampler, path: str | Path, meta: dict[str, Any]) -> None:
    """Write ``up`` as ONNX (dynamo exporter, dynamic batch) with ``meta`` in ``metadata_props``."""
    try:
        import onnx  # noqa: F401 - needed by the exporter and for the metadata
        import onnxscript  # noqa: F401
    except ModuleNotFoundError as e:
        raise UserFacingError(f"--format onnx needs the {e.name!r} package: {EXTRA_HINT}") from None
    import onnx

    model = FlatUpsampler(up).eval()
    names = output_names(model.resolutions)
    batch = torch.export.Dim("batch", min=1, max=4096)
    with dense_modulated_convs(), torch.no_grad():
        torch.onnx.export(
            model, (example_lr(up),), str(path), input_names=["lr"], output_names=names, dynamo=True, dynamic_shapes={"lr": {0: batch}}, external_data=False
        )
    proto = onnx.load(str(path))
    proto.doc_string = "lit_propulse Pro-PULSE upsampler: lr [B,3,l,l] in [-1,1] -> hr, side outputs, ws (docs/export.md)"
    entry = proto.metadata_props.add()
    entry.key, entry.value = "lit_propulse", json.dumps(meta)
    onnx.save(proto, str(path))


@contextlib.contextmanager
def _quiet_jit() -> Iterator[None]:
    """torch.jit's deprecation notices (FutureWarning, torch >= 2.9) and trace warnings about shape
    checks (constants for a fixed LR size) are not the user's to act on."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, message=r".*torch\.jit.*deprecated")
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        yield


def export_torchscript(up: ProPulseUpsampler, path: str | Path, meta: dict[str, Any]) -> None:
    """Write ``up`` as a traced TorchScript module (dynamic batch) with ``meta`` as ``lit_propulse.json``."""
    model = FlatUpsampler(up).eval()
    with dense_modulated_convs(), torch.no_grad(), _quiet_jit():
        traced = torch.jit.trace(model, (example_lr(up),), check_trace=False)
        torch.jit.save(traced, str(path), _extra_files={"lit_propulse.json": json.dumps(meta)})


def run_exported(path: str | Path, fmt: ExportFormat, lr: Tensor) -> list[Tensor]:
    """Run the exported file on ``lr`` on the CPU (onnxruntime / ``torch.jit.load``): its outputs in order."""
    if fmt == "onnx":
        try:
            import onnxruntime as ort
        except ModuleNotFoundError:
            raise UserFacingError(f"running an ONNX export needs onnxruntime: {EXTRA_HINT}") from None
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return [torch.from_numpy(o) for o in session.run(None, {"lr": lr.detach().cpu().float().numpy()})]
    with _quiet_jit():
        module = torch.jit.load(str(path), map_location="cpu")
    with torch.no_grad():
        return list(module(lr.detach().cpu().float()))


def parity(up: ProPulseUpsampler, path: str | Path, fmt: ExportFormat, lr: Tensor) -> dict[str, float]:
    """Max abs difference between the exported file and the eager network on ``lr``, per output."""
    model = FlatUpsampler(up).eval()
    with torch.no_grad():
        eager = model(lr.cpu())
    got = run_exported(path, fmt, lr)
    if len(got) != len(eager):
        raise UserFacingError(f"{path}: has {len(got)} outputs, expected {len(eager)} ({', '.join(output_names(model.resolutions))})")
    return {n: float((a.float() - b.float()).abs().max()) for n, a, b in zip(output_names(model.resolutions), got, eager)}


def read_metadata(path: str | Path, fmt: ExportFormat) -> dict[str, Any]:
    """The JSON facts an exported file carries (see :func:`describe`)."""
    if fmt == "onnx":
        import onnx

        proto = onnx.load(str(path), load_external_data=False)
        return json.loads({p.key: p.value for p in proto.metadata_props}["lit_propulse"])
    extra = {"lit_propulse.json": ""}
    with _quiet_jit():
        torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    return json.loads(extra["lit_propulse.json"])


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m lit_propulse export",
        description="Export trained Pro-PULSE (LR -> HR with every side output, noise fixed) as ONNX or TorchScript; "
        "the file is then checked against the eager network (docs/export.md).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--format", choices=["onnx", "torchscript"], default=None, help="default: from --output's suffix (.onnx -> onnx, .pt/.ts/.torchscript -> torchscript)"
    )
    g = p.add_argument_group("model (stage exports, as for upsample)")
    g.add_argument(
        "--checkpoint",
        default=None,
        metavar="DIR",
        help="a pipeline / stage run directory holding gds.pt, ew.pt, ewplus.pt (directly or as <stage>/<stage>.pt)",
    )
    g.add_argument("--gds", default=None, help="G_ds export (gds.pt)")
    g.add_argument("--encoder", default=None, help="encoder export: ewplus.pt (E_W+) or ew.pt (E_W)")
    g.add_argument("--ew", default=None, help="E_W export (ew.pt): fills the w+ rows E_W+ does not produce")
    g.add_argument(
        "--guidance", default="ew", choices=["ew", "latent_avg"], help="what fills the w+ rows past E_W+'s scale: E_W's w (the paper) or the mean latent"
    )
    p.add_argument("--output", required=True, help="the file to write (parent folders are created)")
    p.add_argument("--no-verify", action="store_true", help="skip running the file against the eager network")
    p.add_argument("--tolerance", type=float, default=1e-4, help="largest max-abs difference accepted by the check")
    return p


def resolve_format(args: argparse.Namespace) -> ExportFormat:
    if args.format is not None:
        return args.format
    suffix = Path(args.output).suffix.lower()
    if suffix == ".onnx":
        return "onnx"
    if suffix in (".pt", ".ts", ".torchscript", ".pth"):
        return "torchscript"
    raise UserFacingError(f"--output {args.output!r}: cannot tell the format from its suffix; give --format onnx or --format torchscript")


@register_command("export", "Trained Pro-PULSE as one ONNX or TorchScript file (LR -> HR + side outputs + w+), checked against PyTorch")
def main(argv: Sequence[str]) -> int:
    from lit_propulse.commands.common import load_upsampler, resolve_model_files

    args = build_parser().parse_args(list(argv))
    fmt = resolve_format(args)
    if args.tolerance <= 0:
        raise UserFacingError(f"--tolerance must be > 0, got {args.tolerance}")
    out = Path(args.output)
    if out.is_dir():
        raise UserFacingError(f"--output {str(out)!r} is a folder; give a file name such as model.{'onnx' if fmt == 'onnx' else 'pt'}")
    model_files = resolve_model_files(args)
    up, files = load_upsampler(model_files, args.guidance, torch.device("cpu"))
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserFacingError(f"--output {str(out)!r}: cannot create its folder ({e.strerror or e})") from None
    meta = describe(up, files)
    (export_onnx if fmt == "onnx" else export_torchscript)(up, out, meta)
    print(
        f"export: wrote {out} ({fmt}, {out.stat().st_size / 2**20:.1f} MiB): lr {meta['inputs']['lr']} -> "
        + ", ".join(f"{k} {v}" for k, v in meta["outputs"].items())
    )
    if args.no_verify:
        return 0
    diffs = parity(up, out, fmt, example_lr(up, batch=3, seed=1))
    worst = max(diffs.values())
    print(f"export: checked against PyTorch on 3 random LRs: max |difference| {worst:.2e} (" + ", ".join(f"{k} {v:.1e}" for k, v in diffs.items()) + ")")
    if worst > args.tolerance:
        raise UserFacingError(f"{out}: the exported network differs from PyTorch by {worst:.2e} (> --tolerance {args.tolerance:g}); per output: {diffs}")
    return 0
