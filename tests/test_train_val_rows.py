"""A fast guard (seconds, not the 69-s end-to-end run) that training validates on the val rows: the
driver's decoded val split holds exactly the dataset's val images (of the fold, when one is given),
none of the training images. Planting "validate on the training rows" used to pass every fast test."""

from __future__ import annotations

import pytest

from jobs.data.dataset import read_table
from jobs.train.config import TrainConfig
from jobs.train.driver import decode_splits, prepare


@pytest.mark.parametrize("fold", [None, 1])
def test_the_decoded_val_split_is_the_datasets_val_rows(ray_local, synthetic_dataset, tmp_path, fold):
    config = TrainConfig(data=synthetic_dataset, out=str(tmp_path), batch_size=2, fold=fold)
    decoded = decode_splits(config, prepare(config)).decoded
    rows = read_table(synthetic_dataset, columns=["image_id", "split", "fold_splits"]).to_pylist()
    side = (lambda row: row["split"]) if fold is None else (lambda row: row["fold_splits"][fold])
    ids = {split: sorted(str(i) for block in decoded[split].blocks for i in block.load_ids()) for split in decoded}
    for split in ("train", "val"):
        assert ids[split] == sorted(row["image_id"] for row in rows if side(row) == split), split
    assert not set(ids["val"]) & set(ids["train"])
