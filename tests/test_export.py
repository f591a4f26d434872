"""`busnet export --format onnx`: ONNX Runtime gives PyTorch's numbers on real BUSI images.

Parity is checked through the same preprocessing and mask rule as serving (`models.preprocess`,
`models.inference`), on seeded untrained tiny checkpoints: what matters is that the exported graph
computes what the PyTorch network computes, for a batch size other than the export's.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from jobs import cli

TOLERANCE = 1e-5  # float32 sums in another order; measured differences are below 2e-7


def _checkpoint(directory, variant: str, backbone: str | None = None) -> str:
    import torch

    from models import build_model, save_checkpoint

    torch.manual_seed(0)
    save_checkpoint(build_model("tiny", variant, backbone=backbone), directory, threshold=0.4)
    return str(directory)


@pytest.mark.parametrize(("variant", "backbone"), [("hybrid", None), ("baseline", "resnet50")])
def test_onnx_runtime_equals_pytorch_on_real_images(variant, backbone, busi_sample, tmp_path, one_thread):
    import onnx
    import onnxruntime

    from models import load_checkpoint
    from models.inference import binarize, predict
    from models.preprocess import Preprocessing, decode_image, preprocess_image

    checkpoint = _checkpoint(tmp_path / "ckpt", variant, backbone)
    out = tmp_path / "exported" / "model.onnx"  # --out is a folder
    assert cli.main(["export", "--checkpoint", checkpoint, "--format", "onnx", "--out", str(out.parent)]) == 0

    model, config = load_checkpoint(checkpoint)
    preprocessing = Preprocessing.from_dict(config["preprocessing"])
    files = sorted(busi_sample.rglob("*).png"))[:3]
    images = np.stack([preprocess_image(decode_image(path.read_bytes()), preprocessing) for path in files])
    want = predict(model, images, "cpu")

    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = dict(zip((o.name for o in session.get_outputs()), session.run(None, {"image": images})))
    sigmoid = lambda x: 1.0 / (1.0 + np.exp(-x))  # noqa: E731
    np.testing.assert_allclose(sigmoid(got["logits"]), want.probs, atol=TOLERANCE)
    if variant == "hybrid":
        mask_probs = sigmoid(got["mask_logits"][:, 0])
        np.testing.assert_allclose(mask_probs, want.mask_probs, atol=TOLERANCE)
        near_cut = np.abs(want.mask_probs - 0.5) < TOLERANCE  # the only pixels allowed to flip
        assert np.array_equal(binarize(mask_probs)[~near_cut], binarize(want.mask_probs)[~near_cut])
    else:
        assert list(got) == ["logits"]

    metadata = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    stored = json.loads(metadata["busnet_config"])
    assert stored["preprocessing"] == config["preprocessing"] and stored["threshold"] == 0.4


def test_export_refuses_an_existing_file_and_names_an_op_onnx_lacks(tmp_path, capsys):
    existing = tmp_path / "mine" / "model.onnx"
    existing.parent.mkdir()
    existing.write_bytes(b"not busnet's")
    checkpoint = _checkpoint(tmp_path / "vgg", "baseline", "vgg16")
    assert cli.main(["export", "--checkpoint", checkpoint, "--out", str(existing.parent)]) == 1
    assert "already exists" in capsys.readouterr().err and existing.read_bytes() == b"not busnet's"
    assert cli.main(["export", "--checkpoint", checkpoint, "--out", str(existing)]) == 1
    assert "is a file; give a folder" in capsys.readouterr().err

    assert cli.main(["export", "--checkpoint", checkpoint, "--out", str(tmp_path / "vgg-export")]) == 1
    error = capsys.readouterr().err
    assert "tiny/vgg16" in error and "does not export to ONNX" in error and "adaptive_avg_pool2d" in error
    assert not (tmp_path / "vgg-export" / "model.onnx").exists()
