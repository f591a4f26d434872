"""Batch inference speed: images/s of `busnet predict` vs. the bare batched pipeline in one process.

Both run the same work on the same images: decode + preprocess (`jobs.data.pipeline.decode_batch`),
the forward pass and the masks back at image size (`jobs.evaluate.batch.ArchivePredictor`). The bare
pipeline calls them in a plain loop over pyarrow batches, writing nothing; `busnet predict` runs them
as Ray Data tasks and model actors and writes Parquet into a temporary folder (removed afterwards).
Both timings include loading the checkpoint (each actor loads its own: part of a batch job's cost);
Ray's own start-up is not timed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time

from jobs.commands.flags import add_flags
from jobs.commands.options import PredictOptions


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, metavar="URI", help="dataset directory (path, file://, s3://)")
    parser.add_argument("--checkpoint", required=True, metavar="URI", help="checkpoint directory URI")
    add_flags(parser, PredictOptions, only=("split", "gpu", "batch_size", "actors"))  # as busnet predict's


def run(args: argparse.Namespace) -> dict:
    import ray

    from jobs.errors import BusnetError
    from jobs.evaluate.batch import predict_archive
    from jobs.runtime import init_ray

    if args.batch_size < 1:
        raise BusnetError(f"--batch-size {args.batch_size}: must be >= 1")
    _progress("starting Ray")
    init_ray()
    _progress("timing busnet predict (Ray Data + model actors + Parquet)")
    with tempfile.TemporaryDirectory(prefix="busnet-bench-predict-") as out:
        start = time.perf_counter()
        done = predict_archive(
            args.checkpoint,
            args.data,
            f"{out}/predictions",
            split=args.split,
            gpu=args.gpu,
            workers=args.actors,
            batch_size=args.batch_size,
            n_bootstrap=0,
        )
        batch_seconds = time.perf_counter() - start
    _progress("timing the bare batched pipeline (1 process)")
    start = time.perf_counter()
    bare_images, device = bare_pass(args.data, args.checkpoint, args.split, args.batch_size, args.gpu)
    bare_seconds = time.perf_counter() - start
    if bare_images != done["images"]:
        raise BusnetError(f"{args.data}: busnet predict saw {done['images']} images, the bare loop {bare_images}")
    result = {
        "data": args.data,
        "checkpoint": args.checkpoint,
        "split": args.split,
        "images": bare_images,
        "batch_size": args.batch_size,
        "device": device,
        "ray_cpus": int(ray.cluster_resources().get("CPU", 0)),
        "ray_gpus": int(ray.cluster_resources().get("GPU", 0)),
        "batch_seconds": batch_seconds,
        "bare_seconds": bare_seconds,
        "batch_images_per_s": bare_images / batch_seconds,
        "bare_images_per_s": bare_images / bare_seconds,
        "speedup": bare_seconds / batch_seconds,
    }
    _print_table(result)
    return result


def bare_pass(data_uri: str, checkpoint_uri: str, split: str | None, batch_size: int, gpu: bool) -> tuple[int, str]:
    """Decode, predict and restore the masks in this process, batch by batch: (images, device)."""
    import pyarrow.dataset as pads
    import torch

    from jobs.data.dataset import open_dataset
    from jobs.data.pipeline import ROW_COLUMNS, decode_batch, split_filter
    from jobs.errors import BusnetError
    from jobs.evaluate.batch import ArchivePredictor
    from models.preprocess import Preprocessing

    if gpu and not torch.cuda.is_available():
        raise BusnetError("--gpu: this machine has no GPU for the bare loop")
    predictor = ArchivePredictor(checkpoint_uri)  # on the GPU when there is one, as an actor would be
    if not gpu:
        predictor.model.to("cpu")
        predictor.device = "cpu"
    preprocessing = Preprocessing.from_dict(predictor.config["preprocessing"])
    fs, files = open_dataset(data_uri).shards()
    rows = pads.dataset(files, filesystem=fs, format="parquet").to_batches(
        columns=ROW_COLUMNS,
        filter=None if split is None else split_filter(split, None).to_pyarrow(),
        batch_size=batch_size,
    )
    images = 0
    for record_batch in rows:
        if record_batch.num_rows:
            batch = {name: record_batch.column(name).to_numpy(zero_copy_only=False) for name in ROW_COLUMNS}
            images += predictor(decode_batch(batch, preprocessing)).num_rows
    return images, predictor.device


def _progress(message: str) -> None:
    print(f"bench predict: {message}...", file=sys.stderr, flush=True)


def _print_table(result: dict) -> None:
    print(
        f"data: {result['data']}  images: {result['images']}  batch size: {result['batch_size']}  "
        f"bare loop on: {result['device']}  Ray CPUs: {result['ray_cpus']}  GPUs: {result['ray_gpus']}"
    )
    print(f"{'pipeline':<44}{'seconds':>10}{'images/s':>12}")
    for name, key in (
        ("busnet predict (Ray Data + actors + Parquet)", "batch"),
        ("bare batched loop (1 process, no writes)", "bare"),
    ):
        print(f"{name:<44}{result[key + '_seconds']:>10.3f}{result[key + '_images_per_s']:>12.2f}")
    print(f"ratio busnet predict / bare: {result['speedup']:.2f}x")
