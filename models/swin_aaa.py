"""The Swin Transformer V2 encoder with an Anatomy-Aware Attention (AAA) block after each stage.

AAA (paper eq. 5-7): y = the stage's tokens merged back into a map (timm's NHWC -> NCHW);
B = U(concat(MaxPool2x2(y), AvgPool2x2(y))), U = 2x2 stride-2 up-sampling (eq. 6 prints '+', the
text says concatenated; U is a transposed conv like every 'size (2, 2) and stride (2, 2)'
up-sampling of the authors); A = row-column kernels 9x1 then 1x9; O = y * sigmoid(A(B)).
Choices the paper leaves open: U maps 2C -> C and A keeps C channels (a per-channel gate, same
width as y), with a ReLU between the 9x1 and 1x9 convs (the authors put one after every conv) but
none before the sigmoid. O feeds the next stage ("we redesigned the Swin blocks"), so the
attention shapes every later stage, and each O is an encoder output.
"""

from __future__ import annotations

import timm
import torch
from torch import nn

from models.layers import up2x

PATCH_SIZE = 4
NUM_STAGES = 4


class AnatomyAwareAttention(nn.Module):
    """[B, C, H, W] -> [B, C, H, W] gated by a map learnt from 2x2 max- and average-pooled context."""

    def __init__(self, channels: int):
        super().__init__()
        self.max_pool = nn.MaxPool2d(2)
        self.avg_pool = nn.AvgPool2d(2)
        self.up = up2x(2 * channels, channels)
        self.row_col = nn.Sequential(
            nn.Conv2d(channels, channels, (9, 1), padding="same"),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, (1, 9), padding="same"),
        )

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        context = self.up(torch.cat([self.max_pool(y), self.avg_pool(y)], dim=1))
        return y * torch.sigmoid(self.row_col(context))


def window_tiling_problem(input_size: int, window: int) -> str | None:
    """Why the Swin windows cannot tile an input of this size exactly (None when they can).

    timm clamps a window to a stage map that is smaller than it and pads maps that are not a
    multiple of it; we refuse the padding (it would change what each window sees), and AAA's 2x2
    pooling needs an even last-stage map.
    """
    if input_size % (PATCH_SIZE * 2**NUM_STAGES) != 0:
        return (
            f"input_size {input_size} is not a multiple of {PATCH_SIZE * 2**NUM_STAGES} "
            f"(patch {PATCH_SIZE}, {NUM_STAGES - 1} patch merges, AAA's 2x2 pooling on the last stage)"
        )
    for stage in range(NUM_STAGES):
        side = input_size // (PATCH_SIZE * 2**stage)
        if side > window and side % window != 0:
            return (
                f"input_size {input_size} gives a {side}x{side} token map at Swin stage {stage + 1}, "
                f"which {window}x{window} windows do not tile"
            )
    return None


class SwinAAAEncoder(nn.Module):
    """timm Swin V2 (pretrained=False) -> per-stage NCHW maps, each after its AAA block.

    `out_channels` per stage at `reductions` (4, 8, 16, 32). `use_aaa=False` gives the ablation
    'Swin without AAA' through the same code path (identity instead of the block).
    """

    reductions = (4, 8, 16, 32)

    def __init__(self, name: str, input_size: int, window: int, use_aaa: bool = True, **timm_kwargs):
        super().__init__()
        problem = window_tiling_problem(input_size, window)
        if problem:
            raise ValueError(problem)
        self.backbone = timm.create_model(
            name, pretrained=False, num_classes=0, img_size=input_size, window_size=window, **timm_kwargs
        )
        # The encoder's outputs are the stage maps; timm's final LayerNorm (for its own head) is unused.
        self.backbone.norm = nn.Identity()
        self.out_channels = tuple(info["num_chs"] for info in self.backbone.feature_info)
        for index, (channels, stage) in enumerate(zip(self.out_channels, self.backbone.layers)):
            heads = stage.blocks[0].num_heads
            if channels % heads:
                raise ValueError(f"Swin stage {index + 1}: {channels} channels do not split into {heads} heads")
        self.attention = nn.ModuleList(
            AnatomyAwareAttention(c) if use_aaa else nn.Identity() for c in self.out_channels
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        tokens = self.backbone.patch_embed(x)  # NHWC
        maps = []
        for stage, attention in zip(self.backbone.layers, self.attention):
            y = attention(stage(tokens).permute(0, 3, 1, 2))
            maps.append(y)
            tokens = y.permute(0, 2, 3, 1)
        return maps
