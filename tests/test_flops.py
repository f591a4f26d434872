"""models.flops: FLOPs counted on a real pass (a hand count for two convolutions; the tiny preset's
training pass about 3x its forward), the peak table and MFU."""

from __future__ import annotations

import pytest
import torch

from models import build_model
from models.flops import flops_per_image, mfu, peak_flops


class TwoConvs(torch.nn.Module):
    """3 -> 8 channels (3x3, padding 1), then 8 -> 1 (1x1): FLOPs easy to count by hand."""

    def __init__(self):
        super().__init__()
        self.first = torch.nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.second = torch.nn.Conv2d(8, 1, 1, bias=False)

    def forward(self, images):
        return {"mask_logits": self.second(self.first(images)), "logits": None}


def test_two_convolutions_count_as_counted_by_hand():
    side = 16
    first = 2 * 3 * 8 * 3 * 3 * side * side  # 2 FLOPs per multiply-add, per output pixel
    second = 2 * 8 * 1 * side * side
    model = TwoConvs().train()
    assert flops_per_image(model, side, train=False) == first + second
    # backward: both weight gradients, and the input gradient of the second conv only (the image needs none)
    assert flops_per_image(model, side, train=True) == (first + second) + (first + 2 * second)
    assert model.training and all(p.grad is None for p in model.parameters())  # left as it was


def test_a_training_pass_of_the_tiny_network_costs_about_three_forwards():
    model = build_model("tiny", input_size=64).eval()
    forward = flops_per_image(model, 64, train=False)
    train = flops_per_image(model, 64, train=True)
    assert forward > 1e7
    assert 2.0 < train / forward < 3.5
    assert not model.training


@pytest.mark.parametrize(
    ("name", "tflops"),
    [
        ("NVIDIA H200", 989.0),
        ("NVIDIA H100 80GB HBM3", 989.0),
        ("NVIDIA H100 PCIe", 756.0),
        ("NVIDIA A100-SXM4-80GB", 312.0),
        ("NVIDIA L40S", 362.0),
        ("NVIDIA L4", 121.0),
    ],
)
def test_known_gpus_have_their_datasheet_peak(name, tflops):
    assert peak_flops(name) == tflops * 1e12


def test_an_unknown_device_needs_its_peak_given():
    assert peak_flops("cpu") is None and mfu(100.0, 1e9, None) is None
    assert peak_flops("cpu", tflops=2.0) == 2e12
    assert mfu(2000.0, 1e11, 1e15) == pytest.approx(0.2)
