"""The breast seen from the skin down: tissue layers with their own echo level and texture.

Layers (top to bottom): skin, subcutaneous fat (dark, crossed by bright Cooper's ligaments),
fibroglandular tissue (bright, streaky, with dark fat islands), retromammary fat, pectoralis muscle
(mid-gray, oblique striations between bright fasciae), chest wall (ribs with shadows, pleura).
The output is a reflectivity map (mean echo level per pixel, before speckle), drawn once per case
on a canvas wider than the image, so that each view of the case is a shifted window of one breast.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from jobs.synth.noise import smooth_curve, smooth_noise, streaks

LAYERS = ("skin", "fat", "glandular", "retromammary", "muscle", "chest_wall")


@dataclass(frozen=True)
class Anatomy:
    echo: np.ndarray             # float32 [H, W] reflectivity (about 0..1.5)
    boundaries: np.ndarray       # float32 [len(LAYERS) - 1, W]: depth (rows) where each next layer starts

    def zone(self, layer: str) -> tuple[np.ndarray, np.ndarray]:
        """Top and bottom depth (rows, per column) of one layer."""
        k = LAYERS.index(layer)
        top = self.boundaries[k - 1] if k > 0 else np.zeros(self.echo.shape[1], np.float32)
        bottom = self.boundaries[k] if k < len(self.boundaries) else np.full(self.echo.shape[1], self.echo.shape[0], np.float32)
        return top, bottom


def _boundaries(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Wavy, roughly horizontal interfaces, sharing a common tilt and undulation."""
    thickness = np.array([
        rng.uniform(0.02, 0.035),                               # skin
        rng.uniform(0.06, 0.28),                                # subcutaneous fat
        rng.uniform(0.25, 0.55),                                # fibroglandular
        rng.uniform(0.03, 0.10),                                # retromammary fat
        rng.uniform(0.08, 0.20),                                # pectoralis
    ]) * height
    x = np.arange(width) - width / 2
    tilt = rng.normal(0, 0.08) * x
    common = smooth_curve(rng, width, rng.uniform(0.15, 0.4) * width) * rng.uniform(0.01, 0.05) * height
    depth = np.cumsum(thickness)
    rows = []
    for k, base in enumerate(depth):
        own = smooth_curve(rng, width, rng.uniform(0.05, 0.2) * width) * rng.uniform(0.003, 0.03) * height
        scale = min(1.0, k / 1.5)                               # the skin line stays nearly flat
        rows.append(base + scale * (tilt + common + own))
    bounds = np.maximum.accumulate(np.array(rows, np.float32), axis=0)
    bounds[1:] = np.maximum(bounds[1:], bounds[:-1] + 2)
    return bounds


def make_anatomy(rng: np.random.Generator, height: int, width: int) -> Anatomy:
    """Draw one breast's reflectivity map of `height` x `width` pixels."""
    bounds = _boundaries(rng, height, width)
    rows = np.arange(height, dtype=np.float32)[:, None]
    index = (rows >= bounds[:, None, :]).sum(axis=0)           # layer index per pixel

    level = np.array([1.0, rng.uniform(0.22, 0.4), rng.uniform(0.6, 1.0), rng.uniform(0.2, 0.35),
                      rng.uniform(0.35, 0.55), rng.uniform(0.25, 0.45)], np.float32)
    streak_gain = np.array([0.6, 0.25, rng.uniform(0.4, 0.9), 0.3, 0.2, 0.4], np.float32)
    island_gain = np.array([0.0, 0.0, rng.uniform(0.5, 0.8), 0.0, 0.0, 0.0], np.float32)
    ligament_gain = np.array([0.0, rng.uniform(1.0, 2.5), rng.uniform(0.3, 1.0), 0.5, 0.0, 0.0], np.float32)
    striation_gain = np.array([0.0, 0.0, 0.0, 0.0, rng.uniform(0.6, 1.4), 0.0], np.float32)

    scale = height / 500
    # Fibrous planes follow the mean shape of the glandular interfaces.
    plane_shape = bounds[1:4].mean(axis=0) - bounds[1:4].mean()
    plane_coord = rows - plane_shape[None, :]
    envelope = np.clip(smooth_noise(rng, (height, width), (3 * scale, 40 * scale)) + 0.3, 0, None)
    plane_streaks = streaks(rng, plane_coord, rng.uniform(0.8, 1.6) * scale) * envelope

    islands = smooth_noise(rng, (height, width), (rng.uniform(5, 10) * scale, rng.uniform(12, 30) * scale))
    islands = 1 / (1 + np.exp(-(islands - rng.uniform(0.0, 0.8)) / 0.15))

    lig_field = smooth_noise(rng, (height, width), (rng.uniform(6, 12) * scale, rng.uniform(10, 25) * scale))
    ligaments = np.exp(-(lig_field / 0.09) ** 2)

    slope = rng.uniform(-0.35, 0.35)
    muscle_coord = rows - bounds[3][None, :] + slope * np.arange(width)[None, :]
    striations = streaks(rng, muscle_coord, rng.uniform(0.7, 1.4) * scale)

    texture = smooth_noise(rng, (height, width), (2 * scale, 5 * scale))
    echo = level[index] * (1 + 0.15 * texture
                           + streak_gain[index] * (plane_streaks - 0.6)
                           - island_gain[index] * islands
                           + ligament_gain[index] * ligaments
                           + striation_gain[index] * (striations - 0.5))
    echo = ndimage.gaussian_filter(np.clip(echo, 0.02, None), 1.0 * max(scale, 0.5))

    # Bright interfaces: the skin's entry echo, fasciae around the muscle, the pleura.
    line_strength = [rng.uniform(0.3, 0.8), rng.uniform(0.1, 0.4), rng.uniform(0.2, 0.6), rng.uniform(0.4, 0.9), 0.8]
    for bound, strength in zip(bounds, line_strength):
        lateral = 0.6 + 0.4 * np.clip(smooth_curve(rng, width, 20 * scale + 1), -1, 1)
        echo += strength * lateral[None, :] * np.exp(-((rows - bound[None, :]) / (1.2 * max(scale, 0.5))) ** 2)
    echo[: max(1, int(0.006 * height))] += 1.0                  # probe-skin contact
    return Anatomy(echo=echo.astype(np.float32), boundaries=bounds)
