"""`busnet train`: the paper's training (section 3.3) as a Ray Train V2 data-parallel run.

The driver checks everything it can before any worker starts (the data: empty splits, masks for a
segmentation variant, enough images for one batch per worker; the cluster: enough CPUs/GPUs for the
workers with room left for Ray Data), decodes the train and val splits once through the Ray Data
pipeline into the object store (`jobs.data.cache`), then runs a `TorchTrainer` over `jobs.train.loop`.
Run folder `<out>/<name>/` (Ray Train's storage_path / name): one checkpoint directory per epoch
(`epoch-NNNN/`, our checkpoint format + resumable training state), the best K by the chosen metric
kept. After fit the best is published, complete or not at all, as a new version of
`<out>/<name>/best/` (jobs.storage.publish_dir: `best/_COMPLETE` points to it).

Running again with the same `out` and `name` resumes: Ray Train V2 finds the run's checkpoint
manager snapshot there and hands the latest checkpoint to the workers, which continue with the next
epoch and the saved optimizer state. `FailureConfig(max_failures)` restarts a failed worker group the
same way, so a worker that dies costs at most the epoch in progress.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from jobs import storage, tracking
from jobs.errors import BusnetError
from jobs.train.config import ARCHITECTURE_OPTIONS, LoopConfig, TrainConfig
from jobs.train.state import RESUME_ONLY_FILES
from models.metrics import ERROR_RATES, METRICS

if TYPE_CHECKING:
    from jobs.data.cache import DecodedSplit, StreamedSplit
    from jobs.data.dataset import Dataset

# Validation metrics a run reports: every metric of models.metrics, and the loss.
# val_score: the smoothed combined score that picks the best epoch by default (jobs.train.recipe).
VAL_METRICS = (*(f"val_{name}" for name in METRICS), "val_loss", "val_score")
LOWER_IS_BETTER = (*(f"val_{name}" for name in ERROR_RATES), "val_loss")
# CPUs Ray Data must keep for decoding: when the workers reserve every CPU it stalls, backpressured.
DATA_CPU_RESERVE = 1.0
# What a checkpoint's lineage records of its run's config (the loss weights flattened beside them).
HYPERPARAMETERS = (
    "preset",
    "variant",
    "workers",
    "epochs",
    "recipe",
    "batch_size",
    "lr",
    "optimizer",
    "weight_decay",
    "schedule",
    "warmup_epochs",
    "clip_grad",
    "ema",
    "balance_classes",
    "patience",
    "dice",
    "smooth",
    "fold",
    "input_size",
    *ARCHITECTURE_OPTIONS,
    "select",
    "metric",
    "seed",
    "backbone",
    "baseline_head",
    "pretrained",
    "calibrate",
)


def mode(metric: str) -> str:
    """Which way `metric` gets better: "min" or "max"."""
    return "min" if metric in LOWER_IS_BETTER else "max"


@dataclass
class Prepared:
    """What the driver learnt before training: the dataset (opened once), the model's config and
    preprocessing, the data's shape; and, once Ray runs, the train and val splits decoded into the
    object store or set to stream (`decode_splits`)."""

    dataset: Dataset
    model_config: dict
    preprocessing: dict
    has_segmentation: bool
    splits: dict[str, dict[str, int]]
    decoded: dict[str, DecodedSplit | StreamedSplit] | None = None
    pretrained: dict[str, dict] = dataclasses.field(default_factory=dict)  # component -> weights' name, sha256
    sources: dict[str, int] = dataclasses.field(default_factory=dict)  # images per source dataset

    @property
    def content_hash(self) -> str:
        return self.dataset.content_hash


@dataclass
class TrainOutcome:
    run_uri: str
    best_uri: str
    best_metrics: dict
    epochs_reported: int


def prepare(config: TrainConfig, dataset: Dataset | None = None) -> Prepared:
    """Validate the options, the model and the data without starting any worker. The dataset is
    opened here (`config.data`) unless the caller already opened it."""
    from jobs.data.dataset import open_dataset
    from models import build_model
    from models.preprocess import Preprocessing

    _validate_options(config)
    try:  # the encoders' weights are found, hashed and loaded here, before any worker starts
        model = build_model(
            config.preset,
            config.variant,
            backbone=config.backbone,
            pretrained=config.pretrained,
            **config.architecture(),
        )
    except ValueError as exc:
        raise BusnetError(str(exc)) from exc
    dataset = dataset or open_dataset(config.data)
    splits = split_summary(dataset, config.fold)
    _check_data(config, splits, model.has_segmentation)
    return Prepared(
        dataset=dataset,
        model_config=model.config,
        preprocessing=Preprocessing(size=model.input_size).to_dict(),
        has_segmentation=model.has_segmentation,
        splits=splits,
        pretrained={name: weights.record() for name, weights in model.pretrained_weights.items()},
        sources={name: c["images"] for name, c in dataset.manifest.get("counts", {}).get("by_source", {}).items()},
    )


def _validate_options(config: TrainConfig) -> None:
    for name in ("workers", "epochs", "batch_size", "keep"):
        if getattr(config, name) < 1:
            raise BusnetError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(config, name)}")
    if config.lr <= 0 or config.cpus_per_worker <= 0:
        raise BusnetError("--lr and --cpus-per-worker must be positive")
    if isinstance(config.fold, int) and config.fold < 0:
        raise BusnetError(f"--fold must be >= 0, got {config.fold}")


def split_summary(dataset: Dataset, fold: int | None) -> dict[str, dict[str, int]]:
    """Images, malignant images and images with a mask in the train and val splits (the fold
    semantics of `jobs.data.pipeline.read_split`), from the Parquet columns without decoding any image."""
    import pyarrow.compute as pc

    from jobs.data.pipeline import FILTER_COLUMNS, check_fold, split_filter

    # the masks' bytes are only tested for presence, batch by batch: the driver's memory stays flat
    columns = {name: pc.field(name) for name in (*FILTER_COLUMNS, "label")} | {"has_mask": pc.field("mask").is_valid()}
    table = dataset.project(columns)
    check_fold(dataset.uri, table, fold)
    summary = {}
    for split in ("train", "val"):
        rows = table.filter(split_filter(split, fold).to_pyarrow())
        summary[split] = {
            "images": rows.num_rows,
            "malignant": int(pc.sum(pc.equal(rows["label"], 1)).as_py() or 0),
            "with_mask": int(pc.sum(rows["has_mask"]).as_py() or 0),
        }
    return summary


def _check_data(config: TrainConfig, splits: dict, has_segmentation: bool) -> None:
    where = f"{config.data}" + (f" (fold {config.fold} held out)" if config.fold is not None else "")
    for split, counts in splits.items():
        if counts["images"] == 0:
            hint = " (is --fold within the dataset's folds?)" if config.fold is not None else ""
            raise BusnetError(f"{where}: the {split} split is empty{hint}")
    if has_segmentation and splits["train"]["with_mask"] == 0:
        raise BusnetError(
            f"{where}: no training image has a mask, but variant {config.variant!r} learns "
            "segmentation; use --variant swin or a dataset with masks"
        )
    val = splits["val"]
    if config.metric in ("val_auc", "val_score") and val["malignant"] in (0, val["images"]):
        raise BusnetError(
            f"{where}: the val split has only one class, so {config.metric} is undefined; "
            "use --select val_loss or a dataset with both classes in val"
        )
    if splits["train"]["images"] < config.workers * config.batch_size:
        raise BusnetError(
            f"{where}: {splits['train']['images']} training images cannot fill one batch of "
            f"{config.batch_size} on each of {config.workers} workers"
        )


def check_cluster(cpus_needed: float, gpus_needed: float, what: str) -> None:
    """Refuse to start what the cluster cannot hold (it would wait forever) or that starves Ray Data."""
    import ray

    resources = ray.cluster_resources()
    cpus, gpus = resources.get("CPU", 0.0), resources.get("GPU", 0.0)
    if os.environ.get("RAY_ADDRESS") and (gpus_needed > gpus or cpus_needed + DATA_CPU_RESERVE > cpus):
        # A joined cluster may autoscale (KubeRay, the VM launcher): wait for it instead of refusing.
        print(
            f"{what} needs {gpus_needed:g} GPUs and {cpus_needed + DATA_CPU_RESERVE:g} CPUs; the cluster has "
            f"{gpus:g} and {cpus:g} now: waiting for the autoscaler",
            flush=True,
        )
        return
    if gpus_needed > gpus:
        raise BusnetError(f"{what} needs {gpus_needed:g} GPUs, the Ray cluster has {gpus:g}")
    if cpus_needed + DATA_CPU_RESERVE > cpus:
        raise BusnetError(
            f"{what} needs {cpus_needed:g} CPUs plus {DATA_CPU_RESERVE:g} for Ray Data, the Ray "
            f"cluster has {cpus:g}: lower --workers or --cpus-per-worker"
        )


def hyperparameters(config: TrainConfig) -> dict:
    """What a run's lineage and its tracking record of its config (the loss weights flattened beside them)."""
    return {k: getattr(config, k) for k in HYPERPARAMETERS} | dataclasses.asdict(config.loss)


def loop_config(config: TrainConfig, prepared: Prepared, name: str, trial_id: str | None = None) -> LoopConfig:
    """The frozen config each worker gets (see `jobs.train.loop`); its lineage is plain JSON.

    With `balance_classes` the focal loss alpha (the weight of the malignant class) becomes the
    benign share of the training split, so each class weighs as much in total."""
    train = prepared.splits["train"]
    if config.balance_classes:
        benign_share = 1.0 - train["malignant"] / train["images"]
        config = dataclasses.replace(config, loss=dataclasses.replace(config.loss, alpha=benign_share))
    return LoopConfig(
        train=config,
        overrides=prepared.model_config["overrides"],
        preprocessing=prepared.preprocessing,
        steps_per_epoch=max(1, train["images"] // config.workers // config.batch_size),
        splits=prepared.decoded or {},
        lineage={
            "dataset": {
                "uri": config.data,
                "version_uri": prepared.dataset.version_uri,
                "content_hash": prepared.content_hash,
                "sources": prepared.sources,
                "splits": prepared.splits,
            },
            "hyperparameters": hyperparameters(config),
            "pretrained": prepared.pretrained,
            "run_name": name,
            "trial_id": trial_id,
        },
    )


def decode_splits(config: TrainConfig, prepared: Prepared) -> Prepared:
    """`prepared` with its train and val splits decoded once into blocks in the object store
    (`jobs.data.cache`), which every epoch of the run and every trial of a tune read; or, when they
    would not fit there (or `--cache stream`), set to stream from Parquet each epoch."""
    import ray.data

    from jobs.data import cache
    from models.preprocess import Preprocessing

    if prepared.decoded is not None:
        return prepared
    # The epoch lines are the progress; bars (also the Parquet reader's sampling bar) would bury them.
    ray.data.DataContext.get_current().enable_progress_bars = False
    preprocessing = Preprocessing.from_dict(prepared.preprocessing)
    images = sum(prepared.splits[split]["images"] for split in ("train", "val"))
    needed = cache.decoded_bytes(images, preprocessing.size)
    stream = config.cache == "stream" or (config.cache == "auto" and not cache.fits_in_object_store(needed))
    if stream:
        decoded = {
            split: cache.StreamedSplit(
                cache.CacheKey.of(prepared.content_hash, split, config.fold, preprocessing),
                preprocessing,
                prepared.splits[split]["images"],
            )
            for split in ("train", "val")
        }
        why = "--cache stream" if config.cache == "stream" else f"{needed / 1e9:.1f} GB decoded would not fit"
        print(f"[busnet train] streaming from Parquet every epoch ({why} in Ray's object store)", flush=True)
        return dataclasses.replace(prepared, decoded=decoded)
    started = time.perf_counter()
    decoded = {
        split: cache.decode_split(prepared.dataset, split, fold=config.fold, preprocessing=preprocessing)
        for split in ("train", "val")
    }
    blocks = sum(len(split.blocks) for split in decoded.values())
    print(
        f"[busnet train] decoded {images} images once at {preprocessing.size} px in "
        f"{time.perf_counter() - started:.1f} s ({blocks} blocks in Ray's object store, "
        f"{sum(split.nbytes for split in decoded.values()) / 1e6:.0f} MB, for every epoch)",
        flush=True,
    )
    return dataclasses.replace(prepared, decoded=decoded)


def streamed_datasets(prepared: Prepared, fold: int | None) -> dict:
    """The Ray Data datasets a streaming run hands to its trainer, by split name (none when cached)."""
    from jobs.data import cache
    from jobs.data.pipeline import read_split

    return {
        name: read_split(
            prepared.dataset, name, fold=fold, preprocessing=split.preprocessing, normalize=False
        ).select_columns(list(cache.COLUMNS))
        for name, split in (prepared.decoded or {}).items()
        if isinstance(split, cache.StreamedSplit)
    }


def fit(
    config: TrainConfig,
    prepared: Prepared,
    *,
    name: str,
    storage_uri: str,
    callbacks: list | None = None,
    trial_id: str | None = None,
    loop: Callable[[LoopConfig], None] | None = None,
):
    """Decode the splits (unless `prepared` has them), build the TorchTrainer and run it; returns
    Ray Train's `Result`.

    `loop` is what each worker runs (default `jobs.train.loop.train_loop_per_worker`): tests wrap it
    to inject faults, so the production loop carries no test hooks."""
    import ray.train
    from ray.train.torch import TorchTrainer

    from jobs.train.loop import train_loop_per_worker

    prepared = decode_splits(config, prepared)
    resources = {"CPU": config.cpus_per_worker, **({"GPU": 1} if config.gpu else {})}
    fs, path = storage.filesystem(storage_uri)
    datasets = streamed_datasets(prepared, config.fold)
    trainer = TorchTrainer(
        # The typed config is bound here, not passed as train_loop_config: Ray records that one as a JSON dict.
        functools.partial(loop or train_loop_per_worker, loop_config(config, prepared, name, trial_id)),
        scaling_config=ray.train.ScalingConfig(
            num_workers=config.workers, use_gpu=config.gpu, resources_per_worker=resources
        ),
        # Streamed: each worker reads its equal share of train; val whole (rank 0 validates).
        datasets=datasets,
        dataset_config=ray.train.DataConfig(datasets_to_split=["train"]) if datasets else None,
        run_config=ray.train.RunConfig(
            name=name,
            storage_path=path,
            storage_filesystem=fs,
            checkpoint_config=ray.train.CheckpointConfig(
                num_to_keep=config.keep,
                checkpoint_score_attribute=config.metric,
                checkpoint_score_order=mode(config.metric),
            ),
            failure_config=ray.train.FailureConfig(max_failures=config.max_failures),
            logging_config=ray.train.LoggingConfig(log_level="INFO" if config.verbose else "WARNING"),
            callbacks=callbacks or [],
        ),
    )
    return trainer.fit()


def fit_or_explain(config: TrainConfig, prepared: Prepared, **kwargs):
    """`fit`, with a failed run turned into one line: the workers' own error, not Ray's wrapper."""
    import ray.train

    try:
        return fit(config, prepared, **kwargs)
    except ray.train.TrainingFailedError as exc:
        raise BusnetError(f"training failed: {failure_summary(exc)}") from exc


def failure_summary(exc: BaseException) -> str:
    """The last `SomeError: message` line of a (remote) traceback, else its first line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    errors = [line for line in lines if re.match(r"^[\w.]+(Error|Exception)\b.*:", line)]
    return (errors or lines or [type(exc).__name__])[-1 if errors else 0]


def best_of(result, metric: str, mode: str) -> tuple:
    """(checkpoint, metrics) of the best kept checkpoint of a Ray Train result."""
    kept = [(c, m) for c, m in (result.best_checkpoints or []) if m.get(metric) == m.get(metric)]  # skips NaN
    if not kept:
        raise BusnetError(f"the run reported no checkpoint with a {metric} value")
    pick = max if mode == "max" else min
    return pick(kept, key=lambda pair: pair[1][metric])


def publish_checkpoint(checkpoint, uri: str) -> str:
    """Publish a kept Ray checkpoint as a model checkpoint (our format, no training state) at `uri`,
    as a new version that every earlier one stays beside (`busnet models list`); returns its URI."""
    with tempfile.TemporaryDirectory(prefix="busnet-best-") as scratch:
        raw, clean = Path(scratch) / "raw", Path(scratch) / "clean"
        checkpoint.to_directory(str(raw))
        clean.mkdir()
        for item in raw.iterdir():
            if item.is_file() and item.name not in RESUME_ONLY_FILES and not item.name.startswith("."):
                shutil.copy2(item, clean / item.name)
        return storage.publish_dir(clean, uri, keep=None)


def train(
    config: TrainConfig, loop: Callable[[LoopConfig], None] | None = None, *, dataset: Dataset | None = None
) -> TrainOutcome:
    """Check, train, publish the best checkpoint; the whole of `busnet train` (`loop`: see `fit`;
    `dataset`: `config.data` already opened by the caller, else opened here)."""
    from jobs.runtime import init_ray, quiet_ray

    quiet_ray(config.verbose)  # before anything imports ray.data, which reads its log level then
    prepared = prepare(config, dataset)
    name = config.run_name()
    storage.check_publishable(storage.join(config.out, name, "best"))  # refused now, not after training
    init_ray()
    gpus = config.workers if config.gpu else 0
    check_cluster(config.workers * config.cpus_per_worker, gpus, f"{config.workers} training workers")
    splits = prepared.splits
    print(
        f"[busnet train] run {name}: {splits['train']['images']} training / {splits['val']['images']} "
        f"validation images, {config.workers} worker(s), {config.epochs} epochs -> "
        f"{storage.join(config.out, name)}",
        flush=True,
    )
    params = {"data": config.data, "dataset_hash": prepared.content_hash, **hyperparameters(config)}
    with tracking.run(name, params=params) as tracked:
        callbacks = tracked.epoch_callbacks()  # every epoch's metrics, as the workers report them
        result = fit_or_explain(config, prepared, name=name, storage_uri=config.out, loop=loop, callbacks=callbacks)
        checkpoint, metrics = best_of(result, config.metric, mode(config.metric))
        best_uri = storage.join(config.out, name, "best")
        publish_checkpoint(checkpoint, best_uri)
        tracked.record_checkpoint(best_uri, metrics)
    return TrainOutcome(
        run_uri=storage.join(config.out, name),
        best_uri=best_uri,
        best_metrics=metrics,
        epochs_reported=len(result.metrics_dataframe) if result.metrics_dataframe is not None else 0,
    )
