"""busnet cv: folds checked before any training, the summary's arithmetic, and (slow) two real folds."""

from __future__ import annotations

import json
import statistics

import pytest

from jobs.cli import main
from jobs.errors import BusnetError
from jobs.evaluate.cv import cross_validate, render, summarise
from jobs.train.config import CvOptions, TrainConfig


def _metrics(acc: float, dsc: float | None, source_acc: float) -> dict:
    """The shape of evaluate's metrics.json that cv reads: overall and per source, value entries."""
    return {
        "overall": {"n": 10, "acc": {"value": acc}, "auc": {"value": 0.5}, "dsc": {"value": dsc}},
        "per_source": {"synthetic": {"n": 10, "acc": {"value": source_acc}}},
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
    table = render(summary)
    assert "| mean +- sd | 70.0 +- 10.0 |" in table


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
    for fold in (0, 1):
        tested = json.loads((root / f"fold-{fold}" / "eval" / "metrics.json").read_text())
        assert tested["evaluated"]["fold"] == fold and tested["evaluated"]["split"] == "test"
        lineage = json.loads((root / f"fold-{fold}" / "best" / "lineage.json").read_text())
        assert lineage["hyperparameters"]["fold"] == fold
        assert summary["groups"]["overall"]["per_fold"]["acc"][str(fold)] == tested["overall"]["acc"]["value"]
    assert "mean +- sd" in (root / "cv.md").read_text()
    capsys.readouterr()
    assert main(argv) == 0  # everything is there: both folds are reused, nothing trains again
    assert capsys.readouterr().out.count("already trained and tested") == 2
