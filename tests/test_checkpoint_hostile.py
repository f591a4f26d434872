"""A checkpoint's config.json is not covered by its weights' hash: whatever it says is bounded.
Its model record may set only architecture fields, and a network larger than its weights file is
refused before anything is allocated (each failed before: the first read any file as weights, the
second allocated what it asked for)."""

from __future__ import annotations

import json
import shutil
import time
import tracemalloc

import pytest
import torch

from models import build_model, load_checkpoint, save_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    return save_checkpoint(build_model("tiny", "hybrid").eval(), tmp_path_factory.mktemp("ckpt") / "hybrid")


def _with_model(checkpoint, tmp_path, **model):
    directory = shutil.copytree(checkpoint, tmp_path / "copy")
    config = json.loads((directory / "config.json").read_text())
    config["model"].update(model)
    (directory / "config.json").write_text(json.dumps(config))
    return directory


@pytest.mark.parametrize("option", ["pretrained_cnn", "pretrained_swin", "pretrained_backbone"])
def test_overrides_that_would_read_a_file_are_refused(checkpoint, tmp_path, option):
    secret = tmp_path / "secret.safetensors"
    shutil.copy(checkpoint / "model.safetensors", secret)  # a readable weight file: loading it would work
    directory = _with_model(checkpoint, tmp_path, overrides={option: str(secret)})
    with pytest.raises(ValueError, match=rf"config.json: cannot rebuild .*only architecture fields .*'{option}'"):
        load_checkpoint(directory)


def test_a_network_larger_than_its_weights_file_is_refused_unallocated(checkpoint, tmp_path):
    directory = _with_model(checkpoint, tmp_path, overrides={"estan_widths": [100_000] * 5})
    tracemalloc.start()
    started = time.monotonic()
    try:
        with pytest.raises(ValueError, match=r"cannot rebuild .*it describes [\d,]+ weights, more than model"):
            load_checkpoint(directory)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.monotonic() - started < 30 and peak < 200 << 20  # 5e12 weights asked, none allocated


def test_overrides_of_the_wrong_type_are_one_clear_error(checkpoint, tmp_path):
    directory = _with_model(checkpoint, tmp_path, overrides=["estan_widths"])
    with pytest.raises(ValueError, match="overrides may set only architecture fields"):
        load_checkpoint(directory)


def test_architecture_overrides_still_load(tmp_path):
    torch.manual_seed(0)
    model = build_model("tiny", "hybrid", head_widths=(16, 8)).eval()
    _, config = load_checkpoint(save_checkpoint(model, tmp_path / "c"))
    assert config["model"]["overrides"] == {"head_widths": [16, 8]}
