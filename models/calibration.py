"""Calibration of the malignant probability: how far it is from a frequency (ECE), and temperature scaling.

A served probability is read as a risk: of the images called 0.8, about 80% should be malignant.
The expected calibration error measures the gap: the probabilities are put into `ECE_BINS`
equal-width bins over [0, 1] (scikit-learn's `calibration_curve` rule, tested against it), and
ECE = sum over bins of (images in the bin / all images) * |fraction malignant - mean probability|.
This is the calibration of the malignant probability itself (the reliability diagram's "observed
frequency vs predicted probability"), which is what a risk score promises.

Temperature scaling (Guo et al., 2017) divides the malignant logit by one number T > 0 fitted on the
validation split by minimising the negative log-likelihood: p = sigmoid(logit / T). It is monotone,
so the ranking (ROC-AUC) and every decision are unchanged as long as the threshold moves with the
probability: `calibrate_threshold` maps a threshold chosen on the raw probabilities onto the
calibrated ones. A checkpoint without a temperature is uncalibrated: T = 1.

numpy only at import (loading a checkpoint checks its temperature here); torch is imported by the fit.
"""

from __future__ import annotations

import math

import numpy as np

ECE_BINS = 15  # equal-width bins of the calibration error and the reliability diagram (Guo et al.'s 15)
TEMPERATURE_RANGE = (0.05, 20.0)  # a fitted T outside it would say more about the split than about the model


def bin_index(probs: np.ndarray, n_bins: int = ECE_BINS) -> np.ndarray:
    """Each probability's bin among `n_bins` equal-width bins of [0, 1]: a value on an inner edge goes
    to the lower bin, as in scikit-learn's `calibration_curve` (strategy="uniform")."""
    if n_bins < 1:
        raise ValueError(f"need at least one bin, got {n_bins}")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return np.searchsorted(edges[1:-1], np.asarray(probs, dtype=np.float64))


def reliability(labels: np.ndarray, probs: np.ndarray, n_bins: int = ECE_BINS) -> list[dict]:
    """One entry per bin, empty ones included: {"low", "high", "n", "mean_probability",
    "fraction_malignant"} (the last two None for an empty bin): the reliability diagram's data."""
    labels = np.asarray(labels, dtype=np.float64)
    probs = np.asarray(probs, dtype=np.float64)
    index = bin_index(probs, n_bins)
    counts = np.bincount(index, minlength=n_bins)
    prob_sums = np.bincount(index, weights=probs, minlength=n_bins)
    label_sums = np.bincount(index, weights=labels, minlength=n_bins)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return [
        {
            "low": float(edges[b]),
            "high": float(edges[b + 1]),
            "n": int(counts[b]),
            "mean_probability": float(prob_sums[b] / counts[b]) if counts[b] else None,
            "fraction_malignant": float(label_sums[b] / counts[b]) if counts[b] else None,
        }
        for b in range(n_bins)
    ]


def expected_calibration_error(labels: np.ndarray, probs: np.ndarray, n_bins: int = ECE_BINS) -> float:
    """ECE of the malignant probability (module doc); NaN without images."""
    labels = np.asarray(labels, dtype=np.float64)
    probs = np.asarray(probs, dtype=np.float64)
    if labels.size == 0:
        return float("nan")
    index = bin_index(probs, n_bins)
    gaps = np.bincount(index, weights=labels - probs, minlength=n_bins)  # per bin: sum(label - probability)
    return float(np.abs(gaps).sum() / labels.size)


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> tuple[float | None, str]:
    """(T, how) minimising the mean NLL of sigmoid(logits / T) against `labels`; (None, why) when no
    temperature can be fitted: one class only, or every image on its right side of 0.5 (then the NLL
    keeps falling as T -> 0: no minimum, and the fit would make every answer certain).

    The NLL is convex in 1/T, so L-BFGS on log T finds its one minimum; T is kept in TEMPERATURE_RANGE.
    """
    import torch

    z = torch.as_tensor(np.asarray(logits, dtype=np.float64))
    y = torch.as_tensor(np.asarray(labels, dtype=np.float64))
    if z.numel() == 0 or torch.unique(y).numel() < 2:
        return None, "uncalibrated: the validation split has one class only"
    if bool(((z > 0) == (y > 0.5)).all()):
        return None, "uncalibrated: every validation image is on its right side of 0.5 (the likelihood has no maximum)"
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=1.0, max_iter=100, line_search_fn="strong_wolfe")

    def nll() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(z / log_t.exp(), y)
        loss.backward()
        return loss

    optimizer.step(nll)
    low, high = TEMPERATURE_RANGE
    temperature = min(max(float(log_t.detach().exp()), low), high)
    return temperature, f"calibrated: T = {temperature:.3g} fitted on the validation split (NLL of logit / T)"


def calibrated(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """sigmoid(logits / T), float64."""
    return 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64) / temperature))


def logit(probs: np.ndarray | float) -> np.ndarray:
    """log(p / (1 - p)), float64 (+-inf at 0 and 1)."""
    p = np.asarray(probs, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return np.log(p) - np.log1p(-p)


def uncalibrated(probs: np.ndarray, temperature: float) -> np.ndarray:
    """The network's own probability sigmoid(logit) back from a calibrated sigmoid(logit / T)."""
    return calibrated(logit(probs) * temperature)


def calibrate_threshold(threshold: float, temperature: float) -> float:
    """A threshold on the raw probability, moved onto the calibrated one: the same images either side."""
    return float(calibrated(logit(threshold), temperature))


def temperature_of(config: dict) -> float:
    """A checkpoint config's temperature; 1.0 (uncalibrated) when it has none."""
    value = config.get("temperature")
    return 1.0 if value is None else float(value)


def check_temperature(value: object) -> float | None:
    """None, or a finite positive number (what config.json may hold); ValueError otherwise."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"temperature must be a positive number or null, got {value!r}")
    return float(value)
