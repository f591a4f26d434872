"""Pretrained encoder weights: timm weight files written here are really loaded; misfits are refused."""

from __future__ import annotations

import logging
import uuid

import pytest
import timm
import torch
from safetensors.torch import save_file

from jobs.errors import BusnetError
from models.network import build_model

TINY_RESNET = {"layers": (1, 1, 1, 1), "channels": (8, 16, 32, 64)}  # the tiny preset's


pytestmark = pytest.mark.usefixtures("one_thread")


def timm_weights(name: str, seed: int, **kwargs) -> dict[str, torch.Tensor]:
    """The state dict of a fresh timm model (classifier included, as timm publishes them)."""
    torch.manual_seed(seed)
    return {k: v.contiguous() for k, v in timm.create_model(name, pretrained=False, **kwargs).state_dict().items()}


def assert_holds(module: torch.nn.Module, weights: dict[str, torch.Tensor], ignored: set[str]) -> None:
    own = module.state_dict()
    assert set(own) == set(weights) - ignored
    different = [key for key, value in own.items() if not torch.equal(value, weights[key])]
    assert not different, f"not loaded: {different[:5]}"


def test_resnet_safetensors_file_is_really_loaded(tmp_path, caplog):
    weights = timm_weights("resnet26", seed=1)
    path = tmp_path / "resnet26.safetensors"
    save_file(weights, path)
    torch.manual_seed(0)
    with caplog.at_level(logging.INFO, logger="models"):
        model = build_model("small", "mt_estan", pretrained_cnn=str(path))
    assert_holds(model.cnn.resnet.body, weights, ignored={"fc.weight", "fc.bias"})
    assert f"ResNet: loaded {len(weights) - 2} tensors from {path} (2 classifier keys ignored)" in caplog.text
    assert "randomly initialised" not in caplog.text


def test_swin_safetensors_file_is_really_loaded(tmp_path):
    weights = timm_weights("swinv2_tiny_window8_256", seed=2)
    path = tmp_path / "swinv2_tiny_window8_256.safetensors"
    save_file(weights, path)
    model = build_model("small", "swin", pretrained_swin=f"file://{path}")
    # timm's head and final norm are not part of the encoder; non-persistent buffers are not in files.
    assert_holds(model.swin.backbone, weights, ignored={"head.fc.weight", "head.fc.bias", "norm.weight", "norm.bias"})


def test_torch_file_from_a_training_checkpoint_loads(tmp_path):
    weights = timm_weights("resnet26", seed=3, **TINY_RESNET)
    path = tmp_path / "checkpoint.pth"
    torch.save({"epoch": 7, "state_dict": {f"module.{k}": v for k, v in weights.items()}}, path)
    model = build_model("tiny", "mt_estan", pretrained_cnn=str(path))
    assert_holds(model.cnn.resnet.body, weights, ignored={"fc.weight", "fc.bias"})


def test_s3_weights_file_is_loaded(s3_bucket):
    import boto3
    from safetensors.torch import save

    weights = timm_weights("resnet26", seed=4, **TINY_RESNET)
    uri = f"{s3_bucket}/weights/resnet.safetensors"
    # Written by another S3 client (endpoint from AWS_ENDPOINT_URL), read through jobs.storage.
    boto3.client("s3").put_object(Bucket=s3_bucket[5:], Key="weights/resnet.safetensors", Body=save(weights))
    model = build_model("tiny", "mt_estan", pretrained_cnn=uri)
    assert_holds(model.cnn.resnet.body, weights, ignored={"fc.weight", "fc.bias"})
    with pytest.raises(ValueError, match=f"pretrained weights {s3_bucket}/weights/absent.safetensors: no such file"):
        build_model("tiny", "mt_estan", pretrained_cnn=f"{s3_bucket}/weights/absent.safetensors")


def test_store_failures_are_one_line(s3_server, unreachable_endpoint):
    """Not "no such file": the store itself is what failed, and the line says which part."""
    with pytest.raises(BusnetError, match=f"cannot reach the S3 endpoint {unreachable_endpoint}"):
        build_model("tiny", "mt_estan", pretrained_cnn="s3://weights/resnet.safetensors")


def test_missing_bucket_is_named(s3_server):
    uri = f"s3://no-such-bucket-{uuid.uuid4().hex[:12]}/resnet.safetensors"
    with pytest.raises(BusnetError, match="bucket 'no-such-bucket-.*' does not exist"):
        build_model("tiny", "mt_estan", pretrained_cnn=uri)


class NotATensor:
    """Anything a weights-only unpickler must refuse."""


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda: timm_weights("resnet26", seed=5),
            "80 shape mismatch(es) (layer1.0.conv1.weight file (64, 64, 1, 1) vs model (8, 64, 1, 1)",
        ),
        (
            lambda: timm_weights("resnet26", seed=5, **{**TINY_RESNET, "layers": (2, 1, 1, 1)}),
            "0 missing key(s), 18 unexpected key(s) (layer1.1.bn1.bias",
        ),
        (
            lambda: {
                k: v for k, v in timm_weights("resnet26", seed=5, **TINY_RESNET).items() if k != "layer4.0.conv3.weight"
            },
            "1 missing key(s) (layer4.0.conv3.weight)",
        ),
    ],
)
def test_a_file_that_does_not_fit_is_refused(tmp_path, make, message):
    path = tmp_path / "other.safetensors"
    save_file(make(), path)
    with pytest.raises(ValueError) as error:
        build_model("tiny", "mt_estan", pretrained_cnn=str(path))
    assert f"pretrained weights {path} do not fit the ResNet" in str(error.value)
    assert message in str(error.value)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("broken.safetensors", b"not a weights file", "not a readable weights file"),
        ("pickled.pth", None, "not a readable weights file"),
        ("weights.npz", b"", "unknown format"),
        ("absent.safetensors", ..., "no such file"),
    ],
)
def test_unreadable_files_are_refused(tmp_path, name, content, message):
    path = tmp_path / name
    if content is None:
        torch.save({"conv1.weight": torch.zeros(1), "extra": NotATensor()}, path)
    elif content is not ...:
        path.write_bytes(content)
    with pytest.raises(ValueError, match=message) as error:
        build_model("tiny", "swin", pretrained_swin=str(path))
    assert str(path) in str(error.value)
