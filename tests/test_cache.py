"""jobs.data.cache: a split decoded once into blocks gives exactly the tensors that decoding each image
again gives (and that the streamed path gives); every epoch's order is new, the same on every rank, and
each row belongs to exactly one rank; a rank fetches only the blocks its share touches."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from jobs.data import cache
from jobs.data.dataset import open_dataset
from jobs.data.pipeline import ROW_COLUMNS, decode_batch, read_split
from models.preprocess import Preprocessing

PRE = Preprocessing(size=48)
CPU = torch.device("cpu")


def _fresh(dataset, split: str) -> dict[str, dict[str, np.ndarray]]:
    """Each row of `split` decoded and normalised again with pyarrow + `decode_batch` (what serving and
    the bare loop compute), by image id."""
    rows = [row for row in dataset.read_table(columns=[*ROW_COLUMNS, "split"]).to_pylist() if row["split"] == split]
    fresh = decode_batch({name: [row[name] for row in rows] for name in ROW_COLUMNS}, PRE)
    return {row["image_id"]: {name: fresh[name][i] for name in cache.COLUMNS} for i, row in enumerate(rows)}


def test_cached_blocks_hold_8_bit_pixels_and_give_bit_identical_batches(ray_local, synthetic_dataset):
    dataset = open_dataset(synthetic_dataset)
    split = cache.decode_split(dataset, "train", fold=None, preprocessing=PRE)
    assert split.key == cache.CacheKey.of(dataset.content_hash, "train", None, PRE)
    fresh = _fresh(dataset, "train")
    assert split.rows == len(fresh)
    stored = split.blocks[0].load()
    assert stored["image"].dtype == np.uint8 and stored["mask"].dtype == np.uint8  # a quarter of float32 at rest

    batches = list(cache.all_batches(split, batch_size=5, device=CPU))
    assert sum(len(batch["label"]) for batch in batches) == split.rows
    expected = sorted(fresh.values(), key=lambda row: row["image"].tobytes())
    got = [
        {name: batch[name][i].numpy() for name in cache.COLUMNS}
        for batch in batches
        for i in range(len(batch["label"]))
    ]
    got.sort(key=lambda row: row["image"].tobytes())
    for want, have in zip(expected, got):
        for name in cache.COLUMNS:
            assert have[name].dtype == want[name].dtype, name
            assert np.array_equal(have[name], want[name]), name  # bit-identical, not close


def test_the_streamed_path_gives_the_same_rows_as_the_cache(ray_local, synthetic_dataset):
    dataset = open_dataset(synthetic_dataset)
    streamed = read_split(dataset, "val", preprocessing=PRE, normalize=False).take_all()
    fresh = _fresh(dataset, "val")
    assert {row["image_id"] for row in streamed} == set(fresh)
    for row in streamed:
        batch = cache.normalized({name: torch.from_numpy(np.array(row[name])[None]) for name in cache.COLUMNS}, PRE)
        for name in cache.COLUMNS:
            assert np.array_equal(batch[name][0].numpy(), fresh[row["image_id"]][name]), name


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_each_row_belongs_to_exactly_one_rank_every_epoch(world):
    blocks = [7, 3, 16, 1, 9, 12]
    for epoch in (1, 2):
        shares = [cache.epoch_share(blocks, seed=5, epoch=epoch, rank=rank, world=world) for rank in range(world)]
        rows = [(block, row) for share in shares for block, start, stop in share for row in range(start, stop)]
        assert sorted(rows) == [(b, r) for b, n in enumerate(blocks) for r in range(n)]  # each exactly once
        sizes = [sum(stop - start for _, start, stop in share) for share in shares]
        assert max(sizes) - min(sizes) <= 1
        assert cache.epoch_share(blocks, seed=5, epoch=epoch, rank=0, world=world) == shares[0]  # reproducible
    first, second = (cache.epoch_share(blocks, seed=5, epoch=e, rank=0, world=1) for e in (1, 2))
    assert first != second  # a new order every epoch


def test_a_rank_touches_only_the_blocks_of_its_share():
    blocks = [64] * 40
    share = cache.epoch_share(blocks, seed=0, epoch=3, rank=1, world=4)
    assert len({block for block, _, _ in share}) <= 40 // 4 + 2


class _FakeBlock:
    """A block in memory, counting its loads."""

    def __init__(self, labels: list[float]):
        self.labels, self.loads = labels, 0

    @property
    def rows(self) -> int:
        return len(self.labels)

    def load(self) -> dict[str, np.ndarray]:
        self.loads += 1
        n = len(self.labels)
        return {
            "image": np.zeros((n, 3, 2, 2), np.uint8),
            "mask": np.zeros((n, 1, 2, 2), np.uint8),
            "has_mask": np.ones(n, bool),
            "label": np.asarray(self.labels, np.float32),
        }


def _split(*blocks: list[float]) -> cache.DecodedSplit:
    fake = tuple(_FakeBlock(labels) for labels in blocks)
    return cache.DecodedSplit(cache.CacheKey.of("h", "train", None, PRE), PRE, fake, 0)  # type: ignore[arg-type]


def test_training_takes_exactly_the_steps_asked_and_shuffles_within_the_share():
    split = _split([0, 1, 2, 3, 4], [5, 6, 7], [8, 9, 10, 11])
    got = [
        b["label"].tolist()
        for b in cache.training_batches(split, seed=1, epoch=1, rank=0, world=1, batch_size=3, steps=3, device=CPU)
    ]
    assert len(got) == 3 and all(len(b) == 3 for b in got)
    labels = [x for b in got for x in b]
    assert len(set(labels)) == 9 and labels != sorted(labels)
    assert all(block.loads == 1 for block in split.blocks)  # each block fetched once


def test_validation_reads_every_row_once_with_a_last_partial_batch():
    split = _split([0, 1, 2], [3, 4])
    got = [b["label"].tolist() for b in cache.all_batches(split, batch_size=2, device=CPU)]
    assert sorted(x for b in got for x in b) == [0, 1, 2, 3, 4]
    assert [len(b) for b in got] == [2, 2, 1]


def test_a_failed_load_is_raised_to_the_loop_and_an_early_stop_ends_the_prefetch_thread():
    broken = _split([0, 1])
    broken.blocks[0].load = lambda: (_ for _ in ()).throw(OSError("object lost"))  # type: ignore[method-assign]
    with pytest.raises(OSError, match="object lost"):
        list(cache.all_batches(broken, batch_size=1, device=CPU))
    before = threading.active_count()
    stream = cache.all_batches(_split(list(range(8))), batch_size=1, device=CPU)
    next(stream)
    stream.close()
    for _ in range(50):  # the thread notices within its 0.1 s put timeout
        if threading.active_count() <= before:
            break
        threading.Event().wait(0.05)
    assert threading.active_count() <= before
