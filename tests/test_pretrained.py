"""Pretrained weights by name: timm's ImageNet weights from a (generated) Hugging Face cache, read offline,
weight folders made by `busnet weights fetch`; tensors really loaded, misfits refused in one line."""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from pathlib import Path

import pytest
import timm
import torch

from jobs import storage
from jobs.cli import main
from jobs.errors import BusnetError
from models.network import build_model
from models.pretrained import WeightFile, write_folder
from tests import hub_cache

TINY_RESNET = {"layers": (1, 1, 1, 1), "channels": (8, 16, 32, 64)}  # the tiny preset's
RESNET_HEAD = {"fc.weight", "fc.bias"}
SWIN_HEAD = {"head.fc.weight", "head.fc.bias", "norm.weight", "norm.bias"}

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def small_hub(tmp_path_factory) -> tuple[Path, dict]:
    """A cache holding the small preset's ResNet and Swin V2 weights and densenet121's: {arch: (tensors, sha256)}."""
    home = tmp_path_factory.mktemp("hf-home")
    published = {
        arch: hub_cache.publish(home, arch, seed)
        for seed, arch in enumerate(("resnet26", "swinv2_tiny_window8_256", "densenet121"))
    }
    return home, published


@pytest.fixture
def offline(small_hub, monkeypatch) -> dict:
    hub_cache.use_in_process(monkeypatch, small_hub[0])
    return small_hub[1]


def assert_holds(module: torch.nn.Module, weights: dict[str, torch.Tensor], ignored: set[str]) -> None:
    own = module.state_dict()
    assert set(own) == set(weights) - ignored
    different = [key for key, value in own.items() if not torch.equal(value, weights[key])]
    assert not different, f"not loaded: {different[:5]}"


def test_imagenet_weights_load_from_the_hub_cache_offline(offline, caplog):
    with caplog.at_level(logging.INFO, logger="models"):
        model = build_model("small", "hybrid", pretrained="imagenet", input_size=64)
    resnet, resnet_sha = offline["resnet26"]
    swin, swin_sha = offline["swinv2_tiny_window8_256"]
    assert_holds(model.cnn.resnet.body, resnet, RESNET_HEAD)
    assert_holds(model.swin.backbone, swin, SWIN_HEAD)
    loaded = {name: weights.record() for name, weights in model.pretrained_weights.items()}
    assert loaded["ResNet"]["name"] == "timm/resnet26.bt_in1k" and loaded["ResNet"]["sha256"] == resnet_sha
    assert loaded["Swin"]["name"] == "timm/swinv2_tiny_window8_256.ms_in1k" and loaded["Swin"]["sha256"] == swin_sha
    assert "randomly initialised" not in caplog.text


def test_a_baseline_gets_its_own_architectures_weights(offline):
    model = build_model("small", "baseline", backbone="densenet121", pretrained="imagenet", input_size=64)
    assert_holds(model.backbone, offline["densenet121"][0], {"classifier.weight", "classifier.bias"})
    assert model.pretrained_weights["densenet121"].sha256 == offline["densenet121"][1]


def test_tiny_has_no_published_weights_and_is_refused_in_one_line(offline):
    with pytest.raises(ValueError, match=r"preset 'tiny' narrows timm's resnet26 \(layers=.*no ImageNet"):
        build_model("tiny", "hybrid", pretrained="imagenet")
    with pytest.raises(ValueError, match="preset 'tiny' narrows timm's densenet121"):
        build_model("tiny", "baseline", backbone="densenet121", pretrained="imagenet")


def test_weights_missing_from_the_cache_are_one_line(tmp_path, monkeypatch):
    hub_cache.use_in_process(monkeypatch, tmp_path)
    with pytest.raises(ValueError) as error:
        build_model("small", "mt_estan", pretrained="imagenet", input_size=64)
    message = str(error.value)
    assert "ImageNet weights timm/resnet26.bt_in1k (resnet26) are not in the Hugging Face cache" in message
    assert "(HF_HUB_OFFLINE is set)" in message and "busnet weights fetch" in message


def test_a_cached_file_of_the_wrong_shape_is_refused(tmp_path, monkeypatch):
    hub_cache.publish(tmp_path, "resnet26", seed=0, **TINY_RESNET)  # a narrowed file under the real name
    hub_cache.use_in_process(monkeypatch, tmp_path)
    with pytest.raises(ValueError, match=r"do not fit the ResNet: \d+ shape mismatch\(es\) \(layer1.0.conv1.weight"):
        build_model("small", "mt_estan", pretrained="imagenet", input_size=64)


def test_weights_fetch_publishes_a_folder_that_train_loads_from(offline, tmp_path, capsys):
    out = tmp_path / "weights"
    assert main(["weights", "fetch", "--out", str(out), "--preset", "small", "--backbones", "densenet121"]) == 0
    printed = capsys.readouterr().out
    index = json.loads((Path(storage.resolve(str(out))) / "weights.json").read_text())
    assert set(index["weights"]) == {"resnet26", "swinv2_tiny_window8_256", "densenet121"}
    for arch, entry in index["weights"].items():
        assert entry["sha256"] == offline[arch][1] and f"{arch}: {entry['name']} sha256 {entry['sha256']}" in printed
    model = build_model("small", "swin", pretrained=str(out), input_size=64)
    assert_holds(model.swin.backbone, offline["swinv2_tiny_window8_256"][0], SWIN_HEAD)
    assert model.pretrained_weights["Swin"].sha256 == offline["swinv2_tiny_window8_256"][1]
    # A file changed after fetching is refused by its sha256.
    file = Path(storage.resolve(str(out))) / index["weights"]["densenet121"]["file"]
    file.write_bytes(file.read_bytes()[:-1] + b" ")
    with pytest.raises(ValueError, match=r"densenet121.ra_in1k.safetensors: sha256 .* is not the .* weights.json"):
        build_model("small", "baseline", backbone="densenet121", pretrained=str(out), input_size=64)


def test_weights_fetch_refuses_tiny_and_unknown_names(offline, tmp_path):
    with pytest.raises(BusnetError, match="preset 'tiny' narrows"):
        from jobs.commands.weights import architectures
        from jobs.train.config import WeightsOptions

        architectures(WeightsOptions(out=str(tmp_path), preset="tiny"))
    assert main(["weights", "fetch", "--out", str(tmp_path / "w"), "--backbones", "no_such_net"]) == 1
    assert not (tmp_path / "w").exists()


def _folder(directory: Path, arch: str, weights: dict[str, torch.Tensor], name: str = "") -> str:
    from safetensors.torch import save

    directory.mkdir(parents=True, exist_ok=True)
    write_folder(str(directory), [(WeightFile(arch, name or f"local/{arch}", "generated"), save(weights))])
    return str(directory)


def timm_weights(name: str, seed: int, **kwargs) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return {k: v.contiguous() for k, v in timm.create_model(name, pretrained=False, **kwargs).state_dict().items()}


def test_a_folder_on_s3_is_loaded(s3_bucket, tmp_path):
    weights = timm_weights("resnet26", seed=4, **TINY_RESNET)
    storage.publish_dir(_folder(tmp_path / "w", "resnet26", weights), f"{s3_bucket}/weights")
    model = build_model("tiny", "mt_estan", pretrained=f"{s3_bucket}/weights")
    assert_holds(model.cnn.resnet.body, weights, RESNET_HEAD)
    with pytest.raises(ValueError, match=f"--pretrained {s3_bucket}/absent: no weights.json there"):
        build_model("tiny", "mt_estan", pretrained=f"{s3_bucket}/absent")


def test_store_failures_are_one_line(s3_server, unreachable_endpoint):
    """Not "no such file": the store itself is what failed, and the line says which part."""
    with pytest.raises(BusnetError, match=f"cannot reach the S3 endpoint {unreachable_endpoint}"):
        build_model("tiny", "mt_estan", pretrained="s3://weights/folder")


def test_missing_bucket_is_named(s3_server):
    with pytest.raises(BusnetError, match="bucket 'no-such-bucket-.*' does not exist"):
        build_model("tiny", "mt_estan", pretrained=f"s3://no-such-bucket-{uuid.uuid4().hex[:12]}/weights")


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
    folder = _folder(tmp_path, "resnet26", make())
    with pytest.raises(ValueError) as error:
        build_model("tiny", "mt_estan", pretrained=folder)
    assert f"pretrained weights {folder}/resnet26.safetensors do not fit the ResNet" in str(error.value)
    assert message in str(error.value)


def test_an_index_without_the_architecture_or_a_broken_file_is_refused(tmp_path):
    folder = _folder(tmp_path / "a", "resnet26", timm_weights("resnet26", seed=6, **TINY_RESNET))
    with pytest.raises(ValueError, match=r"json has no weights for swinv2_tiny_window8_256 \(it has resnet26\)"):
        build_model("tiny", "swin", pretrained=folder)
    index = json.loads((tmp_path / "a" / "weights.json").read_text())
    broken = tmp_path / "a" / index["weights"]["resnet26"]["file"]
    broken.write_bytes(b"not a weights file")
    index["weights"]["resnet26"]["sha256"] = hashlib.sha256(b"not a weights file").hexdigest()
    (tmp_path / "a" / "weights.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        build_model("tiny", "mt_estan", pretrained=folder)


def test_train_refuses_missing_weights_before_any_worker_starts(tmp_path, monkeypatch, synthetic_dataset, capsys):
    hub_cache.use_in_process(monkeypatch, tmp_path / "empty-cache")
    argv = ["train", "--data", synthetic_dataset, "--out", str(tmp_path / "runs"), "--preset", "small"]
    assert main([*argv, "--input-size", "64", "--pretrained", "imagenet", "--no-track"]) == 1
    error = capsys.readouterr().err.strip().splitlines()
    assert error[0].startswith("busnet train: configuration: ")  # the effective configuration, then one line
    assert len(error) == 2 and error[1].startswith("busnet train: error: ")
    error = error[1]
    assert "timm/resnet26.bt_in1k (resnet26) are not in the Hugging Face cache" in error
    assert main([*argv, "--preset", "tiny", "--recipe", "paper", "--no-track"]) == 1  # the paper recipe: imagenet
    assert "preset 'tiny' narrows timm's resnet26" in capsys.readouterr().err
    # nothing trained: the run folders hold only what --resume compares against (config.yaml, dataset.json)
    assert {path.name for path in (tmp_path / "runs").rglob("*") if path.is_file()} <= {"config.yaml", "dataset.json"}
