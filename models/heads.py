"""Classification heads: the hybrid's (global average pooling, three dense layers with 50% dropout, one
logit) and the authors' BUSBench baseline head."""

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


def baseline_head(in_features: int, kind: str) -> nn.Module:
    """A baseline's head on timm's pooled features -> [B, 1]: "linear" (Dense 1) or "busbench" (the
    authors' baselines: Dense 512 ReLU, Dropout 0.3, Dense 64 ReLU, Dense 1)."""
    if kind == "linear":
        return nn.Linear(in_features, 1)
    return nn.Sequential(
        nn.Linear(in_features, 512),
        nn.ReLU(inplace=True),
        nn.Dropout(0.3),
        nn.Linear(512, 64),
        nn.ReLU(inplace=True),
        nn.Linear(64, 1),
    )
