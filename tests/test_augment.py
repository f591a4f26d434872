"""jobs.data.augment: paper 3.3 augmentation moves image and mask together and keeps masks binary."""

from __future__ import annotations

import pytest
import torch

from jobs.data.augment import Augmenter


def bright_square_batch(batch: int = 8, size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Images that are 1 exactly where the mask is 1 (a square at a different place per sample)."""
    images = torch.zeros(batch, 3, size, size)
    masks = torch.zeros(batch, 1, size, size)
    for i in range(batch):
        top, left = 12 + 2 * i, 14 + i
        masks[i, :, top : top + 20, left : left + 16] = 1
        images[i, :, top : top + 20, left : left + 16] = 1
    return images, masks


def test_masks_stay_binary_and_shapes_are_kept():
    images, masks = bright_square_batch()
    out_images, out_masks = Augmenter("cpu", seed=0)(images, masks)
    assert out_images.shape == images.shape and out_masks.shape == masks.shape
    assert out_images.dtype == torch.float32 and out_masks.dtype == torch.float32
    assert set(out_masks.unique().tolist()) <= {0.0, 1.0}
    assert (out_masks.sum(dim=(1, 2, 3)) > 0).all()


def test_image_and_mask_move_together():
    images, masks = bright_square_batch()
    augmenter = Augmenter("cpu", seed=3)
    moved = 0
    for _ in range(3):
        out_images, out_masks = augmenter(images, masks)
        gray, lesion = out_images[:, 0], out_masks[:, 0]
        # Bilinear (image) and nearest (mask) resampling agree away from the square's edge.
        assert (lesion[gray > 0.99] == 1).all()
        assert (lesion[gray < 0.01] == 0).all()
        assert ((gray > 0.5) == (lesion > 0.5)).float().mean() > 0.98
        moved += int((out_masks != masks).flatten(1).any(dim=1).sum())
    assert moved >= 20, "rotation/shift should move nearly every mask"


def test_same_seed_same_augmentation_and_global_rng_untouched():
    images, masks = bright_square_batch()
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    first = Augmenter("cpu", seed=7)
    a1, a2 = first(images, masks), first(images, masks)
    assert torch.equal(torch.rand(3), expected_next)
    second = Augmenter("cpu", seed=7)
    b1, b2 = second(images, masks), second(images, masks)
    assert torch.equal(a1[0], b1[0]) and torch.equal(a1[1], b1[1])
    assert torch.equal(a2[0], b2[0]) and torch.equal(a2[1], b2[1])
    assert not torch.equal(a1[0], a2[0]), "each call draws new parameters"
    c1 = Augmenter("cpu", seed=8)(images, masks)
    assert not torch.equal(a1[0], c1[0])


def test_unseeded_follows_torch_global_seed():
    images, masks = bright_square_batch()
    augmenter = Augmenter("cpu")
    torch.manual_seed(5)
    first = augmenter(images, masks)
    torch.manual_seed(5)
    again = augmenter(images, masks)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])


def test_rejects_mismatched_shapes():
    images, masks = bright_square_batch()
    with pytest.raises(ValueError, match="expected images"):
        Augmenter("cpu")(images, masks[:, :, :32])
