"""The measurements of `busnet bench gpu`, one function per section, each returning its part of the JSON.

Each section runs busnet's own code path, not a copy of it. Training throughput is
`jobs.train.step.train_step` (kornia augmentation on the device, bf16 autocast and channels-last on
CUDA, the multitask loss, the recipe's fused Adam and gradient clipping) on batches already on the
device: the model's step, not the data pipeline (`busnet bench train` measures that). Serving is
`serve.predictor`, what a replica runs per request and per batch. Batch inference is `busnet
predict`'s own command. The training run is `jobs.train.driver.train` (Ray Train, one worker), and its
checkpoint answers a request through `busnet serve`'s application over HTTP.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from jobs.train.config import TrainConfig


@dataclass(frozen=True)
class Plan:
    """How big each section is: the full form (paper preset, on a GPU) or the reduced one (tiny, CPU)."""

    form: str
    preset: str
    input_size: int | None  # None: the preset's
    batch_size: int  # the throughput sections' batch, and where the largest-batch search starts
    steps: int  # timed training steps
    warmup: int  # untimed steps first (under torch.compile: the compilation)
    max_batch: int  # the largest-batch search stops here
    batch_search_s: float  # and after this long
    serve_batches: tuple[int, ...]  # the first is the latency batch (1), the others are timed for images/s
    serve_repeats: int
    images: int  # the synthetic dataset's size (without --data)
    image_px: tuple[int, int]  # its images' smallest and largest side
    train_batch: int  # the 2-epoch training's batch per worker
    predict_flags: tuple[str, ...]  # `busnet predict` flags beyond its defaults
    deadline_s: float
    # Seconds a section needs at least: it is skipped, not started, when less is left before the deadline.
    needs_s: dict[str, float] = field(default_factory=dict)


FULL = Plan(
    form="full",
    preset="paper",
    input_size=None,
    batch_size=32,
    steps=20,
    warmup=3,
    max_batch=4096,
    batch_search_s=75.0,
    serve_batches=(1, 32, 64),
    serve_repeats=20,
    images=256,
    image_px=(256, 320),
    train_batch=16,
    predict_flags=(),
    deadline_s=450.0,
    needs_s={
        "train": 20,
        "train_compiled": 60,
        "largest_batch": 20,
        "serving": 15,
        "predict": 30,
        "train_and_serve": 90,
    },
)
REDUCED = Plan(
    form="reduced",
    preset="tiny",
    input_size=64,
    batch_size=2,
    steps=2,
    warmup=1,
    max_batch=4,
    batch_search_s=120.0,  # at most 2 tries (max_batch): the budget matters only on a loaded machine
    serve_batches=(1, 2, 4),
    serve_repeats=1,
    images=40,
    image_px=(96, 128),
    train_batch=4,
    predict_flags=("--actors", "1", "--bootstrap", "0"),  # one actor process to start, no resampling
    deadline_s=300.0,
)


@dataclass
class Bench:
    """What the sections share: the plan, the device, the deadline, and what is made once on first use
    (the model being trained and its optimizer, its FLOPs, the synthetic data, a checkpoint)."""

    plan: Plan
    device: Any  # torch.device
    deadline: float  # time.monotonic() value
    scratch: Path
    data: str | None  # the dataset URI given, else made in scratch on first use
    peak_flops: float | None
    _made: dict = field(default_factory=dict)

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def run(self) -> TrainConfig:
        """The training configuration every section trains with: training's defaults at the plan's size."""
        return TrainConfig(
            data="-",
            out="-",
            preset=self.plan.preset,
            input_size=self.plan.input_size,
            pretrained="none",  # a GPU machine may have no internet and no weights cache
            batch_size=self.plan.train_batch,
            epochs=2,
            gpu=self.cuda,
        )

    def seconds_left(self) -> float:
        return self.deadline - time.monotonic()

    def trainable(self):
        """(model, optimizer) placed as `busnet train` places them: on the device, channels-last on CUDA
        (`jobs.train.loop.place_model`), the recipe's optimizer (fused Adam on CUDA)."""
        if "trainable" not in self._made:
            import torch

            from jobs.train.recipe import build_optimizer
            from models import build_model

            torch.manual_seed(0)
            run = self.run
            model = build_model(run.preset, run.variant, **run.architecture(), pretrained=run.pretrained)
            model = model.to(self.device).train()
            if self.cuda:
                model = model.to(memory_format=torch.channels_last)
            self._made["trainable"] = (model, build_optimizer(model, run))
        return self._made["trainable"]

    def release_model(self) -> None:
        """Give the trained model's device memory back before other processes (Ray workers) need it."""
        import torch

        self._made.pop("trainable", None)
        torch.compiler.reset()  # compiled code holds on to the model it was compiled for
        release_memory(self.device)

    def flops_per_image(self) -> float:
        """Forward + backward FLOPs of one training image, counted by `torch.utils.flop_counter` on a real pass."""
        if "flops" not in self._made:
            from models.flops import flops_per_image

            model, _ = self.trainable()
            self._made["flops"] = flops_per_image(model, model.input_size, train=True)
        return self._made["flops"]

    def batch(self, size: int) -> dict:
        """A training batch of `size` random images and masks, on the device (as the cache hands them over)."""
        import torch

        pixels = self.trainable()[0].input_size
        generator = torch.Generator().manual_seed(size)
        return {
            "image": torch.randn(size, 3, pixels, pixels, generator=generator).to(self.device),
            "mask": (torch.rand(size, 1, pixels, pixels, generator=generator) > 0.8).float().to(self.device),
            "has_mask": torch.ones(size, dtype=torch.bool, device=self.device),
            "label": torch.randint(0, 2, (size,), generator=generator).float().to(self.device),
        }

    def dataset(self) -> str:
        """The dataset URI: --data, else a synthetic one written by `busnet synth` and `busnet ingest`."""
        if self.data is None:
            from jobs.data.ingest import ingest
            from jobs.data.synth import generate

            low, high = self.plan.image_px
            generate(self.scratch / "raw", self.plan.images, seed=0, min_size=low, max_size=high)
            self.data = str(self.scratch / "dataset")
            ingest({"synthetic": self.scratch / "raw"}, self.data, seed=0, progress=False)
        return self.data

    def request_image(self) -> Path:
        """One synthetic B-mode PNG, the body of the serving sections' requests."""
        if "request" not in self._made:
            from jobs.data.synth import generate

            low, high = self.plan.image_px
            generate(self.scratch / "request", 1, seed=1, min_size=low, max_size=high)
            self._made["request"] = next((self.scratch / "request").rglob("*.png"))
        return self._made["request"]

    def checkpoint(self) -> str:
        """A checkpoint of a freshly built model at the plan's preset (random weights: speed does not depend on
        them), for the serving and batch inference sections."""
        if "checkpoint" not in self._made:
            import torch

            from models import build_model, save_checkpoint

            torch.manual_seed(0)
            run = self.run
            model = build_model(run.preset, run.variant, **run.architecture(), pretrained=run.pretrained)
            self._made["checkpoint"] = str(save_checkpoint(model, self.scratch / "checkpoint"))
        return self._made["checkpoint"]


def release_memory(device) -> None:
    """Free what Python no longer references, and on CUDA hand the allocator's cached blocks back."""
    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _reset_peak(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak(device) -> int | None:
    """Peak bytes the CUDA allocator handed out since the last reset (None on CPU)."""
    import torch

    return int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None


def _stepper(bench: Bench, model, size: int):
    """One training step of `size` images through `jobs.train.step.train_step`, returning its loss."""
    from jobs.data.augment import Augmenter
    from jobs.train.step import train_step

    _, optimizer = bench.trainable()
    run, augmenter, batch = bench.run, Augmenter(bench.device), bench.batch(size)
    return lambda: train_step(model, optimizer, augmenter, batch, run.loss, run.clip_grad, run.dice == "image")


def train_throughput(bench: Bench, compiled: bool = False) -> dict:
    """Training images/s at the plan's batch after `warmup` steps (with `compiled`: `torch.compile`, as
    `busnet train --compile` does, whose compilation the warm-up takes), MFU and peak device memory."""
    import torch

    from models.flops import mfu

    plan = bench.plan
    model, _ = bench.trainable()
    flops = bench.flops_per_image()
    step = _stepper(bench, torch.compile(model) if compiled else model, plan.batch_size)
    _reset_peak(bench.device)
    started = time.perf_counter()
    for _ in range(plan.warmup):
        loss = step()
    float(loss)  # on a GPU: the warm-up's work is done before the clock starts
    warmup_seconds = time.perf_counter() - started
    started, timed = time.perf_counter(), 0
    while timed < plan.steps and (timed == 0 or bench.seconds_left() > 0):
        loss = step()
        timed += 1
    float(loss)
    elapsed = time.perf_counter() - started
    images_per_s = timed * plan.batch_size / elapsed
    return {
        "precision": "bf16 autocast" if bench.cuda else "fp32",
        "channels_last": bench.cuda,
        "compiled": compiled,
        "batch_size": plan.batch_size,
        "warmup_steps": plan.warmup,
        "warmup_seconds": warmup_seconds,
        "steps": timed,
        "step_ms": 1000 * elapsed / timed,
        "images_per_s": images_per_s,
        "flops_per_image": flops,
        "mfu": mfu(images_per_s, flops, bench.peak_flops),
        "peak_memory_bytes": _peak(bench.device),
    }


def largest_batch(bench: Bench) -> dict:
    """The largest training batch whose step runs (eager, as `train_throughput`): `search_largest` with a
    step that runs out of device memory (`torch.OutOfMemoryError`) as the test, for at most
    `batch_search_s` seconds and up to `max_batch`."""
    import torch

    plan = bench.plan
    model, optimizer = bench.trainable()
    release_memory(bench.device)

    def fits(size: int) -> dict:
        _reset_peak(bench.device)
        ran = False
        try:
            float(_stepper(bench, model, size)())
            ran = True
        except torch.OutOfMemoryError:
            pass  # out of the except block first: its traceback holds the step's tensors
        peak = _peak(bench.device) if ran else None
        if not ran:
            optimizer.zero_grad(set_to_none=True)
        release_memory(bench.device)
        return {"fits": ran, "peak_memory_bytes": peak}

    ends = min(bench.deadline, time.monotonic() + plan.batch_search_s)
    found = search_largest(fits, plan.batch_size, plan.max_batch, ends)
    fitting = found["largest_batch_size"]
    peak = next((t["peak_memory_bytes"] for t in found["tries"] if t["batch_size"] == fitting), None)
    return {"compiled": False, **found, "peak_memory_bytes": peak}


def search_largest(fits: Callable[[int], dict], start: int, cap: int, ends: float) -> dict:
    """The largest size that `fits` ({"fits": bool, ...}): doubling from `start` until one does not fit, then
    bisecting to within 1/32, up to `cap`, while time.monotonic() < `ends` (one try at least). Every try is
    listed with its seconds and what `fits` said."""
    fitting, failing, tries, limited_by = 0, None, [], "time"
    size = start
    while not tries or time.monotonic() < ends:
        started = time.perf_counter()
        said = fits(size)
        tries.append({"batch_size": size, **said, "seconds": time.perf_counter() - started})
        fitting, failing = (size, failing) if said["fits"] else (fitting, size)
        if failing is None and size >= cap:
            limited_by = "max_batch"
            break
        if failing is not None and failing - fitting <= max(1, fitting // 32):
            limited_by = "out of memory"
            break
        size = min(2 * size, cap) if failing is None else (fitting + failing) // 2
    return {
        "largest_batch_size": fitting or None,
        "smallest_failing_batch_size": failing,
        "limited_by": limited_by,
        "tries": tries,
    }


def serving(bench: Bench) -> dict:
    """`serve.predictor` on the device at the replica's precision: the median time of one request (decode +
    preprocess, forward, mask restored and encoded: all a replica does but HTTP), and images/s of whole
    batches as the batcher hands them over (already decoded), with the forward pass alone beside them."""
    import numpy as np

    from models import load_checkpoint
    from serve.predictor import answer_batch, forward, load_model, prepare

    plan = bench.plan
    loaded = load_model(bench.checkpoint(), load_checkpoint, bench.device)  # precision "auto", as serve's default
    body = bench.request_image().read_bytes()

    def answered(items) -> list[dict]:
        answers = answer_batch(items)
        failed = next((a for a in answers if isinstance(a, Exception)), None)
        if failed is not None:
            raise failed
        return answers

    answered([(loaded, prepare(body, loaded))])  # warm-up
    latencies = []
    for _ in range(plan.serve_repeats):
        started = time.perf_counter()
        answered([(loaded, prepare(body, loaded))])
        latencies.append(time.perf_counter() - started)
    prepared = prepare(body, loaded)
    result: dict[str, Any] = {
        "precision": str(loaded.dtype).removeprefix("torch."),
        "p50_ms_batch_1": 1000 * statistics.median(latencies),
        "requests_timed": plan.serve_repeats,
        "images_per_s": {},
        "forward_images_per_s": {},
    }
    for size in plan.serve_batches[1:]:
        items, stacked = [(loaded, prepared)] * size, np.stack([prepared.tensor] * size)
        timed = {"images_per_s": partial(answered, items), "forward_images_per_s": partial(forward, loaded, stacked)}
        for key, work in timed.items():
            result[key][str(size)] = size / _seconds_each(work, plan.serve_repeats)
    return result


def _seconds_each(work: Callable[[], object], repeats: int) -> float:
    """Mean seconds of `work` over `repeats` calls after one untimed call (a new batch shape warms up)."""
    work()
    started = time.perf_counter()
    for _ in range(repeats):
        work()
    return (time.perf_counter() - started) / repeats


def batch_predict(bench: Bench) -> dict:
    """`busnet predict --checkpoint --data --out` (the command itself: its defaults, the plan's
    `predict_flags`, --gpu on CUDA) over the dataset: images/s including the actors' checkpoint loads;
    Ray's own start is not timed."""
    from jobs.commands import predict as command
    from jobs.runtime import init_ray

    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    argv = ["--checkpoint", bench.checkpoint(), "--data", bench.dataset(), "--out", str(bench.scratch / "predicted")]
    args = parser.parse_args([*argv, *bench.plan.predict_flags, *(["--gpu"] if bench.cuda else [])])
    init_ray()
    started = time.perf_counter()
    summary = command.run(args)
    seconds = time.perf_counter() - started
    return {
        "images": summary["images"],
        "seconds": seconds,
        "images_per_s": summary["images"] / seconds,
        "batch_size": args.batch_size,
        "actors": args.actors,
        "gpu": args.gpu,
    }


def train_and_serve(bench: Bench) -> dict:
    """`busnet train` for 2 epochs (Ray Train, one worker, a GPU on CUDA) on the dataset, then its published
    checkpoint behind `busnet serve`'s application answers one request over HTTP on 127.0.0.1."""
    from jobs import storage
    from jobs.train.driver import train

    config = dataclasses.replace(
        bench.run, data=bench.dataset(), out=str(bench.scratch / "runs"), name="gpu-check", workers=1
    )
    started = time.perf_counter()
    outcome = train(config)
    train_seconds = time.perf_counter() - started
    started = time.perf_counter()
    answer = _serve_once(outcome.best_uri, bench.request_image(), gpu=bench.cuda)
    return {
        "epochs": outcome.epochs_reported,
        "batch_size": config.batch_size,
        "train_seconds": train_seconds,
        "train_images_per_s": outcome.best_metrics.get("images_per_s"),
        "checkpoint_epoch": outcome.best_metrics.get("epoch"),
        "checkpoint_files": [Path(path).name for path in storage.list_files(storage.resolve(outcome.best_uri))],
        "serve_seconds": time.perf_counter() - started,
        "answer": {key: answer[key] for key in ("label", "malignant_probability", "threshold")},
    }


def _serve_once(checkpoint: str, image: Path, gpu: bool) -> dict:
    """Start `busnet serve`'s application on a free port with `checkpoint`, POST `image`, stop it."""
    from jobs.runtime import free_port
    from serve.app import build_app
    from serve.client import predict_file
    from serve.launch import start_app, stop_app

    url = start_app(build_app(checkpoint, gpu=gpu), port=free_port(), log_level="WARNING")
    try:
        return predict_file(url, image, timeout_s=120.0)
    finally:
        stop_app()
