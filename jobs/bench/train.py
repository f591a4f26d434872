"""Training images/s: a bare single-process PyTorch loop vs. Ray Train (1 worker) + Ray Data.

Both run the same model, batch size, torch threads, data and per-step work: decode + preprocess
(`jobs.data.pipeline.decode_batch`), then `jobs.train.step.train_step`, the very step `busnet train`
runs (kornia augmentation, forward, multitask loss with the default weights, backward, Adam step).
The bare loop does it all in one process, one step after another; the Ray path streams the decoding
through Ray Data tasks into a Ray Train worker. Steady-state images/s is timed after `--warmup`
steps; the Ray path's wall time (start of the worker group and of the pipeline included) is shown
apart. The ratio ray/bare is the platform's overhead (below 1) or its gain from decoding in parallel.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from jobs.commands.flags import add_flags
from jobs.train.config import TrainConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data", default=None, help="dataset URI (default: a 40-image synthetic dataset made in a temp folder)"
    )
    add_flags(parser, TrainConfig, only=("preset", "variant", "input_size"))  # training's own defaults
    parser.add_argument("--steps", type=int, default=30, help="timed training steps per path (default 30)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (default 3)")
    add_flags(parser, TrainConfig, only=("batch_size",))
    parser.add_argument(
        "--threads", type=int, default=os.cpu_count() or 1, help="torch threads in both paths (default: all cores)"
    )


def _model_and_optimizer(config: dict):
    import torch

    from models import build_model

    torch.manual_seed(0)
    torch.set_num_threads(config["threads"])
    model = build_model(config["preset"], config["variant"], **config["overrides"])
    model.train()
    return model, torch.optim.Adam(model.parameters(), lr=1e-4)


def _timed(steps, total: int, warmup: int, batch_size: int) -> dict:
    """Consume `steps` (an iterator that trains one batch per item) and time the steady part."""
    started = None
    done = 0
    for done, _ in enumerate(steps, start=1):
        if done == warmup:
            started = time.perf_counter()
        if done == warmup + total:
            break
    if done < warmup + total:
        raise RuntimeError(f"only {done} steps ran, {warmup + total} needed")
    elapsed = time.perf_counter() - started
    return {"images_per_s": total * batch_size / elapsed, "seconds": elapsed}


def bare_loop(data_uri: str, config: dict) -> dict:
    """The bare single-process loop over the same Parquet rows (cycled as often as needed)."""
    import torch

    from jobs.data.augment import Augmenter
    from jobs.data.dataset import read_table
    from jobs.data.pipeline import ROW_COLUMNS, decode_batch, split_filter
    from jobs.train.step import train_step
    from models.loss_weights import LossWeights
    from models.preprocess import Preprocessing

    model, optimizer = _model_and_optimizer(config)
    table = read_table(data_uri, columns=ROW_COLUMNS + ["split", "fold"]).filter(
        split_filter("train", None).to_pyarrow()
    )
    rows = table.to_pydict()
    preprocessing = Preprocessing.from_dict(config["preprocessing"])
    augmenter, size = Augmenter("cpu"), config["batch_size"]

    def steps():
        position = 0
        while True:
            picked = [(position + i) % table.num_rows for i in range(size)]
            position += size
            raw = {k: [rows[k][i] for i in picked] for k in ROW_COLUMNS}
            decoded = decode_batch(raw, preprocessing)
            batch = {k: torch.from_numpy(decoded[k]) for k in ("image", "mask", "has_mask", "label")}
            train_step(model, optimizer, augmenter, batch, LossWeights())
            yield None

    return _timed(steps(), config["steps"], config["warmup"], size)


def _ray_worker(config: dict) -> None:
    """Ray Train loop: the same steps on batches streamed from Ray Data (epochs repeat as needed)."""
    import ray.train

    from jobs.data.augment import Augmenter
    from jobs.train.step import train_step
    from models.loss_weights import LossWeights

    model, optimizer = _model_and_optimizer(config)
    augmenter, shard = Augmenter("cpu"), ray.train.get_dataset_shard("train")

    def steps():
        while True:
            for batch in shard.iter_torch_batches(batch_size=config["batch_size"], drop_last=True):
                train_step(model, optimizer, augmenter, batch, LossWeights())
                yield None

    measured = _timed(steps(), config["steps"], config["warmup"], config["batch_size"])
    with tempfile.TemporaryDirectory() as directory:  # Ray Train V2 keeps only metrics that come with a checkpoint
        Path(directory, "throughput.json").write_text(json.dumps(measured))
        ray.train.report(measured, checkpoint=ray.train.Checkpoint.from_directory(directory))


def ray_path(data_uri: str, config: dict, storage_dir: str) -> dict:
    import ray.train
    from ray.train.torch import TorchTrainer

    from jobs.data.pipeline import read_split
    from jobs.train.loop import TRAIN_COLUMNS
    from models.preprocess import Preprocessing

    dataset = read_split(
        data_uri, "train", preprocessing=Preprocessing.from_dict(config["preprocessing"]), shuffle=False
    ).select_columns(TRAIN_COLUMNS)
    dataset.context.enable_progress_bars = False
    trainer = TorchTrainer(
        _ray_worker,
        train_loop_config=config,
        datasets={"train": dataset},
        scaling_config=ray.train.ScalingConfig(num_workers=1, resources_per_worker={"CPU": 1}),
        run_config=ray.train.RunConfig(name="bench-train", storage_path=storage_dir),
    )
    started = time.perf_counter()
    result = trainer.fit()
    return {**result.metrics, "wall_seconds": time.perf_counter() - started}


def _synthetic_dataset(folder: str) -> str:
    from jobs.data.ingest import ingest
    from jobs.data.synth import generate

    generate(os.path.join(folder, "raw"), n=40, seed=0, min_size=96, max_size=160)
    uri = os.path.join(folder, "dataset")
    ingest({"synthetic": os.path.join(folder, "raw")}, uri, seed=0, progress=False)
    return uri


def run(args: argparse.Namespace) -> int | None:
    from jobs.errors import BusnetError
    from jobs.runtime import init_ray
    from models import build_model
    from models.preprocess import Preprocessing

    args.batch_size = TrainConfig(data="-", out="-", batch_size=args.batch_size).batch_size  # unset: the recipe's
    if args.steps < 1 or args.warmup < 1 or args.batch_size < 1 or args.threads < 1:
        raise BusnetError("--steps, --warmup, --batch-size and --threads must be at least 1")
    overrides = {"input_size": args.input_size} if args.input_size else {}
    try:
        model = build_model(args.preset, args.variant, **overrides)
    except ValueError as exc:
        raise BusnetError(str(exc)) from exc
    config = {
        "preset": args.preset,
        "variant": args.variant,
        "overrides": model.config["overrides"],
        "preprocessing": Preprocessing(size=model.input_size).to_dict(),
        "steps": args.steps,
        "warmup": args.warmup,
        "batch_size": args.batch_size,
        "threads": args.threads,
    }
    del model
    input_size = config["preprocessing"]["size"]
    with tempfile.TemporaryDirectory(prefix="busnet-bench-train-") as scratch:
        data = args.data or _synthetic_dataset(scratch)
        bare = bare_loop(data, config)
        if not args.json:  # the first row now: the Ray path takes a while to start
            print(
                f"training throughput: {args.preset}/{args.variant} at {input_size} px, batch {args.batch_size}, "
                f"{args.steps} timed steps, {args.threads} torch thread(s)"
            )
            print(f"{'path':<34}{'images/s':>10}")
            print(f"{'bare PyTorch loop (1 process)':<34}{bare['images_per_s']:>10.2f}", flush=True)
        init_ray()
        ray_result = ray_path(data, config, os.path.join(scratch, "runs"))
    report = {
        "preset": args.preset,
        "variant": args.variant,
        "input_size": input_size,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "threads": args.threads,
        "bare_images_per_s": bare["images_per_s"],
        "ray_images_per_s": ray_result["images_per_s"],
        "ratio_ray_to_bare": ray_result["images_per_s"] / bare["images_per_s"],
        "ray_wall_seconds": ray_result["wall_seconds"],
    }
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"{'Ray Train (1 worker) + Ray Data':<34}{report['ray_images_per_s']:>10.2f}")
    print(f"{'ratio ray / bare':<34}{report['ratio_ray_to_bare']:>10.2f}")
    print(f"Ray path wall time incl. worker and pipeline start: {report['ray_wall_seconds']:.1f} s")
    return 0
