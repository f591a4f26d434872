"""Training images/s: a bare single-process PyTorch loop vs. busnet's Ray Train path.

Both run the same model, batch size, torch threads, data and step, `jobs.train.step.train_step`
(kornia augmentation, forward, multitask loss with the default weights, backward, Adam step). The
bare loop decodes + preprocesses each batch (`jobs.data.pipeline.decode_batch`) and steps, one after
the other, in one process. The Ray path is `busnet train`'s: the Ray Data pipeline decodes the split
once into the object store (`jobs.data.cache`, timed apart as a one-off cost), then the Ray Train
workers draw prefetched batches from there and step. Steady-state images/s is timed after `--warmup`
steps; the Ray path's wall time (decoding, worker group start) is shown apart. The ratio ray/bare is
the platform's overhead (below 1) or its gain (above 1).

`--workers N` trains data-parallel (DDP, each worker with threads/N torch threads and the batch size
per worker): it reports the synchronised step time and the all-reduce share, 1 - (step time under
DDP's `no_sync`, which skips the gradient all-reduce) / (step time). `--gpu` trains on GPUs (bf16,
channels-last, fused Adam, `--compile` optional) and prints the MFU: the model's FLOPs per training
image, counted by `models.flops`, against the device's peak.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
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
    add_flags(parser, TrainConfig, only=("batch_size", "workers", "gpu", "compile"))
    parser.add_argument(
        "--threads", type=int, default=os.cpu_count() or 1, help="torch threads in each path (default: all cores)"
    )
    parser.add_argument(
        "--peak-tflops",
        type=float,
        default=None,
        help="the device's peak TFLOP/s for the MFU (default: models.flops's table for known GPUs)",
    )


def _model_and_optimizer(config: dict, device):
    """The benchmark's model, placed as training places it (`jobs.train.loop.place_model`), its Adam."""
    import torch

    from jobs.train.loop import place_model
    from jobs.train.recipe import build_optimizer
    from models import build_model

    torch.manual_seed(0)
    torch.set_num_threads(config["threads"])
    model = build_model(config["preset"], config["variant"], **config["overrides"]).train()
    if config["in_ray"]:
        model, _ = place_model(model, device)
    elif device.type == "cuda":
        model = model.to(device, memory_format=torch.channels_last)
    optimizer = build_optimizer(model, TrainConfig(data="-", out="-", lr=1e-4))
    return (torch.compile(model) if config["compile"] else model), optimizer


def _timed(steps, waits: list[float], total: int, warmup: int, images_per_step: int) -> dict:
    """Consume `steps` (an iterator that trains one batch per item and yields its loss; `waits` gets
    the seconds each step waited for its batch) and time the steady part."""
    started = None
    done = 0
    for done, loss in enumerate(steps, start=1):
        if done == warmup:
            float(loss)  # on a GPU: the warm-up's work is finished before the clock starts
            started = time.perf_counter()
        if done == warmup + total:
            float(loss)
            break
    if done < warmup + total:
        raise RuntimeError(f"only {done} steps ran, {warmup + total} needed")
    elapsed = time.perf_counter() - started
    return {
        "images_per_s": total * images_per_step / elapsed,
        "step_ms": 1000 * elapsed / total,
        "data_wait": sum(waits[warmup : warmup + total]) / elapsed,
    }


def bare_loop(data_uri: str, config: dict) -> dict:
    """The bare single-process loop over the same Parquet rows (cycled as often as needed)."""
    import torch

    from jobs.data.augment import Augmenter
    from jobs.data.cache import COLUMNS
    from jobs.data.dataset import read_table
    from jobs.data.pipeline import ROW_COLUMNS, decode_batch, split_filter
    from jobs.train.step import train_step
    from models.loss_weights import LossWeights
    from models.preprocess import Preprocessing

    device = torch.device("cuda" if config["gpu"] else "cpu")
    model, optimizer = _model_and_optimizer({**config, "in_ray": False}, device)
    table = read_table(data_uri, columns=ROW_COLUMNS + ["split", "fold"]).filter(
        split_filter("train", None).to_pyarrow()
    )
    rows = table.to_pydict()
    preprocessing = Preprocessing.from_dict(config["preprocessing"])
    augmenter, size, waits = Augmenter(device), config["batch_size"], []

    def steps():
        position = 0
        while True:
            asked = time.perf_counter()
            picked = [(position + i) % table.num_rows for i in range(size)]
            position += size
            raw = {k: [rows[k][i] for i in picked] for k in ROW_COLUMNS}
            decoded = decode_batch(raw, preprocessing)
            batch = {k: torch.from_numpy(decoded[k]).to(device) for k in COLUMNS}
            waits.append(time.perf_counter() - asked)
            yield train_step(model, optimizer, augmenter, batch, LossWeights())

    return _timed(steps(), waits, config["steps"], config["warmup"], size)


def _ray_worker(config: dict) -> None:
    """A Ray Train worker: `busnet train`'s batches (`jobs.data.cache.training_batches`) and
    step; with several workers also the steps under DDP's `no_sync` (no all-reduce)."""
    import ray.train
    import ray.train.torch

    from jobs.data.augment import Augmenter
    from jobs.data.cache import training_batches
    from jobs.train.step import train_step
    from models.loss_weights import LossWeights

    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    model, optimizer = _model_and_optimizer({**config, "in_ray": True}, device)
    split = config["decoded"]
    per_epoch = split.rows // world // config["batch_size"]
    augmenter = Augmenter(device)
    ddp = getattr(model, "_orig_mod", model)  # under torch.compile, the DDP module it wraps

    def steps(waits: list[float], synced: bool):
        for epoch in itertools.count(1):
            drawn = training_batches(
                split,
                seed=0,
                epoch=epoch,
                rank=rank,
                world=world,
                batch_size=config["batch_size"],
                steps=per_epoch,
                device=device,
            )
            asked = time.perf_counter()
            for batch in drawn:
                waits.append(time.perf_counter() - asked)
                with contextlib.nullcontext() if synced else ddp.no_sync():
                    loss = train_step(model, optimizer, augmenter, batch, LossWeights())
                yield loss
                asked = time.perf_counter()

    per_step = config["batch_size"] * world
    waits: list[float] = []
    measured = _timed(steps(waits, True), waits, config["steps"], config["warmup"], per_step)
    if world > 1:
        waits = []
        unsynced = _timed(steps(waits, False), waits, config["steps"], config["warmup"], per_step)
        measured["no_sync_step_ms"] = unsynced["step_ms"]
        measured["allreduce_share"] = max(0.0, 1.0 - unsynced["step_ms"] / measured["step_ms"])
    if rank != 0:
        ray.train.report(measured)
        return
    with tempfile.TemporaryDirectory() as directory:  # Ray Train V2 keeps only metrics that come with a checkpoint
        Path(directory, "throughput.json").write_text(json.dumps(measured))
        ray.train.report(measured, checkpoint=ray.train.Checkpoint.from_directory(directory))


def ray_path(data_uri: str, config: dict, storage_dir: str) -> dict:
    """The Ray path: decode once into the object store (timed), then the Ray Train workers."""
    import ray.data
    import ray.train
    from ray.train.torch import TorchTrainer

    from jobs.data.cache import decode_split
    from jobs.data.dataset import open_dataset
    from models.preprocess import Preprocessing

    started = time.perf_counter()
    ray.data.DataContext.get_current().enable_progress_bars = False
    preprocessing = Preprocessing.from_dict(config["preprocessing"])
    decoded = decode_split(open_dataset(data_uri), "train", fold=None, preprocessing=preprocessing)
    decode_seconds = time.perf_counter() - started
    workers = config["workers"]
    resources = {"CPU": 1, **({"GPU": 1} if config["gpu"] else {})}
    trainer = TorchTrainer(
        _ray_worker,
        train_loop_config={**config, "decoded": decoded, "threads": max(1, config["threads"] // workers)},
        scaling_config=ray.train.ScalingConfig(
            num_workers=workers, use_gpu=config["gpu"], resources_per_worker=resources
        ),
        run_config=ray.train.RunConfig(name="bench-train", storage_path=storage_dir),
    )
    result = trainer.fit()
    return {**result.metrics, "decode_seconds": decode_seconds, "wall_seconds": time.perf_counter() - started}


def _synthetic_dataset(folder: str) -> str:
    from jobs.data.ingest import ingest
    from jobs.data.synth import generate

    generate(os.path.join(folder, "raw"), n=40, seed=0, min_size=96, max_size=160)
    uri = os.path.join(folder, "dataset")
    ingest({"synthetic": os.path.join(folder, "raw")}, uri, seed=0, progress=False)
    return uri


def _flops(model, config: dict, peak_tflops: float | None) -> dict:
    """FLOPs per training image (counted on the CPU) and the peak of the device the paths train on."""
    import torch

    from models.flops import flops_per_image, peak_flops

    device_name = torch.cuda.get_device_name() if config["gpu"] else "cpu"
    return {
        "flops_per_image": flops_per_image(model, config["preprocessing"]["size"], train=True),
        "device": device_name,
        "peak_flops": peak_flops(device_name, peak_tflops),
    }


def run(args: argparse.Namespace) -> dict:
    from jobs.errors import BusnetError
    from jobs.runtime import init_ray
    from models import build_model
    from models.flops import mfu
    from models.preprocess import Preprocessing

    args.batch_size = TrainConfig(data="-", out="-", batch_size=args.batch_size).batch_size  # unset: the recipe's
    if min(args.steps, args.warmup, args.batch_size, args.threads, args.workers) < 1:
        raise BusnetError("--steps, --warmup, --batch-size, --threads and --workers must be at least 1")
    if args.gpu:
        import torch

        if not torch.cuda.is_available():
            raise BusnetError("--gpu: torch sees no CUDA device on this machine")
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
        "workers": args.workers,
        "gpu": args.gpu,
        "compile": args.compile,
    }
    flops = _flops(model, config, args.peak_tflops)
    del model
    with tempfile.TemporaryDirectory(prefix="busnet-bench-train-") as scratch:
        data = args.data or _synthetic_dataset(scratch)
        bare = bare_loop(data, config)
        if not args.json:  # the first row now: the Ray path takes a while to start
            _print_header(config, flops)
            _print_row("bare PyTorch loop (1 process)", bare, flops)
        init_ray()
        ray_result = ray_path(data, config, os.path.join(scratch, "runs"))
    report = {
        **{k: config[k] for k in ("preset", "variant", "batch_size", "steps", "threads", "workers", "gpu", "compile")},
        "input_size": config["preprocessing"]["size"],
        "device": flops["device"],
        "flops_per_image": flops["flops_per_image"],
        "peak_flops": flops["peak_flops"],
        "bare_images_per_s": bare["images_per_s"],
        "bare_data_wait": bare["data_wait"],
        "bare_mfu": mfu(bare["images_per_s"], flops["flops_per_image"], flops["peak_flops"]),
        "ray_images_per_s": ray_result["images_per_s"],
        "ray_data_wait": ray_result["data_wait"],
        "ray_mfu": mfu(ray_result["images_per_s"], flops["flops_per_image"], flops["peak_flops"]),
        "ratio_ray_to_bare": ray_result["images_per_s"] / bare["images_per_s"],
        "ray_step_ms": ray_result["step_ms"],
        "ray_no_sync_step_ms": ray_result.get("no_sync_step_ms"),
        "ray_allreduce_share": ray_result.get("allreduce_share"),
        "ray_decode_seconds": ray_result["decode_seconds"],
        "ray_wall_seconds": ray_result["wall_seconds"],
    }
    ray_name = f"Ray Train ({args.workers} worker{'s' * (args.workers > 1)}), cached"
    _print_row(ray_name, ray_result, flops)
    print(f"{'ratio ray / bare':<40}{report['ratio_ray_to_bare']:>10.2f}")
    if args.workers > 1:
        print(
            f"DDP step {report['ray_step_ms']:.1f} ms, without the all-reduce (no_sync) "
            f"{report['ray_no_sync_step_ms']:.1f} ms: all-reduce share {100 * report['ray_allreduce_share']:.0f}%"
        )
    print(
        f"Ray path one-off costs: decoding the split once {report['ray_decode_seconds']:.1f} s; "
        f"wall time incl. worker start {report['ray_wall_seconds']:.1f} s"
    )
    return report


def _print_header(config: dict, flops: dict) -> None:
    print(
        f"training throughput: {config['preset']}/{config['variant']} at {config['preprocessing']['size']} px, "
        f"batch {config['batch_size']} per worker, {config['steps']} timed steps, {config['threads']} torch "
        f"thread(s) in all, {flops['device']}; {flops['flops_per_image'] / 1e9:.2f} GFLOPs per training image"
    )
    print(f"{'path':<40}{'images/s':>10}{'data wait':>11}{'MFU':>8}")


def _print_row(name: str, measured: dict, flops: dict) -> None:
    from models.flops import mfu

    used = mfu(measured["images_per_s"], flops["flops_per_image"], flops["peak_flops"])
    shown = f"{100 * used:.1f}%" if used is not None else "n/a"
    print(f"{name:<40}{measured['images_per_s']:>10.2f}{100 * measured['data_wait']:>10.0f}%{shown:>8}", flush=True)
