"""Classification branch: global average pooling, three dense layers with 50% dropout, one logit."""

from __future__ import annotations

import torch
from torch import nn


class ClassificationHead(nn.Module):
    """Pools each given map, concatenates, then Dense(h1) ReLU -> Dropout -> Dense(h2) ReLU -> Dense(1).

    The authors' MT-ESTAN head: Dense 512, Dropout 0.5, Dense 128, Dense 1 (sigmoid, here left to the
    loss: the head returns the malignancy logit, shape [B]).
    """

    def __init__(self, in_features: int, hidden: tuple[int, int] = (512, 128), dropout: float = 0.5):
        super().__init__()
        first, second = hidden
        self.mlp = nn.Sequential(
            nn.Linear(in_features, first),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(first, second),
            nn.ReLU(inplace=True),
            nn.Linear(second, 1),
        )

    def forward(self, maps: list[torch.Tensor]) -> torch.Tensor:
        pooled = torch.cat([m.mean(dim=(2, 3)) for m in maps], dim=1)
        return self.mlp(pooled).squeeze(1)
