"""models.checkpoint: identical outputs after a round trip (local, file://, s3://, DDP-wrapped), and
refusal of tampered, mismatched or incomplete checkpoints with the file named."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import uuid
from datetime import datetime, timezone

import pytest
import torch

from jobs.errors import BusnetError
from models import build_model, load_checkpoint, save_checkpoint
from models.checkpoint import code_version
from models.preprocess import Preprocessing

FILES = ("config.json", "model.safetensors", "metrics.json", "lineage.json")


@pytest.fixture(scope="module")
def tiny_models() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    return {variant: build_model("tiny", variant).eval() for variant in ("hybrid", "swin")}


@pytest.fixture(scope="module")
def swin_checkpoint(tiny_models, tmp_path_factory):
    return save_checkpoint(tiny_models["swin"], tmp_path_factory.mktemp("ckpt") / "swin")


def _same_outputs(model_a: torch.nn.Module, model_b: torch.nn.Module) -> None:
    x = torch.randn(2, 3, model_a.input_size, model_a.input_size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a, b = model_a(x), model_b(x)
    assert torch.equal(a["logits"], b["logits"])
    if a["mask_logits"] is None:
        assert b["mask_logits"] is None
    else:
        assert torch.equal(a["mask_logits"], b["mask_logits"])


def _copy(checkpoint, tmp_path):
    return shutil.copytree(checkpoint, tmp_path / "copy")


def _edit_config(directory, **changes) -> None:
    path = directory / "config.json"
    config = json.loads(path.read_text())
    config["model"].update(changes)
    path.write_text(json.dumps(config))


@pytest.mark.parametrize("variant", ["hybrid", "swin"])
def test_round_trip_gives_identical_outputs(tiny_models, tmp_path, variant):
    model = tiny_models[variant]
    pre = Preprocessing(size=64, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    directory = save_checkpoint(
        model,
        tmp_path / "ckpt",
        preprocessing=pre,
        threshold=0.42,
        metrics={"val_auc": float("nan"), "val_acc": torch.tensor(0.75)},
        lineage={"trial_id": "t1", "dataset_hash": "abc"},
    )
    assert sorted(p.name for p in directory.iterdir()) == sorted([*FILES, "model_card.md"])
    loaded, config = load_checkpoint(str(directory))
    assert not loaded.training and loaded.config == model.config
    _same_outputs(model, loaded)
    assert config["model"] == model.config and config["threshold"] == 0.42
    assert Preprocessing.from_dict(config["preprocessing"]) == pre
    assert config["class_names"] == ["benign", "malignant"] and config["format_version"] == 1
    assert config["metrics"] == {"val_auc": None, "val_acc": 0.75}  # strict JSON: NaN -> null
    lineage = config["lineage"]
    assert lineage["trial_id"] == "t1" and lineage["code_version"]["busnet"]
    created = datetime.fromisoformat(lineage["created_at"])
    assert created.tzinfo is not None and created.utcoffset() == timezone.utc.utcoffset(None)


def test_file_uri_and_extra_files(swin_checkpoint, tiny_models, tmp_path):
    directory = _copy(swin_checkpoint, tmp_path)
    (directory / "train_state.pt").write_bytes(b"the trainer's own file")
    loaded, _ = load_checkpoint(directory.as_uri())
    _same_outputs(tiny_models["swin"], loaded)


def test_s3_round_trip(swin_checkpoint, tiny_models, s3_bucket):
    import boto3

    bucket = s3_bucket.removeprefix("s3://")
    client = boto3.client("s3")  # another S3 client (endpoint from AWS_ENDPOINT_URL); load_checkpoint's is jobs.storage
    for name in FILES:
        client.upload_file(str(swin_checkpoint / name), bucket, f"run/best/{name}")
    loaded, config = load_checkpoint(f"{s3_bucket}/run/best/")
    _same_outputs(tiny_models["swin"], loaded)
    assert config["model"]["variant"] == "swin"
    client.delete_object(Bucket=bucket, Key="run/best/lineage.json")
    with pytest.raises(ValueError, match="run/best/lineage.json: missing"):
        load_checkpoint(f"{s3_bucket}/run/best")


def test_s3_load_needs_no_ray(swin_checkpoint, s3_bucket):
    """`from models import load_checkpoint` on s3:// in a fresh process: the model loads, Ray is never imported."""
    from jobs import storage

    storage.publish_dir(swin_checkpoint, f"{s3_bucket}/run/best")
    code = (
        "import sys; from models import load_checkpoint; "
        f"model, config = load_checkpoint({s3_bucket + '/run/best'!r}); "
        "print(config['model']['variant'], 'ray' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["swin", "False"]


def test_store_failures_are_one_line(s3_server, unreachable_endpoint):
    with pytest.raises(BusnetError, match=f"cannot reach the S3 endpoint {unreachable_endpoint}"):
        load_checkpoint("s3://bucket/run/best")


def test_missing_bucket_is_named(s3_server):
    with pytest.raises(BusnetError, match="bucket 'no-such-bucket-.*' does not exist"):
        load_checkpoint(f"s3://no-such-bucket-{uuid.uuid4().hex[:12]}/run/best")


def test_ddp_wrapped_model_is_unwrapped(tiny_models, tmp_path, monkeypatch):
    import torch.distributed as dist

    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "lo")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        wrapped = torch.nn.parallel.DistributedDataParallel(tiny_models["swin"])
        directory = save_checkpoint(wrapped, tmp_path / "ckpt")
    finally:
        dist.destroy_process_group()
    loaded, config = load_checkpoint(str(directory))
    assert config["model"] == tiny_models["swin"].config
    _same_outputs(tiny_models["swin"], loaded)


@pytest.mark.parametrize(("old_variant", "variant"), [("hybrid", "hybrid"), ("swin", "swin_aaa")])
def test_checkpoints_from_before_the_network_options_load_as_the_network_they_were(tmp_path, old_variant, variant):
    """A version-1 record (no network_version; `swin` then meant Swin+AAA) rebuilds that network, weights and all."""
    torch.manual_seed(0)
    old_network = {"aaa_placement": "stage", "aaa_gate": "channel", "fusion": "bottleneck", "aaa_init": "open"}
    model = build_model("tiny", variant, **old_network).eval()
    directory = save_checkpoint(model, tmp_path / "old")
    path = directory / "config.json"
    config = json.loads(path.read_text())
    config["model"] = {"preset": "tiny", "variant": old_variant, "overrides": {}, "input_size": 64}
    path.write_text(json.dumps(config))
    loaded, config = load_checkpoint(str(directory))
    _same_outputs(model, loaded)
    assert config["model"] == {**model.config, "overrides": old_network}
    _edit_config(directory, network_version=4)
    with pytest.raises(ValueError, match=r"config\.json: cannot rebuild .*network_version 4"):
        load_checkpoint(str(directory))


def test_tampered_weights_are_refused(swin_checkpoint, tmp_path):
    directory = _copy(swin_checkpoint, tmp_path)
    weights = bytearray((directory / "model.safetensors").read_bytes())
    weights[-10] ^= 0x01  # one bit of one weight
    (directory / "model.safetensors").write_bytes(bytes(weights))
    with pytest.raises(ValueError, match=r"model\.safetensors: sha256 .* altered or corrupted"):
        load_checkpoint(str(directory))


def test_weights_of_another_model_are_refused(swin_checkpoint, tmp_path):
    directory = _copy(swin_checkpoint, tmp_path)
    _edit_config(directory, overrides={"head_widths": [32, 16]})
    with pytest.raises(ValueError, match=r"model\.safetensors does not fit .* shape mismatch\(es\).*head"):
        load_checkpoint(str(directory))
    _edit_config(directory, variant="mt_estan", overrides={})  # larger than the file: refused before it is built
    with pytest.raises(ValueError, match=r"it describes [\d,]+ weights, more than model\.safetensors"):
        load_checkpoint(str(directory))
    _edit_config(directory, preset="huge")
    with pytest.raises(ValueError, match=r"config\.json: cannot rebuild"):
        load_checkpoint(str(directory))


def test_incomplete_or_broken_checkpoints_are_refused(swin_checkpoint, tmp_path):
    directory = _copy(swin_checkpoint, tmp_path)
    (directory / "metrics.json").unlink()
    with pytest.raises(ValueError, match=r"metrics\.json: missing"):
        load_checkpoint(str(directory))
    shutil.copy(swin_checkpoint / "metrics.json", directory)
    (directory / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"config\.json: not valid JSON"):
        load_checkpoint(str(directory))
    (directory / "config.json").write_text(json.dumps({"format_version": 2}))
    with pytest.raises(ValueError, match=r"config\.json: format_version 2"):
        load_checkpoint(str(directory))
    with pytest.raises(ValueError, match="missing"):
        load_checkpoint(str(tmp_path / "nowhere"))


def test_save_refuses_bad_arguments(tiny_models, tmp_path):
    model = tiny_models["swin"]
    with pytest.raises(ValueError, match="input size"):
        save_checkpoint(model, tmp_path / "a", preprocessing=Preprocessing(size=96))
    with pytest.raises(ValueError, match="threshold"):
        save_checkpoint(model, tmp_path / "b", threshold=1.5)
    with pytest.raises(ValueError, match="publish_dir"):
        save_checkpoint(model, "s3://bucket/run")
    with pytest.raises(ValueError, match="build_model"):
        save_checkpoint(torch.nn.Linear(2, 2), tmp_path / "c")


def test_code_version_without_git(monkeypatch):
    monkeypatch.setenv("PATH", "")  # no git executable to be found
    version = code_version.__wrapped__()
    assert version["git_commit"] is None and version["git_dirty"] is None and version["busnet"]


def _publish_and_die(checkpoint, uri: str) -> None:
    """Publish `checkpoint` to `uri` in a child process that is killed half-way through the upload."""
    code = (
        "from tests.faults import die_mid_publish; die_mid_publish(); from jobs import storage; "
        f"storage.publish_dir({str(checkpoint)!r}, {uri!r}, keep=None)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == -9, done.stderr[-2000:]  # killed, not finished


@pytest.mark.parametrize("where", ["local", "s3"])
def test_a_read_during_a_publish_gets_the_old_complete_version(tiny_models, tmp_path, where, request, capsys):
    """Versioned checkpoints: a publish killed half-way leaves exactly what a reader meets during one.
    load_checkpoint, Serve's load_model and `busnet models list` all see the old version, whole;
    the next publish becomes current and the first stays listed."""
    from jobs import storage
    from jobs.cli import main
    from serve.predictor import load_model

    root = request.getfixturevalue("s3_bucket") if where == "s3" else str(tmp_path / "store")
    uri = storage.join(root, "run/best")
    old = save_checkpoint(tiny_models["swin"], tmp_path / "old", metrics={"epoch": 1, "val_auc": 0.5})
    new = save_checkpoint(tiny_models["hybrid"], tmp_path / "new", metrics={"epoch": 2, "val_auc": 0.75})
    old_sha = json.loads((old / "config.json").read_text())["weights_sha256"]
    new_sha = json.loads((new / "config.json").read_text())["weights_sha256"]
    first = storage.publish_dir(old, uri, keep=None)

    _publish_and_die(new, uri)
    assert [done for _, done in storage.versions(uri)].count(False) == 1  # half a model is there...
    _, config = load_checkpoint(uri)
    assert config["weights_sha256"] == old_sha  # ...and no reader sees it
    assert load_model(uri, load_checkpoint, torch.device("cpu"), "fp32").config["weights_sha256"] == old_sha
    assert main(["models", "list", "--checkpoint", uri]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert listing[1].split()[:2] == ["*", first.rsplit("/", 1)[1]] and "0.5000" in listing[1]
    assert "(incomplete)" in listing[2]

    second = storage.publish_dir(new, uri, keep=None)
    assert load_checkpoint(uri)[1]["weights_sha256"] == new_sha
    assert main(["models", "list", "--checkpoint", uri, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)  # one object, nothing else on stdout
    rows = summary["versions"]
    assert summary["current"] == second.rsplit("/", 1)[1]
    assert [(r["uri"], r["current"], (r["metrics"] or {}).get("val_auc")) for r in rows] == [
        (first, False, 0.5),
        (rows[1]["uri"], False, None),  # the killed upload stays until its lease is over: it could be a live writer's
        (second, True, 0.75),
    ]
    assert load_checkpoint(first)[1]["weights_sha256"] == old_sha  # immutable: still loadable by its own URI


def test_models_list_of_a_checkpoint_from_before_versions(swin_checkpoint, tmp_path, capsys):
    from jobs.cli import main

    flat = _copy(swin_checkpoint, tmp_path)
    (flat / "_COMPLETE").write_text("")
    assert main(["models", "list", "--checkpoint", str(flat)]) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[:2] == ["*", "-"]
    assert main(["models", "list", "--checkpoint", str(tmp_path / "nothing")]) == 1
    assert "no checkpoint published here" in capsys.readouterr().err


def test_a_model_card_is_written_beside_the_weights(tiny_models, tmp_path):
    """Data, recipe and weights by sha256, from the checkpoint's own records; synthetic-only data said out loud."""
    from models.model_card import data_summary

    lineage = {
        "dataset": {
            "content_hash": "c0ffee",
            "sources": {"synthetic": 40},
            "splits": {"train": {"images": 28}, "val": {"images": 4}},
        },
        "hyperparameters": {"preset": "tiny", "recipe": "paper", "lr": 1e-5, "select": "val_loss", "fold": 2},
        "pretrained": {"Swin": {"name": "timm/swinv2_tiny_window8_256.ms_in1k", "sha256": "ab" * 32}},
    }
    metrics = {"epoch": 3, "val_auc": 0.75, "val_loss": float("nan")}
    directory = save_checkpoint(tiny_models["swin"], tmp_path / "c", metrics=metrics, lineage=lineage)
    card = (directory / "model_card.md").read_text()
    config = json.loads((directory / "config.json").read_text())
    assert f"model.safetensors sha256 `{config['weights_sha256']}`" in card
    assert f"Swin: timm/swinv2_tiny_window8_256.ms_in1k sha256 `{'ab' * 32}`" in card
    assert "Trained on synthetic images only" in card and "content hash: `c0ffee`" in card
    assert "split (images): train 28, val 4; fold 2 held out" in card and "- recipe: paper" in card
    assert "chosen at epoch 3 on validation: val_auc 0.75" in card and "test: not measured" in card
    assert data_summary(lineage)["synthetic_only"] and not data_summary({})["synthetic_only"]
    save_checkpoint(tiny_models["swin"], tmp_path / "d")
    assert "randomly initialised" in (tmp_path / "d" / "model_card.md").read_text()


def test_loading_a_checkpoint_does_not_say_random_init(tmp_path, caplog):
    """Its weights replace every tensor: "randomly initialised" would be false."""
    import logging

    directory = save_checkpoint(build_model("small", "mt_estan", input_size=64), tmp_path / "c")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="models"):
        load_checkpoint(str(directory))
    assert "randomly initialised" not in caplog.text
