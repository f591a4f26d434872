"""Batch inference over a whole archive: `busnet predict --checkpoint URI --data URI --out URI`.

The images (every row of a busnet dataset, or of one split; or every PNG/JPEG/BMP/DICOM file under a
folder) stream through Ray Data: decode + preprocess in CPU tasks (`jobs.data.pipeline.decoded`, the
training code), then `map_batches` into a pool of actors that each load the checkpoint once
(`ArchivePredictor`, built on evaluate's `BatchPredictor` and so on `models.inference.predict`).
The driver writes the rows as they come, as Parquet files of `ROWS_PER_PART` rows:

    OUT/predict.json                  what is predicted: checkpoint, its weights' sha256, data, split
    OUT/predictions/part-*.parquet    one row per image (columns: SCHEMA)
    OUT/metrics.json                  for a labelled dataset: evaluate's metrics.json, same format
    OUT/_COMPLETE                     written last, when every image has its row

Resume: a file is written whole under a temporary name and then renamed (locally; an S3 PUT is
atomic by itself), so a killed run leaves only whole files. A rerun with the same checkpoint and data
skips the image ids already written, so the output ends with exactly one row per image. "The same
data" is a dataset's content hash (its manifest), not its URI: a dataset re-ingested at the same URI
(labels changed, say) is another job. An OUT that holds anything else (another checkpoint's
predictions, files busnet did not write) is refused: nothing there is deleted or overwritten.

An image of a folder that cannot be decoded (corrupt, not an image, over the size limits) gets a row
with its `error` and no prediction, and the others go on; a rerun skips it like any written row.

The mask is a PNG (0/255, the image's own size, as the HTTP API's `mask_png`): lossless, about 1 KB
for one lesion, and readable by any image tool, where RLE needs our own decoder.
"""

from __future__ import annotations

import io
import json
import os
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from jobs import storage
from jobs.errors import BusnetError
from jobs.evaluate.inference import INFERENCE_BATCH, BatchPredictor
from jobs.evaluate.intervals import BOOTSTRAP_RESAMPLES
from jobs.progress import Meter

if TYPE_CHECKING:
    from jobs.data.dataset import Dataset

FORMAT_VERSION = 2  # of predict.json and the Parquet columns
JOB_FILE = "predict.json"
PARTS_DIR = "predictions"
METRICS_FILE = "metrics.json"
ROWS_PER_PART = 256  # ~0.3 MB of Parquet with masks: few files, little lost to a kill
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".dcm", ".dicom")  # DICOM: models.dicom, its first frame
FOLDER_SOURCE = "images"  # the `source` of images read from a folder
SCHEMA = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("malignant_probability", pa.float64()),  # null (as label, height, width): see error
        pa.field("label", pa.string()),  # "malignant" when probability >= the threshold
        pa.field("true_label", pa.int8()),  # the dataset's 0/1; null for a folder of images
        pa.field("mask_png", pa.binary()),  # null for a classifier-only model
        pa.field("lesion_area_px", pa.int64()),
        pa.field("lesion_bbox", pa.list_(pa.int32())),  # [x0, y0, x1, y1], exclusive ends; null: no lesion
        pa.field("dsc", pa.float64()),  # against the true mask, at the model's input size; null: no true mask
        pa.field("ji", pa.float64()),
        pa.field("height", pa.int32()),
        pa.field("width", pa.int32()),
        pa.field("error", pa.string()),  # why this image has no prediction; null when it has one
    ]
)


class ArchivePredictor(BatchPredictor):
    """Ray Data callable class: decoded batches -> Arrow rows of SCHEMA (one model per actor)."""

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        from models.inference import predict
        from models.preprocess import lesion_of, mask_png, restore_mask

        prediction = predict(self.model, batch["image"], self.device, temperature=self.temperature)
        scores = self.scores(batch, prediction)
        threshold = float(self.config["threshold"])
        labels = np.asarray(batch["label"])
        masks, areas, boxes = [None] * len(labels), [None] * len(labels), [None] * len(labels)
        if prediction.mask_probs is not None:
            for i, (height, width) in enumerate(zip(batch["height"], batch["width"])):
                mask = restore_mask(prediction.mask_probs[i], int(height), int(width))
                lesion = lesion_of(mask)
                masks[i], areas[i], boxes[i] = mask_png(mask), lesion["area_px"], lesion["bbox"]
        has_truth = np.asarray(batch["has_mask"], bool)
        return pa.Table.from_pydict(
            {
                "image_id": [str(i) for i in batch["image_id"]],
                "source": [str(s) for s in batch["source"]],
                "malignant_probability": scores["prob"],
                "label": np.where(scores["prob"] >= threshold, "malignant", "benign"),
                "true_label": [None if label < 0 else int(label) for label in labels],
                "mask_png": masks,
                "lesion_area_px": areas,
                "lesion_bbox": boxes,
                "dsc": _where_true(scores.get("dsc"), has_truth),
                "ji": _where_true(scores.get("ji"), has_truth),
                "height": batch["height"],
                "width": batch["width"],
                "error": [None] * len(labels),
            },
            schema=SCHEMA,
        )


def _where_true(values: np.ndarray | None, has_truth: np.ndarray) -> list[float | None]:
    """A score per image, None where there is no true mask (or no mask head: `values` None)."""
    if values is None:
        return [None] * len(has_truth)
    return [float(v) if has else None for v, has in zip(values, has_truth)]


def predict_archive(
    checkpoint_uri: str,
    data_uri: str,
    out_uri: str,
    *,
    split: str | None = None,
    gpu: bool = False,
    workers: int | None = None,
    batch_size: int = INFERENCE_BATCH,
    n_bootstrap: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
    rows_per_part: int = ROWS_PER_PART,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Predict every image of `data_uri` (a busnet dataset, or a folder of images) into `out_uri`;
    resume an interrupted run of the same job. Returns {"images", "predicted", "skipped", "metrics"}."""
    import ray

    from jobs.data.pipeline import decoded
    from jobs.evaluate.run import CPU_ACTORS, absolute_uri, load_config, predictor_arguments
    from jobs.runtime import init_ray
    from models.preprocess import Preprocessing

    say = progress or (lambda message: None)
    for flag, value in (("--batch-size", batch_size), ("--workers", workers), ("rows per part", rows_per_part)):
        if value is not None and value < 1:
            raise BusnetError(f"{flag} must be >= 1, got {value}")
    checkpoint_uri, data_uri, out_uri = (absolute_uri(u) for u in (checkpoint_uri, data_uri, out_uri))
    config, has_segmentation = load_config(checkpoint_uri)
    source = _Source.open(data_uri, split)
    job = {
        "format_version": FORMAT_VERSION,
        "checkpoint": checkpoint_uri,
        "weights_sha256": config.get("weights_sha256"),
        "data": data_uri,
        "data_content": source.content_hash,
        "split": split,
        "threshold": float(config["threshold"]),
    }
    done = _open_output(out_uri, job)
    todo = [image_id for image_id in source.image_ids if image_id not in done]
    say(f"{len(source.image_ids)} images in {data_uri}: {len(done)} already in {out_uri}, {len(todo)} to predict")

    if todo:
        init_ray()
        gpus = int(ray.cluster_resources().get("GPU", 0))
        if gpu and not gpus:
            raise BusnetError("--gpu: the Ray cluster has no GPU")
        actors = workers or (gpus if gpu else CPU_ACTORS)
        rows = source.rows(skip=done, errors_uri=storage.join(out_uri, PARTS_DIR))
        predicted = decoded(rows, Preprocessing.from_dict(config["preprocessing"])).map_batches(
            ArchivePredictor,
            fn_constructor_kwargs=predictor_arguments(config),
            batch_size=batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=actors),
            **({"num_gpus": 1} if gpu else {"num_cpus": 1}),
        )
        _stream(predicted, out_uri, len(todo), rows_per_part, say)

    table = _read_parts(out_uri, ["image_id", "source", "malignant_probability", "true_label", "dsc", "ji"])
    ids = table.column("image_id").to_pylist()
    if len(ids) != len(set(ids)) or set(ids) != set(source.image_ids):
        raise BusnetError(f"{out_uri}: {len(ids)} rows for {len(source.image_ids)} images (the data changed?)")
    metrics = None
    if source.labelled:
        metrics = _metrics(table, job, source.dataset, config, has_segmentation, n_bootstrap, seed)
        storage.write_bytes(storage.join(out_uri, METRICS_FILE), (json.dumps(metrics, indent=2) + "\n").encode())
    storage.write_bytes(storage.join(out_uri, storage.COMPLETE_MARKER), b"")
    errors = table.column("malignant_probability").null_count
    return {"images": len(ids), "predicted": len(todo), "skipped": len(done), "errors": errors, "metrics": metrics}


class _Source:
    """The images to predict: a busnet dataset (labelled) or a folder of image files (not)."""

    def __init__(self, uri: str, split: str | None, image_ids: list[str], dataset: Dataset | None):
        self.uri, self.split, self.image_ids, self.dataset = uri, split, image_ids, dataset
        self.labelled = dataset is not None
        self.content_hash = dataset.content_hash if dataset is not None else None

    @classmethod
    def open(cls, uri: str, split: str | None) -> _Source:
        from jobs.data.dataset import MANIFEST, open_dataset
        from jobs.data.pipeline import split_filter

        marks = (storage.COMPLETE_MARKER, MANIFEST)
        if any(storage.exists(storage.join(uri, name)) for name in marks) or storage.versions(uri):
            dataset = open_dataset(uri)  # once: the rows predicted are those of the hash recorded
            filters = None if split is None else split_filter(split, None).to_pyarrow()
            ids = dataset.read_table(columns=["image_id"], filters=filters).column("image_id").to_pylist()
            if not ids:
                raise BusnetError(f"{uri}: split {split!r} is empty")
            return cls(uri, split, ids, dataset)
        if split is not None:
            raise BusnetError(f"{uri}: --split needs a busnet dataset (this has no {MANIFEST})")
        if not storage.exists(uri):
            raise BusnetError(f"{uri}: not found")
        root = storage.filesystem(uri)[1]
        ids = [p[len(root) + 1 :] for p in storage.list_files(uri) if p.lower().endswith(IMAGE_SUFFIXES)]
        if not ids:
            raise BusnetError(f"{uri}: neither a busnet dataset nor a folder with {'/'.join(IMAGE_SUFFIXES)} files")
        return cls(uri, None, ids, None)

    def rows(self, skip: set[str], errors_uri: str):
        """The still-encoded rows (jobs.data.pipeline.ROW_COLUMNS) but those of the ids in `skip`; a
        folder's undecodable images become error rows under `errors_uri` instead."""
        import ray
        from ray.data.expressions import col

        from jobs.data.pipeline import DECODE_BATCH_ROWS, ROW_COLUMNS, read_parquet_files, read_rows

        if self.dataset is None:
            ids = [i for i in self.image_ids if i not in skip]
            return ray.data.from_items([{"image_id": i} for i in ids]).map_batches(
                _read_files,
                fn_kwargs={"root": self.uri, "errors_uri": errors_uri},
                batch_size=DECODE_BATCH_ROWS,
                batch_format="numpy",
            )
        if self.split is None:
            rows = read_parquet_files(*self.dataset.shards(), ROW_COLUMNS)
        else:
            rows = read_rows(self.dataset, self.split)
        return rows.filter(expr=col("image_id").not_in(sorted(skip))) if skip else rows


def _read_files(batch: dict[str, np.ndarray], root: str, errors_uri: str) -> pa.Table:
    """Image files -> rows like a dataset's (no label: -1, no mask). Arrow, typed as the dataset's
    Parquet columns, so that decoding sees the bytes as it sees those. Each file is decoded once here
    to find the unusable ones (the pipeline decodes again: a ms per image): they become error rows."""
    from models.preprocess import ImageError, decode_image

    ids, images, heights, widths, errors = [], [], [], [], []
    for image_id in (str(i) for i in batch["image_id"]):
        try:
            data = storage.read_bytes(storage.join(root, image_id))
            height, width = decode_image(data).shape[:2]
        except (ImageError, BusnetError) as exc:
            errors.append({"image_id": image_id, "source": FOLDER_SOURCE, "error": str(exc)})
            continue
        ids.append(image_id)
        images.append(data)
        heights.append(height)
        widths.append(width)
    if errors:
        _write_part(
            storage.join(errors_uri, f"errors-{uuid.uuid4().hex}.parquet"), pa.Table.from_pylist(errors, SCHEMA)
        )
    count = len(images)
    return pa.table(
        {
            "image_id": pa.array(ids, pa.string()),
            "source": pa.array([FOLDER_SOURCE] * count, pa.string()),
            "label": pa.array([-1] * count, pa.int8()),
            "image": pa.array(images, pa.binary()),
            "mask": pa.nulls(count, pa.binary()),
            "height": pa.array(heights, pa.int32()),
            "width": pa.array(widths, pa.int32()),
        }
    )


def _open_output(out_uri: str, job: dict) -> set[str]:
    """The image ids already written by an earlier run of this same job; BusnetError when `out_uri`
    holds anything else (nothing there is touched)."""
    if storage.is_file(out_uri):
        raise BusnetError(f"--out {out_uri}: is a file; give a folder")
    job_uri = storage.join(out_uri, JOB_FILE)
    if not storage.exists(job_uri):
        if storage.list_files(out_uri):
            raise BusnetError(
                f"--out {out_uri}: not empty and not a busnet predict output (no {JOB_FILE}); refusing to write there"
            )
        storage.write_bytes(job_uri, (json.dumps(job, indent=2) + "\n").encode())
        return set()
    try:
        earlier = json.loads(storage.read_bytes(job_uri))
    except json.JSONDecodeError as exc:
        raise BusnetError(f"{job_uri}: not valid JSON ({exc})") from exc
    keys = ("format_version", "weights_sha256", "data", "data_content", "split")
    differs = [key for key in keys if earlier.get(key) != job[key]]
    if differs:
        raise BusnetError(
            f"--out {out_uri}: holds predictions of another job ({', '.join(differs)} differ: see {JOB_FILE}); "
            "choose another --out"
        )
    return set(_read_parts(out_uri, ["image_id"]).column("image_id").to_pylist())


def _read_parts(out_uri: str, columns: list[str]) -> pa.Table:
    fs, _ = storage.filesystem(out_uri)
    parts = storage.list_files(storage.join(out_uri, PARTS_DIR), suffix=".parquet")
    if not parts:
        return SCHEMA.empty_table().select(columns)
    try:
        return pq.read_table(parts, filesystem=fs, columns=columns, schema=SCHEMA)
    except (OSError, pa.ArrowInvalid) as exc:
        raise BusnetError(f"{out_uri}/{PARTS_DIR}: unreadable predictions ({str(exc).splitlines()[0]})") from exc


def _stream(predicted, out_uri: str, total: int, rows_per_part: int, say: Callable[[str], None]) -> None:
    """Write the predicted rows as they come, `rows_per_part` a file, and say how far it got."""
    run = uuid.uuid4().hex[:8]  # a rerun never reuses an earlier run's file names
    pending = SCHEMA.empty_table()
    parts, meter = 0, Meter(total, "images predicted", say)

    def write(part: pa.Table) -> None:
        nonlocal parts
        _write_part(storage.join(out_uri, PARTS_DIR, f"part-{run}-{parts:05d}.parquet"), part)
        parts += 1

    for batch in predicted.iter_batches(batch_size=None, batch_format="pyarrow"):
        meter.add(batch.num_rows)
        pending = pa.concat_tables([pending, batch.cast(SCHEMA)])
        while pending.num_rows >= rows_per_part:
            write(pending.slice(0, rows_per_part))
            pending = pending.slice(rows_per_part)
    if pending.num_rows:
        write(pending)
    meter.close()


def _write_part(uri: str, table: pa.Table) -> None:
    """One whole Parquet file, never visible half-written (module doc)."""
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    if storage.is_remote(uri):
        storage.write_bytes(uri, buffer.getvalue())
        return
    path = storage.local_path(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.parent / f".{path.name}.tmp"
    staging.write_bytes(buffer.getvalue())
    os.replace(staging, path)


def _metrics(
    table: pa.Table, job: dict, dataset: Dataset, config: dict, has_segmentation: bool, n_bootstrap: int, seed: int
) -> dict:
    """evaluate's metrics.json over every row of the output (earlier runs' rows too)."""
    from jobs.evaluate.results import Predictions
    from jobs.evaluate.run import build_metrics, case_ids, what_was_evaluated

    image_id = np.asarray(table.column("image_id").to_pylist(), dtype=str)
    dsc = table.column("dsc").to_numpy(zero_copy_only=False).astype(np.float64)
    predictions = Predictions(
        image_id=image_id,
        case_id=case_ids(dataset, image_id),
        source=np.asarray(table.column("source").to_pylist(), dtype=str),
        label=table.column("true_label").to_numpy(zero_copy_only=False).astype(np.int8),
        prob=table.column("malignant_probability").to_numpy(zero_copy_only=False),
        has_mask=~np.isnan(dsc),
        dsc=dsc if has_segmentation else None,
        ji=table.column("ji").to_numpy(zero_copy_only=False).astype(np.float64) if has_segmentation else None,
    )
    evaluated = what_was_evaluated(dataset, job["checkpoint"], job["split"] or "all", None, config)
    metrics = build_metrics(
        predictions,
        evaluated,
        threshold=job["threshold"],
        threshold_source="checkpoint",
        has_segmentation=has_segmentation,
        n_bootstrap=n_bootstrap,
        seed=seed,
        temperature=config.get("temperature"),
    )
    metrics["predictions_file"] = f"{PARTS_DIR}/*.parquet"
    return metrics
