"""Turn BUS datasets in their own layouts into one busnet dataset (Parquet + manifest.json), split by case.

Sources (NAME=PATH, repeatable): busi (Dataset_BUSI_with_GT/), busis (Original/ or imgs/, GT/,
BUSIS562.csv; case0001 or case1 names), datasetb (original/ or imgs/, GT/, DatasetB.xlsx or .csv),
hmss and thammasat (imgs/ + HMSS.csv / Thammasat.csv as BUSBench publishes them; crops applied once),
busbench (BUSBench's BUS_Combined/ folder, or its Benchmark/Datasets/ tree), folder (a CSV with
columns image, label[, mask, case_id]), synthetic (busnet synth output), dicom (DICOM files + a labels
table keyed by file or sop_instance_uid[, frame, mask]; only pixels, label and a hashed study leave a file).
Unusable files (corrupt image, mask of another size, no label, unknown layout, duplicate bytes or
pixels, copies or listings of one image with different labels, files sharing a name, a path or
symlink out of the source, a case mixing benign and malignant images unless --mixed-label-cases keep)
are rejected with their reason, listed in manifest.json and the summary; --strict stops at the first.
A source that does not exist is an error (nothing published). Stored images carry no text/EXIF
metadata. Splits are drawn by case, or taken from BUSBench's predefined folds with --folds-from DIR
(folderK/{train,valid,test}.csv).
The output (a path, file:///path or s3://bucket/prefix; S3 settings from the AWS_* environment)
is replaced atomically. Same input and seed -> same rows, splits and content hash. Example:

    busnet ingest --source busi=data/Dataset_BUSI_with_GT --source synthetic=data/synth --out data/ds
"""

from __future__ import annotations

import argparse
import time

from jobs.errors import BusnetError


def _source(text: str) -> tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=PATH (e.g. busi=/data/Dataset_BUSI_with_GT)")
    return name.strip().lower(), path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--source",
        action="append",
        type=_source,
        required=True,
        metavar="NAME=PATH",
        help="a source to ingest (repeat for several): busi, busis, datasetb, hmss, thammasat, busbench, folder, "
        "synthetic, dicom",
    )
    parser.add_argument(
        "--out", required=True, metavar="URI", help="dataset URI: path, file:///path or s3://bucket/prefix"
    )
    parser.add_argument("--val", type=float, default=0.1, help="share of cases for validation (default 0.1)")
    parser.add_argument("--test", type=float, default=0.2, help="share of cases held out for test (default 0.2)")
    parser.add_argument("--folds", type=int, default=5, help="cross-validation folds over train+val cases (default 5)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the splits and folds (default 0)")
    parser.add_argument(
        "--folds-from",
        default=None,
        metavar="DIR",
        help="use predefined folds (DIR/folderK/{train,valid,test}.csv, BUSBench's) instead of drawing "
        "--val/--test/--folds; fold files that put a case on two sides are refused",
    )
    parser.add_argument(
        "--mixed-label-cases",
        default="reject",
        metavar="reject|keep",
        help="cases whose images carry both labels: reject all their images, or keep them (default reject)",
    )
    parser.add_argument("--strict", action="store_true", help="fail at the first unusable file instead of rejecting it")
    parser.add_argument("--shard-mb", type=float, default=64.0, help="largest Parquet shard in MiB (default 64)")
    parser.add_argument("--workers", type=int, default=None, help="decoding threads (default: CPU count, at most 8)")


def run(args: argparse.Namespace) -> int | None:
    from jobs.data.ingest import ingest
    from jobs.data.ingest.manifest import summary

    if args.workers is not None and args.workers < 1:
        raise BusnetError(f"--workers {args.workers}: must be at least 1")
    started = time.perf_counter()
    manifest = ingest(
        args.source,
        args.out,
        val=args.val,
        test=args.test,
        folds=args.folds,
        seed=args.seed,
        strict=args.strict,
        shard_mb=args.shard_mb,
        workers=args.workers,
        mixed_label_cases=args.mixed_label_cases,
        folds_from=args.folds_from,
    )
    print(summary(manifest))
    print(f"wrote {args.out} in {time.perf_counter() - started:.1f} s")
    return 0
