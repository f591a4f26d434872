"""THE inference step "batch -> malignancy probabilities + lesion masks", and the one mask threshold.

Validation in training, `busnet evaluate` and the Serve replica all call `predict`, so the numbers a
run reports, the ones evaluation reports and the answers served come from the same forward pass:
same precision handling, same sigmoid, same float32 outputs, same mask rule (`binarize`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

MASK_THRESHOLD = 0.5  # a pixel is lesion when its probability is > 0.5 (its logit > 0)


@dataclass(frozen=True)
class Prediction:
    """What the network says about a batch; `outputs` stays on the device for a loss (validation)."""

    probs: np.ndarray  # float32 [B]: probability that the tumour is malignant
    mask_probs: np.ndarray | None  # float32 [B, S, S]: lesion probability per pixel; None without a mask head
    outputs: dict[str, torch.Tensor | None]  # the network's float32 {"logits", "mask_logits"}


@torch.inference_mode()
def predict(
    model: torch.nn.Module,
    images: torch.Tensor | np.ndarray,
    device: torch.device | str,
    dtype: torch.dtype | None = None,
    temperature: float = 1.0,
) -> Prediction:
    """One forward pass of `model` on normalised images [B, 3, S, S], on `device`.

    The model is put in eval mode (dropout off, BN running statistics): inference is never anything
    else, and a caller that forgot would get other numbers than the others. `dtype` bf16/fp16 runs
    the network under autocast (GPU validation and serving); None or float32 runs it in full
    precision. Whatever it ran in, the outputs are float32. `temperature`: the checkpoint's
    (`models.calibration.temperature_of`): the probability is sigmoid(logit / T); `outputs` keep the
    raw logits.
    """
    device = torch.device(device)
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    images = images.to(device=device, dtype=torch.float32)
    model.eval()
    half = dtype is not None and dtype != torch.float32
    with torch.autocast(device.type, dtype=dtype, enabled=half):
        raw = model(images)
    outputs = {name: None if value is None else value.float() for name, value in raw.items()}
    probs = torch.sigmoid(outputs["logits"] / temperature).cpu().numpy()
    if outputs["mask_logits"] is None:
        return Prediction(probs, None, outputs)
    return Prediction(probs, torch.sigmoid(outputs["mask_logits"])[:, 0].cpu().numpy(), outputs)


def binarize(mask_probs: np.ndarray) -> np.ndarray:
    """Lesion probabilities (any shape) -> bool lesion mask: the one rule, probability > MASK_THRESHOLD."""
    return np.asarray(mask_probs) > MASK_THRESHOLD
