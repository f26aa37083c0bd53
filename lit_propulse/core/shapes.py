"""Shape checks at module boundaries (stylegan3's ``misc.assert_shape``)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor


def assert_shape(x: Tensor, shape: Sequence[int | None], name: str = "tensor") -> None:
    """Raise ValueError unless ``x`` has ``len(shape)`` dims and each non-None entry matches.

    ``assert_shape(lr, [None, 3, 16, 16], "lr")`` accepts any batch size."""
    if x.ndim != len(shape):
        raise ValueError(f"{name}: expected {len(shape)} dims {list(shape)}, got shape {list(x.shape)}")
    for i, (got, want) in enumerate(zip(x.shape, shape)):
        if want is not None and int(got) != int(want):
            raise ValueError(f"{name}: dim {i} is {int(got)}, expected {int(want)} (shape {list(x.shape)}, expected {list(shape)})")
