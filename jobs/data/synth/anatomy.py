"""The breast seen from the skin down: tissue layers with their own echo level and texture.

Layers (top to bottom): skin, subcutaneous fat (dark, crossed by bright Cooper's ligaments around
fat lobules), fibroglandular tissue (bright, streaky, with darker fat lobules), retromammary fat,
pectoralis muscle (mid-gray, oblique striations between bright fasciae), chest wall (the deep,
dark floor). The output is an echo map in dB (0 dB = bright glandular tissue, before speckle), drawn
once per case on a canvas wider than the image, so that each view of the case is a shifted window
onto one breast.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from jobs.data.synth.noise import smooth_curve, smooth_noise, streaks

LAYERS = ("skin", "fat", "glandular", "retromammary", "muscle", "chest_wall")


@dataclass(frozen=True)
class Anatomy:
    echo_db: np.ndarray  # float32 [H, W]
    boundaries: np.ndarray  # float32 [len(LAYERS) - 1, W]: row where each next layer starts

    def zone(self, layer: str) -> tuple[np.ndarray, np.ndarray]:
        """Top and bottom row (per column) of one layer."""
        k = LAYERS.index(layer)
        height, width = self.echo_db.shape
        top = self.boundaries[k - 1] if k > 0 else np.zeros(width, np.float32)
        bottom = self.boundaries[k] if k < len(self.boundaries) else np.full(width, height, np.float32)
        return top, bottom


def _boundaries(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Wavy, roughly horizontal interfaces that share a tilt and an undulation."""
    thickness = (
        np.array(
            [
                rng.uniform(0.025, 0.045),  # skin
                rng.uniform(0.06, 0.3),  # subcutaneous fat
                rng.uniform(0.25, 0.55),  # fibroglandular
                rng.uniform(0.03, 0.10),  # retromammary fat
                rng.uniform(0.08, 0.20),  # pectoralis
            ]
        )
        * height
    )
    x = np.arange(width) - width / 2
    tilt = rng.normal(0, 0.1) * x
    common = smooth_curve(rng, width, rng.uniform(0.15, 0.4) * width) * rng.uniform(0.01, 0.06) * height
    rows = []
    for k, base in enumerate(np.cumsum(thickness)):
        own = smooth_curve(rng, width, rng.uniform(0.05, 0.2) * width) * rng.uniform(0.003, 0.03) * height
        rows.append(base + min(1.0, k / 1.5) * (tilt + common + own))  # the skin line stays nearly flat
    bounds = np.array(rows, np.float32)
    bounds[0] = np.maximum(bounds[0], 3)
    for k in range(1, len(bounds)):
        bounds[k] = np.maximum(bounds[k], bounds[k - 1] + 2)
    return bounds


def make_anatomy(rng: np.random.Generator, height: int, width: int) -> Anatomy:
    """Draw one breast's echo map (dB) of `height` x `width` pixels."""
    bounds = _boundaries(rng, height, width)
    rows = np.arange(height, dtype=np.float32)[:, None]
    index = (rows >= bounds[:, None, :]).sum(axis=0)  # layer index per pixel
    scale = height / 500

    # layers:               skin  fat                      glandular               retro     muscle
    # (then chest wall)
    level = np.array([-1.0, rng.uniform(-13, -8), rng.uniform(-4, 0), -12.0, rng.uniform(-11, -6), -10.0], np.float32)
    streak_gain = np.array([4.0, 3.0, rng.uniform(4, 8), 3.0, 1.0, 3.0], np.float32)
    lobule_gain = np.array([0.0, 0.0, rng.uniform(6, 12), 0.0, 0.0, 0.0], np.float32)
    ligament_gain = np.array([0.0, rng.uniform(6, 10), rng.uniform(2, 5), 4.0, 0.0, 0.0], np.float32)
    striation_gain = np.array([0.0, 0.0, 0.0, 0.0, rng.uniform(3, 6), 0.0], np.float32)

    # Fibrous planes follow the mean shape of the glandular interfaces and break off laterally.
    plane_shape = bounds[1:4].mean(axis=0)
    warp = smooth_noise(rng, (height, width), (20 * scale, 30 * scale)) * rng.uniform(3, 8) * scale
    plane_coord = rows - (plane_shape - plane_shape.mean())[None, :] + warp
    plane_streaks = streaks(rng, plane_coord, rng.uniform(0.8, 1.8) * scale)
    envelope = np.clip(smooth_noise(rng, (height, width), (3 * scale, 22 * scale)) + rng.uniform(-0.2, 0.3), 0, None)
    plane_streaks = np.log1p(plane_streaks * envelope)
    # Short, slightly oblique fibrous echoes scattered through the tissue.
    dash_coord = plane_coord + rng.uniform(-0.25, 0.25) * np.arange(width, dtype=np.float32)[None, :]
    dash_envelope = np.clip(smooth_noise(rng, (height, width), (2 * scale, 8 * scale)) - 0.8, 0, None)
    plane_streaks += np.log1p(streaks(rng, dash_coord, 0.8 * scale) * dash_envelope * 2)

    # Fat lobules: soft darker islands, wider than tall.
    lobules = smooth_noise(rng, (height, width), (rng.uniform(5, 10) * scale, rng.uniform(14, 30) * scale))
    lobules = 1 / (1 + np.exp(-(lobules - rng.uniform(0.2, 0.9)) / 0.3))

    # Cooper's ligaments: thin bright curves along the zero set of an elongated smooth field.
    lig_field = smooth_noise(rng, (height, width), (rng.uniform(7, 12) * scale, rng.uniform(25, 45) * scale))
    lig_strength = np.clip(smooth_noise(rng, (height, width), (20 * scale, 20 * scale)) * 0.6 + 0.6, 0, 1)
    ligaments = np.exp(-((lig_field / 0.15) ** 2)) * lig_strength

    slope = rng.uniform(-0.3, 0.3)
    muscle_top = ndimage.gaussian_filter1d(bounds[3], 0.2 * width)  # striations ignore small wiggles
    muscle_coord = rows - muscle_top[None, :] + slope * np.arange(width, dtype=np.float32)[None, :]
    striation_envelope = np.clip(smooth_noise(rng, (height, width), (4 * scale, 25 * scale)) + 0.5, 0, None)
    striations = np.log1p(streaks(rng, muscle_coord, rng.uniform(0.8, 1.6) * scale) * striation_envelope)

    texture = 2.0 * smooth_noise(rng, (height, width), (3 * scale, 8 * scale)) + rng.uniform(2, 4.5) * smooth_noise(
        rng, (height, width), (15 * scale, 40 * scale)
    )
    echo = (
        level[index]
        + texture
        + streak_gain[index] * (plane_streaks - 0.4)
        - lobule_gain[index] * lobules
        + ligament_gain[index] * ligaments
        + striation_gain[index] * (striations - 0.5)
    )
    echo = ndimage.gaussian_filter(echo, 0.8 * max(scale, 0.5))

    # Bright interfaces: dermis, fasciae around the muscle, the chest wall.
    strengths = [rng.uniform(4, 9), rng.uniform(1, 4), rng.uniform(2, 5), rng.uniform(4, 8), rng.uniform(3, 7)]
    line_width = 1.5 * max(scale, 0.5)
    for bound, strength in zip(bounds, strengths):
        lateral = np.clip(0.7 + 0.5 * smooth_curve(rng, width, 15 * scale + 1), 0, 1.2)
        first = int(np.clip(bound.min() - 4 * line_width, 0, height))
        last = int(np.clip(bound.max() + 4 * line_width + 1, 0, height))
        band = rows[first:last] - bound[None, :]
        echo[first:last] += strength * lateral[None, :] * np.exp(-((band / line_width) ** 2))
    echo[: max(2, int(0.012 * height))] += 6.0  # probe-skin contact
    return Anatomy(echo_db=echo.astype(np.float32), boundaries=bounds)
