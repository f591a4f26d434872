"""Data loading speed: images/s through the Ray Data pipeline vs. a plain single-process loop.

Both read the dataset's Parquet shards (the first N images with --limit) and run the same
decode + preprocess (`jobs.data.pipeline.decode_batch`, 256 px by default); the Ray Data side streams
it through CPU tasks (as many at once as Ray has CPUs: every core decodes) and iterates the batches
to the end. Ray Data runs twice: where this command starts Ray, the first pass also starts the
worker processes its tasks run in, each importing torch (seconds apiece: on 2 cores most of that
pass); a long-lived cluster pays that once, so the comparison with the plain loop is the second
(warm) pass, and the first is reported beside it. Each pass's time splits into a fixed start cost
(until its first batch: for Ray Data planning the execution, starting the read and the first
decoding tasks) and a steady-state rate (images/s after the first batch), so a small dataset's numbers do not hide
the rate a large one gets.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator

WARMUP_ROWS = 16
ITER_BATCH_ROWS = 32


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, metavar="URI", help="dataset directory (path, file://, s3://)")
    parser.add_argument("--size", type=int, default=256, help="preprocessed image side in pixels (default 256)")
    parser.add_argument(
        "--limit", type=int, default=None, metavar="N", help="time only the first N images (default: all)"
    )


def run(args: argparse.Namespace) -> dict:
    import ray

    from jobs.data.dataset import open_dataset
    from jobs.errors import BusnetError
    from jobs.runtime import init_ray
    from models.preprocess import Preprocessing

    if args.size < 1:
        raise BusnetError(f"--size {args.size}: must be a positive number of pixels")
    if args.limit is not None and args.limit < 1:
        raise BusnetError(f"--limit {args.limit}: must be a positive number of images")
    preprocessing = Preprocessing(size=args.size)
    fs, files = open_dataset(args.data).shards()

    _progress("starting Ray")
    init_ray()
    _progress("timing the Ray Data pipeline twice: its first pass (on a new Ray its worker processes start), then warm")
    first_timing = _timed(ray_data_pass(fs, files, preprocessing, args.limit))
    ray_timing = _timed(ray_data_pass(fs, files, preprocessing, args.limit))
    _timed(plain_pass(fs, files, preprocessing, WARMUP_ROWS))  # its imports and first allocations
    _progress("timing the plain single-process loop")
    plain_timing = _timed(plain_pass(fs, files, preprocessing, args.limit))
    if ray_timing["images"] == 0:
        raise BusnetError(f"{args.data}: the dataset has no images to time")
    if ray_timing["images"] != plain_timing["images"]:
        raise BusnetError(
            f"{args.data}: Ray Data read {ray_timing['images']} images, the plain loop {plain_timing['images']}"
        )
    result = {
        "data": args.data,
        "size": args.size,
        "images": ray_timing["images"],
        "ray_cpus": int(ray.cluster_resources().get("CPU", 0)),
        **{f"ray_data_{key}": value for key, value in ray_timing.items() if key != "images"},
        **{f"ray_data_first_{key}": value for key, value in first_timing.items() if key != "images"},
        **{f"plain_{key}": value for key, value in plain_timing.items() if key != "images"},
        "speedup": plain_timing["seconds"] / ray_timing["seconds"],
        "steady_speedup": _ratio(ray_timing["steady_images_per_s"], plain_timing["steady_images_per_s"]),
    }
    _print_table(result)
    return result


def ray_data_pass(fs, files: list[str], preprocessing, limit: int | None) -> Iterator[int]:
    """Read + decode + preprocess through Ray Data; yields each batch's image count."""
    from jobs.data.pipeline import ROW_COLUMNS, decoded, read_parquet_files

    ds = read_parquet_files(fs, files, ROW_COLUMNS)
    if limit is not None:
        ds = ds.limit(limit)
    for batch in decoded(ds, preprocessing).iter_batches(batch_size=ITER_BATCH_ROWS):
        yield len(batch["label"])


def plain_pass(fs, files: list[str], preprocessing, limit: int | None) -> Iterator[int]:
    """The same rows and the same decode in this one process, straight from pyarrow; yields each batch's count."""
    import pyarrow.dataset as pads

    from jobs.data.pipeline import ROW_COLUMNS, decode_batch

    rows = 0
    for record_batch in pads.dataset(files, filesystem=fs, format="parquet").to_batches(
        columns=ROW_COLUMNS, batch_size=ITER_BATCH_ROWS
    ):
        if limit is not None:
            record_batch = record_batch.slice(0, limit - rows)
        batch = {name: record_batch.column(name).to_numpy(zero_copy_only=False) for name in ROW_COLUMNS}
        count = len(decode_batch(batch, preprocessing)["label"])
        rows += count
        yield count
        if limit is not None and rows >= limit:
            break


def _timed(batches: Iterator[int]) -> dict:
    """Images, seconds, the start cost (seconds to the first batch) and the rate after it."""
    start = time.perf_counter()
    images, first_images, first_seconds = 0, 0, 0.0
    for count in batches:
        if not images:
            first_images, first_seconds = count, time.perf_counter() - start
        images += count
    seconds = time.perf_counter() - start
    steady = (images - first_images) / (seconds - first_seconds) if images > first_images else None  # one batch
    return {
        "images": images,
        "seconds": seconds,
        "images_per_s": images / seconds,
        "start_seconds": first_seconds,
        "steady_images_per_s": steady,
    }


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    return numerator / denominator if numerator and denominator else None


def _shown(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _progress(message: str) -> None:
    print(f"bench data: {message}...", file=sys.stderr, flush=True)


def _print_table(result: dict) -> None:
    print(
        f"data: {result['data']}  images: {result['images']}  size: {result['size']} px  Ray CPUs: {result['ray_cpus']}"
    )
    print(f"{'pipeline':<28}{'seconds':>10}{'images/s':>12}{'start s':>10}{'steady images/s':>18}")
    paths = (
        ("Ray Data, 1st pass", "ray_data_first"),
        ("Ray Data, warm", "ray_data"),
        ("plain loop (1 process)", "plain"),
    )
    for name, key in paths:
        print(
            f"{name:<28}{result[key + '_seconds']:>10.3f}{result[key + '_images_per_s']:>12.2f}"
            f"{result[key + '_start_seconds']:>10.3f}{_shown(result[key + '_steady_images_per_s']):>18}"
        )
    print(
        f"ratio Ray Data (warm) / plain: {result['speedup']:.2f}x overall, "
        f"{_shown(result['steady_speedup'])}x steady state"
    )
