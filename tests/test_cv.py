"""busnet cv: folds checked before any training, the summary's arithmetic (end to end: tests/test_ablation.py)."""

from __future__ import annotations

import dataclasses
import statistics

import numpy as np
import pytest

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
    for folds, message in (("7", r"folds are 0\.\.5"), ("a,b", "comma-separated"), (",", r"folds are 0\.\.5")):
        with pytest.raises(BusnetError, match=message):
            cross_validate(base, CvOptions(folds=folds))
    assert not any(tmp_path.iterdir())


def test_drawn_kfold_test_sets_are_case_disjoint_and_cover_the_dataset(synthetic_dataset):
    """Protocol fold kKof6 of a 5-fold dataset: the six test sets partition the rows; within a fold no
    case is on two sides, and train + val + test is the whole dataset."""
    from jobs.data import kfold
    from jobs.data.dataset import read_table
    from jobs.data.pipeline import FILTER_COLUMNS, split_filter
    from jobs.evaluate.cv import _chosen_folds

    table = read_table(synthetic_dataset, columns=["image_id", "case_id", *FILTER_COLUMNS])
    folds = _chosen_folds(synthetic_dataset, None)
    assert folds == [kfold.name(k, 5) for k in range(6)] == ["k0of6", "k1of6", "k2of6", "k3of6", "k4of6", "k5of6"]
    tested: list[str] = []
    for fold in folds:
        sides = {s: table.filter(split_filter(s, fold).to_pyarrow()) for s in ("train", "val", "test")}
        cases = {s: set(rows["case_id"].to_pylist()) for s, rows in sides.items()}
        assert all(rows.num_rows for rows in sides.values())
        assert not (cases["train"] & cases["val"] or cases["train"] & cases["test"] or cases["val"] & cases["test"])
        assert sorted(sum((rows["image_id"].to_pylist() for rows in sides.values()), [])) == sorted(
            table["image_id"].to_pylist()
        )
        tested += sides["test"]["image_id"].to_pylist()
    assert sorted(tested) == sorted(table["image_id"].to_pylist())  # each image tested exactly once
    assert _chosen_folds(synthetic_dataset, None, "split") == [None]
    with pytest.raises(BusnetError, match="k0of5"):
        from jobs.data.pipeline import check_fold

        check_fold(synthetic_dataset, table, "k0of5")


def test_a_finished_fold_is_reused_only_with_the_same_data_and_config(synthetic_dataset, tmp_path):
    import json

    from jobs import storage
    from jobs.data.dataset import read_manifest
    from jobs.evaluate.cv import check_reusable
    from jobs.train.driver import hyperparameters

    run = TrainConfig(data=synthetic_dataset, out=str(tmp_path), name="fold-k0of6", fold="k0of6", lr=1e-3)
    lineage = {
        "dataset": {"content_hash": read_manifest(synthetic_dataset)["content_hash"]},
        "hyperparameters": hyperparameters(run),
    }
    (tmp_path / "staged").mkdir()
    (tmp_path / "staged" / "lineage.json").write_text(json.dumps(lineage))
    best = str(tmp_path / "best")
    storage.publish_dir(tmp_path / "staged", best)
    check_reusable(run, best)  # the same: reused
    differ = r"best was trained otherwise \(recipe .busnet. there, .paper. now; lr 0\.001 there, 1e-05 now"
    with pytest.raises(BusnetError, match=differ):
        check_reusable(dataclasses.replace(run, recipe="paper", lr=None, select=None, pretrained="none"), best)
    lineage["dataset"]["content_hash"] = "another"
    (tmp_path / "staged" / "lineage.json").write_text(json.dumps(lineage))
    storage.publish_dir(tmp_path / "staged", best)
    with pytest.raises(BusnetError, match="dataset 'another' there"):
        check_reusable(run, best)


def test_tables_say_how_the_run_differs_from_the_papers_protocol():
    from jobs.evaluate.protocol import header
    from jobs.train.config import PAPER_PROTOCOL

    assert header(dict(PAPER_PROTOCOL), "kfold") == [
        "Run: preset paper, recipe paper, weights imagenet, selection val_loss, cv protocol kfold."
    ]
    tiny = dataclasses.asdict(TrainConfig(data="d", out="o"))
    lines = header(tiny)
    assert lines[0] == "Run: preset tiny, recipe busnet, weights none, selection score."
    assert lines[1] == (
        "**Warning: not the paper's protocol**: preset tiny (paper: paper); recipe busnet (paper: paper); "
        "weights none (paper: imagenet); selection score (paper: val_loss)."
    )
    assert "classifier-only variants by val ROC-AUC alone" in lines[2]
    assert "weights not recorded (paper: imagenet)" in header({"preset": "paper", "recipe": "paper"})[1]
