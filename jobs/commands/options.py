"""Typed options of the commands whose work lives elsewhere: every flag's default, once.

`jobs.commands.flags.add_flags` makes the flags from these fields (train, tune, cv and ablation use
`jobs.train.config`; the demo `jobs.demo.DemoConfig`). One grammar across commands: `--checkpoint`
names a checkpoint, `--data` a dataset, `--out` always a folder; `--workers` only ever means Ray Train
workers (ingest has `--decoders`, batch prediction `--actors`).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from jobs.data.dataset import SPLITS
from jobs.data.ingest.cases import MIXED_POLICIES
from jobs.data.synth.lesion import DEFAULT_DIFFICULTY
from jobs.evaluate.inference import INFERENCE_BATCH
from jobs.evaluate.intervals import BOOTSTRAP_RESAMPLES
from models.metrics import OPERATING_SPECIFICITY
from serve.ingress import AUTO, DEFAULT_INGRESS, HAPROXY, INGRESSES, PROXY
from serve.settings import DEFAULT_BATCH_WAIT_S, DEFAULT_MAX_BATCH_SIZE, PRECISIONS

PORT = 8000  # the HTTP port of `busnet serve`, the demo and the client's default URL
PREDICT_FORMATS = ("parquet", "masks")
EXPORT_FORMATS = ("onnx",)


def _source(text: str) -> tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=PATH (e.g. busi=/data/Dataset_BUSI_with_GT)")
    return name.strip().lower(), path


@dataclass(frozen=True, kw_only=True)
class SynthOptions:
    out: str = field(metadata={"help": "output folder (created; must be empty or a previous synth output)"})
    n: int = field(metadata={"help": "number of images"})
    seed: int = field(default=0, metadata={"help": "random seed"})
    min_size: int = field(default=300, metadata={"help": "smallest image side in px"})
    max_size: int = field(default=800, metadata={"help": "largest image side in px"})
    malignant_fraction: float = field(default=0.5, metadata={"help": "share of malignant images"})
    images_per_case: tuple[int, int] = field(
        default=(1, 4),
        metadata={
            "help": "views of one lesion per case, drawn uniformly in MIN..MAX",
            "argparse": {"nargs": 2, "type": int, "metavar": ("MIN", "MAX")},
        },
    )
    difficulty: float = field(
        default=DEFAULT_DIFFICULTY,
        metadata={"help": "0..1: how much the classes' BI-RADS traits overlap, 0 barely, 1 fully"},
    )
    force: bool = field(default=False, metadata={"help": "replace the contents of a non-empty --out folder"})


@dataclass(frozen=True, kw_only=True)
class IngestOptions:
    source: list = field(
        metadata={
            "help": "a source to ingest (repeat for several): busi, busis, datasetb, hmss, thammasat, busbench, "
            "folder, synthetic, dicom",
            "argparse": {"action": "append", "type": _source, "metavar": "NAME=PATH"},
        }
    )
    out: str = field(metadata={"help": "dataset folder: path, file:///path or s3://bucket/prefix"})
    val: float = field(default=0.1, metadata={"help": "share of cases for validation"})
    test: float = field(default=0.2, metadata={"help": "share of cases held out for test"})
    folds: int = field(default=5, metadata={"help": "cross-validation folds over train+val cases"})
    seed: int = field(default=0, metadata={"help": "seed of the splits and folds"})
    folds_from: str | None = field(
        default=None,
        metadata={
            "help": "use predefined folds (DIR/folderK/{train,valid,test}.csv, BUSBench's) instead of drawing "
            "--val/--test/--folds; fold files that put a case on two sides are refused",
            "argparse": {"metavar": "DIR"},
        },
    )
    mixed_label_cases: str = field(
        default=MIXED_POLICIES[0],
        metadata={
            "help": "cases whose images carry both labels: reject all their images, or keep them",
            "choices": MIXED_POLICIES,
        },
    )
    strict: bool = field(default=False, metadata={"help": "fail at the first unusable file instead of rejecting it"})
    shard_mb: float = field(default=64.0, metadata={"help": "largest Parquet shard in MiB"})
    decoders: int | None = field(
        default=None, metadata={"help": "image decoding threads", "unset": "the CPU count, at most 8"}
    )


@dataclass(frozen=True, kw_only=True)
class EvaluateOptions:
    data: str = field(metadata={"help": "dataset URI (path, file://, s3://) made by busnet ingest"})
    checkpoint: str = field(metadata={"help": "checkpoint folder URI (e.g. a run's best/)"})
    out: str = field(metadata={"help": "folder (path or storage URI) for the report files"})
    split: str = field(default="test", metadata={"help": "split to evaluate", "choices": SPLITS})
    fold: int | None = field(
        default=None,
        metadata={"help": "cross-validation fold K: --split val is then fold K's held-out part", "unset": "none"},
    )
    threshold: float | None = field(
        default=None,
        metadata={
            "help": "decision threshold on the malignant probability; the paper's 0.5 is always reported too",
            "unset": "the checkpoint's",
        },
    )
    specificity: float = field(
        default=OPERATING_SPECIFICITY,
        metadata={"help": "report the sensitivity (with its interval) and the threshold at this specificity"},
    )
    bootstrap: int = field(
        default=BOOTSTRAP_RESAMPLES, metadata={"help": "bootstrap resamples for the 95% intervals; 0 = off"}
    )
    seed: int = field(default=0, metadata={"help": "bootstrap seed"})
    batch_size: int = field(default=INFERENCE_BATCH, metadata={"help": "images per forward pass"})


@dataclass(frozen=True, kw_only=True)
class PredictOptions:
    images: tuple = field(
        default=(),
        metadata={
            "help": "PNG, JPEG or BMP files (HTTP client mode)",
            "argparse": {"positional": True, "nargs": "*", "metavar": "IMAGE", "type": str},
        },
    )
    url: str = field(default=f"http://127.0.0.1:{PORT}", metadata={"help": "the service (HTTP client mode)"})
    overlay: str | None = field(
        default=None,
        metadata={
            "help": "also write <name>.overlay.png (the image with the mask contour) into this folder",
            "argparse": {"metavar": "DIR"},
        },
    )
    timeout: float = field(default=60.0, metadata={"help": "seconds to wait per image (HTTP client mode)"})
    checkpoint: str | None = field(default=None, metadata={"help": "batch mode: checkpoint folder URI"})
    data: str | None = field(
        default=None,
        metadata={
            "help": "batch mode: busnet dataset URI, or a folder (path, file://, s3://) of PNG/JPEG/BMP/DICOM files"
        },
    )
    out: str | None = field(
        default=None, metadata={"help": "batch mode: folder (path or storage URI) for the predictions; resumed"}
    )
    format: str = field(
        default=PREDICT_FORMATS[0],
        metadata={
            "help": "batch mode: parquet (predictions/*.parquet) or masks (<image>_mask.png + predictions.csv)",
            "choices": PREDICT_FORMATS,
        },
    )
    split: str | None = field(
        default=None, metadata={"help": "batch mode: only this split of a dataset", "choices": SPLITS, "unset": "all"}
    )
    gpu: bool = field(default=False, metadata={"help": "batch mode: one GPU per model actor"})
    batch_size: int = field(default=INFERENCE_BATCH, metadata={"help": "batch mode: images per forward pass"})
    actors: int | None = field(
        default=None,
        metadata={"help": "batch mode: model actors", "unset": "2 on CPUs, one per GPU with --gpu"},
    )
    bootstrap: int = field(
        default=BOOTSTRAP_RESAMPLES, metadata={"help": "batch mode: bootstrap resamples of the metrics"}
    )


@dataclass(frozen=True, kw_only=True)
class ServeOptions:
    checkpoint: str = field(
        metadata={"help": "checkpoint folder: path, file:// or s3:// (e.g. <run>/best)", "argparse": {"metavar": "URI"}}
    )
    host: str = field(default="127.0.0.1", metadata={"help": "address to listen on"})
    port: int = field(default=PORT, metadata={"help": "HTTP port"})
    ingress: str = field(
        default=DEFAULT_INGRESS,
        metadata={
            "help": f"{HAPROXY}: HAProxy in front of replicas that take HTTP themselves (faster); {PROXY}: Ray "
            f"Serve's Python proxy; {AUTO}: {HAPROXY} where Ray has its binary (Linux), else {PROXY}",
            "choices": INGRESSES,
        },
    )
    replicas: int | None = field(
        default=None, metadata={"help": "fixed number of replicas (not with --autoscale)", "unset": "1"}
    )
    autoscale: bool = field(
        default=False, metadata={"help": "autoscale between 1 and --max-replicas replicas on requests in flight"}
    )
    max_replicas: int = field(default=4, metadata={"help": "upper bound with --autoscale"})
    gpu: bool = field(
        default=False, metadata={"help": "one GPU per replica; inference in bf16 (or fp16 where bf16 is missing)"}
    )
    cpus_per_replica: float = field(
        default=1.0, metadata={"help": "CPUs Ray reserves per replica; torch uses as many threads"}
    )
    max_batch_size: int = field(default=DEFAULT_MAX_BATCH_SIZE, metadata={"help": "largest dynamic batch"})
    batch_wait_ms: float = field(
        default=DEFAULT_BATCH_WAIT_S * 1000,
        metadata={"help": "how long a batch waits for requests the replica is still decoding (a lone one never waits)"},
    )
    precision: str = field(
        default=PRECISIONS[0], metadata={"help": "auto: bf16/fp16 on GPU, fp32 on CPU", "choices": PRECISIONS}
    )


@dataclass(frozen=True, kw_only=True)
class ExportOptions:
    checkpoint: str = field(metadata={"help": "checkpoint folder URI (e.g. a run's best/)"})
    format: str = field(default=EXPORT_FORMATS[0], metadata={"help": "file format", "choices": EXPORT_FORMATS})
    out: str = field(metadata={"help": "folder (path or storage URI) for model.<format>; an existing file is kept"})


@dataclass(frozen=True, kw_only=True)
class CheckpointOptions:
    """`busnet models list`."""

    checkpoint: str = field(
        metadata={"help": "a published checkpoint: path, file:// or s3://bucket/prefix", "argparse": {"metavar": "URI"}}
    )


@dataclass(frozen=True, kw_only=True)
class PromoteOptions(CheckpointOptions):
    """`busnet models promote`."""

    version: str = field(metadata={"help": "the version to make current (a name `busnet models list` shows)"})


@dataclass(frozen=True, kw_only=True)
class RollbackOptions(CheckpointOptions):
    """`busnet models rollback`."""

    version: str | None = field(
        default=None,
        metadata={
            "help": "the earlier version to make current (a name `busnet models list` shows)",
            "unset": "the complete version before the current one",
        },
    )
