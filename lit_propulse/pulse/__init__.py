"""PULSE: self-supervised upsampling by latent-space exploration (Menon et al., CVPR 2020), on any
StyleGAN2 of :mod:`lit_propulse.networks.stylegan2`.

What is where (paper -> code):

* Sec. 3.2 + App. B 2.2: the search space, per-layer latents on the sphere √d·S^{d-1}, one tiled to
  every layer or one per w+ row (W+), searched by projected gradient descent -> :mod:`.optim`
  (:class:`SphericalOptimizer`, :func:`project_to_sphere`, the official :func:`lr_factor` schedules).
* App. B 2.4: the latents reach W through the generator's own mapping statistics -> :mod:`.fit`
  (:class:`GaussianFit`, fitted from the loaded generator and cached per mapping-weights hash in a
  user cache dir, :func:`default_cache_dir`, never the working directory).
* App. B 2.5 and every other setting (defaults = the official run.py) -> :mod:`.config`
  (:class:`NoiseConfig`, :class:`PULSELossConfig`, :class:`PULSEConfig`).
* Sec. 3.1 + App. B 2.3: the loss ``100·L_DS + 0.05·GEOCROSS`` -> :mod:`lit_propulse.losses.pulse`.
* Sec. 3.1 Eq. (9) / Sec. 6: ε per image, the best iterate kept per image; Sec. 4.4: one-to-many
  -> :mod:`.search` (:class:`PULSE`, :class:`PULSEResult`, :meth:`PULSE.sample`).
* Sec. 6 / Fig. 8 (model card): success rates, overall and per group -> :mod:`.metrics`
  (:class:`SuccessRate`, :func:`group_success_rates`); the groups CSV and the command's result
  files -> :mod:`.results`.

Fixes relative to the official code (adamian98/pulse): it returned the *last* step's image instead
of the best; its ε check compared the batch *sum* of the clamped per-image losses with ε, which
cannot pass for a batch of more than one image; it tracked the best step by the total loss of the
whole batch; it read/wrote ``gaussian_fit.pt`` in the working directory; it was StyleGAN1-, CUDA-
and 1024-only. See docs/pulse.md.
"""

from lit_propulse.pulse.config import (
    NoiseConfig,
    NoiseMode,
    PULSEConfig,
    PULSELossConfig,
)
from lit_propulse.pulse.fit import GaussianFit, default_cache_dir, mapping_fingerprint
from lit_propulse.pulse.metrics import (
    GroupRate,
    SuccessRate,
    group_success_rates,
    success_rate,
)
from lit_propulse.pulse.optim import (
    OPTIMIZERS,
    LRSchedule,
    OptimizerFactory,
    SphericalOptimizer,
    lr_factor,
    project_to_sphere,
)
from lit_propulse.pulse.results import read_groups_csv
from lit_propulse.pulse.search import PULSE, PULSEResult, PULSEStep, noise_resolutions

__all__ = [
    "OPTIMIZERS",
    "PULSE",
    "GaussianFit",
    "GroupRate",
    "LRSchedule",
    "NoiseConfig",
    "NoiseMode",
    "OptimizerFactory",
    "PULSEConfig",
    "PULSELossConfig",
    "PULSEResult",
    "PULSEStep",
    "SphericalOptimizer",
    "SuccessRate",
    "default_cache_dir",
    "group_success_rates",
    "lr_factor",
    "mapping_fingerprint",
    "noise_resolutions",
    "project_to_sphere",
    "read_groups_csv",
    "success_rate",
]
