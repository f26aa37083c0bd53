"""The Gaussian fit of the mapping network's output (PULSE, Menon et al., CVPR 2020, App. B 2.4):
the search's sphere latents reach W through w = LeakyReLU_0.2(latent·std + mean), with mean/std
fitted to LeakyReLU_5(mapping(z)), z ~ N(0, I). The number of z is ``PULSEConfig.gaussian_fit_samples``:
100k in the "corrected" preset (sampling error of the per-dimension mean and std about 1/√n ≈ 0.3 %
of the std; 0.1 % at 1M), 1M as the official code (the "published" preset); each count has its own cache file.

The fit is computed from the loaded generator and cached per mapping-weights hash in a user cache
dir (:func:`default_cache_dir`), never the working directory. The cache file is read with the
project's safe reader (:func:`lit_propulse.core.weights.safe_load`: tensors only, a corrupt file is
refitted and replaced with a warning) and written atomically (a unique temporary file in the same
folder, then ``os.replace``) with mode :data:`CACHE_FILE_MODE`, set by ``os.chmod`` on that file;
the process umask is never read or changed (it is process-wide state other threads rely on).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_propulse.core.errors import WeightsFileError
from lit_propulse.core.weights import safe_load
from lit_propulse.networks.stylegan2 import Generator

__all__ = ["CACHE_FILE_MODE", "CACHE_FORMAT", "GaussianFit", "default_cache_dir", "mapping_fingerprint", "write_cache_file"]

#: permissions of a cache file: owner read/write, readable by everyone (a cache of two vectors)
CACHE_FILE_MODE = 0o644
#: the ``format`` entry of a cache file
CACHE_FORMAT = "lit_propulse.pulse.gaussian_fit/1"


def default_cache_dir() -> Path:
    """Where PULSE caches its Gaussian fits: ``$LIT_PROPULSE_CACHE/pulse`` if that variable is set,
    else ``$XDG_CACHE_HOME/lit_propulse/pulse``, else ``~/.cache/lit_propulse/pulse``."""
    root = os.environ.get("LIT_PROPULSE_CACHE")
    if root:
        return Path(root).expanduser() / "pulse"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "lit_propulse" / "pulse"


def mapping_fingerprint(generator: Generator) -> str:
    """SHA-256 of what the Gaussian fit depends on: the mapping network's weights (names, shapes,
    float32 bytes) and its lr multiplier (part of the forward pass, not of the weights)."""
    h = hashlib.sha256()
    h.update(f"lr_mlp={generator.arch.get('lr_mlp')};".encode())
    for name, t in sorted(generator.mapping.state_dict().items()):
        arr = t.detach().to("cpu", torch.float32).contiguous().numpy()
        h.update(f"{name}:{tuple(arr.shape)};".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


class GaussianFit(nn.Module):
    """w = LeakyReLU_0.2(latent·std + mean) and its inverse (PULSE App. B 2.4).

    ``mean``/``std`` are the per-dimension statistics of LeakyReLU_5(mapping(z)), z ~ N(0, I).
    LeakyReLU_5 inverts the mapping's last activation LeakyReLU_0.2 exactly. StyleGAN2's mapping
    ends in the fused ``lrelu(x)·√2``: because a positive gain commutes with a leaky ReLU
    (lrelu(c·x) = c·lrelu(x) for c > 0), LeakyReLU_5(√2·lrelu_0.2(x)) = √2·x, so the fit describes
    the last pre-activation up to the constant √2, and LeakyReLU_0.2(√2·x) is again the mapping's
    output. The gain therefore needs no special handling: :meth:`to_w` ∘ :meth:`to_latent` is the
    identity on W (tests/test_pulse.py checks it on mapping(z)).

    Args:
        w_dim: width of w.
    """

    def __init__(self, w_dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(w_dim))
        self.register_buffer("std", torch.ones(w_dim))

    @property
    def w_dim(self) -> int:
        return self.mean.numel()

    def to_w(self, latent: Tensor) -> Tensor:
        """[..., w_dim] sphere latents -> W vectors."""
        return F.leaky_relu(latent * self.std.to(latent) + self.mean.to(latent), 0.2)

    def to_latent(self, w: Tensor) -> Tensor:
        """[..., w_dim] W vectors -> latents (the inverse of :meth:`to_w`)."""
        return (F.leaky_relu(w, 5.0) - self.mean.to(w)) / self.std.to(w)

    @classmethod
    @torch.no_grad()
    def fit(cls, generator: Generator, num_samples: int = 100_000, seed: int = 0, batch_size: int = 10_000) -> GaussianFit:
        """Fit mean/std of LeakyReLU_5(mapping(z)) over ``num_samples`` z (drawn on the CPU from
        ``seed``, so the same on every device), in batches, accumulated in float64."""
        if num_samples < 2:
            raise ValueError(f"num_samples must be >= 2, got {num_samples}")
        device = generator.latent_avg.device
        gen = torch.Generator().manual_seed(int(seed))
        s1 = torch.zeros(generator.w_dim, dtype=torch.float64)
        s2 = torch.zeros(generator.w_dim, dtype=torch.float64)
        done = 0
        while done < num_samples:
            b = min(batch_size, num_samples - done)
            z = torch.randn(b, generator.z_dim, generator=gen).to(device)
            y = F.leaky_relu(generator.mapping(z), 5.0).double().cpu()  # [b, w_dim]
            s1 += y.sum(0)
            s2 += y.square().sum(0)
            done += b
        mean = s1 / num_samples
        var = (s2 - num_samples * mean.square()) / (num_samples - 1)
        out = cls(generator.w_dim)
        out.mean.copy_(mean.float())
        out.std.copy_(var.clamp_min(0).sqrt().float())
        return out.to(device)

    @classmethod
    def load_or_fit(
        cls,
        generator: Generator,
        cache_dir: str | os.PathLike | None = None,
        num_samples: int = 100_000,
        seed: int = 0,
        log: Callable[[str], None] | None = None,
    ) -> GaussianFit:
        """The fit for ``generator``, from the cache when present, else fitted and cached.

        The cache file ``gaussian_fit_<sha256[:20]>_n<num_samples>_seed<seed>.pt`` lives in
        ``cache_dir`` (None = :func:`default_cache_dir`); the hash is :func:`mapping_fingerprint`,
        so a different checkpoint never reuses another's fit. A cache that cannot be written only
        warns; an unreadable or foreign cache file is refitted and replaced, with a warning.
        """
        directory = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        fp = mapping_fingerprint(generator)
        path = directory / f"gaussian_fit_{fp[:20]}_n{int(num_samples)}_seed{int(seed)}.pt"
        device = generator.latent_avg.device
        cached = _read_cache(path, fp, generator.w_dim) if path.is_file() else None
        if cached is not None:
            out = cls(generator.w_dim)
            out.mean.copy_(cached[0])
            out.std.copy_(cached[1])
            if log:
                log(f"PULSE: Gaussian fit loaded from {path}")
            return out.to(device)
        if log:
            log(f"PULSE: fitting the mapping's output statistics ({num_samples} z, seed {seed}) ...")
        out = cls.fit(generator, num_samples=num_samples, seed=seed)
        payload = {
            "mean": out.mean.detach().cpu(),
            "std": out.std.detach().cpu(),
            "mapping_sha256": fp,
            "num_samples": int(num_samples),
            "seed": int(seed),
            "format": CACHE_FORMAT,
        }
        try:
            write_cache_file(payload, path)
            if log:
                log(f"PULSE: Gaussian fit cached in {path}")
        except (OSError, RuntimeError) as e:  # RuntimeError: torch's writer on a full disk
            warnings.warn(f"PULSE: could not cache the Gaussian fit in {directory} ({e}); it will be refitted next time", stacklevel=2)
        return out


def _read_cache(path: Path, fingerprint: str, w_dim: int) -> tuple[Tensor, Tensor] | None:
    """(mean, std) [w_dim] each from the cache file ``path``, or None (with a warning) when the file
    is unreadable, not a Gaussian-fit cache, or made for other mapping weights."""
    try:
        data = safe_load(path, "expected a PULSE Gaussian-fit cache; refitting and replacing it")
    except (WeightsFileError, OSError) as e:
        warnings.warn(f"PULSE: {e}", stacklevel=2)
        return None
    mean, std = (data.get("mean"), data.get("std")) if isinstance(data, dict) else (None, None)
    if not (isinstance(mean, Tensor) and isinstance(std, Tensor) and mean.shape == std.shape == (w_dim,) and data.get("mapping_sha256") == fingerprint):
        warnings.warn(f"PULSE: {path}: not a Gaussian fit of this mapping network; refitting and replacing it", stacklevel=2)
        return None
    return mean, std


def write_cache_file(payload: Any, path: Path, mode: int = CACHE_FILE_MODE) -> None:
    """``torch.save(payload)`` to ``path`` atomically, with permissions ``mode``.

    Written to a unique temporary file in ``path``'s folder (``tempfile.mkstemp``: concurrent
    writers never share one), given ``mode`` with ``os.chmod`` (mkstemp creates it 0600), then
    renamed over ``path`` with ``os.replace``, so a reader sees the old file or the whole new one.
    The temporary file is removed if anything fails. The process umask is left alone.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".gaussian_fit_", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
