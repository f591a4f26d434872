"""busnet evaluate: the bootstrap against scikit-learn, and the command end to end on Ray.

The end-to-end tests evaluate a tiny untrained (seeded) checkpoint on the synthetic dataset's test
split through the CLI, then recompute every metric independently from the Parquet rows with
models.preprocess + a forward pass + models.metrics, without Ray.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, recall_score, roc_auc_score

from jobs import storage
from jobs.cli import main
from jobs.evaluate.intervals import case_weights, classification_replicates, confidence_intervals, weighted_auc
from models.calibration import expected_calibration_error
from models.metrics import CLASSIFICATION_METRICS, METRICS, sensitivity_at_specificity

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------- bootstrap (no Ray, milliseconds)


def test_unit_weights_give_the_scikit_learn_metrics():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 200)
    probs = np.round(rng.random(200), 2)  # rounded: many ties, which AUC must count as one half
    got = {k: v[0] for k, v in classification_replicates(labels, probs, 0.4, np.ones((1, 200))).items()}
    predicted = probs >= 0.4
    assert tuple(got) == CLASSIFICATION_METRICS
    assert got["acc"] == pytest.approx(accuracy_score(labels, predicted))
    assert got["sens"] == pytest.approx(recall_score(labels, predicted))
    assert got["spec"] == pytest.approx(recall_score(labels, predicted, pos_label=0))
    assert got["f1"] == pytest.approx(f1_score(labels, predicted))
    assert got["auc_hard"] == pytest.approx(roc_auc_score(labels, predicted))
    assert got["auc"] == pytest.approx(roc_auc_score(labels, probs))
    assert got["fnr"] == pytest.approx(1 - got["sens"]) and got["fpr"] == pytest.approx(1 - got["spec"])


def test_integer_weights_equal_repeating_the_images():
    rng = np.random.default_rng(4)
    labels, probs = rng.integers(0, 2, 150), np.round(rng.random(150), 1)
    counts = rng.integers(0, 4, 150)
    repeated = np.repeat(np.arange(150), counts)
    assert weighted_auc(labels, probs, counts[None].astype(float))[0] == pytest.approx(
        roc_auc_score(labels[repeated], probs[repeated])
    )


def test_case_weights_resample_whole_cases_reproducibly():
    cases = ["a", "a", "a", "b", "c", "c", "d"]
    weights = case_weights(cases, 500, seed=7)
    assert weights.shape == (500, 7)
    assert np.array_equal(weights, case_weights(cases, 500, seed=7))
    assert not np.array_equal(weights, case_weights(cases, 500, seed=8))
    assert (weights[:, 0] == weights[:, 1]).all() and (weights[:, 0] == weights[:, 2]).all()
    assert (weights[:, 4] == weights[:, 5]).all()
    # Each resample draws 4 cases (as many as there are).
    per_case = weights[:, [0, 3, 4, 6]]
    assert (per_case.sum(axis=1) == 4).all()


def test_intervals_skip_undefined_resamples_and_bracket_the_estimate():
    rng = np.random.default_rng(5)
    labels = np.r_[np.zeros(30, int), np.ones(2, int)]  # 2 malignant: many resamples draw none
    probs = np.clip(labels * 0.4 + rng.random(32) * 0.6, 0, 1)
    dsc = np.where(rng.random(32) < 0.5, np.nan, rng.random(32))
    intervals = confidence_intervals(
        labels, probs, 0.5, [str(i) for i in range(32)], per_image={"dsc": dsc}, n_resamples=400, seed=0
    )
    assert 0 < intervals["sens"]["valid"] < 400
    assert intervals["acc"]["valid"] == 400
    assert intervals["dsc"]["low"] <= np.nanmean(dsc) <= intervals["dsc"]["high"]
    assert intervals["acc"]["low"] <= accuracy_score(labels, probs >= 0.5) <= intervals["acc"]["high"]


def test_the_papers_auc_is_its_hard_auc():
    """Every row of the paper's tables fits AUC = (Sens + Spec) / 2 (to its rounding): the report's
    AUC (hard, paper) column is the one to set beside it."""
    from jobs.evaluate.report import COLUMNS, PAPER_COLUMNS, PAPER_ROWS

    for title, values in PAPER_ROWS.values():
        row = dict(zip(PAPER_COLUMNS, values))
        assert row["auc_hard"] == pytest.approx((row["sens"] + row["spec"]) / 2, abs=0.051), title
    assert dict(COLUMNS)["auc_hard"] == "AUC (hard, paper)" and dict(COLUMNS)["auc"] == "ROC-AUC"


# ---------------------------------------------------------------- end to end (Ray Data, CLI)


def _tiny_checkpoint(
    directory: Path, variant: str = "hybrid", threshold: float = 0.5, temperature: float | None = None
) -> Path:
    import torch

    from models import build_model, save_checkpoint
    from models.preprocess import Preprocessing

    torch.manual_seed(0)
    model = build_model("tiny", variant).eval()
    save_checkpoint(
        model,
        directory,
        preprocessing=Preprocessing(size=model.input_size),
        threshold=threshold,
        temperature=temperature,
        metrics={"val_auc": 0.5},
        lineage={"note": "test_evaluate"},
    )
    return directory


def _test_rows(data_uri: str) -> list[dict]:
    import pyarrow.dataset as pads

    table = pads.dataset(f"{storage.resolve(data_uri)}/data", format="parquet").to_table()
    return [row for row in table.to_pylist() if row["split"] == "test"]


def _independent_metrics(checkpoint: Path, rows: list[dict], threshold: float, temperature: float = 1.0) -> dict:
    """Table 2's metrics of the checkpoint on these rows, without Ray or jobs.evaluate; the probability
    is sigmoid(logit / temperature), and "raw_probs" sigmoid(logit)."""
    import torch

    from models import load_checkpoint
    from models.metrics import classification_metrics, segmentation_metrics
    from models.preprocess import Preprocessing, decode_image, decode_mask, preprocess_image, preprocess_mask

    model, config = load_checkpoint(str(checkpoint))
    pre = Preprocessing.from_dict(config["preprocessing"])
    images = np.stack([preprocess_image(decode_image(r["image"]), pre) for r in rows])
    with torch.no_grad():
        out = model(torch.from_numpy(images))
    probs = torch.sigmoid(out["logits"] / temperature).numpy()
    labels = np.array([r["label"] for r in rows])
    expected = classification_metrics(labels, probs, threshold=threshold)
    with_mask = [i for i, r in enumerate(rows) if r["mask"] is not None]
    if out["mask_logits"] is not None and with_mask:
        truth = np.stack([preprocess_mask(decode_mask(rows[i]["mask"]), pre.size)[0] > 0.5 for i in with_mask])
        predicted = (torch.sigmoid(out["mask_logits"]) > 0.5).numpy()[with_mask, 0]
        expected.update(segmentation_metrics(truth, predicted))
    return {
        **expected,
        "probs": dict(zip((r["image_id"] for r in rows), probs.tolist())),
        "labels": labels,
        "prob_array": probs.astype(np.float64),
        "raw_probs": torch.sigmoid(out["logits"]).numpy().astype(np.float64),
    }


def _assert_png(path: Path) -> None:
    from PIL import Image

    assert path.read_bytes()[:8] == PNG_SIGNATURE, path
    with Image.open(path) as image:
        image.verify()
        assert min(image.size) >= 300, (path, image.size)


def test_evaluate_cli_reports_the_models_own_metrics(ray_local, synthetic_dataset, tmp_path, capsys):
    checkpoint = _tiny_checkpoint(tmp_path / "ckpt", threshold=0.45, temperature=2.0)
    out = tmp_path / "eval"
    code = main(
        [
            "evaluate",
            "--data",
            synthetic_dataset,
            "--checkpoint",
            str(checkpoint),
            "--out",
            str(out),
            "--bootstrap",
            "300",
            "--batch-size",
            "4",
            "--specificity",
            "0.8",
            "--no-track",
        ]
    )
    assert code == 0, capsys.readouterr().err
    assert not (out / "mlruns").exists()  # --no-track: nothing in MLflow (tests/test_ablation.py tracks evaluate)
    printed = capsys.readouterr().out
    assert "| **all** | 0.45 (validation) |" in printed and "| **all** | 0.5 (paper protocol) |" in printed

    metrics = json.loads(
        (out / "metrics.json").read_text(),
        parse_constant=lambda name: pytest.fail(f"metrics.json holds {name}: not JSON"),
    )
    rows = _test_rows(synthetic_dataset)
    expected = _independent_metrics(checkpoint, rows, threshold=0.45, temperature=2.0)
    assert metrics["threshold"] == 0.45 and metrics["threshold_source"] == "checkpoint"
    overall = metrics["overall"]
    assert overall["n"] == len(rows)
    assert overall["n_malignant"] == sum(r["label"] == 1 for r in rows)
    paper = metrics["paper_protocol"]
    assert paper["threshold"] == 0.5 and paper["overall"]["n"] == len(rows)
    at_paper = _independent_metrics(checkpoint, rows, threshold=0.5, temperature=2.0)
    for key in METRICS:
        for group, independent in ((overall, expected), (paper["overall"], at_paper)):
            entry = group["metrics"][key]
            assert entry["value"] == pytest.approx(independent[key], abs=1e-4), key
            assert entry["low"] <= entry["value"] + 1e-9 and entry["value"] - 1e-9 <= entry["high"], (key, entry)
    assert metrics["evaluated"]["checkpoint"] == str(checkpoint)
    assert metrics["evaluated"]["lineage"]["note"] == "test_evaluate"
    assert metrics["bootstrap"] == {
        "resamples": 300,
        "seed": 0,
        "level": 0.95,
        "method": "percentile",
        "unit": "case",
        "max_images_per_case": metrics["bootstrap"]["max_images_per_case"],
    }
    sources = {r["source"] for r in rows}
    assert set(metrics["per_source"]) == set(paper["per_source"]) == sources
    assert sum(g["n"] for g in metrics["per_source"].values()) == len(rows)

    predictions = (out / "predictions.csv").read_text().splitlines()
    assert len(predictions) == len(rows) + 1
    header = predictions[0].split(",")
    for line in predictions[1:]:
        fields = dict(zip(header, line.split(",")))
        assert float(fields["malignant_probability"]) == pytest.approx(expected["probs"][fields["image_id"]], abs=1e-4)

    # The checkpoint's temperature: every probability above is sigmoid(logit / 2), the ECE is shown before and after.
    labels = expected["labels"]
    calibration = metrics["calibration"]
    assert calibration["temperature"] == 2.0 and calibration["status"] == "calibrated" and calibration["bins"] == 15
    for view, probs in (("uncalibrated", expected["raw_probs"]), ("calibrated", expected["prob_array"])):
        ece = calibration[view]["ece"]
        assert ece["value"] == pytest.approx(expected_calibration_error(labels, probs), abs=1e-5), view
        assert 0 <= ece["low"] <= ece["high"] <= 1 and ece["valid"] == 300, (view, ece)
        assert sum(b["n"] for b in calibration[view]["reliability"]) == len(rows)
    point = metrics["operating_point"]
    want = sensitivity_at_specificity(labels, expected["prob_array"], 0.8)
    assert point["specificity"] == 0.8 and point["spec"] >= 0.8
    assert point["sens"]["value"] == pytest.approx(want["sens"]) and point["threshold"] == pytest.approx(
        want["threshold"]
    )
    assert point["sens"]["low"] <= point["sens"]["value"] <= point["sens"]["high"]
    assert "Sensitivity at 80% specificity" in printed

    report = (out / "report.md").read_text()
    for needle in (
        "Probability: calibrated**, temperature T = 2",
        "Expected calibration error",
        "Sensitivity at 80% specificity",
        "reliability.png",
        "| **all** | 0.45 (validation) |",
        "| **all** | 0.5 (paper protocol) |",
        "AUC (hard, paper) | ROC-AUC",
        "Hybrid-MT-ESTAN (paper, Table 2)",
        "DSC",
        "roc.png",
        "confusion.png",
        "overlays.png",
        "model's input resolution",
        *sources,
    ):
        assert needle in report, needle
    for name in ("roc.png", "confusion.png", "overlays.png", "reliability.png"):
        _assert_png(out / name)


@pytest.mark.parametrize("variant, masks", [("swin", True), ("hybrid", False)])
def test_no_segmentation_is_said_not_zeroed(synthetic_dataset, tmp_path, variant, masks):
    """The swin variant drops the DSC/JI columns; a split without masks shows them as n/a.

    Runs the actors' code (BatchPredictor) on decoded Parquet rows in-process: no Ray needed."""
    from jobs.data.pipeline import decode_batch
    from jobs.evaluate.inference import BatchPredictor
    from jobs.evaluate.report import render_markdown
    from jobs.evaluate.results import Predictions
    from jobs.evaluate.run import build_metrics
    from models.preprocess import Preprocessing

    checkpoint = _tiny_checkpoint(tmp_path / "ckpt", variant=variant)
    rows = _test_rows(synthetic_dataset)
    raw = {
        k: np.array([r[k] if k != "mask" or masks else None for r in rows], dtype=object)
        for k in ("image_id", "source", "label", "image", "mask", "height", "width")
    }
    config = json.loads((checkpoint / "config.json").read_text())
    out = BatchPredictor(str(checkpoint))(decode_batch(raw, Preprocessing.from_dict(config["preprocessing"])))
    assert ("dsc" in out) == (variant != "swin")
    predictions = Predictions(
        image_id=out["image_id"].astype(str),
        case_id=out["image_id"].astype(str),
        source=out["source"].astype(str),
        label=out["label"],
        prob=out["prob"],
        has_mask=out["has_mask"],
        dsc=out.get("dsc"),
        ji=out.get("ji"),
    )
    evaluated = {
        "data": synthetic_dataset,
        "split": "test",
        "fold": None,
        "checkpoint": str(checkpoint),
        "model": config["model"],
    }
    metrics = build_metrics(
        predictions,
        evaluated,
        threshold=0.5,
        threshold_source="--threshold",
        has_segmentation=variant != "swin",
        n_bootstrap=50,
        seed=0,
    )
    assert metrics["overall"]["metrics"]["dsc"] is None and metrics["overall"]["metrics"]["ji"] is None
    assert metrics["overall"]["metrics"]["acc"]["value"] is not None
    assert metrics["segmentation"]["evaluated"] is False
    assert metrics["calibration"]["temperature"] is None and metrics["calibration"]["calibrated"] is None
    assert metrics["operating_point"]["specificity"] == 0.9  # the default
    report = render_markdown(metrics, ["roc.png", "confusion.png"])
    assert "Probability: uncalibrated**" in report and "Sensitivity at 90% specificity" in report
    header = next(line for line in report.splitlines() if line.startswith("| | threshold | n |"))
    all_row = next(line for line in report.splitlines() if line.startswith("| **all**"))
    if variant == "swin":
        assert "DSC" not in header and "JI" not in header and "no segmentation branch" in report
    else:
        assert "DSC" in header and all_row.rstrip(" |").endswith("n/a | n/a")
        assert "no image of this split has a ground-truth mask" in report


def _rewritten_copy(dataset_uri: str, target: Path, column: str, values) -> str:
    """A copy of the dataset with one column replaced (values: table -> new pyarrow array)."""
    import pyarrow.parquet as pq

    shutil.copytree(dataset_uri, target)
    for part in (Path(storage.resolve(str(target))) / "data").glob("*.parquet"):
        table = pq.read_table(part)
        index = table.schema.get_field_index(column)
        pq.write_table(table.set_column(index, table.schema.field(column), values(table)), part)
    return str(target)


def test_bad_checkpoint_and_empty_split_fail_with_one_line(ray_local, synthetic_dataset, tmp_path, capsys):
    import pyarrow as pa

    bad = tmp_path / "bad-ckpt"
    bad.mkdir()
    (bad / "config.json").write_text("{not json")
    for checkpoint in (bad, tmp_path / "missing"):
        code = main(
            ["evaluate", "--data", synthetic_dataset, "--checkpoint", str(checkpoint), "--out", str(tmp_path / "e1")]
        )
        error = capsys.readouterr().err.strip()
        assert code != 0 and len(error.splitlines()) == 1, error
        assert "cannot load checkpoint" in error and str(checkpoint) in error

    no_test = _rewritten_copy(
        synthetic_dataset, tmp_path / "no-test", "split", lambda table: pa.array(["train"] * len(table))
    )
    code = main(
        [
            "evaluate",
            "--data",
            no_test,
            "--checkpoint",
            str(_tiny_checkpoint(tmp_path / "ckpt")),
            "--out",
            str(tmp_path / "e2"),
        ]
    )
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert code != 0 and "'test' is empty" in error, error
    assert not (tmp_path / "e1").exists() and not (tmp_path / "e2").exists()


def test_the_papers_own_row_for_each_model():
    from jobs.evaluate.report import paper_row

    assert paper_row("hybrid")[0].startswith("Hybrid-MT-ESTAN")
    assert paper_row("swin")[0].startswith("Swin Transformer")
    assert paper_row("swin_aaa") is None  # ours, not the paper's
    assert paper_row("baseline", "densenet121")[0].startswith("DenseNet121")
    assert paper_row("baseline", "mobilenetv2_100")[0].startswith("MobileNet")
    assert paper_row("baseline", "vgg16") is None  # Table 2 has no VGG row
