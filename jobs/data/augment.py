"""Training augmentation of paper 3.3 on the worker's device: image and mask move together.

Horizontal flip (p=0.5), then one random affine per sample: rotation uniform in +-20 degrees and
a shift uniform in +-20% of the width and of the height (Keras' `rotation_range=20`,
`width_shift_range=0.2`, `height_shift_range=0.2`). kornia's AugmentationSequential draws each
sample's parameters once and applies them to both the image and its mask; the mask is resampled
with nearest neighbour, so it stays exactly binary. Pixels shifted in from outside repeat the
border (`padding_mode="border"`, Keras' default `fill_mode="nearest"`), for image and mask alike.
"""

from __future__ import annotations

import kornia.augmentation as K
import torch

ROTATION_DEGREES = 20.0
SHIFT_FRACTION = 0.2
FLIP_PROBABILITY = 0.5


class Augmenter:
    """`augmenter(images [B,3,S,S], masks [B,1,S,S]) -> (images, masks)` on `device`.

    With `seed=None` the random parameters come from torch's global RNG (seed it with
    `torch.manual_seed`). With a seed, call number n is seeded from (seed, n) inside a forked RNG:
    the same sequence of calls gives the same augmentations, and the global RNG is left alone.
    """

    def __init__(self, device: str | torch.device = "cpu", seed: int | None = None):
        self.device = torch.device(device)
        self.seed = seed
        self._calls = 0
        self._pipeline = K.AugmentationSequential(
            K.RandomHorizontalFlip(p=FLIP_PROBABILITY),
            K.RandomAffine(
                degrees=ROTATION_DEGREES,
                translate=(SHIFT_FRACTION, SHIFT_FRACTION),
                padding_mode="border",
                p=1.0,
            ),
            data_keys=["input", "mask"],
        ).to(self.device)

    def __call__(self, images: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if (
            images.ndim != 4
            or masks.ndim != 4
            or images.shape[0] != masks.shape[0]
            or images.shape[-2:] != masks.shape[-2:]
            or masks.shape[1] != 1
        ):
            raise ValueError(
                f"expected images [B,C,S,S] and masks [B,1,S,S], got {tuple(images.shape)} and {tuple(masks.shape)}"
            )
        images = images.to(self.device, non_blocking=True)
        masks = masks.to(self.device, non_blocking=True)
        if self.seed is None:
            images, masks = self._pipeline(images, masks)
            return images, masks
        call_seed = hash((self.seed, self._calls)) % 2**63
        self._calls += 1
        cuda = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):
            torch.manual_seed(call_seed)
            images, masks = self._pipeline(images, masks)
        return images, masks
