"""The MT-ESTAN decoder: bottleneck, four Up Blocks, a 1-channel segmentation head.

Translated from the authors' Keras code (MIDA-Lab's public MT-ESTAN), with F = the ESTAN widths:
- Bottleneck (1/32 -> 1/16): concat(ResNet layer4 output, layer4 first-BN tap[, extra encoder
  maps]) -> 2x2 stride-2 transposed conv to F5 -> concat ESTAN block 5.
- Up Block at level L (ResNet reduction 2^(L+1); L = 3, 2, 1, 0): concat ResNet stage output ->
  3x3 conv (F_L) -> concat the stage's first-BN tap -> transposed conv 2x -> concat ESTAN block L
  -> 1x1 conv -> 3x3 conv. Up Block 4 (the stem level) fuses with 5x5 instead of 1x1 and, like the
  authors, also up-samples the stem conv tap into its last 3x3 conv.
Decoder convs are ReLU without BatchNorm. The concatenation that feeds Up Block 1 is also what the
authors' classifier pools; it is returned as `class_map`.
Other encoders' maps (`extra_channels`, by level) join where the ResNet stage output of their
resolution joins: at the bottleneck (level 4, 1/32) beside layer4 and its tap, at an Up Block
beside the stage output, before its first 3x3 conv. `class_map` stays the authors' concatenation.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from models.cnn_encoder import CnnFeatures
from models.layers import conv_relu, up2x


class UpBlock(nn.Module):
    """Three convs and one 2x learnt up-sampling; [B, in, H, W] -> [B, width, 2H, 2W]."""

    def __init__(
        self,
        in_channels: int,
        tap_channels: int,
        skip_channels: int,
        width: int,
        fuse_kernel: int = 1,
        tap_to_output: bool = False,
    ):
        super().__init__()
        self.reduce = conv_relu(in_channels, width, 3)
        self.up = up2x(width + tap_channels, width)
        self.fuse = conv_relu(width + skip_channels, width, fuse_kernel)
        self.tap_up = up2x(tap_channels, width) if tap_to_output else None
        self.out = conv_relu(2 * width if tap_to_output else width, width, 3)

    def forward(self, joined: torch.Tensor, tap: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(torch.cat([self.reduce(joined), tap], dim=1))
        x = self.fuse(torch.cat([x, skip], dim=1))
        if self.tap_up is not None:
            x = torch.cat([self.tap_up(tap), x], dim=1)
        return self.out(x)


class MTEstanDecoder(nn.Module):
    """Segmentation branch. `extra_channels` {level: channels}: other encoders' maps joined at that level.

    Levels are the ResNet's (0..4 = reductions 2..32); level 4 is the bottleneck.
    """

    def __init__(
        self,
        stage_channels: tuple[int, ...],
        tap_channels: tuple[int, ...],
        estan_widths: tuple[int, ...],
        extra_channels: Mapping[int, int] | None = None,
    ):
        super().__init__()
        extra = dict(extra_channels or {})
        bottom = len(estan_widths) - 1
        if not set(extra) <= set(range(1, bottom + 1)):
            raise ValueError(f"extra maps can join at levels 1..{bottom}, got {sorted(extra)}")
        self.extra_levels = tuple(sorted(extra))
        self.bottleneck_up = up2x(
            stage_channels[bottom] + tap_channels[bottom] + extra.get(bottom, 0), estan_widths[bottom]
        )
        blocks = []
        x_channels = 2 * estan_widths[bottom]
        for level in reversed(range(bottom)):
            stem = level == 0
            blocks.append(
                UpBlock(
                    x_channels + stage_channels[level] + extra.get(level, 0),
                    tap_channels[level],
                    estan_widths[level],
                    estan_widths[level],
                    fuse_kernel=5 if stem else 1,
                    tap_to_output=stem,
                )
            )
            x_channels = estan_widths[level]
        self.up_blocks = nn.ModuleList(blocks)
        self.head = nn.Conv2d(estan_widths[0], 1, kernel_size=1)
        self.class_channels = 2 * estan_widths[bottom] + stage_channels[bottom - 1]

    def forward(
        self, cnn: CnnFeatures, extra: Mapping[int, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (mask logits [B, 1, S, S], class_map = the authors' input of Up Block 1).

        `extra` {level: map}: the levels given as `extra_channels` at construction (`extra_levels`).
        """
        extra = extra or {}
        bottom = len(self.up_blocks)
        joined = [cnn.stages[bottom], cnn.taps[bottom], *([extra[bottom]] if bottom in extra else [])]
        x = torch.cat([self.bottleneck_up(torch.cat(joined, dim=1)), cnn.estan[bottom]], dim=1)
        class_map = None
        for block, level in zip(self.up_blocks, reversed(range(bottom))):
            authors = torch.cat([x, cnn.stages[level]], dim=1)
            if class_map is None:
                class_map = authors
            joined = torch.cat([authors, extra[level]], dim=1) if level in extra else authors
            x = block(joined, cnn.taps[level], cnn.estan[level])
        return self.head(x), class_map
