"""models.losses against values computed by hand (plain math), torchvision and torch's BCE."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from models.losses import LossTerms, LossWeights, dice_loss, focal_loss, multitask_loss


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _focal_by_hand(logits, targets, alpha, gamma) -> float:
    total = 0.0
    for x, t in zip(logits, targets):
        p = _sigmoid(x)
        total += alpha * t * (1 - p) ** gamma * math.log(p) + (1 - alpha) * (1 - t) * p**gamma * math.log(1 - p)
    return -total / len(logits)


@pytest.mark.parametrize("alpha,gamma", [(0.5, 2.0), (0.25, 2.0), (0.75, 1.0), (0.5, 0.0), (0.6, 0.5)])
def test_focal_matches_hand_computed(alpha, gamma):
    logits, targets = [0.0, 2.0, -1.5, 3.0, -0.3], [1.0, 0.0, 1.0, 1.0, 0.0]
    got = focal_loss(
        torch.tensor(logits, dtype=torch.float64), torch.tensor(targets, dtype=torch.float64), alpha, gamma
    )
    assert got.item() == pytest.approx(_focal_by_hand(logits, targets, alpha, gamma), rel=1e-12)


def test_focal_known_value():
    # logit 0 -> p = 0.5; positive: 0.5 * 0.25 * log 0.5, mean over one = -0.125 * log 0.5
    assert focal_loss(torch.zeros(1), torch.ones(1)).item() == pytest.approx(0.125 * math.log(2), rel=1e-6)


def test_focal_matches_torchvision_sigmoid_focal_loss():
    from torchvision.ops import sigmoid_focal_loss

    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(64, generator=gen, dtype=torch.float64) * 4
    targets = (torch.rand(64, generator=gen) > 0.5).double()
    expected = sigmoid_focal_loss(logits, targets, alpha=0.3, gamma=2.0, reduction="mean")
    assert focal_loss(logits, targets, alpha=0.3, gamma=2.0).item() == pytest.approx(expected.item(), rel=1e-10)


def test_gamma_zero_is_alpha_weighted_bce():
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(32, generator=gen) * 3
    targets = (torch.rand(32, generator=gen) > 0.4).float()
    alpha = 0.7
    weights = alpha * targets + (1 - alpha) * (1 - targets)
    bce = F.binary_cross_entropy_with_logits(logits, targets, weight=weights)
    assert focal_loss(logits, targets, alpha=alpha, gamma=0.0).item() == pytest.approx(bce.item(), rel=1e-5)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_extreme_logits_stay_finite_with_finite_gradients(gamma):
    logits = torch.tensor([100.0, -100.0, 100.0, -100.0, 0.0], requires_grad=True)
    targets = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0])
    loss = focal_loss(logits, targets, gamma=gamma)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
    # confidently wrong (+100 for a benign, -100 for a malignant) costs about 0.5 * 100 each
    assert loss.item() == pytest.approx((50.0 + 50.0 + 0.5 * 0.5**gamma * math.log(2)) / 5, rel=1e-4)

    mask_logits = torch.full((2, 1, 4, 4), 100.0, requires_grad=True)
    masks = torch.zeros(2, 1, 4, 4)
    dice = dice_loss(mask_logits, masks)
    dice.backward()
    assert torch.isfinite(dice) and torch.isfinite(mask_logits.grad).all()


def test_dice_matches_hand_computed():
    mask_logits = torch.tensor([[[[0.0, 2.0], [-2.0, 1.0]]], [[[3.0, -1.0], [0.5, 0.0]]]], dtype=torch.float64)
    masks = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]], [[[1.0, 0.0], [1.0, 0.0]]]], dtype=torch.float64)
    xs = [0.0, 2.0, -2.0, 1.0, 3.0, -1.0, 0.5, 0.0]
    ys = [1, 1, 0, 0, 1, 0, 1, 0]
    ps = [_sigmoid(x) for x in xs]
    dice = (2 * sum(p * y for p, y in zip(ps, ys)) + 1) / (sum(ys) + sum(ps) + 1)
    assert dice_loss(mask_logits, masks).item() == pytest.approx(1 - dice, rel=1e-12)
    first, second = (
        (2 * sum(p * y for p, y in zip(ps[i : i + 4], ys[i : i + 4])) + 1)
        / (sum(ys[i : i + 4]) + sum(ps[i : i + 4]) + 1)
        for i in (0, 4)
    )
    assert dice_loss(mask_logits, masks, per_image=True).item() == pytest.approx(1 - (first + second) / 2, rel=1e-12)


def test_dice_per_image_weighs_a_small_lesion_as_much_as_a_large_one():
    masks = torch.zeros(2, 1, 16, 16)
    masks[0, :, 1:15, 1:15] = 1  # a large lesion
    masks[1, :, 7:9, 7:9] = 1  # a small one
    right = torch.where(masks > 0, 50.0, -50.0)
    missed_small, missed_large = right.clone(), right.clone()
    missed_small[1], missed_large[0] = -50.0, -50.0  # no lesion found in that image
    # Over the batch missing the small lesion costs almost nothing; per image it costs what the large one does.
    assert dice_loss(missed_small, masks).item() < 0.05 and dice_loss(missed_large, masks).item() > 0.9
    assert dice_loss(missed_small, masks, per_image=True).item() == pytest.approx(
        dice_loss(missed_large, masks, per_image=True).item(), abs=0.1
    )


def test_dice_perfect_and_empty():
    masks = torch.zeros(1, 1, 8, 8)
    masks[..., 2:5, 2:5] = 1
    perfect = torch.where(masks > 0, 50.0, -50.0)
    assert dice_loss(perfect, masks).item() == pytest.approx(0.0, abs=1e-6)
    empty = torch.zeros(1, 1, 8, 8)
    assert dice_loss(torch.full_like(empty, -50.0), empty).item() == pytest.approx(0.0, abs=1e-6)


def test_multitask_is_w1_focal_plus_dice_over_masked_images_only():
    gen = torch.Generator().manual_seed(2)
    outputs = {"logits": torch.randn(4, generator=gen), "mask_logits": torch.randn(4, 1, 8, 8, generator=gen)}
    labels = torch.tensor([0.0, 1.0, 1.0, 0.0])
    masks = (torch.rand(4, 1, 8, 8, generator=gen) > 0.5).float()
    has_mask = torch.tensor([True, False, True, False])

    terms = multitask_loss(outputs, labels, masks, LossWeights(w1=2.5, alpha=0.4, gamma=1.0), has_mask=has_mask)
    assert isinstance(terms, LossTerms)
    focal = focal_loss(outputs["logits"], labels, alpha=0.4, gamma=1.0)
    dice = dice_loss(outputs["mask_logits"][[0, 2]], masks[[0, 2]])
    assert terms.focal.item() == pytest.approx(focal.item())
    assert terms.dice.item() == pytest.approx(dice.item())
    assert terms.total.item() == pytest.approx(2.5 * focal.item() + dice.item())

    all_masks = multitask_loss(outputs, labels, masks)
    assert all_masks.dice.item() == pytest.approx(dice_loss(outputs["mask_logits"], masks).item())


def test_multitask_skips_dice_without_mask_head_or_masks():
    logits = torch.tensor([0.5, -0.5], requires_grad=True)
    labels = torch.tensor([1.0, 0.0])
    masks = torch.zeros(2, 1, 8, 8)
    swin = multitask_loss({"logits": logits, "mask_logits": None}, labels, masks)
    assert swin.dice.item() == 0.0
    assert swin.total.item() == pytest.approx(LossWeights().w1 * focal_loss(logits, labels).item())

    mask_logits = torch.randn(2, 1, 8, 8, requires_grad=True)
    none_masked = multitask_loss(
        {"logits": logits, "mask_logits": mask_logits}, labels, masks, has_mask=torch.tensor([False, False])
    )
    assert none_masked.dice.item() == 0.0
    none_masked.total.backward()
    assert torch.isfinite(logits.grad).all()


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="differ in shape"):
        focal_loss(torch.zeros(3), torch.zeros(4))
    with pytest.raises(ValueError, match="has_mask"):
        multitask_loss(
            {"logits": torch.zeros(2), "mask_logits": torch.zeros(2, 1, 4, 4)},
            torch.zeros(2),
            torch.zeros(2, 1, 4, 4),
            has_mask=torch.tensor([True]),
        )
