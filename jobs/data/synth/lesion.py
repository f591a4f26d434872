"""Breast lesions: shape (the mask) and how they change the echoes in and behind them.

Each lesion gets a latent `suspicion` in [0, 1], drawn from a class-dependent Beta distribution
(benign low, malignant high, overlapping). Every BI-RADS feature follows suspicion plus its own
noise: low suspicion gives an oval, circumscribed, wider-than-tall (parallel) mass with an even
echo pattern and posterior enhancement; high suspicion gives an irregular or spiculated,
taller-than-wide (not parallel) mass with ill-defined margins, a heterogeneous echo pattern with
calcifications, an echogenic halo and posterior shadowing. So the classes differ in distribution,
not by a rule, and some benign lesions look malignant and the other way round.

`difficulty` in [0, 1] sets how much: the distance between the two classes' suspicion
distributions shrinks and each trait's own noise grows with it. 0: every trait follows the class
closely (a model that reads shape, orientation, margin, echo pattern and posterior features
separates the classes almost perfectly; none of them alone does) and lesions stand out more
(`conspicuity_db`); 0.5: the default, oracle traits reach ROC-AUC ~0.84; 1: the classes look the
same (ROC-AUC 0.5 for any model).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy import ndimage

from jobs.data.synth.noise import smooth_curve, smooth_noise

ANGLES = np.linspace(-np.pi, np.pi, 721)
DEFAULT_DIFFICULTY = 0.5
# Lesion half-width as a share of the image width: log-normal around this median. The 20 real BUSI
# images of shared/data/busi-sample have a median lesion width of 0.38 of the image (0.07-0.94).
MEDIAN_HALF_WIDTH = 0.17


def suspicion_beta(label: int, difficulty: float) -> tuple[float, float]:
    """(a, b) of the Beta distribution of a class's suspicion: means 0.2 / 0.8 at difficulty 0, equal at 1.

    At the default 0.5 these are about Beta(2.2, 4.0) and Beta(4.0, 2.2), busnet's first synth model."""
    spread = 0.3 * (1.0 - difficulty)
    mean = 0.5 + (spread if label else -spread)
    concentration = 2.0 + 8.4 * (1.0 - difficulty)
    return mean * concentration, (1.0 - mean) * concentration


def conspicuity_db(difficulty: float) -> float:
    """Extra darkness of every lesion, either class, below the default difficulty (0 from it up): on
    easy data a lesion stands out from the dark fat lobules around it. Without it the demo's model
    missed faint benign lesions altogether (Dice 0: the worst overlays of its test report)."""
    return 15.0 * max(0.0, DEFAULT_DIFFICULTY - difficulty)


def trait_noise(difficulty: float) -> float:
    """How loosely each trait follows suspicion: 1 at the default difficulty (busnet's first synth
    model), proportional to difficulty, so that easy data shows its cues clearly and hard data blurs them."""
    return difficulty / DEFAULT_DIFFICULTY


@dataclass(frozen=True)
class Lesion:
    label: int
    suspicion: float
    half_width: float  # px, before the view's scale
    radius: np.ndarray  # [len(ANGLES)] unit-free radius multiplier around an ellipse
    aspect: float  # height / width; > 1 is taller-than-wide
    tilt: float  # radians
    margin_blur: float  # px; large = ill-defined margin
    darkness_db: float  # how much less echo inside than in the tissue around
    heterogeneity_db: float  # internal echo variation
    posterior_db: float  # > 0 enhancement, < 0 shadowing
    capsule_db: float  # thin bright rim (circumscribed)
    halo_db: float  # thick echogenic rim (infiltrative)
    calcifications: int
    center_x: float  # fraction of the canvas width
    depth: float  # fraction of the glandular layer (0 top, 1 bottom)


def draw_lesion(
    rng: np.random.Generator, label: int, image_width: int, difficulty: float = DEFAULT_DIFFICULTY
) -> Lesion:
    """Draw one lesion's traits for a case; `difficulty` in [0, 1] (module docstring)."""
    z = float(rng.beta(*suspicion_beta(label, difficulty)))
    noise = trait_noise(difficulty)
    if rng.random() < 0.07:  # a few very small lesions
        size = rng.uniform(0.035, 0.07)
    else:
        size = float(np.exp(rng.normal(np.log(MEDIAN_HALF_WIDTH), 0.35)))
    half_width = float(np.clip(size, 0.03, 0.35) * image_width)
    aspect = float(np.exp(rng.normal(np.log(0.55) + z * (np.log(1.3) - np.log(0.55)), 0.18 * noise)))

    harmonics = np.arange(2, 25)
    irregular = 0.015 + 0.14 * z**1.5 * _jitter(rng, 0.4, 1.4, noise)
    amplitude = irregular * harmonics**-0.9 * rng.rayleigh(1.0, harmonics.size)
    phase = rng.uniform(0, 2 * np.pi, harmonics.size)
    radius = 1 + (amplitude[:, None] * np.cos(harmonics[:, None] * ANGLES[None, :] + phase[:, None])).sum(axis=0)
    if rng.random() < 0.3 * (1 - z):  # gentle macrolobulation (fibroadenoma-like)
        k = rng.integers(2, 5)
        radius += rng.uniform(0.04, 0.1) * np.cos(k * ANGLES + rng.uniform(0, 2 * np.pi))
    if rng.random() < 1.6 * max(z - 0.45, 0):  # spicules
        for theta in rng.uniform(-np.pi, np.pi, rng.integers(4, 14)):
            width = rng.uniform(0.02, 0.07)
            gap = np.angle(np.exp(1j * (ANGLES - theta)))
            radius += rng.uniform(0.15, 0.6) * np.exp(-((gap / width) ** 2))
    radius = np.clip(radius, 0.4, None)

    cyst = rng.random() < 0.35 * (1 - z) ** 2
    return Lesion(
        label=label,
        suspicion=z,
        half_width=half_width,
        radius=radius.astype(np.float32),
        aspect=aspect,
        tilt=float(rng.normal(0, 0.25 * (1 - z) + 0.1)),
        margin_blur=float(max(0.6, (0.02 + 0.25 * z**2 * _jitter(rng, 0.4, 1.4, noise)) * half_width)),
        darkness_db=float(rng.uniform(20, 26) if cyst else rng.uniform(8, 15) + 3 * z) + conspicuity_db(difficulty),
        heterogeneity_db=float(1.0 if cyst else _jitter(rng, 1, 3, noise) + 3 * z),
        posterior_db=float(np.clip(rng.normal(15 - 32 * z, 5 * noise) + (4 if cyst else 0), -18, 12)),
        capsule_db=float(rng.uniform(3, 8) if rng.random() < 0.6 * (1 - z) else 0.0),
        halo_db=float(rng.uniform(3, 6) if rng.random() < 0.6 * max(z - 0.4, 0) else 0.0),
        calcifications=int(rng.poisson(4) if rng.random() < 0.4 * z else 0),
        center_x=float(rng.uniform(0.3, 0.7)),
        depth=float(rng.uniform(0.15, 0.7)),
    )


def _jitter(rng: np.random.Generator, low: float, high: float, noise: float) -> float:
    """Uniform in low..high at noise 1 (the default difficulty), narrowed around the middle below it."""
    middle, half = (low + high) / 2, (high - low) / 2 * min(noise, 1.0)
    return float(rng.uniform(middle - half, middle + half))


def view_of(lesion: Lesion, rng: np.random.Generator) -> Lesion:
    """The same lesion seen from a slightly different probe position and pressure."""
    return replace(
        lesion,
        half_width=lesion.half_width * float(rng.uniform(0.9, 1.1)),
        aspect=lesion.aspect * float(rng.uniform(0.92, 1.06)),
        tilt=lesion.tilt + float(rng.normal(0, 0.06)),
        radius=np.roll(lesion.radius, int(rng.integers(-6, 7))),
        depth=float(np.clip(lesion.depth + rng.normal(0, 0.05), 0.05, 0.9)),
    )


def rasterize(lesion: Lesion, center: tuple[float, float], shape: tuple[int, int]) -> np.ndarray:
    """The lesion's mask (bool [H, W]) centred at (row, col)."""
    cy, cx = center
    a = lesion.half_width
    b = a * lesion.aspect
    reach = max(a, b) * float(lesion.radius.max()) + 2
    top, bottom = int(max(cy - reach, 0)), int(min(cy + reach + 1, shape[0]))
    left, right = int(max(cx - reach, 0)), int(min(cx + reach + 1, shape[1]))
    dy = np.arange(top, bottom, dtype=np.float32)[:, None] - cy
    dx = np.arange(left, right, dtype=np.float32)[None, :] - cx
    cos, sin = np.cos(lesion.tilt), np.sin(lesion.tilt)
    u, v = dx * cos + dy * sin, -dx * sin + dy * cos  # lesion frame: u along its width
    theta = np.arctan2(v, u)
    ellipse = a * b / np.sqrt((b * np.cos(theta)) ** 2 + (a * np.sin(theta)) ** 2)
    inside = np.hypot(u, v) <= ellipse * np.interp(theta, ANGLES, lesion.radius)
    mask = np.zeros(shape, bool)
    mask[top:bottom, left:right] = inside
    return mask


def imprint(echo_db: np.ndarray, mask: np.ndarray, lesion: Lesion, rng: np.random.Generator) -> np.ndarray:
    """Darken the lesion, draw its margin and rims, and enhance or shadow what lies behind it (dB)."""
    height, width = echo_db.shape
    rows, cols = np.nonzero(mask)
    pad = int(4 * lesion.margin_blur + 0.6 * lesion.half_width) + 4
    top, bottom = max(rows.min() - pad, 0), min(rows.max() + pad + 1, height)
    left, right = max(cols.min() - pad, 0), min(cols.max() + pad + 1, width)
    box = (slice(top, bottom), slice(left, right))
    local = mask[box].astype(np.float32)
    shape = local.shape
    scale = max(lesion.half_width / 40, 0.5)

    # Ill-defined margins: blur the edge and let it fray with noise.
    soft = ndimage.gaussian_filter(local, lesion.margin_blur, truncate=3.0)
    if lesion.margin_blur > 2:
        fray = smooth_noise(rng, shape, (lesion.margin_blur, lesion.margin_blur)) * min(lesion.margin_blur / 8, 0.6)
        soft = np.clip(soft + fray * 4 * soft * (1 - soft), 0, 1)
    out = echo_db.copy()
    region = out[box]
    # Inside, the surrounding tissue texture fades to the lesion's own, darker echo.
    surround = float(np.median(region[local == 0])) if (local == 0).any() else float(region.mean())
    inner = surround - lesion.darkness_db + lesion.heterogeneity_db * smooth_noise(rng, shape, (3 * scale, 4 * scale))
    region += soft * (inner - region)

    if lesion.capsule_db:
        crisp = ndimage.gaussian_filter(local, 0.8)
        region += lesion.capsule_db * 4 * crisp * (1 - crisp)
    if lesion.halo_db:
        wide = ndimage.gaussian_filter(local, 2 + 0.2 * lesion.half_width, truncate=3.0)
        region += lesion.halo_db * np.clip(2 * (wide - local), 0, 1)
    for _ in range(lesion.calcifications):
        pick = rng.integers(rows.size)
        r, c = rows[pick] - top, cols[pick] - left
        region[max(r - 1, 0) : r + 1, max(c - 1, 0) : c + 2] += rng.uniform(15, 25)

    # Posterior acoustic features: a column below the lesion, following its lower contour.
    thickness = mask.sum(axis=0).astype(np.float32)
    covered = thickness > 0
    bottom_row = np.where(covered, height - 1 - np.argmax(mask[::-1], axis=0), 0).astype(np.float32)
    bottom_row = np.interp(np.arange(width), np.flatnonzero(covered), bottom_row[covered])
    coverage = ndimage.gaussian_filter1d(np.sqrt(thickness / thickness.max()), 0.1 * lesion.half_width + 1)
    if lesion.posterior_db < 0:  # shadows come in streaks
        coverage *= np.clip(1 + 0.35 * smooth_curve(rng, width, 3 * scale + 1), 0.3, 1.6)
    columns = np.flatnonzero(coverage > 1e-3)
    first, last = columns.min(), columns.max() + 1
    start = int(bottom_row[first:last].min())
    below = np.arange(start, height, dtype=np.float32)[:, None] - bottom_row[None, first:last]
    below = np.clip(below, 0, None)
    reach = lesion.half_width * lesion.aspect * (8 if lesion.posterior_db < 0 else 3)
    profile = np.exp(-below / reach) - np.exp(-below * (1 / reach + 1 / (2 + lesion.margin_blur)))
    out[start:, first:last] += lesion.posterior_db * coverage[None, first:last] * profile
    return out
