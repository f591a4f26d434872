"""Evaluate a checkpoint on a dataset split: Table 2's metrics with bootstrap CIs, plus a report.

Every metric is reported at two decision thresholds: the checkpoint's (chosen on validation by
Youden's J, or --threshold) and the paper's 0.5 ("paper protocol"), since Acc, Sens, Spec, F1, the
paper's AUC (auc_hard), FNR and FPR all depend on it.

Inference is Ray batch work: the split streams out of `jobs.data.pipeline.read_split` (decoded and
preprocessed exactly as in training) into a pool of actors that each load the checkpoint once and
predict batches (on a GPU when the cluster has one). The driver keeps one row of numbers per image
and, for the overlay figure, only the current best and worst segmentations, so memory stays bounded
whatever the split's size.

Segmentation is scored at the model's input resolution: the ground-truth mask after
`models.preprocess.preprocess_mask` (zero padding to a square, nearest resize to S x S) against the
predicted mask (sigmoid > 0.5) on the same S x S grid, the space in which the network is trained and
validated. DSC and JI ignore true-negative pixels, so the zero padding does not inflate them. Images
without a ground-truth mask (e.g. HMSS) count for classification only.
"""

from __future__ import annotations

import csv
import json
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from jobs import storage, tracking
from jobs.errors import BusnetError
from jobs.evaluate.inference import INFERENCE_BATCH, BatchPredictor
from jobs.evaluate.intervals import BOOTSTRAP_RESAMPLES, confidence_intervals
from jobs.evaluate.results import OverlayPool, Predictions
from jobs.progress import Meter
from models.inference import MASK_THRESHOLD
from models.metrics import METRICS, OPERATING_SPECIFICITY, PAPER_THRESHOLD

if TYPE_CHECKING:
    from jobs.data.dataset import Dataset

FORMAT_VERSION = 3  # of metrics.json; 2 added auc_hard and the paper_protocol block, 3 calibration and operating_point
CPU_ACTORS = 2
KEPT_COLUMNS = {
    "image_id": str,
    "source": str,
    "label": np.int8,
    "prob": np.float64,
    "raw_prob": np.float64,
    "has_mask": bool,
    "dsc": np.float64,
    "ji": np.float64,
}


def evaluate(
    data_uri: str,
    checkpoint_uri: str,
    out_dir: str,
    split: str = "test",
    *,
    fold: int | None = None,
    threshold: float | None = None,
    specificity: float = OPERATING_SPECIFICITY,
    n_bootstrap: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
    batch_size: int = INFERENCE_BATCH,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Evaluate `checkpoint_uri` on `split` of `data_uri`; write metrics.json, predictions.csv,
    report.md and the plots to `out_dir` (a local folder or storage URI); return the metrics."""
    from jobs.evaluate import report
    from jobs.runtime import init_ray

    say = progress or (lambda message: None)
    if n_bootstrap < 0:
        raise BusnetError(f"--bootstrap must be >= 0 (0 turns the intervals off), got {n_bootstrap}")
    if batch_size < 1:
        raise BusnetError(f"--batch-size must be >= 1, got {batch_size}")
    if threshold is not None and not 0.0 < threshold < 1.0:
        raise BusnetError(f"--threshold must be between 0 and 1, got {threshold}")
    if not 0.0 < specificity <= 1.0:
        raise BusnetError(f"--specificity must be in (0, 1], got {specificity}")
    _refuse_foreign_out(out_dir)
    from jobs.data.dataset import open_dataset

    dataset = open_dataset(data_uri)  # once: the shards read are those of the hash recorded
    checkpoint_uri = absolute_uri(checkpoint_uri)
    config, has_segmentation = load_config(checkpoint_uri)  # the actors load its version, by sha256
    threshold_source = "checkpoint" if threshold is None else "--threshold"
    threshold = float(config["threshold"] if threshold is None else threshold)
    model_config = config["model"]

    init_ray()
    started = time.monotonic()
    say(
        f"evaluating {checkpoint_uri} ({model_config.get('preset')}/{model_config.get('variant')}, "
        f"{model_config.get('input_size')} px) on the {split!r} split of {dataset.uri}"
    )
    columns, overlays = _predict(dataset, config, split, fold, batch_size, say)
    predictions = Predictions(
        case_id=case_ids(dataset, columns["image_id"]),
        dsc=columns.pop("dsc", None),
        ji=columns.pop("ji", None),
        **columns,
    )
    elapsed = time.monotonic() - started
    say(f"predicted {len(predictions.image_id)} images in {elapsed:.1f} s; bootstrapping {n_bootstrap} resamples")

    evaluated = what_was_evaluated(dataset, checkpoint_uri, split, fold, config)
    metrics = build_metrics(
        predictions,
        evaluated,
        threshold=threshold,
        threshold_source=threshold_source,
        has_segmentation=has_segmentation,
        n_bootstrap=n_bootstrap,
        seed=seed,
        temperature=config.get("temperature"),
        specificity=specificity,
    )
    metrics["inference_seconds"] = round(elapsed, 2)
    with tempfile.TemporaryDirectory(prefix="busnet-evaluate-") as scratch:
        local = Path(scratch)
        (local / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        _write_predictions_csv(local / "predictions.csv", predictions, threshold)
        report.write_report(local, metrics, predictions, overlays)
        written = sorted(local.iterdir())
        _track(metrics, written)  # what this run wrote: nothing else of out_dir
        for path in written:
            storage.write_bytes(storage.join(out_dir, path.name), path.read_bytes())
    say(f"wrote metrics.json, predictions.csv, report.md and plots to {out_dir}")
    return metrics


# What evaluate writes into its --out (report.write_report's plots included), and the MLflow store
# that tracking keeps beside them; a folder holding anything else is not evaluate's to write into.
OUTPUT_NAMES = frozenset(
    {
        "metrics.json",
        "predictions.csv",
        "report.md",
        "roc.png",
        "confusion.png",
        "overlays.png",
        "reliability.png",
        tracking.STORE_FOLDER,
    }
)


def _refuse_foreign_out(out_dir: str) -> None:
    """BusnetError, before any work, when out_dir is a file or holds what evaluate did not write
    (a user's files there would be overwritten, or recorded as the run's artifacts)."""
    if storage.is_file(out_dir):
        raise BusnetError(f"--out {out_dir}: is a file; give a folder")
    root = storage.filesystem(out_dir)[1]
    foreign = sorted({path[len(root) + 1 :].split("/", 1)[0] for path in storage.list_files(out_dir)} - OUTPUT_NAMES)
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise BusnetError(
            f"--out {out_dir}: holds {shown}, which busnet evaluate did not write; refusing to write there "
            "(choose a new or empty folder)"
        )


def _track(metrics: dict, files: list[Path]) -> None:
    """The evaluation as an MLflow run when tracking is on: what was evaluated, the metrics, the report."""
    evaluated = metrics["evaluated"]
    params = {key: evaluated[key] for key in ("data", "split", "fold", "checkpoint")}
    params.update(
        dataset_hash=evaluated["dataset_content_hash"],
        threshold=metrics["threshold"],
        bootstrap=metrics["bootstrap"]["resamples"],
        seed=metrics["bootstrap"]["seed"],
    )
    fold = "" if evaluated["fold"] is None else f" fold {evaluated['fold']}"

    def values(group: dict) -> dict:
        return {name: (entry or {}).get("value") for name, entry in group["metrics"].items()}

    with tracking.run(f"evaluate {evaluated['split']}{fold}", params=params) as tracked:
        tracked.set_tags({"checkpoint_uri": evaluated["checkpoint"]})
        tracked.log_metrics(values(metrics["overall"]) | {"paper": values(metrics["paper_protocol"]["overall"])})
        tracked.log_artifacts(*files)


def build_metrics(
    predictions: Predictions,
    evaluated: dict,
    *,
    threshold: float,
    threshold_source: str,
    has_segmentation: bool,
    n_bootstrap: int,
    seed: int,
    temperature: float | None = None,
    specificity: float = OPERATING_SPECIFICITY,
) -> dict:
    """The metrics.json content: point estimates and intervals, overall and per source, twice: at
    `threshold` (the checkpoint's validation-chosen one, or --threshold) in `overall`/`per_source`,
    and at the paper's 0.5 in `paper_protocol`, so that a comparison with the paper's tables is like
    for like; then, over all images, `calibration` (the ECE before and after the checkpoint's
    `temperature`, None: uncalibrated) and `operating_point` (the sensitivity at `specificity`). All
    use the same bootstrap resamples. `predictions.prob` is the probability compared with `threshold`."""
    from jobs.evaluate.calibration import calibration, operating_point, resamples

    def at(cut: float) -> dict:
        sources = sorted(set(predictions.source.tolist()))
        return {
            "overall": _group_metrics(predictions, np.ones(len(predictions.label), bool), cut, *settings),
            "per_source": {s: _group_metrics(predictions, predictions.source == s, cut, *settings) for s in sources},
        }

    settings = (has_segmentation, n_bootstrap, seed)
    weights = resamples(predictions, n_bootstrap, seed)
    return {
        "format_version": FORMAT_VERSION,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "evaluated": evaluated,
        "threshold": threshold,
        "threshold_source": threshold_source,
        "mask_threshold": MASK_THRESHOLD,
        "segmentation": _segmentation_status(predictions, has_segmentation),
        "bootstrap": {
            "resamples": n_bootstrap,
            "seed": seed,
            "level": 0.95,
            "method": "percentile",
            "unit": "case",
            "max_images_per_case": _max_images_per_case(predictions.case_id),
        },
        **at(threshold),
        "paper_protocol": {"threshold": PAPER_THRESHOLD, **at(PAPER_THRESHOLD)},
        "calibration": calibration(predictions, temperature, weights),
        "operating_point": operating_point(predictions, specificity, weights),
        "predictions_file": "predictions.csv",
    }


def absolute_uri(uri: str) -> str:
    """Local paths made absolute: Ray workers need not share the driver's working directory."""
    return uri if storage.is_remote(uri) else str(storage.local_path(uri))


def load_config(checkpoint_uri: str) -> tuple[dict, bool]:
    """(config, has_segmentation): the checkpoint loaded once in the driver, so that a bad one
    fails before any Ray work starts."""
    from models import load_checkpoint

    try:
        model, config = load_checkpoint(checkpoint_uri)
    except (ValueError, OSError, KeyError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BusnetError(f"cannot load checkpoint {checkpoint_uri}: {reason}") from exc
    return config, bool(model.has_segmentation)


def _predict(
    dataset: Dataset,
    config: dict,
    split: str,
    fold: int | None,
    batch_size: int,
    say: Callable[[str], None],
) -> tuple[dict[str, np.ndarray], OverlayPool]:
    """Stream the split through the predictor actors; keep the numbers per image (KEPT_COLUMNS)
    and the overlay candidates."""
    import ray

    from jobs.data.pipeline import read_split
    from models.preprocess import Preprocessing

    rows = read_split(dataset, split, fold=fold, preprocessing=Preprocessing.from_dict(config["preprocessing"]))
    # One actor per GPU of the cluster, else one or two CPU actors (the decode tasks need CPUs too).
    gpus = int(ray.cluster_resources().get("GPU", 0))
    predicted = rows.map_batches(
        BatchPredictor,
        fn_constructor_kwargs=predictor_arguments(config),
        batch_size=batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=gpus or CPU_ACTORS),
        **({"num_gpus": 1} if gpus else {"num_cpus": 1}),
    )
    parts: dict[str, list[np.ndarray]] = {}
    overlays = OverlayPool()
    meter = Meter(_count(dataset, split, fold), "images predicted", say)
    for batch in predicted.iter_batches(batch_size=None, batch_format="numpy"):
        for name in KEPT_COLUMNS:
            if name in batch:
                parts.setdefault(name, []).append(np.asarray(batch[name]))
        if "dsc" in batch:
            overlays.offer(batch)
        meter.add(len(batch["image_id"]))
    meter.close()
    return {name: np.concatenate(arrays).astype(KEPT_COLUMNS[name]) for name, arrays in parts.items()}, overlays


def _count(dataset: Dataset, split: str, fold: int | None) -> int:
    """The images of the split (its filter columns only): the progress's total."""
    from jobs.data.pipeline import FILTER_COLUMNS, split_filter

    return dataset.read_table(columns=FILTER_COLUMNS, filters=split_filter(split, fold).to_pyarrow()).num_rows


def _max_images_per_case(case_ids: np.ndarray) -> int:
    return int(np.unique(case_ids, return_counts=True)[1].max())


def predictor_arguments(config: dict) -> dict:
    """What each `BatchPredictor` actor loads: the version the driver loaded, checked by its sha256."""
    return {"checkpoint_uri": config["version_uri"], "weights_sha256": config["weights_sha256"]}


def case_ids(dataset: Dataset, image_ids: np.ndarray) -> np.ndarray:
    """Each image's case id from the dataset (the image id itself where the case is unknown)."""
    table = dataset.read_table(columns=["image_id", "case_id"])
    lookup = dict(zip(table.column("image_id").to_pylist(), table.column("case_id").to_pylist()))
    return np.array([lookup.get(i) or i for i in image_ids.tolist()], dtype=str)


def what_was_evaluated(dataset: Dataset, checkpoint_uri: str, split: str, fold: int | None, config: dict) -> dict:
    return {
        "data": dataset.uri,
        "data_version": dataset.version_uri,
        "split": split,
        "fold": fold,
        "dataset_content_hash": dataset.content_hash,
        "checkpoint": checkpoint_uri,
        "checkpoint_version": config["version_uri"],
        "model": config["model"],
        "preprocessing": config["preprocessing"],
        "weights_sha256": config.get("weights_sha256"),
        "lineage": config.get("lineage", {}),
        "checkpoint_metrics": config.get("metrics", {}),
    }


def _segmentation_status(predictions: Predictions, has_segmentation: bool) -> dict:
    if not has_segmentation:
        reason = "not applicable: this classifier-only variant has no segmentation branch"
    elif not predictions.has_mask.any():
        reason = "n/a: no image of this split has a ground-truth mask"
    else:
        reason = None
    return {
        "evaluated": reason is None,
        "reason": reason,
        "model_has_segmentation": has_segmentation,
        "resolution": "model input (S x S after zero padding and nearest resize)",
    }


def _group_metrics(
    predictions: Predictions,
    selected: np.ndarray,
    threshold: float,
    has_segmentation: bool,
    n_bootstrap: int,
    seed: int,
) -> dict:
    """Point estimates (models.metrics) and bootstrap intervals for one group of images."""
    from models.metrics import classification_metrics

    labels, probs = predictions.label[selected], predictions.prob[selected]
    point = {k: _defined(v) for k, v in classification_metrics(labels, probs, threshold=threshold).items()}
    with_mask = predictions.has_mask[selected]
    per_image = {}
    segmentation_note = None
    if not has_segmentation:
        segmentation_note = "not applicable (classifier-only variant)"
    elif not with_mask.any():
        segmentation_note = "n/a (no ground-truth masks)"
    else:
        for key, values in (("dsc", predictions.dsc), ("ji", predictions.ji)):
            per_image[key] = values[selected]
            point[key] = float(np.nanmean(per_image[key]))
    intervals = (
        confidence_intervals(
            labels,
            probs,
            threshold,
            predictions.case_id[selected],
            per_image=per_image,
            n_resamples=n_bootstrap,
            seed=seed,
        )
        if n_bootstrap
        else {}
    )
    predicted = probs >= threshold
    positive = labels.astype(bool)
    return {
        "n": int(selected.sum()),
        "n_benign": int((~positive).sum()),
        "n_malignant": int(positive.sum()),
        "n_cases": len(set(predictions.case_id[selected].tolist())),
        "n_with_mask": int(with_mask.sum()) if has_segmentation else 0,
        "confusion": {
            "tp": int((positive & predicted).sum()),
            "fn": int((positive & ~predicted).sum()),
            "tn": int((~positive & ~predicted).sum()),
            "fp": int((~positive & predicted).sum()),
        },
        "segmentation_note": segmentation_note,
        "metrics": {
            key: {"value": point[key], **intervals.get(key, {"low": None, "high": None, "valid": 0})}
            if key in point
            else None
            for key in METRICS
        },
    }


def _defined(value: float) -> float | None:
    """None for an undefined metric (NaN from models.metrics): JSON has no NaN."""
    return None if value is None or np.isnan(value) else float(value)


def _write_predictions_csv(path: Path, predictions: Predictions, threshold: float) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            [
                "image_id",
                "case_id",
                "source",
                "label",
                "malignant_probability",
                "predicted_label",
                "correct",
                "has_mask",
                "dsc",
                "ji",
            ]
        )
        for i in range(len(predictions.image_id)):
            predicted = int(predictions.prob[i] >= threshold)
            seg = [predictions.dsc[i], predictions.ji[i]] if predictions.dsc is not None else [np.nan, np.nan]
            writer.writerow(
                [
                    predictions.image_id[i],
                    predictions.case_id[i],
                    predictions.source[i],
                    int(predictions.label[i]),
                    f"{predictions.prob[i]:.6f}",
                    predicted,
                    int(predicted == predictions.label[i]),
                    int(predictions.has_mask[i]),
                    *("" if np.isnan(v) else f"{v:.6f}" for v in seg),
                ]
            )
