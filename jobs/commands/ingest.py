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
is replaced atomically. Same input and seed -> same rows, splits and content hash.

example:
  busnet ingest --source busi=data/Dataset_BUSI_with_GT --source synthetic=data/synth --out data/ds
"""

from __future__ import annotations

import argparse
import time

from jobs.commands.flags import add_flags, from_flags
from jobs.commands.options import IngestOptions
from jobs.errors import BusnetError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_flags(parser, IngestOptions)


def run(args: argparse.Namespace) -> dict:
    from jobs.data.ingest import ingest
    from jobs.data.ingest.manifest import summary

    options = from_flags(IngestOptions, args)
    if options.decoders is not None and options.decoders < 1:
        raise BusnetError(f"--decoders {options.decoders}: must be at least 1")
    started = time.perf_counter()
    manifest = ingest(
        options.source,
        options.out,
        val=options.val,
        test=options.test,
        folds=options.folds,
        seed=options.seed,
        strict=options.strict,
        shard_mb=options.shard_mb,
        workers=options.decoders,
        mixed_label_cases=options.mixed_label_cases,
        folds_from=options.folds_from,
    )
    seconds = time.perf_counter() - started
    print(summary(manifest))
    print(f"wrote {options.out} in {seconds:.1f} s")
    return {
        "dataset": options.out,
        "content_hash": manifest.get("content_hash"),
        "counts": manifest.get("counts"),
        "rejected": len(manifest.get("rejects") or []),
        "seconds": round(seconds, 1),
    }
