"""Calibration (ECE, reliability bins, temperature scaling) and the sensitivity at a stated specificity:
hand-computed cases, scikit-learn's binning, a known temperature recovered, the bootstrap replicates
against the point estimates, the temperature in a checkpoint and in the served answer. No Ray; seconds."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.calibration import calibration_curve

from jobs.evaluate.intervals import case_weights, ece_replicates, sensitivity_at_specificity_replicates
from models.calibration import (
    ECE_BINS,
    bin_index,
    calibrate_threshold,
    calibrated,
    expected_calibration_error,
    fit_temperature,
    reliability,
    temperature_of,
    uncalibrated,
)
from models.metrics import OPERATING_SPECIFICITY, sensitivity_at_specificity


def test_ece_of_a_hand_computed_case():
    # Bin [0, 1/15): two images at 0.05, one malignant: |0.5 - 0.05| * 2/5. Bin [14/15, 1]: three at 0.95,
    # all malignant: |1 - 0.95| * 3/5. ECE = 0.18 + 0.03.
    labels = np.array([0, 1, 1, 1, 1])
    probs = np.array([0.05, 0.05, 0.95, 0.95, 0.95])
    assert expected_calibration_error(labels, probs) == pytest.approx(0.21)
    # A probability on an inner edge (2/15) goes to the lower bin, as in scikit-learn; 1.0 to the last.
    assert bin_index(np.array([0.0, 2 / 15, 2 / 15 + 1e-9, 1.0])).tolist() == [0, 1, 2, ECE_BINS - 1]
    perfect = np.r_[np.zeros(8), np.ones(2)], np.full(10, 0.2)  # 20% called, 20% malignant
    assert expected_calibration_error(*perfect) == pytest.approx(0.0)


def test_reliability_bins_are_scikit_learns_and_the_ece_their_weighted_gap():
    rng = np.random.default_rng(1)
    probs = rng.beta(0.7, 0.7, 500)
    labels = (rng.random(500) < probs**1.5).astype(int)
    bins = reliability(labels, probs)
    assert len(bins) == ECE_BINS and sum(b["n"] for b in bins) == 500
    filled = [b for b in bins if b["n"]]
    fraction, mean = calibration_curve(labels, probs, n_bins=ECE_BINS, strategy="uniform")
    np.testing.assert_allclose([b["fraction_malignant"] for b in filled], fraction)
    np.testing.assert_allclose([b["mean_probability"] for b in filled], mean)
    gap = sum(b["n"] / 500 * abs(b["fraction_malignant"] - b["mean_probability"]) for b in filled)
    assert expected_calibration_error(labels, probs) == pytest.approx(gap)


@pytest.mark.parametrize("true_temperature", [0.5, 2.5])
def test_the_fit_recovers_a_known_temperature(true_temperature):
    """Labels drawn from sigmoid(z / T): the fit on the logits z finds T, and the ECE falls."""
    rng = np.random.default_rng(0)
    logits = rng.normal(0.0, 3.0, 20_000)
    labels = (rng.random(logits.size) < calibrated(logits, true_temperature)).astype(int)
    temperature, how = fit_temperature(logits, labels)
    assert temperature == pytest.approx(true_temperature, rel=0.05) and how.startswith("calibrated")
    before = expected_calibration_error(labels, calibrated(logits))
    assert expected_calibration_error(labels, calibrated(logits, temperature)) < min(before, 0.02)


def test_no_temperature_where_the_likelihood_has_no_maximum():
    assert fit_temperature(np.array([-1.0, 2.0]), np.array([1, 1]))[0] is None  # one class
    temperature, why = fit_temperature(np.array([-2.0, -0.1, 0.3, 4.0]), np.array([0, 0, 1, 1]))
    assert temperature is None and "right side of 0.5" in why  # T -> 0 would only gain


def test_the_moved_threshold_keeps_every_decision():
    """A threshold chosen on the raw probabilities, moved onto the calibrated ones, calls the same images."""
    rng = np.random.default_rng(3)
    logits = rng.normal(0.0, 4.0, 2_000)
    raw = calibrated(logits)
    for temperature in (0.3, 1.7, 6.0):
        for threshold in (0.01, 0.37, 0.5, 0.93):
            moved = calibrate_threshold(threshold, temperature)
            assert np.array_equal(calibrated(logits, temperature) >= moved, raw >= threshold), (temperature, threshold)
        recovered = uncalibrated(calibrated(logits, temperature), temperature)
        np.testing.assert_allclose(recovered, raw, atol=1e-5)  # float64 saturates near 1 (float32 sooner)
    assert calibrate_threshold(0.5, 3.0) == pytest.approx(0.5)


def test_sensitivity_at_a_stated_specificity():
    # 10 benign at 0.0..0.9, 4 malignant at 0.35, 0.85, 0.95, 0.99. Specificity >= 90% allows at most one
    # benign at or above the threshold: threshold 0.85 calls 0.9 (benign) and three malignant: sens 3/4.
    labels = np.r_[np.zeros(10), np.ones(4)].astype(int)
    probs = np.r_[np.arange(10) / 10, [0.35, 0.85, 0.95, 0.99]]
    got = sensitivity_at_specificity(labels, probs)
    assert got == {"sens": 0.75, "spec": pytest.approx(0.9), "threshold": 0.85}
    assert OPERATING_SPECIFICITY == 0.9
    assert sensitivity_at_specificity(labels, probs, 1.0)["sens"] == 0.5  # no benign called: 0.95 and 0.99
    assert sensitivity_at_specificity(labels, probs, 0.6)["sens"] == 0.75  # 0.35 would call 6 benign
    assert sensitivity_at_specificity(labels, probs, 0.4)["threshold"] == 0.35  # and it may: sens 1
    assert np.isnan(sensitivity_at_specificity(np.ones(3), [0.1, 0.2, 0.3])["sens"])


def test_bootstrap_replicates_equal_the_point_estimates_and_repeated_images():
    rng = np.random.default_rng(5)
    probs = np.round(rng.random(60), 2)  # ties included
    labels = (rng.random(60) < probs).astype(int)
    ones = np.ones((2, 60))
    for specificity in (0.5, 0.9, 1.0):
        want = sensitivity_at_specificity(labels, probs, specificity)["sens"]
        np.testing.assert_allclose(sensitivity_at_specificity_replicates(labels, probs, ones, specificity), want)
    np.testing.assert_allclose(ece_replicates(labels, probs, ones, ECE_BINS), expected_calibration_error(labels, probs))
    weights = case_weights(np.arange(60).astype(str), 5, seed=2)  # integer weights = images repeated
    for row in weights:
        repeated = np.repeat(np.arange(60), row.astype(int))
        got = sensitivity_at_specificity_replicates(labels, probs, row[None], 0.9)[0]
        assert got == pytest.approx(sensitivity_at_specificity(labels[repeated], probs[repeated], 0.9)["sens"])
        got = ece_replicates(labels, probs, row[None], ECE_BINS)[0]
        assert got == pytest.approx(expected_calibration_error(labels[repeated], probs[repeated]))


def _tiny(directory, temperature: float | None):
    from models import build_model, save_checkpoint

    torch.manual_seed(0)
    model = build_model("tiny", "hybrid", input_size=64).eval()
    return save_checkpoint(model, directory, threshold=0.4, temperature=temperature)


def test_a_checkpoint_carries_its_temperature_and_refuses_a_bad_one(tmp_path):
    from models import load_checkpoint

    _, config = load_checkpoint(_tiny(tmp_path / "calibrated", 1.7))
    assert config["temperature"] == 1.7 and temperature_of(config) == 1.7
    card = (tmp_path / "calibrated" / "model_card.md").read_text()
    assert "temperature T = 1.7" in card
    _, config = load_checkpoint(_tiny(tmp_path / "plain", None))
    assert config["temperature"] is None and temperature_of(config) == 1.0
    assert "uncalibrated" in (tmp_path / "plain" / "model_card.md").read_text()
    path = tmp_path / "plain" / "config.json"  # a checkpoint from before calibration has no key: uncalibrated
    stored = json.loads(path.read_text())
    path.write_text(json.dumps({k: v for k, v in stored.items() if k != "temperature"}))
    assert temperature_of(load_checkpoint(tmp_path / "plain")[1]) == 1.0
    for bad in (-1.0, 0, "2", True):
        path.write_text(json.dumps({**stored, "temperature": bad}))
        with pytest.raises(ValueError, match=r"config\.json: temperature must be a positive number"):
            load_checkpoint(tmp_path / "plain")
    with pytest.raises(ValueError, match="temperature must be a positive number"):
        _tiny(tmp_path / "nan", float("nan"))


def test_the_served_probability_is_calibrated_and_its_threshold_on_that_scale(tmp_path):
    """serve.predictor: sigmoid(logit / T) from the checkpoint, and the label against its threshold."""
    from models import load_checkpoint
    from models.preprocess import Preprocessing, preprocess_image
    from serve.predictor import PreparedImage, answer_batch, load_model

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (90, 120, 3), dtype=np.uint8) for _ in range(4)]
    loaded = load_model(str(_tiny(tmp_path / "ckpt", 3.0)), load_checkpoint, torch.device("cpu"))
    assert loaded.temperature == 3.0 and loaded.threshold == 0.4
    prepared = [preprocess_image(image, Preprocessing(size=64)) for image in images]
    answers = answer_batch([(loaded, PreparedImage(tensor, 90, 120)) for tensor in prepared])
    with torch.no_grad():
        logits = loaded.model(torch.from_numpy(np.stack(prepared)))["logits"].numpy()
    for reply, logit in zip(answers, logits):
        assert reply["malignant_probability"] == pytest.approx(float(calibrated(logit, 3.0)), abs=1e-6)
        assert reply["label"] == ("malignant" if reply["malignant_probability"] >= 0.4 else "benign")
        assert reply["threshold"] == 0.4


def test_a_threshold_squeezed_towards_one_half_is_not_shown_as_the_papers():
    """A large temperature puts the calibrated threshold near 0.5: the tables must still tell it apart."""
    from jobs.evaluate.report import threshold_label

    assert threshold_label(0.5004339, "checkpoint") == "0.5004 (validation)"
    assert threshold_label(0.5, "paper protocol") == "0.5 (paper protocol)"
    assert threshold_label(0.437123, "checkpoint") == "0.437 (validation)"
