"""models.metrics against scikit-learn on random data, and the edge cases (one class, empty masks)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, jaccard_score, roc_auc_score, roc_curve

from models.metrics import choose_threshold, classification_metrics, segmentation_metrics


@pytest.mark.parametrize("seed,threshold", [(0, 0.5), (1, 0.3), (2, 0.7)])
def test_classification_matches_sklearn_on_random_data(seed, threshold):
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, 2, 200)
    prob = np.clip(0.3 * y_true + rng.random(200) * 0.7, 0, 1)
    got = classification_metrics(y_true, prob, threshold)
    y_pred = prob >= threshold
    tn, fp, fn, tp = confusion_matrix(y_true, y_pred).ravel()
    expected = {
        "acc": accuracy_score(y_true, y_pred),
        "sens": tp / (tp + fn),
        "spec": tn / (tn + fp),
        "f1": f1_score(y_true, y_pred),
        "auc_hard": roc_auc_score(y_true, y_pred),  # the authors' code: ROC-AUC of the hard predictions
        "auc": roc_auc_score(y_true, prob),
        "fnr": fn / (tp + fn),
        "fpr": fp / (tn + fp),
    }
    assert set(got) == set(expected)
    for key, value in expected.items():
        assert got[key] == pytest.approx(value), key
        assert 0.0 <= got[key] <= 1.0 and isinstance(got[key], float)


@pytest.mark.parametrize("seed,threshold", [(5, 0.5), (6, 0.2), (7, 0.9)])
def test_auc_hard_is_the_papers_auc(seed, threshold):
    """The paper's AUC: (Sens + Spec) / 2, which is what roc_auc_score gives on 0/1 predictions."""
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, 2, 150)
    prob = np.clip(0.2 * y_true + rng.random(150) * 0.8, 0, 1)
    got = classification_metrics(y_true, prob, threshold)
    assert got["auc_hard"] == pytest.approx((got["sens"] + got["spec"]) / 2)
    assert got["auc_hard"] == pytest.approx(roc_auc_score(y_true, prob >= threshold))
    assert got["auc_hard"] != pytest.approx(got["auc"])  # not the ROC-AUC of the probabilities


def test_threshold_is_inclusive():
    got = classification_metrics([0, 1], [0.5, 0.5], threshold=0.5)
    assert got["sens"] == 1.0 and got["spec"] == 0.0


def test_one_class_only_gives_nan_auc_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        benign = classification_metrics([0, 0, 0, 0], [0.1, 0.2, 0.7, 0.4])
        malignant = classification_metrics([1, 1, 1], [0.9, 0.2, 0.6])
        all_right = classification_metrics([0, 0], [0.1, 0.2])
    assert math.isnan(benign["auc"]) and math.isnan(benign["sens"]) and math.isnan(benign["fnr"])
    assert math.isnan(benign["auc_hard"]) and math.isnan(malignant["auc_hard"])
    assert benign["acc"] == 0.75 and benign["spec"] == 0.75 and benign["fpr"] == 0.25 and benign["f1"] == 0.0
    assert math.isnan(malignant["auc"]) and math.isnan(malignant["spec"]) and math.isnan(malignant["fpr"])
    assert malignant["sens"] == pytest.approx(2 / 3) and malignant["fnr"] == pytest.approx(1 / 3)
    assert malignant["f1"] == pytest.approx(0.8)
    assert all_right["acc"] == 1.0 and math.isnan(all_right["f1"])  # no positive anywhere: F1 undefined


def test_bad_classification_inputs_are_refused():
    for y_true, prob in (([], []), ([0, 1], [0.5]), ([0, 2], [0.1, 0.2]), ([0, 1], [0.1, float("nan")])):
        with pytest.raises(ValueError):
            classification_metrics(y_true, prob)


def test_choose_threshold_is_youdens_j():
    rng = np.random.default_rng(3)
    y_true = rng.integers(0, 2, 300)
    prob = np.clip(0.25 * y_true + rng.random(300) * 0.75, 0, 1)
    fpr, tpr, thresholds = roc_curve(y_true, prob)
    best_j = (tpr - fpr).max()
    threshold = choose_threshold(y_true, prob)
    got = classification_metrics(y_true, prob, threshold)
    assert got["sens"] + got["spec"] - 1 == pytest.approx(best_j)
    assert 0.0 <= threshold <= 1.0
    assert choose_threshold([1, 1, 1], [0.2, 0.3, 0.9]) == 0.5
    assert choose_threshold([0, 1], [0.9, 0.1]) in (0.1, 0.9)  # useless model: still a finite threshold


def test_segmentation_matches_sklearn_per_image():
    rng = np.random.default_rng(4)
    true = rng.random((6, 1, 20, 24)) > 0.6
    pred = rng.random((6, 1, 20, 24)) > 0.5
    got = segmentation_metrics(true, pred.astype(np.uint8) * 255)
    dsc = np.mean([f1_score(t.ravel(), p.ravel()) for t, p in zip(true, pred)])
    ji = np.mean([jaccard_score(t.ravel(), p.ravel()) for t, p in zip(true, pred)])
    assert got == {"dsc": pytest.approx(dsc), "ji": pytest.approx(ji)}


def test_segmentation_edge_cases():
    empty = np.zeros((5, 7), bool)
    full = np.ones((5, 7), bool)
    assert segmentation_metrics([empty], [empty]) == {"dsc": 1.0, "ji": 1.0}
    assert segmentation_metrics([empty], [full]) == {"dsc": 0.0, "ji": 0.0}
    half = full.copy()
    half[:, 4:] = False
    # images of different sizes, mean per image: (1 + 0 + dice(half, full)) / 3
    got = segmentation_metrics([empty, empty, full], [empty, full, half])
    assert got["dsc"] == pytest.approx((1 + 0 + 2 * 20 / (35 + 20)) / 3)
    assert got["ji"] == pytest.approx((1 + 0 + 20 / 35) / 3)
    assert segmentation_metrics(np.zeros((2, 1, 4, 4), np.float32), np.zeros((2, 1, 4, 4)))["dsc"] == 1.0


def test_bad_segmentation_inputs_are_refused():
    with pytest.raises(ValueError, match="threshold"):
        segmentation_metrics([np.zeros((4, 4))], [np.full((4, 4), 0.7)])
    with pytest.raises(ValueError, match="shape"):
        segmentation_metrics([np.zeros((4, 4))], [np.zeros((4, 5))])
    with pytest.raises(ValueError, match="as many"):
        segmentation_metrics([np.zeros((4, 4))], [])
