"""Synthetic breast ultrasound (B-mode) images with lesion masks, in BUSI's folder layout.

`generate(out_dir, n, seed, ...)` is the entry point; the image model lives in `anatomy` (tissue
layers), `lesion` (shape, margins, posterior features) and `scanner` (speckle, gain, log compression).
"""

from jobs.data.synth.writer import generate

__all__ = ["generate"]
