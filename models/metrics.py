"""The paper's metrics (section 3.2): Acc, Sens, Spec, F1, AUC, FNR, FPR; DSC and JI per image.

The paper's "AUC" is not the ROC area of the probabilities: the authors' code calls scikit-learn's
`roc_auc_score` on the hard 0/1 predictions, which equals (Sens + Spec) / 2, and every row of its
Tables 2 and 3 fits that (e.g. (86.4 + 79.2) / 2 = 82.8). Both are kept, under distinct names:
`auc_hard` (the paper's AUC column, threshold-dependent) and `auc` (ROC-AUC of the probabilities).
The paper calls malignant at PAPER_THRESHOLD = 0.5; busnet also reports the validation-chosen one.

All values are fractions in [0, 1]. A metric that is undefined for the data (AUC, or sensitivity,
with only one class present) is NaN, silently: validation on a tiny split must not crash or warn.
A prediction is positive (malignant) when prob >= threshold, as in scikit-learn's `roc_curve`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, recall_score, roc_auc_score, roc_curve

# The metric names, in the paper's Table 2 order (its AUC column is auc_hard, ROC-AUC beside it):
# every other list (validation, tuning table, evaluation, report, cv) is derived from these.
CLASSIFICATION_METRICS = ("acc", "sens", "spec", "f1", "auc_hard", "auc", "fnr", "fpr")
SEGMENTATION_METRICS = ("dsc", "ji")
METRICS = CLASSIFICATION_METRICS + SEGMENTATION_METRICS
ERROR_RATES = ("fnr", "fpr")  # 1 - sens and 1 - spec: lower is better, every other metric higher
PAPER_THRESHOLD = 0.5  # the paper's decision threshold on the malignant probability (its "paper protocol")
# The specificity at which the sensitivity is reported: screening users choose an operating point, not a threshold.
OPERATING_SPECIFICITY = 0.90
SPECIFICITY_TOLERANCE = 1e-9  # 9 of 10 benign is a specificity of 0.9, whatever 1 - 0.1 rounds to


def _binary_inputs(y_true, prob) -> tuple[np.ndarray, np.ndarray]:
    y_true = np.asarray(y_true).reshape(-1)
    prob = np.asarray(prob, dtype=np.float64).reshape(-1)
    if y_true.size == 0 or y_true.size != prob.size:
        raise ValueError(f"need as many labels as probabilities, at least one: got {y_true.size} and {prob.size}")
    if not np.isin(y_true, (0, 1)).all():
        raise ValueError(f"labels must be 0 (benign) or 1 (malignant), got values {np.unique(y_true)[:5]}")
    if not np.isfinite(prob).all():
        raise ValueError("probabilities contain NaN or infinity")
    return y_true.astype(np.int64), prob


def classification_metrics(y_true, prob, threshold: float = PAPER_THRESHOLD) -> dict[str, float]:
    """CLASSIFICATION_METRICS for labels 0/1 and malignancy probabilities.

    auc_hard = (sens + spec) / 2 = roc_auc_score on the hard predictions (the paper's AUC); auc =
    ROC-AUC of the probabilities. sens/fnr are NaN without malignant labels, spec/fpr NaN without
    benign ones, auc and auc_hard NaN with one class only, f1 NaN when there is no positive label
    or prediction at all.
    """
    y_true, prob = _binary_inputs(y_true, prob)
    y_pred = (prob >= threshold).astype(np.int64)
    sens = float(recall_score(y_true, y_pred, pos_label=1, zero_division=np.nan))
    spec = float(recall_score(y_true, y_pred, pos_label=0, zero_division=np.nan))
    one_class = np.unique(y_true).size < 2
    values = {
        "acc": float(accuracy_score(y_true, y_pred)),
        "sens": sens,
        "spec": spec,
        "f1": float(f1_score(y_true, y_pred, zero_division=np.nan)),
        "auc_hard": (sens + spec) / 2.0,
        "auc": float("nan") if one_class else float(roc_auc_score(y_true, prob)),
        "fnr": 1.0 - sens,
        "fpr": 1.0 - spec,
    }
    return {name: values[name] for name in CLASSIFICATION_METRICS}


def choose_threshold(y_true, prob) -> float:
    """The decision threshold maximising Youden's J (sens + spec - 1) on the ROC; 0.5 with one class."""
    y_true, prob = _binary_inputs(y_true, prob)
    if np.unique(y_true).size < 2:
        return 0.5
    fpr, tpr, thresholds = roc_curve(y_true, prob)
    finite = np.isfinite(thresholds)  # roc_curve starts with +inf (nothing positive)
    best = np.argmax(np.where(finite, tpr - fpr, -np.inf))
    return float(thresholds[best])


def sensitivity_at_specificity(y_true, prob, specificity: float = OPERATING_SPECIFICITY) -> dict[str, float]:
    """{"sens", "spec", "threshold"}: the highest sensitivity of any threshold whose specificity is at
    least `specificity` (the highest such threshold among equals), that threshold (a probability;
    malignant when prob >= it; inf when only calling nothing malignant reaches the specificity) and
    the specificity it gives. NaN everywhere with one class only."""
    y_true, prob = _binary_inputs(y_true, prob)
    if np.unique(y_true).size < 2:
        return {"sens": float("nan"), "spec": float("nan"), "threshold": float("nan")}
    fpr, tpr, thresholds = roc_curve(y_true, prob, drop_intermediate=False)
    allowed = 1.0 - fpr >= specificity - SPECIFICITY_TOLERANCE  # a prefix: fpr only grows along the curve
    best = int(np.argmax(np.where(allowed, tpr, -1.0)))  # the first of equals: the highest threshold
    return {"sens": float(tpr[best]), "spec": float(1.0 - fpr[best]), "threshold": float(thresholds[best])}


def _binary_masks(masks, name: str) -> list[np.ndarray]:
    """A [N, H, W] / [N, 1, H, W] array or a sequence of per-image masks (sizes may differ) -> bool arrays."""
    out = []
    for mask in masks:
        mask = np.asarray(mask)
        if np.issubdtype(mask.dtype, np.floating) and not np.isin(mask, (0.0, 1.0)).all():
            raise ValueError(f"{name}: float masks must hold only 0 and 1 (threshold probabilities first)")
        out.append(mask != 0)
    return out


def segmentation_metrics(true_masks: Sequence | np.ndarray, pred_masks: Sequence | np.ndarray) -> dict[str, float]:
    """{"dsc", "ji"}: Dice and Jaccard of each image's binary masks, averaged over the images.

    Both masks empty counts as a perfect match (1.0). Masks are bool, 0/1 or 0/255; an image's two
    masks must have the same shape (images may differ). Equal to scikit-learn's f1_score and
    jaccard_score per image (tested), counted with numpy: validation runs it on every epoch.
    """
    trues, preds = _binary_masks(true_masks, "true_masks"), _binary_masks(pred_masks, "pred_masks")
    if not trues or len(trues) != len(preds):
        raise ValueError(f"need as many true as predicted masks, at least one: got {len(trues)} and {len(preds)}")
    dsc, ji = [], []
    for index, (true, pred) in enumerate(zip(trues, preds)):
        if true.shape != pred.shape:
            raise ValueError(f"mask {index}: true shape {true.shape} differs from predicted shape {pred.shape}")
        overlap = np.count_nonzero(true & pred)
        total = np.count_nonzero(true) + np.count_nonzero(pred)
        dsc.append(1.0 if total == 0 else 2.0 * overlap / total)
        ji.append(1.0 if total == 0 else overlap / (total - overlap))
    return {"dsc": float(np.mean(dsc)), "ji": float(np.mean(ji))}
