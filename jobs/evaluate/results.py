"""What evaluation keeps: one row of numbers per image, and the few images the overlay figure shows.

Kept apart from `run` so that `report` can read these types without importing the evaluation driver.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

OVERLAYS_PER_KIND = 4


@dataclass
class OverlayCase:
    """One image of the overlay figure, at the model's input resolution."""

    image_id: str
    label: int
    prob: float
    dsc: float
    image: np.ndarray
    truth: np.ndarray
    predicted: np.ndarray


@dataclass
class OverlayPool:
    """The k best and k worst segmentations seen so far (trivial both-empty matches left out)."""

    k: int = OVERLAYS_PER_KIND
    best: list[OverlayCase] = field(default_factory=list)
    worst: list[OverlayCase] = field(default_factory=list)

    def offer(self, batch: dict[str, np.ndarray]) -> None:
        for i in np.flatnonzero(batch["has_mask"]):
            if not (batch["true_mask"][i].any() or batch["pred_mask"][i].any()):
                continue
            case = OverlayCase(
                str(batch["image_id"][i]),
                int(batch["label"][i]),
                float(batch["prob"][i]),
                float(batch["dsc"][i]),
                batch["display"][i].copy(),
                batch["true_mask"][i].copy(),
                batch["pred_mask"][i].copy(),
            )
            self.best = sorted(self.best + [case], key=lambda c: (-c.dsc, c.image_id))[: self.k]
            self.worst = sorted(self.worst + [case], key=lambda c: (c.dsc, c.image_id))[: self.k]


@dataclass
class Predictions:
    """One entry per evaluated image; dsc/ji are None for a model without segmentation and NaN
    for images without a ground-truth mask."""

    image_id: np.ndarray
    case_id: np.ndarray
    source: np.ndarray
    label: np.ndarray
    prob: np.ndarray
    has_mask: np.ndarray
    dsc: np.ndarray | None
    ji: np.ndarray | None
    # The network's own probability, before the checkpoint's temperature (`prob` is after it); None:
    # recovered from `prob` (batch predict stores only the served one), exact but where float32 saturates.
    raw_prob: np.ndarray | None = None
