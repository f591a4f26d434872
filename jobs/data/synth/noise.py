"""Random fields that the tissue and lesion models are built from.

Low-frequency fields are drawn on a coarse grid and upsampled linearly, so a
field with a 60 px correlation length costs no more than one with 2 px: the generator stays fast at 800 px.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def _upsample(field: np.ndarray, n_out: int, factor: int, axis: int) -> np.ndarray:
    """Linear interpolation along `axis` from a grid `factor` times coarser to `n_out` samples."""
    position = np.clip((np.arange(n_out) + 0.5) / factor - 0.5, 0, field.shape[axis] - 1)
    low = np.floor(position).astype(int)
    high = np.minimum(low + 1, field.shape[axis] - 1)
    weight = (position - low).astype(np.float32)
    if axis == 0:
        weight = weight[:, None]
    a, b = np.take(field, low, axis=axis), np.take(field, high, axis=axis)
    b -= a
    b *= weight
    b += a
    return b


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: tuple[float, float]) -> np.ndarray:
    """Gaussian noise correlated over `sigma` = (rows, cols) pixels, zero mean, unit std, float32."""
    factors = [max(1, int(s // 2)) for s in sigma]
    coarse_shape = [-(-n // f) + 1 for n, f in zip(shape, factors)]
    field = rng.standard_normal(coarse_shape, dtype=np.float32)
    field = ndimage.gaussian_filter(field, [s / f for s, f in zip(sigma, factors)], mode="wrap", truncate=3.0)
    field = (field - field.mean()) / (field.std() + 1e-6)  # normalised while still small
    for axis in (0, 1):
        if factors[axis] > 1:
            field = _upsample(field, shape[axis], factors[axis], axis)
    return field[: shape[0], : shape[1]]


def smooth_curve(rng: np.random.Generator, length: int, sigma: float) -> np.ndarray:
    """A 1-D smooth random curve (zero mean, unit std): wavy boundaries and lateral envelopes."""
    pad = int(3 * sigma) + 1
    values = ndimage.gaussian_filter1d(rng.standard_normal(length + 2 * pad), sigma)[pad : pad + length]
    values = values - values.mean()
    return (values / (values.std() + 1e-9)).astype(np.float32)


def streaks(rng: np.random.Generator, coordinate: np.ndarray, width: float) -> np.ndarray:
    """Thin bright lines along the level sets of `coordinate` (e.g. depth below a wavy boundary).

    A 1-D noise profile sampled at `coordinate`: lines follow the tissue planes, as the fibrous
    interfaces of breast tissue do in a B-mode image. Returns float32 values >= 0 with mean about 1.
    """
    low, high = float(coordinate.min()) - 2, float(coordinate.max()) + 2
    n = int(high - low) + 8
    profile = ndimage.gaussian_filter1d(rng.standard_normal(n), width)
    profile = np.clip(profile / (profile.std() + 1e-9), 0, None) ** 2
    profile /= profile.mean() + 1e-9
    return np.interp(coordinate, low + np.arange(n), profile).astype(np.float32)
