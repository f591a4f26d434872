"""Table 2 baselines (models.baseline): each builds, learns, loads timm weight files, round-trips and serves."""

from __future__ import annotations

import io

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save

from models import build_model, load_checkpoint, save_checkpoint
from models.baseline import TINY_ARCH
from models.presets import BASELINE, BASELINES, NETWORK_VERSION
from models.pretrained import WeightFile, write_folder


@pytest.mark.parametrize("backbone", BASELINES)
def test_every_baseline_learns_at_a_small_input_on_cpu(one_thread, backbone):
    torch.manual_seed(0)
    model = build_model("tiny", BASELINE, backbone=backbone)
    assert model.input_size == 64 and not model.has_segmentation
    spec = {"preset": "tiny", "variant": BASELINE, "backbone": backbone, "overrides": {}, "input_size": 64}
    spec["network_version"] = NETWORK_VERSION  # what checkpoints read to rebuild it as it is
    assert model.config == spec
    out = model(torch.randn(2, 3, 64, 64))
    assert out["logits"].shape == (2,) and out["mask_logits"] is None
    torch.nn.functional.binary_cross_entropy_with_logits(out["logits"], torch.tensor([0.0, 1.0])).backward()
    first = next(p for p in model.backbone.parameters() if p.requires_grad)
    assert first.grad is not None and first.grad.abs().sum() > 0  # the loss reaches the backbone's stem
    with pytest.raises(ValueError, match=r"expected input \[B, 3, 64, 64\]"):
        model(torch.randn(1, 3, 96, 96))


def test_the_paper_preset_is_timms_architecture_unchanged():
    model = build_model("paper", BASELINE, backbone="densenet121")
    reference = timm.create_model("densenet121", num_classes=0)
    assert model.input_size == 256
    assert {k: v.shape for k, v in model.backbone.state_dict().items()} == {
        k: v.shape for k, v in reference.state_dict().items()
    }


@pytest.mark.parametrize("backbone", ["densenet121", "vit_base_patch16_224", "swinv2_base_window8_256"])
def test_a_timm_weight_file_loads_without_its_classifier(tmp_path, backbone):
    """A timm checkpoint (1000-class head included) of the same architecture fills the whole body."""
    family = timm.models.model_entrypoint(backbone).__module__.rsplit(".", 1)[-1]
    kwargs = dict(TINY_ARCH[family], **({"img_size": 64} if family != "densenet" else {}))
    source = timm.create_model(backbone, **kwargs)
    model = build_model("tiny", BASELINE, backbone=backbone, pretrained=_folder(tmp_path, backbone, source))
    expected = source.state_dict()
    for key, value in model.backbone.state_dict().items():
        assert torch.equal(value, expected[key]), key


def test_a_weight_file_of_another_architecture_is_refused_with_its_name(tmp_path):
    folder = _folder(tmp_path, "densenet121", timm.create_model("resnet18"), name="timm/resnet18.a1_in1k")
    with pytest.raises(ValueError, match=r"resnet18\.a1_in1k\.safetensors do not fit the densenet121"):
        build_model("tiny", BASELINE, backbone="densenet121", pretrained=folder)


def _folder(directory, arch: str, source: torch.nn.Module, name: str = "") -> str:
    """A weights folder (as busnet weights fetch writes one) holding `source`'s weights as `arch`'s."""
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    write_folder(str(directory), [(WeightFile(arch, name or f"local/{arch}", "generated"), save(state))])
    return str(directory)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"variant": BASELINE}, "needs backbone=<timm model name>"),
        ({"variant": BASELINE, "backbone": "no_such_net"}, "needs backbone=<timm model name>"),
        ({"variant": BASELINE, "backbone": "resnet50", "dropout": 0.1}, "only the input_size and baseline_head"),
        ({"variant": BASELINE, "backbone": "resnet50", "baseline_head": "mlp"}, "baseline_head='mlp': choose one"),
        ({"variant": BASELINE, "backbone": "resnet50", "input_size": 8}, "integer >= 32"),
        ({"variant": "hybrid", "backbone": "resnet50"}, "an option of variant 'baseline'"),
    ],
)
def test_bad_baseline_options_are_one_clear_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_model("tiny", **kwargs)


def test_checkpoint_round_trip_rebuilds_the_backbone_and_serves_without_a_mask(tmp_path):
    from serve.predictor import answer as answer_for
    from serve.predictor import forward_batch, load_model, prepare

    torch.manual_seed(0)
    model = build_model("tiny", BASELINE, backbone="resnet50", input_size=96).eval()
    directory = save_checkpoint(model, tmp_path / "baseline", threshold=0.4)
    restored, config = load_checkpoint(directory)
    assert config["model"]["backbone"] == "resnet50" and restored.input_size == 96
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        assert torch.equal(model(x)["logits"], restored(x)["logits"])

    loaded = load_model(str(directory), load_checkpoint, torch.device("cpu"))
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (120, 90), dtype=np.uint8)).save(buffer, format="PNG")
    image = prepare(buffer.getvalue(), loaded)
    (outputs,) = forward_batch([(loaded, image)])
    answer = answer_for(loaded, outputs, image)
    assert answer["mask_png"] is None and answer["lesion"] == {"area_px": None, "bbox": None}
    assert 0.0 <= answer["malignant_probability"] <= 1.0 and answer["threshold"] == pytest.approx(0.4)


def test_the_authors_baseline_head_is_an_option_that_checkpoints_keep(tmp_path):
    """GAP -> Dense 512 ReLU -> Dropout 0.3 -> Dense 64 ReLU -> Dense 1, rebuilt from config.json."""
    model = build_model("tiny", BASELINE, backbone="resnet50", baseline_head="busbench")
    layers = list(model.head)
    assert [(m.in_features, m.out_features) for m in layers if isinstance(m, torch.nn.Linear)] == [
        (model.backbone.num_features, 512),
        (512, 64),
        (64, 1),
    ]
    assert [m.p for m in layers if isinstance(m, torch.nn.Dropout)] == [0.3]
    assert model(torch.randn(2, 3, 64, 64))["logits"].shape == (2,)
    loaded, config = load_checkpoint(save_checkpoint(model, tmp_path / "c"))
    assert config["model"]["overrides"] == {"baseline_head": "busbench"}
    assert isinstance(loaded.head, torch.nn.Sequential)
