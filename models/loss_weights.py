"""The loss weights of w1 * Focal(alpha, gamma) + Dice, with the paper's values (section 3.3).

The one source of their defaults, their help texts and the ranges `busnet tune` searches: the loss
(`models.losses.multitask_loss`), the training config, the CLI flags and the tuner all read them
here. No torch import, so `busnet --help` can show them instantly.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields


@dataclass(frozen=True)
class LossWeights:
    """w1 weighs the focal (classification) term against Dice; alpha and gamma shape the focal loss."""

    w1: float = field(default=3.0, metadata={"help": "focal loss weight in w1*Focal + Dice", "search": (1.0, 5.0)})
    alpha: float = field(default=0.5, metadata={"help": "focal loss alpha", "search": (0.25, 0.75)})
    gamma: float = field(default=2.0, metadata={"help": "focal loss gamma", "search": (0.0, 4.0)})


# Uniform ranges `busnet tune` searches; each contains the paper's value (tests/test_tune.py checks).
SEARCH_RANGES: dict[str, tuple[float, float]] = {f.name: f.metadata["search"] for f in fields(LossWeights)}
