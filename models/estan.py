"""ESTAN encoder blocks: a square branch and a row-column branch, fused, then 2x2 max pooling.

Translated from the authors' MT-ESTAN code (MIDA-Lab/busbench, `Source Code/MT-ESTAN.py`): every
conv is ReLU + 'same' padding with F filters, BatchNorm sits after the first conv of the square
branch and after the row-column pair (blocks 1-4 only), the two branches are concatenated (2F) and
fused back to F. Each block's map before pooling is a decoder skip connection.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from models.layers import conv_relu
from models.presets import PAPER_WIDTHS


@dataclass(frozen=True)
class EstanBlockSpec:
    """Kernel sizes of one block, as the authors wrote them."""

    square_first: int  # first conv of the square branch (then always 3x3)
    row_col: tuple[tuple[int, int], tuple[int, int]]  # the two consecutive row-column kernels
    row_col_last: int  # conv closing the row-column branch
    fuse: int  # conv fusing the concatenated branches
    batch_norm: bool  # block 5 has none


AUTHORS_BLOCKS = (
    EstanBlockSpec(1, ((1, 15), (15, 1)), 3, 5, True),
    EstanBlockSpec(3, ((1, 13), (13, 1)), 3, 5, True),
    EstanBlockSpec(3, ((1, 11), (11, 1)), 1, 3, True),
    EstanBlockSpec(3, ((1, 9), (9, 1)), 3, 1, True),
    EstanBlockSpec(3, ((3, 7), (7, 3)), 3, 1, False),
)


class EstanBlock(nn.Module):
    """One ESTAN block (without its pooling): [B, C_in, H, W] -> [B, width, H, W]."""

    def __init__(self, in_channels: int, width: int, spec: EstanBlockSpec):
        super().__init__()
        norm = (lambda: nn.BatchNorm2d(width)) if spec.batch_norm else nn.Identity
        (row_k, col_k) = spec.row_col
        self.square = nn.Sequential(
            conv_relu(in_channels, width, spec.square_first),
            norm(),
            conv_relu(width, width, 3),
        )
        self.row_col = nn.Sequential(
            conv_relu(in_channels, width, row_k),
            conv_relu(width, width, col_k),
            norm(),
            conv_relu(width, width, spec.row_col_last),
        )
        self.fuse = conv_relu(2 * width, width, spec.fuse)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fuse(torch.cat([self.square(x), self.row_col(x)], dim=1))


class EstanEncoder(nn.Module):
    """Five ESTAN blocks with 2x2 max pooling between them.

    Returns the five block maps before pooling: widths `out_channels` at `reductions` 1, 2, 4, 8, 16
    of the input (block 5 is not pooled).
    """

    reductions = (1, 2, 4, 8, 16)

    def __init__(self, widths: tuple[int, ...] = PAPER_WIDTHS, in_channels: int = 3):
        super().__init__()
        if len(widths) != len(AUTHORS_BLOCKS):
            raise ValueError(f"ESTAN needs {len(AUTHORS_BLOCKS)} block widths, got {len(widths)}: {widths}")
        ins = (in_channels, *widths[:-1])
        self.blocks = nn.ModuleList(
            EstanBlock(c_in, width, spec) for c_in, width, spec in zip(ins, widths, AUTHORS_BLOCKS)
        )
        self.pool = nn.MaxPool2d(2)
        self.out_channels = tuple(widths)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        maps = []
        for index, block in enumerate(self.blocks):
            if index:
                x = self.pool(x)
            x = block(x)
            maps.append(x)
        return maps
