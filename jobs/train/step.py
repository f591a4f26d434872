"""One training step, the one `busnet train`'s workers run and `busnet bench train` times.

Augment on the batch's device (kornia), forward under bf16 autocast in channels-last on a GPU (fp32 on CPU), the
multitask loss with the run's weights in fp32, backward, gradient clipping (when asked), optimizer
step. One function, so the benchmark measures exactly the step training runs.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from jobs.train.recipe import clip_gradients
from models.losses import LossWeights, multitask_loss

Augment = Callable[[torch.Tensor, torch.Tensor], "tuple[torch.Tensor, torch.Tensor]"]


def train_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    augment: Augment,
    batch: dict[str, torch.Tensor],
    weights: LossWeights,
    clip_grad: float = 0.0,
    dice_per_image: bool = False,
) -> torch.Tensor:
    """Train on one batch ({"image", "mask", "has_mask", "label"}); returns its loss, detached.

    `clip_grad` > 0 clips the global gradient norm to it (`jobs.train.recipe.clip_gradients`);
    `dice_per_image`: `models.losses.dice_loss`."""
    images, masks = augment(batch["image"], batch["mask"])
    cuda = images.device.type == "cuda"
    if cuda:  # the layout of the model's weights there (jobs.train.loop): cuDNN's fast bf16 convolutions
        images = images.contiguous(memory_format=torch.channels_last)
    with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=cuda):
        outputs = model(images)
    outputs = {k: (v.float() if v is not None else None) for k, v in outputs.items()}
    loss = multitask_loss(
        outputs, batch["label"], masks, weights, has_mask=batch["has_mask"], dice_per_image=dice_per_image
    ).total
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    clip_gradients(model, clip_grad)
    optimizer.step()
    return loss.detach()
