"""The Swin Transformer V2 encoder, with or without Anatomy-Aware Attention (AAA) blocks.

AAA (paper eq. 5-7): y = the tokens merged back into a map (timm's NHWC -> NCHW);
B = U(concat(MaxPool2x2(y), AvgPool2x2(y))), U = 2x2 stride-2 up-sampling (eq. 6 prints '+', the
text says "concatenated"; U is a transposed conv like every "size (2, 2) and stride (2, 2)"
up-sampling of the authors); A = row-column kernels 9x1 then 1x9; O = y * sigmoid(A(B)).
A ReLU sits between the 9x1 and 1x9 convs (the authors put one after every conv), none before the
sigmoid. O replaces y in the token stream ("we redesigned the Swin blocks ... by adding an
attention block"), so the attention shapes every later block.

Choices the paper leaves open, each a preset field (models.presets):
- `aaa_placement`: where an AAA block acts. Default "block_pair": eq. 5 reads y^i = M(f^{l+1}),
  and f^{l+1} is eq. 4's output, the MLP after the SW-MSA block: one AAA after each W-MSA/SW-MSA
  block pair (timm shifts the odd-indexed blocks). A stage of odd depth ends with an unpaired
  W-MSA block; it gets its AAA too, so every stage output has been through one. "stage": one AAA
  on each stage's output (busnet before issue 13).
- `aaa_gate`: the width of sigmoid(A(B)). Default "channel": eq. 7 multiplies y^i by sigmoid(A(B))
  and no step of eq. 6-7 reduces channels, so U maps 2C -> C and A keeps C (a gate per channel and
  position). "spatial": U maps 2C -> 1 and A stays one channel: one map over positions, shared by
  all channels (which rows hold which tissue layer), at a few hundred parameters per block.
- `aaa_init`: how a gate starts. Default "identity": O = y * 2 sigmoid(A(B)) with A's last conv at
  zero, so every gate is exactly 1 and a pretrained Swin stream passes unchanged until the gates
  learn (range 0-2). "open": eq. 7 as printed, O = y * sigmoid(A(B)), A's last bias at +2: each gate
  0.88, and twelve in a row (paper preset) scale the stream to ~0.2 before any training.
"""

from __future__ import annotations

import timm
import torch
from torch import nn

from models.layers import up2x

PATCH_SIZE = 4
NUM_STAGES = 4


class AnatomyAwareAttention(nn.Module):
    """[B, C, H, W] -> [B, C, H, W] gated by a map learnt from 2x2 max- and average-pooled context.

    `gate_channels`: C for a per-channel gate, 1 for one spatial map (broadcast over the channels).
    `gain`: O = y * gain * sigmoid(A(B)); 2 with `aaa_init="identity"` (the gate starts at exactly 1
    when A's last conv starts at zero: models.network.init_weights), 1 with "open" (eq. 7 as printed).
    """

    def __init__(self, channels: int, gate_channels: int, gain: float = 1.0):
        super().__init__()
        self.gain = gain
        self.max_pool = nn.MaxPool2d(2)
        self.avg_pool = nn.AvgPool2d(2)
        self.up = up2x(2 * channels, gate_channels)
        self.row_col = nn.Sequential(
            nn.Conv2d(gate_channels, gate_channels, (9, 1), padding="same"),
            nn.ReLU(inplace=True),
            nn.Conv2d(gate_channels, gate_channels, (1, 9), padding="same"),
        )

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        context = self.up(torch.cat([self.max_pool(y), self.avg_pool(y)], dim=1))
        gate = torch.sigmoid(self.row_col(context))
        return y * (gate if self.gain == 1.0 else self.gain * gate)


def aaa_positions(depths: tuple[int, ...], placement: str) -> tuple[tuple[int, int], ...]:
    """(stage, block index) pairs after which an AAA block acts, in forward order."""
    if placement == "stage":
        return tuple((stage, depth - 1) for stage, depth in enumerate(depths))
    pairs = ((stage, block, depth) for stage, depth in enumerate(depths) for block in range(depth))
    return tuple((stage, block) for stage, block, depth in pairs if block % 2 or block == depth - 1)


def window_tiling_problem(input_size: int, window: int, aaa: bool = True) -> str | None:
    """Why the Swin windows cannot tile an input of this size exactly (None when they can).

    timm clamps a window to a stage map that is smaller than it and pads maps that are not a
    multiple of it; we refuse the padding (it would change what each window sees), and AAA's 2x2
    pooling needs an even last-stage map.
    """
    reduction = PATCH_SIZE * 2 ** (NUM_STAGES - 1) * (2 if aaa else 1)
    if input_size % reduction != 0:
        why = ", AAA's 2x2 pooling on the last stage" if aaa else ""
        return (
            f"input_size {input_size} is not a multiple of {reduction} "
            f"(patch {PATCH_SIZE}, {NUM_STAGES - 1} patch merges{why})"
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
    """timm Swin V2 (pretrained=False) -> per-stage NCHW maps; AAA blocks where `aaa_placement` puts them.

    `out_channels` per stage at `reductions` (4, 8, 16, 32). `aaa_placement=None` is the plain Swin V2
    encoder (variants `swin`, `hybrid_noaaa`). The AAA blocks live in `attention` (in forward order,
    at `aaa_positions`), outside timm's modules, so timm's weight files load into `backbone`.
    """

    reductions = (4, 8, 16, 32)

    def __init__(
        self,
        name: str,
        input_size: int,
        window: int,
        aaa_placement: str | None = "block_pair",
        aaa_gate: str = "channel",
        aaa_init: str = "identity",
        **timm_kwargs,
    ):
        super().__init__()
        problem = window_tiling_problem(input_size, window, aaa=aaa_placement is not None)
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
        depths = tuple(len(stage.blocks) for stage in self.backbone.layers)
        self.aaa_positions = () if aaa_placement is None else aaa_positions(depths, aaa_placement)
        gain = 2.0 if aaa_init == "identity" else 1.0
        self.attention = nn.ModuleList(
            AnatomyAwareAttention(
                self.out_channels[stage], 1 if aaa_gate == "spatial" else self.out_channels[stage], gain
            )
            for stage, _ in self.aaa_positions
        )
        self._slot = {position: index for index, position in enumerate(self.aaa_positions)}

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        tokens = self.backbone.patch_embed(x)  # NHWC
        maps = []
        for stage_index, stage in enumerate(self.backbone.layers):
            tokens = stage.downsample(tokens)
            for block_index, block in enumerate(stage.blocks):
                tokens = block(tokens)
                slot = self._slot.get((stage_index, block_index))
                if slot is not None:
                    tokens = self.attention[slot](tokens.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
            maps.append(tokens.permute(0, 3, 1, 2))
        return maps
