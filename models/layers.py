"""Small building blocks shared by the ESTAN encoder and the MT-ESTAN decoder."""

from __future__ import annotations

from torch import nn


def conv_relu(in_channels: int, out_channels: int, kernel: int | tuple[int, int]) -> nn.Sequential:
    """Conv2d with 'same' padding and a bias, then ReLU: the authors' `Conv2D(..., activation='relu',
    padding='same')`, the only conv they use in ESTAN and the decoder."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel, padding="same"),
        nn.ReLU(inplace=True),
    )


def up2x(in_channels: int, out_channels: int) -> nn.ConvTranspose2d:
    """Learnt 2x up-sampling, 2x2 kernel and stride 2, no activation (the authors' Conv2DTranspose)."""
    return nn.ConvTranspose2d(in_channels, out_channels, kernel_size=2, stride=2)
