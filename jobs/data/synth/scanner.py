"""The B-mode scanner: speckle, depth attenuation with time-gain compensation, log compression, field of view.

Speckle: complex Gaussian scatterers blurred by an anisotropic point-spread function (wider laterally
than axially); its envelope is Rayleigh-distributed and spatially correlated with sideways-stretched
grains, like real speckle. It multiplies the echo (adds in dB); `speckle_weight` < 1 mimics the
scanner's compounding and speckle reduction, which make real images less grainy than raw speckle.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from jobs.data.synth.noise import smooth_curve


@dataclass(frozen=True)
class Settings:
    """Machine settings for one view (the operator's knobs)."""

    psf: tuple[float, float]  # (axial, lateral) speckle size in px
    speckle_weight: float  # 1 = raw speckle, lower = compounded / speckle-reduced
    attenuation_db: float  # residual loss over the full depth after TGC
    tgc_db: np.ndarray  # slider offsets at evenly spaced depths
    dynamic_range_db: float
    gain_db: float
    gamma: float
    field_of_view: str  # "linear" or "trapezoid"
    fov_slope: float  # trapezoid: how far the side edges lean in per row


def draw_settings(rng: np.random.Generator, height: int) -> Settings:
    scale = max(height / 500, 0.4)
    return Settings(
        psf=(rng.uniform(0.6, 1.0) * scale, rng.uniform(1.4, 2.4) * scale),
        speckle_weight=rng.uniform(0.45, 0.7),
        attenuation_db=rng.uniform(3, 12),
        tgc_db=rng.normal(0, 1.5, 8),
        dynamic_range_db=rng.uniform(40, 50),
        gain_db=rng.normal(0, 2.0),
        gamma=rng.uniform(1.2, 1.6),
        field_of_view="trapezoid" if rng.random() < 0.12 else "linear",
        fov_slope=rng.uniform(0.15, 0.45),
    )


def scan(echo_db: np.ndarray, settings: Settings, rng: np.random.Generator) -> np.ndarray:
    """Turn an echo map (dB) into an 8-bit B-mode image (uint8 [H, W])."""
    height, width = echo_db.shape
    real = ndimage.gaussian_filter(rng.standard_normal(echo_db.shape, dtype=np.float32), settings.psf, truncate=3.0)
    imag = ndimage.gaussian_filter(rng.standard_normal(echo_db.shape, dtype=np.float32), settings.psf, truncate=3.0)
    # Incoherent averaging over a small neighbourhood (compounding) fills the deepest speckle nulls.
    intensity = ndimage.gaussian_filter(
        real * real + imag * imag, (0.5 * settings.psf[0], 0.5 * settings.psf[1]), truncate=3.0
    )
    speckle_db = np.log10(intensity + 1e-12)
    speckle_db *= np.float32(10 * settings.speckle_weight)
    speckle_db -= speckle_db.mean()

    depth = np.linspace(0, 1, height)
    tgc = np.interp(depth, np.linspace(0, 1, settings.tgc_db.size), settings.tgc_db)
    curve_db = -settings.attenuation_db * depth - 40 * np.clip(depth - 0.75, 0, None) ** 2 * rng.uniform(0, 4) + tgc
    lateral_db = -4 * (np.linspace(-1, 1, width) ** 8) + 0.7 * smooth_curve(rng, width, width / 6)
    image_db = echo_db + speckle_db
    image_db += curve_db.astype(np.float32)[:, None]
    image_db += lateral_db.astype(np.float32)[None, :]

    top = np.percentile(image_db[::3, ::3], 99.5) + settings.gain_db
    image = np.clip(
        (image_db - np.float32(top - settings.dynamic_range_db)) / np.float32(settings.dynamic_range_db), 0, 1
    )
    image = ndimage.gaussian_filter(
        image ** np.float32(settings.gamma), (0.6, 1.0), truncate=3.0
    )  # the scanner's smoothing
    image = np.clip(image * 255 + 0.5, 0, 255).astype(np.uint8)
    return image * field_of_view(settings, height, width)


def field_of_view(settings: Settings, height: int, width: int) -> np.ndarray:
    """1 inside the probe's field of view, 0 outside (uint8 [H, W])."""
    inside = np.ones((height, width), np.uint8)
    if settings.field_of_view == "trapezoid":
        rows = np.arange(height)[:, None]
        cols = np.arange(width)[None, :]
        inset = (height - rows) * settings.fov_slope * 0.5  # narrow at the skin, wide at depth
        inside = ((cols >= inset) & (cols < width - inset)).astype(np.uint8)
    return inside
