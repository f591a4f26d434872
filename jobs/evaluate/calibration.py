"""Two blocks of evaluate's metrics.json beyond Table 2: how well calibrated the probability is, and the
sensitivity at a stated specificity (screening users choose an operating point, not a threshold).

Both are computed on all images of the split, with the same case-level bootstrap resamples as the
other metrics (`jobs.evaluate.intervals.case_weights` with the same seed). The probabilities handed in
are those compared with the threshold: calibrated by the checkpoint's temperature when it has one; the
network's own (uncalibrated) one comes beside them (`Predictions.raw_prob`), or where only the served
probability was stored (batch predict) is recovered from it (`models.calibration.uncalibrated`), so that
the report shows the calibration error before and after.
"""

from __future__ import annotations

import math

import numpy as np

from jobs.evaluate.intervals import (
    case_weights,
    ece_replicates,
    percentile_interval,
    sensitivity_at_specificity_replicates,
)
from jobs.evaluate.results import Predictions
from models.calibration import ECE_BINS, expected_calibration_error, reliability, uncalibrated
from models.metrics import sensitivity_at_specificity


def resamples(predictions: Predictions, n_bootstrap: int, seed: int) -> np.ndarray | None:
    """The case-level bootstrap weights both blocks share (None without resamples): drawn once."""
    return case_weights(predictions.case_id, n_bootstrap, seed) if n_bootstrap else None


def calibration(predictions: Predictions, temperature: float | None, weights: np.ndarray | None) -> dict:
    """{"temperature", "status", "bins", "uncalibrated": {"ece", "reliability"}, "calibrated": same or None}:
    the ECE ({"value", "low", "high", "valid"}) and the reliability diagram's bins of the network's own
    probability and, with a temperature, of the calibrated one."""
    labels, probs = predictions.label, predictions.prob

    def measured(values: np.ndarray) -> dict:
        interval = (
            percentile_interval(ece_replicates(labels, values, weights, ECE_BINS))
            if weights is not None
            else {"low": None, "high": None, "valid": 0}
        )
        return {
            "ece": {"value": _number(expected_calibration_error(labels, values)), **interval},
            "reliability": reliability(labels, values),
        }

    raw = predictions.raw_prob
    if raw is None:
        raw = probs if temperature is None else uncalibrated(probs, temperature)
    return {
        "temperature": temperature,
        "status": "uncalibrated" if temperature is None else "calibrated",
        "bins": ECE_BINS,
        "uncalibrated": measured(raw),
        "calibrated": None if temperature is None else measured(probs),
    }


def operating_point(predictions: Predictions, specificity: float, weights: np.ndarray | None) -> dict:
    """{"specificity", "sens": {"value", "low", "high", "valid"}, "threshold", "spec"}: the highest
    sensitivity at a specificity of at least `specificity` on this split, the threshold (on the
    probability compared with the checkpoint's) that gives it here and the specificity it gives."""
    labels, probs = predictions.label, predictions.prob
    point = sensitivity_at_specificity(labels, probs, specificity)
    interval = {"low": None, "high": None, "valid": 0}
    if weights is not None:
        interval = percentile_interval(sensitivity_at_specificity_replicates(labels, probs, weights, specificity))
    return {
        "specificity": specificity,
        "sens": {"value": _number(point["sens"]), **interval},
        "threshold": _number(point["threshold"]),  # None: undefined, or no threshold but "call nothing malignant"
        "spec": _number(point["spec"]),
    }


def _number(value: float) -> float | None:
    """None where JSON has no number: NaN (undefined) and infinity."""
    return float(value) if math.isfinite(value) else None
