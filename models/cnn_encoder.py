"""The MT-ESTAN encoder: a timm ResNet read at the authors' taps, beside the ESTAN encoder.

The authors' Keras ResNet50 feeds their decoder from two kinds of maps per level: the stage outputs
(`conv1_relu`, `convN_blockM_out`) and the first BatchNorm of each stage (`convN_block1_1_bn`,
plus the stem conv before its BN, `conv1_conv`). Keras puts a stage's stride on the first 1x1 conv,
timm/torchvision on the 3x3, so the first BN at the stage's output resolution is `layerN.0.bn2`
(same width as Keras' `block1_1_bn`). The taps are read with torch.fx (timm's feature extractor),
which keeps timm's parameter names, so timm weight files load unchanged.
"""

from __future__ import annotations

from typing import NamedTuple

import timm
import torch
from timm.models import create_feature_extractor
from torch import nn

from models.estan import EstanEncoder

STAGE_NODES = ("act1", "layer1", "layer2", "layer3", "layer4")
TAP_NODES = ("conv1", "layer1.0.bn2", "layer2.0.bn2", "layer3.0.bn2", "layer4.0.bn2")


class CnnFeatures(NamedTuple):
    """What the decoder needs from the CNN side; lists indexed by level (ResNet reduction 2..32)."""

    stages: list[torch.Tensor]  # stem after ReLU, layer1..layer4 outputs
    taps: list[torch.Tensor]  # stem conv before BN, first BN of layer1..layer4 at stage resolution
    estan: list[torch.Tensor]  # ESTAN blocks 1..5 before pooling (reductions 1..16)


class ResNetTaps(nn.Module):
    """A timm bottleneck ResNet (created with pretrained=False) returning its stage maps and taps.

    `stage_channels` / `tap_channels` per level, at `reductions` (2, 4, 8, 16, 32) of the input.
    """

    reductions = (2, 4, 8, 16, 32)

    def __init__(self, name: str = "resnet50", **timm_kwargs):
        super().__init__()
        resnet = timm.create_model(name, pretrained=False, **timm_kwargs)
        first_blocks = [getattr(resnet, f"layer{i}")[0] for i in range(1, 5)]
        if not all(hasattr(block, "conv3") and hasattr(block, "bn2") for block in first_blocks):
            raise ValueError(f"MT-ESTAN taps need a bottleneck ResNet (resnet26/50/101...), got {name!r}")
        self.stage_channels = tuple(info["num_chs"] for info in resnet.feature_info)
        self.tap_channels = (resnet.bn1.num_features, *(block.bn2.num_features for block in first_blocks))
        nodes = {node: f"stage{i}" for i, node in enumerate(STAGE_NODES)}
        nodes.update({node: f"tap{i}" for i, node in enumerate(TAP_NODES)})
        self.body = create_feature_extractor(resnet, return_nodes=nodes)

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        out = self.body(x)
        levels = range(len(STAGE_NODES))
        return [out[f"stage{i}"] for i in levels], [out[f"tap{i}"] for i in levels]


class MTEstanEncoder(nn.Module):
    """ResNet taps and the ESTAN encoder, both reading the input image."""

    def __init__(self, resnet: ResNetTaps, estan: EstanEncoder):
        super().__init__()
        self.resnet = resnet
        self.estan = estan

    def forward(self, x: torch.Tensor) -> CnnFeatures:
        stages, taps = self.resnet(x)
        return CnnFeatures(stages, taps, self.estan(x))
