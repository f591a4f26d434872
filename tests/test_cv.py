"""busnet cv: folds checked before any training, the summary's arithmetic, and (slow) two real folds."""

from __future__ import annotations

import json
import statistics

import numpy as np
import pytest

from jobs.cli import main
from jobs.errors import BusnetError
from jobs.evaluate.cv import cross_validate, render, summarise
from jobs.train.config import CvOptions, TrainConfig


def _group(n: int, **values) -> dict:
    return {"n": n, "metrics": {name: None if v is None else {"value": v} for name, v in values.items()}}


def _metrics(acc: float, dsc: float | None, source_acc: float) -> dict:
    """The shape of evaluate's metrics.json that cv reads: at the checkpoint's threshold and at the
    paper's, overall and per source, value entries (test_summary_reads_what_evaluate_writes checks it)."""
    return {
        "threshold": 0.4,
        "overall": _group(10, acc=acc, auc=0.5, dsc=dsc),
        "per_source": {"synthetic": _group(10, acc=source_acc)},
        "paper_protocol": {
            "threshold": 0.5,
            "overall": _group(10, acc=acc - 0.1, auc=0.5, dsc=dsc),
            "per_source": {"synthetic": _group(10, acc=source_acc)},
        },
    }


def test_summary_is_each_fold_then_mean_and_sample_sd():
    summary = summarise({0: _metrics(0.8, 0.7, 0.6), 1: _metrics(0.6, None, 0.9), 2: _metrics(0.7, 0.5, 0.3)})
    overall = summary["groups"]["overall"]
    assert summary["folds"] == [0, 1, 2]
    assert overall["per_fold"]["acc"] == {"0": 0.8, "1": 0.6, "2": 0.7}
    assert overall["mean"]["acc"] == pytest.approx(0.7)
    assert overall["sd"]["acc"] == pytest.approx(statistics.stdev([0.8, 0.6, 0.7]))
    assert overall["mean"]["dsc"] == pytest.approx(0.6)  # a fold without the metric is left out
    assert overall["sd"]["auc"] == 0.0
    assert summary["groups"]["synthetic"]["mean"]["acc"] == pytest.approx(0.6)
    assert summary["paper_protocol"]["groups"]["overall"]["mean"]["acc"] == pytest.approx(0.6)
    table = render(summary)
    assert "| mean +- sd | validation | 70.0 +- 10.0 |" in table
    assert "| mean +- sd | 0.5 (paper protocol) | 60.0 +- 10.0 |" in table
    assert "| 1 | 0.4 (validation) | 60.0 |" in table and "| 1 | 0.5 (paper protocol) | 50.0 |" in table


def test_summary_reads_what_evaluate_writes():
    """cv summarises evaluate's real metrics.json: every metric, auc_hard included, at both thresholds."""
    from jobs.evaluate.results import Predictions
    from jobs.evaluate.run import build_metrics
    from models.metrics import CLASSIFICATION_METRICS, classification_metrics

    rng = np.random.default_rng(0)
    per_fold, expected = {}, {}
    for fold in (0, 1):
        labels, probs = rng.integers(0, 2, 40), rng.random(40)
        ids = np.array([f"{fold}-{i}" for i in range(40)])
        predictions = Predictions(ids, ids, np.full(40, "synthetic"), labels, probs, np.zeros(40, bool), None, None)
        per_fold[fold] = build_metrics(
            predictions, {}, threshold=0.3, threshold_source="checkpoint", has_segmentation=False, n_bootstrap=0, seed=0
        )
        expected[fold] = classification_metrics(labels, probs, 0.3), classification_metrics(labels, probs, 0.5)
    summary = summarise(per_fold)
    chosen, paper = summary["groups"]["overall"], summary["paper_protocol"]["groups"]["overall"]
    assert list(chosen["per_fold"]) == list(paper["per_fold"]) == list(CLASSIFICATION_METRICS)
    for fold in (0, 1):
        for name in CLASSIFICATION_METRICS:
            assert chosen["per_fold"][name][str(fold)] == pytest.approx(expected[fold][0][name]), name
            assert paper["per_fold"][name][str(fold)] == pytest.approx(expected[fold][1][name]), name
    assert summary["thresholds"] == {"0": 0.3, "1": 0.3}
    assert "AUC (hard, paper)" in render(summary) and "ROC-AUC" in render(summary)


def test_bad_folds_are_refused_before_any_training(synthetic_dataset, tmp_path):
    base = TrainConfig(data=synthetic_dataset, out=str(tmp_path), name="cv")
    for folds, message in (("7", r"folds are 0\.\.4"), ("a,b", "comma-separated"), (",", r"folds are 0\.\.4")):
        with pytest.raises(BusnetError, match=message):
            cross_validate(base, CvOptions(folds=folds))
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_cv_trains_and_tests_each_fold_and_resumes(ray_local, synthetic_dataset, tmp_path, capsys):
    argv = ["cv", "--data", synthetic_dataset, "--out", str(tmp_path), "--name", "cv", "--folds", "0,1"]
    argv += ["--epochs", "1", "--input-size", "64", "--lr", "1e-3", "--cpus-per-worker", "0.5"]
    argv += ["--metric", "val_loss"]
    assert main(argv) == 0
    root = tmp_path / "cv"
    summary = json.loads((root / "cv.json").read_text())
    assert summary["folds"] == [0, 1]
    assert set(summary["paper_protocol"]["groups"]["overall"]["per_fold"]["auc_hard"]) == {"0", "1"}
    for fold in (0, 1):
        tested = json.loads((root / f"fold-{fold}" / "eval" / "metrics.json").read_text())
        assert tested["evaluated"]["fold"] == fold and tested["evaluated"]["split"] == "test"
        lineage = json.loads((root / f"fold-{fold}" / "best" / "lineage.json").read_text())
        assert lineage["hyperparameters"]["fold"] == fold
        assert (
            summary["groups"]["overall"]["per_fold"]["acc"][str(fold)] == tested["overall"]["metrics"]["acc"]["value"]
        )
    assert "mean +- sd" in (root / "cv.md").read_text()
    capsys.readouterr()
    assert main(argv) == 0  # everything is there: both folds are reused, nothing trains again
    assert capsys.readouterr().out.count("already trained and tested") == 2
    stale = root / "fold-1" / "eval" / "metrics.json"
    stale.write_text(json.dumps({**json.loads(stale.read_text()), "format_version": 1}))
    assert main(argv) == 0  # metrics of an older format: tested again, not trained again
    out = capsys.readouterr().out
    assert out.count("already trained and tested") == 1 and "fold 1: testing" in out and "training" not in out
    assert json.loads(stale.read_text())["format_version"] > 1
