"""Decode + preprocess a split once per run, keep it in Ray's object store, and draw every epoch's
batches from it: epochs after the first only augment and step.

Why: Ray Train re-executes a Ray Data dataset at every epoch, so each epoch decoded every PNG/JPEG
again and paid the pipeline's start-up, and each batch was a round trip through Ray Data's split
coordinator. On 2 cores that made Ray Train + Ray Data 0.51-0.61 of a bare PyTorch loop's images/s
(`busnet bench train`, 2026-11-28). Now the Ray Data pipeline (`jobs.data.pipeline.read_split`:
parallel CPU tasks over the whole cluster) decodes the split once, the driver gathers it into one
array per column, sorted by image id, and puts it into the object store once (`ray.put`); workers
on a node share it without a copy. A `DecodedSplit` names it by its `CacheKey` (the dataset's
content hash, the split or fold, the preprocessing): `busnet tune` decodes once for all its trials.

Each epoch every rank draws the same seeded permutation of the rows (seed, epoch) and takes its own
equal share, as torch's `DistributedSampler` does: the ranks take the same number of steps and the
order is new every epoch, with no Ray call per step. A background thread gathers the next batches
(`PREFETCH_BATCHES`) while the step runs; on CUDA they are pinned and copied with non_blocking=True
on a side stream, one batch ahead, so the copy overlaps the step before.

Memory: the arrays the model reads, float32: (3 + 1) * S * S * 4 bytes an image (64 KB at 64 px,
1 MB at 256 px: 3,320 images of the paper's set take 3.5 GB in the object store of the driver's
node; Ray spills what does not fit to disk).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import ray
import torch

from jobs.data.pipeline import read_split
from models.preprocess import Preprocessing

# What a training step and validation read of a row (jobs.train.step.train_step's batch).
COLUMNS = ("image", "mask", "has_mask", "label")
PREFETCH_BATCHES = 2
GATHER_ROWS = 64  # rows per batch while gathering the decoded split from Ray Data


@dataclass(frozen=True)
class CacheKey:
    """What a decoded split depends on; equal keys mean identical arrays."""

    content_hash: str
    split: str
    fold: int | None
    preprocessing: tuple[tuple[str, object], ...]

    @classmethod
    def of(cls, content_hash: str, split: str, fold: int | None, preprocessing: Preprocessing) -> CacheKey:
        items = tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in preprocessing.to_dict().items())
        return cls(content_hash, split, fold, items)


@dataclass(frozen=True)
class DecodedSplit:
    """One split, decoded and preprocessed once: its key, its row count and its arrays (`COLUMNS`
    plus image_id), in the object store (an ObjectRef) or, for a caller without Ray, in memory."""

    key: CacheKey
    rows: int
    arrays: ray.ObjectRef | dict[str, np.ndarray]

    def load(self) -> dict[str, np.ndarray]:
        """The arrays; from the object store they are read-only views shared by the node's workers."""
        return ray.get(self.arrays) if isinstance(self.arrays, ray.ObjectRef) else self.arrays


def decode_split(
    data_uri: str, split: str, *, fold: int | None, preprocessing: Preprocessing, content_hash: str
) -> DecodedSplit:
    """Decode `split` through the Ray Data pipeline once and put it into the object store."""
    dataset = read_split(data_uri, split, fold=fold, preprocessing=preprocessing)
    parts = list(dataset.select_columns([*COLUMNS, "image_id"]).iter_batches(batch_size=GATHER_ROWS))
    arrays = {name: np.concatenate([part[name] for part in parts]) for name in (*COLUMNS, "image_id")}
    order = np.argsort(arrays["image_id"], kind="stable")  # Ray Data's block order varies between runs
    arrays = {name: values[order] for name, values in arrays.items()}
    key = CacheKey.of(content_hash, split, fold, preprocessing)
    return DecodedSplit(key, len(order), ray.put(arrays))


def epoch_rows(rows: int, *, seed: int, epoch: int, rank: int, world: int) -> np.ndarray:
    """This rank's rows of one epoch: a permutation drawn from (seed, epoch), the same on every
    rank, cut into `world` equal shares (the rows left over are skipped this epoch)."""
    order = np.random.default_rng([seed, epoch]).permutation(rows)
    share = rows // world
    return order[rank * share : (rank + 1) * share]


def batches(
    arrays: dict[str, np.ndarray],
    rows: np.ndarray,
    *,
    batch_size: int,
    device: torch.device,
    drop_last: bool,
) -> Iterator[dict[str, torch.Tensor]]:
    """The batches of `arrays` at `rows` (in that order) on `device`, gathered ahead in a thread."""
    stops = range(batch_size, len(rows) + (1 if drop_last else batch_size), batch_size)
    picks = (rows[stop - batch_size : stop] for stop in stops)
    pin = device.type == "cuda"

    def gather(picked: np.ndarray) -> dict[str, torch.Tensor]:
        batch = {name: torch.from_numpy(arrays[name][picked]) for name in COLUMNS}  # fancy indexing copies
        return {name: tensor.pin_memory() for name, tensor in batch.items()} if pin else batch

    return _to_device(_prefetched(map(gather, picks), PREFETCH_BATCHES), device)


def _prefetched(items: Iterator, depth: int) -> Iterator:
    """`items` produced by a daemon thread up to `depth` ahead; its error is raised here. A consumer
    that stops early stops the thread at its next item."""
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    end = object()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        ready.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            ready.put(end)
        except BaseException as exc:  # handed to the consumer, which raises it
            ready.put(_Failure(exc))

    thread = threading.Thread(target=produce, name="busnet-prefetch", daemon=True)
    thread.start()
    try:
        while (item := ready.get()) is not end:
            if isinstance(item, _Failure):
                raise item.error
            yield item
    finally:
        stop.set()


@dataclass
class _Failure:
    error: BaseException


def _to_device(batches: Iterator[dict[str, torch.Tensor]], device: torch.device) -> Iterator[dict[str, torch.Tensor]]:
    """Batches on `device`. On CUDA each copy is issued on a side stream one batch ahead, so it
    runs while the previous step computes; the compute stream waits for it before using it."""
    if device.type != "cuda":
        yield from batches
        return
    side, compute = torch.cuda.Stream(device), torch.cuda.current_stream(device)
    pending = None
    for batch in batches:
        with torch.cuda.stream(side):
            moved = {name: tensor.to(device, non_blocking=True) for name, tensor in batch.items()}
        if pending is not None:
            yield pending
        compute.wait_stream(side)
        for tensor in moved.values():
            tensor.record_stream(compute)  # the caching allocator must not reuse it before the step ran
        pending = moved
    if pending is not None:
        yield pending
