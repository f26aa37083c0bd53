"""Seeds from integer keys: every random stream of the project that must not depend on batching or
order (degradations per image, PULSE's per-item initialisation, generated data) comes from here."""

from __future__ import annotations

import numpy as np
import torch


def mix_seed(*keys: int) -> int:
    """A 63-bit seed from integer keys (e.g. ``(seed, image key, sample)``), mixed by NumPy's
    SeedSequence so nearby keys give unrelated streams."""
    state = np.random.SeedSequence([int(k) % (1 << 64) for k in keys]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def seed_generator(*keys: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded from a tuple of integers (e.g. ``(seed, index)``), mixed like
    :func:`mix_seed`."""
    state = np.random.SeedSequence([int(k) % (1 << 64) for k in keys]).generate_state(2, np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))
