"""Decode a split once per run into blocks spread over the cluster's object stores, and draw every
epoch's batches from them: epochs after the first only fetch, augment and step.

Why: Ray Train re-executes a Ray Data dataset at every epoch, so each epoch decoded every PNG/JPEG
again and paid the pipeline's start-up. Gathering the decoded split on the driver into one object
instead (the previous design) made the driver and one node's object store hold all of it (+637 KB
per 128 px image in the driver) and every node pull all of it. Now the Ray Data pipeline
(`jobs.data.pipeline.read_split`, parallel CPU tasks spread over the cluster) decodes the split
once and `materialize()` keeps its output as blocks of about `BLOCK_BYTES` in the object store of
the node that decoded them; the driver holds only their references. At rest a block keeps the
resized pixels (uint8 for 8-bit images: a quarter of float32) and a uint8 mask; each worker
normalises its batches with `models.preprocess.normalize_pixels`, the function serving uses, so the
cached path and the streamed one (`StreamedSplit`) give bit-identical inputs.

Each epoch: a seeded permutation of the blocks (seed, epoch), the same on every rank, laid end to
end and cut into `world` contiguous shares of (nearly) equal size: every row belongs to exactly one
rank, and a rank fetches only the blocks its share touches. Within its share a rank shuffles in
windows of `SHUFFLE_WINDOW_ROWS` rows, holding only those windows' blocks. Every rank takes the same
number of full batches (the driver's `steps_per_epoch`); the few rows past them sit the epoch out,
other ones each epoch. A background thread gathers the next batches (`PREFETCH_BATCHES`); on CUDA
they are pinned and copied on a side stream one batch ahead.

A `DecodedSplit` names its blocks by a `CacheKey` (the dataset's content hash, the split or fold,
the preprocessing): `busnet tune` decodes once for all its trials. When the decoded split would not
fit the cluster's object store (`fits_in_object_store`), training streams from Parquet each epoch
instead (`StreamedSplit`).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import ray
import torch

from jobs.data.dataset import Dataset
from jobs.data.pipeline import FILTER_COLUMNS, read_rows, split_filter
from jobs.data.pipeline import decoded as decoded_rows
from models.preprocess import Preprocessing, normalize_pixels

# What a training step and validation read of a row (jobs.train.step.train_step's batch).
COLUMNS = ("image", "mask", "has_mask", "label")
PREFETCH_BATCHES = 2
BLOCK_BYTES = 4 * 1024 * 1024  # a block: 64 images at 128 px, 16 at 256 px; the unit a rank fetches
SHUFFLE_WINDOW_ROWS = 256  # rows a rank shuffles among (and, with their blocks, holds) at a time
OBJECT_STORE_SHARE = 0.5  # of the cluster's object store a cache may fill; Ray Data needs the rest


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
class Block:
    """Rows [start, stop) of one Ray Data block in the object store."""

    ref: ray.ObjectRef
    start: int
    stop: int

    @property
    def rows(self) -> int:
        return self.stop - self.start

    def load(self) -> dict[str, np.ndarray]:
        """The block's `COLUMNS` (read-only views into the node's object store when it is local)."""
        return self._columns(list(COLUMNS))

    def load_ids(self) -> np.ndarray:
        """The image ids of the block's rows (for checks and debugging: training never needs them)."""
        return self._columns("image_id")

    def _columns(self, names):
        from ray.data.block import BlockAccessor

        block = BlockAccessor.for_block(ray.get(self.ref)).slice(self.start, self.stop, copy=False)
        return BlockAccessor.for_block(block).to_numpy(names)


@dataclass(frozen=True)
class DecodedSplit:
    """One split, decoded once: its key, preprocessing and blocks (the driver holds only references)."""

    key: CacheKey
    preprocessing: Preprocessing
    blocks: tuple[Block, ...]
    nbytes: int

    @property
    def rows(self) -> int:
        return sum(block.rows for block in self.blocks)


@dataclass(frozen=True)
class StreamedSplit:
    """A split read from Parquet and decoded again each epoch (Ray Data, passed to the trainer as a
    dataset named `split`): for data that does not fit the object store."""

    key: CacheKey
    preprocessing: Preprocessing
    rows: int


def decoded_bytes(rows: int, size: int) -> int:
    """What `rows` images of side `size` take at rest in the cache (8-bit image and mask)."""
    return rows * 4 * size * size


def fits_in_object_store(nbytes: int) -> bool:
    """Whether a cache of `nbytes` leaves the cluster's object store room for Ray Data's own blocks."""
    return nbytes <= OBJECT_STORE_SHARE * ray.cluster_resources().get("object_store_memory", 0)


def decode_split(dataset: Dataset, split: str, *, fold: int | None, preprocessing: Preprocessing) -> DecodedSplit:
    """Decode `split` through the Ray Data pipeline once, keeping its blocks where they were made."""
    context = ray.data.DataContext.get_current()
    saved = context.target_max_block_size, context.execution_options.preserve_order
    # Blocks of about BLOCK_BYTES, in an order that does not depend on which task finished first.
    context.target_max_block_size, context.execution_options.preserve_order = BLOCK_BYTES, True
    try:
        rows = read_rows(dataset, split, fold=fold)
        # A Parquet shard is one read task: cut its rows into blocks first, so that decoding spreads
        # over every CPU of every node (and the blocks with it) instead of one task per shard.
        per_block = block_rows(
            dataset.read_table(columns=FILTER_COLUMNS).filter(split_filter(split, fold).to_pyarrow()).num_rows,
            preprocessing.size,
        )
        decoded = decoded_rows(rows.repartition(target_num_rows_per_block=per_block), preprocessing, normalize=False)
        materialized = decoded.select_columns([*COLUMNS, "image_id"]).materialize()
        blocks, nbytes = [], 0
        for bundle in materialized.iter_internal_ref_bundles():
            for entry, piece in zip(bundle.blocks, bundle.slices):
                start, stop = (0, entry.metadata.num_rows) if piece is None else (piece.start_offset, piece.end_offset)
                if stop > start:
                    blocks.append(Block(entry.ref, start, stop))
                    nbytes += entry.metadata.size_bytes or 0
    finally:
        context.target_max_block_size, context.execution_options.preserve_order = saved
    key = CacheKey.of(dataset.content_hash, split, fold, preprocessing)
    return DecodedSplit(key, preprocessing, tuple(blocks), nbytes)


def block_rows(rows: int, size: int) -> int:
    """Rows per block: about `BLOCK_BYTES` of decoded images, and at least two blocks per CPU of the cluster."""
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    return max(1, min(BLOCK_BYTES // decoded_bytes(1, size), -(-rows // (2 * cpus))))


def epoch_share(block_rows: list[int], *, seed: int, epoch: int, rank: int, world: int) -> list[tuple[int, int, int]]:
    """This rank's share of one epoch as (block index, first row, end row) pieces, in order.

    The blocks in a permutation drawn from (seed, epoch), the same on every rank, laid end to end
    and cut into `world` contiguous parts whose sizes differ by at most one: each row is in exactly
    one rank's share, and a share touches about rows / world / block rows + 2 blocks."""
    order = np.random.default_rng([seed, epoch]).permutation(len(block_rows))
    total = sum(block_rows)
    first, end = total * rank // world, total * (rank + 1) // world
    pieces, offset = [], 0
    for index in order:
        rows = block_rows[index]
        low, high = max(first, offset), min(end, offset + rows)
        if low < high:
            pieces.append((int(index), low - offset, high - offset))
        offset += rows
    return pieces


def shuffled_rows(pieces: list[tuple[int, int, int]], *, seed: int, epoch: int, rank: int) -> Iterator[np.ndarray]:
    """(block, row) pairs of `pieces`, shuffled within windows of `SHUFFLE_WINDOW_ROWS` rows, one window at a time."""
    rng = np.random.default_rng([seed, epoch, rank, 1])
    pairs = [np.stack([np.full(stop - start, block), np.arange(start, stop)], axis=1) for block, start, stop in pieces]
    every = np.concatenate(pairs) if pairs else np.zeros((0, 2), np.int64)
    for low in range(0, len(every), SHUFFLE_WINDOW_ROWS):
        window = every[low : low + SHUFFLE_WINDOW_ROWS]
        yield window[rng.permutation(len(window))]


def training_batches(
    split: DecodedSplit,
    *,
    seed: int,
    epoch: int,
    rank: int,
    world: int,
    batch_size: int,
    steps: int,
    device: torch.device,
) -> Iterator[dict[str, torch.Tensor]]:
    """`steps` batches of this rank's share of one epoch, on `device`, normalised there."""
    pieces = epoch_share([block.rows for block in split.blocks], seed=seed, epoch=epoch, rank=rank, world=world)
    windows = shuffled_rows(pieces, seed=seed, epoch=epoch, rank=rank)
    return _on_device(_gather(split.blocks, windows, batch_size, steps), device, split)


def all_batches(split: DecodedSplit, *, batch_size: int, device: torch.device) -> Iterator[dict[str, torch.Tensor]]:
    """Every row of `split` once, in block order (validation), a block at a time, on `device`."""
    pieces = [(index, 0, block.rows) for index, block in enumerate(split.blocks)]
    windows = (np.stack([np.full(stop, index), np.arange(stop)], axis=1) for index, _, stop in pieces)
    return _on_device(_gather(split.blocks, windows, batch_size, steps=None), device, split)


def _gather(
    blocks: tuple[Block, ...], windows: Iterator[np.ndarray], batch_size: int, steps: int | None
) -> Iterator[dict[str, torch.Tensor]]:
    """Batches of (block, row) pairs, copied out of the blocks; only the current window's blocks are
    held. With `steps`, exactly that many full batches (fewer only if the rows run out); without,
    every row, the last batch partial."""
    held: dict[int, dict[str, np.ndarray]] = {}
    pending = np.zeros((0, 2), np.int64)
    made = 0
    for window in windows:
        needed = set(np.unique(window[:, 0]).tolist()) | set(np.unique(pending[:, 0]).tolist())
        held = {index: held.get(index) or blocks[index].load() for index in needed}
        pending = np.concatenate([pending, window])
        while len(pending) >= batch_size:
            if steps is not None and made == steps:
                return
            yield _rows(held, pending[:batch_size])
            made += 1
            pending = pending[batch_size:]
    if steps is None and len(pending):
        yield _rows(held, pending)


def _rows(held: dict[int, dict[str, np.ndarray]], pairs: np.ndarray) -> dict[str, torch.Tensor]:
    return {
        name: torch.from_numpy(np.stack([held[int(block)][name][int(row)] for block, row in pairs])) for name in COLUMNS
    }


def _on_device(
    batches: Iterator[dict[str, torch.Tensor]], device: torch.device, split: DecodedSplit | StreamedSplit
) -> Iterator[dict[str, torch.Tensor]]:
    """Batches gathered ahead in a thread (pinned there on CUDA), moved to `device` as they are stored
    (uint8: a quarter of the bytes cross PCIe), then normalised there."""
    if device.type == "cuda":
        batches = ({name: tensor.pin_memory() for name, tensor in batch.items()} for batch in batches)
    for batch in _to_device(_prefetched(batches, PREFETCH_BATCHES), device):
        yield normalized(batch, split.preprocessing)


def normalized(batch: dict[str, torch.Tensor], preprocessing: Preprocessing) -> dict[str, torch.Tensor]:
    """A cached batch as the network and the loss take it: float32 image and mask, float labels."""
    return {
        "image": normalize_pixels(batch["image"], preprocessing),
        "mask": batch["mask"].to(torch.float32),
        "has_mask": batch["has_mask"],
        "label": batch["label"].to(torch.float32),
    }


def streamed_batches(
    shard, split: StreamedSplit, *, seed: int, epoch: int, batch_size: int, steps: int | None, device: torch.device
) -> Iterator[dict[str, torch.Tensor]]:
    """The same batches from a Ray Train dataset shard (`ray.train.get_dataset_shard`), read and
    decoded this epoch; shuffled in a local buffer when `steps` is given (training), in order otherwise."""
    shuffle = {"local_shuffle_buffer_size": SHUFFLE_WINDOW_ROWS, "local_shuffle_seed": seed * 100_003 + epoch}
    raw = shard.iter_batches(
        batch_size=batch_size,
        batch_format="numpy",
        drop_last=steps is not None,
        **(shuffle if steps is not None else {}),
    )
    tensors = ({name: torch.from_numpy(np.ascontiguousarray(batch[name])) for name in COLUMNS} for batch in raw)
    if steps is not None:
        tensors = (batch for _, batch in zip(range(steps), tensors))
    return _on_device(tensors, device, split)


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
