"""Hybrid-MT-ESTAN in pure PyTorch: the network, presets, losses, metrics, preprocessing, inference, checkpoints.

No Ray here: `from models import build_model, load_checkpoint` is all a notebook needs. The names
below load on first use, so `import models.preprocess` (ingestion, serving) does not pay for timm.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "build_model": "models.network",
    "PRESETS": "models.presets",
    "VARIANTS": "models.presets",
    "save_checkpoint": "models.checkpoint",
    "load_checkpoint": "models.checkpoint",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'models' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
