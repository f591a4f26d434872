"""Hybrid-MT-ESTAN in pure PyTorch: the network, presets, losses, metrics, preprocessing, checkpoints.

No Ray here: `from models import build_model, load_checkpoint` is all a notebook needs.
"""
from models.checkpoint import load_checkpoint, save_checkpoint
from models.network import PRESETS, VARIANTS, build_model

__all__ = ["PRESETS", "VARIANTS", "build_model", "load_checkpoint", "save_checkpoint"]
