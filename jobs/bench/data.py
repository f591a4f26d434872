"""Data loading speed: images/s through the Ray Data pipeline vs. a plain single-process loop.

Both read the dataset's Parquet shards (the first N images with --limit) and run the same
decode + preprocess (`jobs.data.pipeline.decode_batch`, 256 px by default); the Ray Data side streams
it through CPU tasks and iterates the batches to the end. Ray's start-up is not timed: a short
warm-up pass of both runs first.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

WARMUP_ROWS = 16
ITER_BATCH_ROWS = 32


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, metavar="URI", help="dataset directory (path, file://, s3://)")
    parser.add_argument("--size", type=int, default=256, help="preprocessed image side in pixels (default 256)")
    parser.add_argument(
        "--limit", type=int, default=None, metavar="N", help="time only the first N images (default: all)"
    )


def run(args: argparse.Namespace) -> int | None:
    import ray

    from jobs.data.dataset import shard_paths
    from jobs.errors import BusnetError
    from jobs.runtime import init_ray
    from models.preprocess import Preprocessing

    if args.size < 1:
        raise BusnetError(f"--size {args.size}: must be a positive number of pixels")
    if args.limit is not None and args.limit < 1:
        raise BusnetError(f"--limit {args.limit}: must be a positive number of images")
    preprocessing = Preprocessing(size=args.size)
    fs, files = shard_paths(args.data)

    _progress("starting Ray and warming up")
    init_ray()
    ray_data_pass(fs, files, preprocessing, WARMUP_ROWS)
    plain_pass(fs, files, preprocessing, WARMUP_ROWS)
    _progress("timing the Ray Data pipeline")
    ray_images, ray_seconds = _timed(ray_data_pass, fs, files, preprocessing, args.limit)
    _progress("timing the plain single-process loop")
    plain_images, plain_seconds = _timed(plain_pass, fs, files, preprocessing, args.limit)
    if ray_images == 0:
        raise BusnetError(f"{args.data}: the dataset has no images to time")
    if ray_images != plain_images:
        raise BusnetError(f"{args.data}: Ray Data read {ray_images} images, the plain loop {plain_images}")
    result = {
        "data": args.data,
        "size": args.size,
        "images": ray_images,
        "ray_cpus": int(ray.cluster_resources().get("CPU", 0)),
        "ray_data_seconds": ray_seconds,
        "plain_seconds": plain_seconds,
        "ray_data_images_per_s": ray_images / ray_seconds,
        "plain_images_per_s": plain_images / plain_seconds,
        "speedup": plain_seconds / ray_seconds,
    }
    if args.json:
        print(json.dumps(result))
    else:
        _print_table(result)
    return 0


def ray_data_pass(fs, files: list[str], preprocessing, limit: int | None) -> int:
    """Read + decode + preprocess through Ray Data, iterating every batch; returns the image count."""
    from jobs.data.pipeline import ROW_COLUMNS, decoded, read_parquet_files

    ds = read_parquet_files(fs, files, ROW_COLUMNS)
    if limit is not None:
        ds = ds.limit(limit)
    batches = decoded(ds, preprocessing).iter_batches(batch_size=ITER_BATCH_ROWS)
    return sum(len(batch["label"]) for batch in batches)


def plain_pass(fs, files: list[str], preprocessing, limit: int | None) -> int:
    """The same rows and the same decode in this one process, straight from pyarrow."""
    import pyarrow.dataset as pads

    from jobs.data.pipeline import ROW_COLUMNS, decode_batch

    rows = 0
    for record_batch in pads.dataset(files, filesystem=fs, format="parquet").to_batches(
        columns=ROW_COLUMNS, batch_size=ITER_BATCH_ROWS
    ):
        if limit is not None:
            record_batch = record_batch.slice(0, limit - rows)
        batch = {name: record_batch.column(name).to_numpy(zero_copy_only=False) for name in ROW_COLUMNS}
        rows += len(decode_batch(batch, preprocessing)["label"])
        if limit is not None and rows >= limit:
            break
    return rows


def _timed(fn, *args) -> tuple[int, float]:
    start = time.perf_counter()
    count = fn(*args)
    return count, time.perf_counter() - start


def _progress(message: str) -> None:
    print(f"bench data: {message}...", file=sys.stderr, flush=True)


def _print_table(result: dict) -> None:
    print(
        f"data: {result['data']}  images: {result['images']}  size: {result['size']} px  Ray CPUs: {result['ray_cpus']}"
    )
    print(f"{'pipeline':<28}{'seconds':>10}{'images/s':>12}")
    for name, key in (("Ray Data (streaming tasks)", "ray_data"), ("plain loop (1 process)", "plain")):
        print(f"{name:<28}{result[key + '_seconds']:>10.3f}{result[key + '_images_per_s']:>12.2f}")
    print(f"ratio Ray Data / plain: {result['speedup']:.2f}x")
