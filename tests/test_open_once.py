"""Open once: a command follows a dataset's or a checkpoint's `_COMPLETE` pointer once, and every stage
(checks, decoding, training, lineage, the batch actors) uses that one version, even when another
version is published meanwhile."""

from __future__ import annotations

import collections
import json
import shutil
from pathlib import Path

import pytest

from jobs import storage
from jobs.data.dataset import open_dataset


@pytest.fixture
def pointer_reads(monkeypatch) -> collections.Counter:
    """Counts, per publication URI, the times a pointer was followed (resolve returned another folder)."""
    counts: collections.Counter = collections.Counter()
    original = storage.resolve

    def counting(uri: str) -> str:
        folder = original(uri)
        if folder != str(uri).rstrip("/"):
            counts[str(uri).rstrip("/")] += 1
        return folder

    monkeypatch.setattr(storage, "resolve", counting)
    return counts


def test_busnet_train_follows_the_dataset_pointer_once(ray_local, synthetic_dataset, tmp_path, pointer_reads):
    """The whole command: its resume check, the checks before training, decoding, the lineage."""
    from jobs.cli import main

    argv = ["train", "--data", synthetic_dataset, "--out", str(tmp_path), "--name", "once", "--input-size", "64"]
    assert main([*argv, "--epochs", "1", "--cpus-per-worker", "0.5", "--no-track"]) == 0
    assert pointer_reads[synthetic_dataset] == 1, dict(pointer_reads)
    best = storage.join(str(tmp_path), "once", "best")
    lineage = json.loads((Path(storage.resolve(best)) / "lineage.json").read_text())
    assert lineage["dataset"]["version_uri"] == storage.resolve(synthetic_dataset)


@pytest.fixture(scope="module")
def published_model(tmp_path_factory) -> str:
    """A tiny untrained model published twice at one URI (two versions, different weights)."""
    import torch

    from models import build_model, save_checkpoint
    from models.preprocess import Preprocessing

    root = tmp_path_factory.mktemp("published")
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = build_model("tiny", input_size=64)
        save_checkpoint(model, root / f"v{seed}", preprocessing=Preprocessing(size=64), threshold=0.5)
    storage.publish_dir(root / "v0", str(root / "best"), keep=None)
    return str(root / "best")


def test_evaluate_and_predict_follow_each_pointer_once(
    ray_local, synthetic_dataset, published_model, tmp_path, pointer_reads
):
    from jobs.evaluate.batch import predict_archive
    from jobs.evaluate.run import evaluate

    metrics = evaluate(synthetic_dataset, published_model, str(tmp_path / "eval"), n_bootstrap=0)
    assert pointer_reads == {synthetic_dataset: 1, published_model: 1}, dict(pointer_reads)
    assert metrics["evaluated"]["checkpoint_version"] == storage.resolve(published_model)
    pointer_reads.clear()
    predict_archive(published_model, synthetic_dataset, str(tmp_path / "pred"), split="val", n_bootstrap=0)
    assert pointer_reads == {synthetic_dataset: 1, published_model: 1}, dict(pointer_reads)


def test_a_batch_actor_loads_the_drivers_version_not_a_newer_one(published_model):
    """The driver resolved v0; v1 is published before the actor starts: the actor still loads v0,
    and refuses weights other than the ones the driver recorded."""
    from jobs.evaluate.inference import BatchPredictor
    from jobs.evaluate.run import load_config, predictor_arguments

    config, _ = load_config(published_model)
    storage.publish_dir(Path(published_model).parent / "v1", published_model, keep=None)  # a publish in between
    actor = BatchPredictor(**predictor_arguments(config))
    assert actor.config["weights_sha256"] == config["weights_sha256"]
    assert storage.resolve(published_model) != config["version_uri"]  # the pointer did move
    with pytest.raises(ValueError, match="expected"):
        BatchPredictor(config["version_uri"], weights_sha256="0" * 64)


def test_a_dataset_handle_keeps_reading_its_version_after_a_new_publish(synthetic_dataset, tmp_path):
    copy = tmp_path / "data"
    shutil.copytree(synthetic_dataset, copy)
    dataset = open_dataset(str(copy))
    rows = dataset.read_table(columns=["image_id"]).num_rows
    storage.publish_dir(storage.resolve(str(copy)), str(copy))  # another version appears
    assert storage.resolve(str(copy)) != dataset.version_uri
    assert dataset.read_table(columns=["image_id"]).num_rows == rows
    assert all(path.startswith(storage.local_path(dataset.version_uri).as_posix()) for path in dataset.shards()[1])
