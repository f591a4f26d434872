"""Model FLOPs per image and MFU (model FLOPs utilisation): the share of the device's peak that a
measured images/s uses.

FLOPs are counted on a real pass, not estimated: `torch.utils.flop_counter.FlopCounterMode` counts
2 FLOPs per multiply-add of every matmul, convolution and attention (forward, and backward when
asked), the operations a GPU's tensor cores run; norms, activations and the loss are left out, as
in the usual MFU definition. Training counts forward + backward (about 3x the forward), serving
the forward alone.

Peaks are the dense bf16 tensor-core numbers of the vendors' datasheets (no sparsity), per GPU,
matched on `torch.cuda.get_device_name()`; any other device needs its peak given (`--peak-tflops`).
"""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

# Substrings of the device name -> dense bf16 peak in TFLOP/s; the first match wins (H100 PCIe before H100).
PEAK_TFLOPS = {
    "H200": 989.0,
    "H100 NVL": 835.0,
    "H100 PCIe": 756.0,
    "H100": 989.0,
    "A100": 312.0,
    "L40S": 362.0,
    "L4": 121.0,
}


def flops_per_image(model: torch.nn.Module, input_size: int, *, train: bool) -> float:
    """Counted FLOPs of one `input_size` image through `model` (forward, + backward when `train`), on
    the model's device. The model's mode and gradients are left as they were."""
    parameter = next(model.parameters())
    images = torch.randn(1, 3, input_size, input_size, device=parameter.device)
    was_training = model.training
    model.eval()  # the same FLOPs as training mode; batch norm needs no batch of several images
    saved = [p.grad for p in model.parameters()]
    try:
        with FlopCounterMode(display=False) as counter:
            if train:
                outputs = model(images)
                sum(value.float().sum() for value in outputs.values() if value is not None).backward()
            else:
                with torch.no_grad():
                    model(images)
    finally:
        for p, grad in zip(model.parameters(), saved):
            p.grad = grad
        model.train(was_training)
    return float(counter.get_total_flops())


def peak_flops(device_name: str, tflops: float | None = None) -> float | None:
    """FLOP/s of the device: `tflops` when given, else the table's entry for `device_name`, else None."""
    if tflops is not None:
        return tflops * 1e12
    for name, peak in PEAK_TFLOPS.items():
        if name in device_name:
            return peak * 1e12
    return None


def mfu(images_per_s: float, flops_per_image: float, peak: float | None) -> float | None:
    """The share of the peak used: images/s x FLOPs per image / peak FLOP/s (None without a peak)."""
    return images_per_s * flops_per_image / peak if peak else None
