"""The training loss of Hybrid-MT-ESTAN: w1 * focal (classification) + Dice (segmentation).

Forms as the authors' public MT-ESTAN Keras code computes them, not the paper's printed
focal loss, whose second term has a typo. Everything is computed from logits with `logsigmoid`, so
logits of +-100 give finite losses and finite gradients. The weights and their defaults are
`LossWeights` (models/loss_weights.py, torch-free so that the CLI can read them).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from models.loss_weights import LossWeights

__all__ = ["LossTerms", "LossWeights", "dice_loss", "focal_loss", "multitask_loss"]
DEFAULT_WEIGHTS = LossWeights()


class LossTerms(NamedTuple):
    """The total loss to back-propagate and its two parts (detached copies are the caller's choice).

    `dice` is a zero tensor when the Dice term was skipped (no mask head, or no image with a mask).
    """

    total: torch.Tensor
    focal: torch.Tensor
    dice: torch.Tensor


def focal_loss(
    logits: torch.Tensor, targets: torch.Tensor, alpha: float = LossWeights.alpha, gamma: float = LossWeights.gamma
) -> torch.Tensor:
    """Binary focal loss, mean over the batch.

    -[alpha * t * (1-p)^gamma * log p + (1-alpha) * (1-t) * p^gamma * log(1-p)], p = sigmoid(logit).
    gamma = 0 gives the alpha-weighted binary cross-entropy.
    """
    if logits.shape != targets.shape:
        raise ValueError(f"focal_loss: logits {tuple(logits.shape)} and targets {tuple(targets.shape)} differ in shape")
    targets = targets.to(logits.dtype)
    log_p = F.logsigmoid(logits)
    log_not_p = F.logsigmoid(-logits)
    # (1-p)^gamma and p^gamma as exp(gamma * log ...): finite value and gradient even where p is 0 or 1.
    positive = alpha * targets * torch.exp(gamma * log_not_p) * log_p
    negative = (1.0 - alpha) * (1.0 - targets) * torch.exp(gamma * log_p) * log_not_p
    return -(positive + negative).mean()


def dice_loss(mask_logits: torch.Tensor, masks: torch.Tensor, per_image: bool = False) -> torch.Tensor:
    """1 - soft Dice with smooth 1: (2*sum(y*p) + 1) / (sum(y) + sum(p) + 1).

    Over the flattened batch, as the authors' Keras code computes it, or `per_image`: the mean of each
    image's own soft Dice, as Dice is reported. Over the batch a large lesion outweighs a small one by
    its area, and the network learns to under-segment small lesions (busnet's demo: a small blob in the
    middle of an easily seen lesion); per image every lesion counts as much as it does in the metric."""
    if mask_logits.shape != masks.shape:
        raise ValueError(
            f"dice_loss: mask_logits {tuple(mask_logits.shape)} and masks {tuple(masks.shape)} differ in shape"
        )
    probs = torch.sigmoid(mask_logits)
    masks = masks.to(probs.dtype)
    dims = tuple(range(1, probs.ndim)) if per_image else tuple(range(probs.ndim))
    dice = (2.0 * (masks * probs).sum(dims) + 1.0) / (masks.sum(dims) + probs.sum(dims) + 1.0)
    return 1.0 - dice.mean()


def multitask_loss(
    outputs: dict[str, torch.Tensor | None],
    labels: torch.Tensor,
    masks: torch.Tensor,
    weights: LossWeights = DEFAULT_WEIGHTS,
    has_mask: torch.Tensor | None = None,
    dice_per_image: bool = False,
) -> LossTerms:
    """w1 * focal(outputs["logits"], labels, alpha, gamma) + dice(outputs["mask_logits"], masks), w1, alpha
    and gamma from `weights`; `dice_per_image`: see `dice_loss`.

    The Dice term uses only the images whose `has_mask` (bool [B]; None = all) is True, and is
    skipped when the model has no mask head (`mask_logits` is None: the `swin` and `swin_aaa`
    classifiers) or no image in the batch has a mask.
    """
    logits = outputs["logits"]
    focal = focal_loss(logits, labels, alpha=weights.alpha, gamma=weights.gamma)
    dice = torch.zeros((), dtype=logits.dtype, device=logits.device)
    mask_logits = outputs.get("mask_logits")
    if mask_logits is not None:
        if has_mask is not None:
            has_mask = has_mask.to(device=mask_logits.device, dtype=torch.bool).reshape(-1)
            if has_mask.numel() != mask_logits.shape[0]:
                raise ValueError(
                    f"multitask_loss: has_mask has {has_mask.numel()} entries for a batch of {mask_logits.shape[0]}"
                )
            mask_logits, masks = mask_logits[has_mask], masks[has_mask]
        if mask_logits.shape[0] > 0:
            dice = dice_loss(mask_logits, masks, per_image=dice_per_image)
    return LossTerms(total=weights.w1 * focal + dice, focal=focal, dice=dice)
