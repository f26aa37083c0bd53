"""The one output type for "an image with its side outputs (and the w+ that made it)" (diffusers'
``modeling_outputs.py`` habit): G_ds (Pro-PULSE Eq. (2), (4)), the inference upsampler and every
method of the evaluation return it."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor


@dataclass
class ImageOutput:
    """image: [B, 3, H, W] in [-1, 1] (the final image I_o^H).
    side_images: resolution r -> [B, 3, r, r], the side outputs I_o^r ({} for methods without them).
    ws: [B, num_ws, w_dim], the w+ that produced the image; None when there is none (bicubic)."""

    image: Tensor
    side_images: dict[int, Tensor] = field(default_factory=dict)
    ws: Tensor | None = None

    def all_scales(self) -> dict[int, Tensor]:
        """Every output scale r' of Eq. (4)/(6): the side outputs plus the final image."""
        return {**self.side_images, self.image.shape[-1]: self.image}
