"""The B-mode scanner: speckle, depth attenuation with time-gain compensation, log compression, field of view.

Speckle is simulated as it forms: random scatterers (complex Gaussian, amplitude proportional to
sqrt(reflectivity)) blurred by an anisotropic point-spread function (wider laterally than axially);
its envelope is Rayleigh-distributed, spatially correlated and stretched sideways like real speckle.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from jobs.synth.noise import smooth_curve


@dataclass(frozen=True)
class Settings:
    """Machine settings for one view (the operator's knobs)."""
    psf: tuple[float, float]          # (axial, lateral) speckle size in px
    attenuation_db: float             # residual loss over the full depth after TGC
    tgc_db: np.ndarray                # slider offsets at evenly spaced depths
    dynamic_range_db: float
    gain_db: float
    gamma: float
    field_of_view: str                # "linear" or "trapezoid"
    fov_slope: float                  # trapezoid: how far the side edges lean in per row


def draw_settings(rng: np.random.Generator, height: int) -> Settings:
    scale = max(height / 500, 0.4)
    return Settings(
        psf=(rng.uniform(0.7, 1.2) * scale, rng.uniform(1.6, 3.0) * scale),
        attenuation_db=rng.uniform(4, 16),
        tgc_db=rng.normal(0, 1.5, 8),
        dynamic_range_db=rng.uniform(45, 60),
        gain_db=rng.normal(0, 2.5),
        gamma=rng.uniform(0.9, 1.3),
        field_of_view="trapezoid" if rng.random() < 0.12 else "linear",
        fov_slope=rng.uniform(0.15, 0.45),
    )


def scan(echo: np.ndarray, settings: Settings, rng: np.random.Generator) -> np.ndarray:
    """Turn a reflectivity map into an 8-bit B-mode image (uint8 [H, W])."""
    height, width = echo.shape
    amplitude = np.sqrt(echo)
    real = rng.standard_normal(echo.shape, dtype=np.float32) * amplitude
    imag = rng.standard_normal(echo.shape, dtype=np.float32) * amplitude
    real = ndimage.gaussian_filter(real, settings.psf)
    imag = ndimage.gaussian_filter(imag, settings.psf)
    envelope_db = 10 * np.log10(real * real + imag * imag + 1e-12)

    depth = np.linspace(0, 1, height, dtype=np.float32)
    tgc = np.interp(depth, np.linspace(0, 1, settings.tgc_db.size), settings.tgc_db)
    curve_db = -settings.attenuation_db * depth - 10 * np.clip(depth - 0.8, 0, None) * rng.uniform(0, 4) + tgc
    lateral_db = -3 * (np.linspace(-1, 1, width) ** 8) + 0.5 * smooth_curve(rng, width, width / 6)
    envelope_db += curve_db[:, None] + lateral_db[None, :]

    top = np.percentile(envelope_db[::3, ::3], 99.5) + settings.gain_db
    image = np.clip((envelope_db - (top - settings.dynamic_range_db)) / settings.dynamic_range_db, 0, 1)
    image = ndimage.gaussian_filter(image ** settings.gamma, (0.5, 0.8))   # the scanner's own smoothing
    image = np.clip(image * 255 + 0.5, 0, 255).astype(np.uint8)
    return image * field_of_view(settings, height, width)


def field_of_view(settings: Settings, height: int, width: int) -> np.ndarray:
    """1 inside the probe's field of view, 0 outside (uint8 [H, W])."""
    inside = np.ones((height, width), np.uint8)
    if settings.field_of_view == "trapezoid":
        rows = np.arange(height)[:, None]
        cols = np.arange(width)[None, :]
        inset = (height - rows) * settings.fov_slope * 0.5          # narrow at the skin, wide at depth
        inside = ((cols >= inset) & (cols < width - inset)).astype(np.uint8)
    return inside
