"""jobs.data.cache: a split decoded once into the object store gives exactly the tensors that decoding
each image again gives; every epoch's order is new, the same on every rank and cut into equal shares."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from jobs.data.cache import COLUMNS, CacheKey, DecodedSplit, batches, decode_split, epoch_rows
from jobs.data.dataset import read_manifest, read_table
from jobs.data.pipeline import ROW_COLUMNS, decode_batch
from models.preprocess import Preprocessing

PRE = Preprocessing(size=48)
CPU = torch.device("cpu")


def test_cached_split_equals_decoding_every_image_again(ray_local, synthetic_dataset):
    """The object store's arrays, and the batches drawn from them, against `decode_batch` on the rows
    read with pyarrow (what the bare loop and an uncached pipeline compute), image by image."""
    content_hash = read_manifest(synthetic_dataset)["content_hash"]
    split = decode_split(synthetic_dataset, "train", fold=None, preprocessing=PRE, content_hash=content_hash)
    assert split.key == CacheKey.of(content_hash, "train", None, PRE)
    cached = split.load()

    rows = read_table(synthetic_dataset, columns=[*ROW_COLUMNS, "split"]).to_pylist()
    train = sorted((row for row in rows if row["split"] == "train"), key=lambda row: row["image_id"])
    fresh = decode_batch({name: [row[name] for row in train] for name in ROW_COLUMNS}, PRE)
    assert split.rows == len(train) == len(cached["label"])
    assert list(cached["image_id"]) == [row["image_id"] for row in train]
    assert any(not has for has in fresh["has_mask"]) or all(fresh["has_mask"])
    for name in COLUMNS:
        assert cached[name].dtype == fresh[name].dtype, name
        assert np.array_equal(cached[name], fresh[name]), name

    order = epoch_rows(split.rows, seed=3, epoch=1, rank=0, world=1)
    drawn = list(batches(cached, order, batch_size=4, device=CPU, drop_last=True))
    assert len(drawn) == split.rows // 4
    for step, batch in enumerate(drawn):
        picked = order[4 * step : 4 * step + 4]
        for name in COLUMNS:
            assert torch.equal(batch[name], torch.from_numpy(fresh[name][picked])), name


def test_every_epoch_has_a_new_order_shared_by_the_ranks_in_equal_shares():
    shares = [epoch_rows(23, seed=0, epoch=1, rank=rank, world=3) for rank in range(3)]
    assert [len(share) for share in shares] == [7, 7, 7]
    together = np.concatenate(shares)
    assert len(set(together.tolist())) == 21 and set(together.tolist()) <= set(range(23))
    assert np.array_equal(np.concatenate(shares), np.random.default_rng([0, 1]).permutation(23)[:21])
    assert np.array_equal(epoch_rows(23, seed=0, epoch=1, rank=1, world=3), shares[1])  # reproducible
    one, two = (epoch_rows(23, seed=0, epoch=e, rank=0, world=1) for e in (1, 2))
    assert sorted(one) == sorted(two) == list(range(23)) and not np.array_equal(one, two)
    assert not np.array_equal(epoch_rows(23, seed=1, epoch=1, rank=0, world=1), one)


def _arrays(rows: int) -> dict[str, np.ndarray]:
    return {
        "image": np.arange(rows * 3 * 2 * 2, dtype=np.float32).reshape(rows, 3, 2, 2),
        "mask": np.zeros((rows, 1, 2, 2), np.float32),
        "has_mask": np.ones(rows, bool),
        "label": np.arange(rows, dtype=np.float32),
    }


def test_the_last_partial_batch_is_kept_only_when_asked():
    arrays, rows = _arrays(10), np.arange(10)[::-1].copy()
    whole = [b["label"].tolist() for b in batches(arrays, rows[:8], batch_size=4, device=CPU, drop_last=True)]
    assert whole == [[9, 8, 7, 6], [5, 4, 3, 2]]
    kept = [b["label"].tolist() for b in batches(arrays, rows, batch_size=4, device=CPU, drop_last=False)]
    assert kept == [[9, 8, 7, 6], [5, 4, 3, 2], [1, 0]]
    dropped = [b["label"].tolist() for b in batches(arrays, rows, batch_size=4, device=CPU, drop_last=True)]
    assert dropped == kept[:2]
    in_memory = DecodedSplit(CacheKey.of("h", "val", None, PRE), 10, arrays)
    assert in_memory.load() is arrays  # no Ray needed for arrays held in memory


def test_a_failed_gather_is_raised_to_the_loop_and_an_early_stop_ends_the_prefetch_thread():
    arrays = _arrays(8)
    with pytest.raises(IndexError):
        list(batches(arrays, np.array([0, 1, 2, 99]), batch_size=2, device=CPU, drop_last=True))
    before = threading.active_count()
    stream = batches(arrays, np.arange(8), batch_size=1, device=CPU, drop_last=True)
    next(stream)
    stream.close()
    for _ in range(50):  # the thread notices within its 0.1 s put timeout
        if threading.active_count() <= before:
            break
        threading.Event().wait(0.05)
    assert threading.active_count() <= before
