"""Bootstrap 95% confidence intervals for Table 2's metrics, vectorised over the resamples.

Resampling unit: the case (patient), i.e. a cluster bootstrap. Images of one case are not
independent (HMSS has several per case; an ultrasound exam often yields more than one view), so
resampling single images would treat correlated images as separate evidence and give intervals that
are too narrow. Drawing whole cases with replacement keeps each case's images together. When every
case has exactly one image (BUSI, BUSIS, Dataset B as distributed) this is exactly the ordinary
image bootstrap, so one rule fits every dataset.

A resample is a vector of integer weights, one per image (how often its case was drawn). All
resamples at once are a [B, n] weight matrix, and every metric of every resample is a handful of
array operations on it: no Python loop over resamples (1,000 resamples of 3,320 images take well
under a second). AUC is the weighted Mann-Whitney statistic (ties count one half), which equals the
trapezoidal ROC area that scikit-learn computes.

Intervals are percentile intervals. A resample in which a metric is undefined (no malignant image
drawn for Sens, a single class for AUC, no mask for DSC) is left out of that metric's interval;
`valid` says how many resamples remained.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

BOOTSTRAP_RESAMPLES = 1000  # the intervals' resamples by default (evaluate, predict; `--bootstrap`)


def case_weights(case_ids: Sequence[str], n_resamples: int, seed: int) -> np.ndarray:
    """[n_resamples, n_images] weights: how often each image's case was drawn in each resample."""
    _, codes = np.unique(np.asarray(case_ids, dtype=str), return_inverse=True)
    n_cases = int(codes.max()) + 1 if len(codes) else 0
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_cases, size=(n_resamples, n_cases))
    flat = (draws + n_cases * np.arange(n_resamples)[:, None]).ravel()
    counts = np.bincount(flat, minlength=n_resamples * n_cases).reshape(n_resamples, n_cases)
    return counts[:, codes].astype(np.float64)


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, NaN where the denominator is zero (metric undefined)."""
    out = np.full(np.shape(numerator), np.nan)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def weighted_auc(labels: np.ndarray, probs: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC AUC per row of `weights` [B, n]: P(prob_pos > prob_neg) + 0.5 P(tie), weighted."""
    order = np.argsort(probs, kind="stable")
    sorted_probs = probs[order]
    positive = labels[order].astype(bool)
    w = weights[:, order]
    cum_pos = np.cumsum(np.where(positive, w, 0.0), axis=1)
    cum_neg = np.cumsum(np.where(positive, 0.0, w), axis=1)
    # Groups of tied probabilities: [start, end) in sorted order.
    ends = np.flatnonzero(np.r_[sorted_probs[1:] != sorted_probs[:-1], True]) + 1
    starts = np.r_[0, ends[:-1]]
    zero = np.zeros((w.shape[0], 1))
    cum_pos0 = np.hstack([zero, cum_pos])
    cum_neg0 = np.hstack([zero, cum_neg])
    pos_in = cum_pos0[:, ends] - cum_pos0[:, starts]
    neg_below = cum_neg0[:, starts]
    neg_in = cum_neg0[:, ends] - neg_below
    numerator = (pos_in * (neg_below + 0.5 * neg_in)).sum(axis=1)
    return _ratio(numerator, cum_pos[:, -1] * cum_neg[:, -1])


def classification_replicates(
    labels: np.ndarray, probs: np.ndarray, threshold: float, weights: np.ndarray
) -> dict[str, np.ndarray]:
    """Every `models.metrics.CLASSIFICATION_METRICS` value for each row of `weights` (NaN where undefined).

    A probability >= threshold is called malignant, as `models.metrics` does; auc_hard (the paper's
    AUC) is (sens + spec) / 2, auc the weighted ROC-AUC of the probabilities.
    """
    labels = np.asarray(labels).astype(bool)
    probs = np.asarray(probs, dtype=np.float64)
    predicted = probs >= threshold
    tp = weights @ (labels & predicted)
    fn = weights @ (labels & ~predicted)
    tn = weights @ (~labels & ~predicted)
    fp = weights @ (~labels & predicted)
    sens = _ratio(tp, tp + fn)
    spec = _ratio(tn, tn + fp)
    return {
        "acc": _ratio(tp + tn, tp + tn + fp + fn),
        "sens": sens,
        "spec": spec,
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "auc_hard": (sens + spec) / 2.0,
        "auc": weighted_auc(labels, probs, weights),
        "fnr": 1.0 - sens,
        "fpr": 1.0 - spec,
    }


def sensitivity_at_specificity_replicates(
    labels: np.ndarray, probs: np.ndarray, weights: np.ndarray, specificity: float
) -> np.ndarray:
    """Per row of `weights` [B, n]: the highest sensitivity of a threshold whose specificity is at least
    `specificity` (`models.metrics.sensitivity_at_specificity`, weighted); NaN without both classes.
    Thresholds are cut between distinct probabilities, from the highest down (ties go together)."""
    from models.metrics import SPECIFICITY_TOLERANCE

    order = np.argsort(-np.asarray(probs, dtype=np.float64), kind="stable")
    sorted_probs = np.asarray(probs, dtype=np.float64)[order]
    positive = np.asarray(labels)[order].astype(bool)
    w = weights[:, order]
    cum_pos = np.cumsum(np.where(positive, w, 0.0), axis=1)
    cum_neg = np.cumsum(np.where(positive, 0.0, w), axis=1)
    cuts = np.flatnonzero(np.r_[sorted_probs[1:] != sorted_probs[:-1], True])  # the last image of each tie group
    positives, negatives = cum_pos[:, -1:], cum_neg[:, -1:]
    spec = 1.0 - _ratio(cum_neg[:, cuts], np.broadcast_to(negatives, (len(w), len(cuts))))
    sens = _ratio(cum_pos[:, cuts], np.broadcast_to(positives, (len(w), len(cuts))))
    best = np.where(spec >= specificity - SPECIFICITY_TOLERANCE, sens, 0.0).max(axis=1)  # calling none: sens 0
    return np.where((positives[:, 0] > 0) & (negatives[:, 0] > 0), best, np.nan)


def ece_replicates(labels: np.ndarray, probs: np.ndarray, weights: np.ndarray, n_bins: int) -> np.ndarray:
    """`models.calibration.expected_calibration_error` per row of `weights` [B, n] (the same bins)."""
    from models.calibration import bin_index

    gaps = np.asarray(labels, dtype=np.float64) - np.asarray(probs, dtype=np.float64)
    members = bin_index(probs, n_bins)[None, :] == np.arange(n_bins)[:, None]  # [bins, n]
    per_bin = weights @ (members * gaps).T  # [B, bins]: weighted sum of label - probability
    return _ratio(np.abs(per_bin).sum(axis=1), weights.sum(axis=1))


def mean_replicates(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted mean of per-image `values` per resample; NaN values (no mask) are left out."""
    values = np.asarray(values, dtype=np.float64)
    present = ~np.isnan(values)
    w = weights[:, present]
    return _ratio(w @ values[present], w.sum(axis=1))


def percentile_interval(replicates: np.ndarray, level: float = 0.95) -> dict:
    """{"low", "high", "valid"}: the percentile interval over the resamples where it is defined."""
    finite = replicates[np.isfinite(replicates)]
    if finite.size == 0:
        return {"low": None, "high": None, "valid": 0}
    tail = 100.0 * (1.0 - level) / 2.0
    low, high = np.percentile(finite, [tail, 100.0 - tail])
    return {"low": float(low), "high": float(high), "valid": int(finite.size)}


def confidence_intervals(
    labels: np.ndarray,
    probs: np.ndarray,
    threshold: float,
    case_ids: Sequence[str],
    *,
    per_image: dict[str, np.ndarray] | None = None,
    n_resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, dict]:
    """Intervals for the classification metrics and for the mean of each `per_image` array.

    `per_image` maps a metric name (e.g. "dsc", "ji") to one value per image, NaN for images that
    do not count (no ground-truth mask).
    """
    weights = case_weights(case_ids, n_resamples, seed)
    replicates = classification_replicates(labels, probs, threshold, weights)
    for name, values in (per_image or {}).items():
        replicates[name] = mean_replicates(values, weights)
    return {name: percentile_interval(values, level) for name, values in replicates.items()}
