"""Hybrid-MT-ESTAN: every preset and variant builds with the contracted outputs; bad options fail clearly.

`tiny` runs forward + backward for real; `paper`/`small` variants are built and run on PyTorch's meta
device (same constructors and wiring, no memory); the paper hybrid is also built for real once and
runs one forward pass on a 1x3x256x256 image.
"""

from __future__ import annotations

import json
import logging

import pytest
import torch

from models import summary
from models.network import PRESETS, VARIANTS, build_model
from models.presets import VARIANT_PARTS
from models.swin_aaa import window_tiling_problem

BIG_PRESETS = ("paper", "small")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def meta_model():
    """Builds each (preset, variant) once on the meta device; returns a getter."""
    built = {}

    def get(preset: str, variant: str):
        if (preset, variant) not in built:
            with torch.device("meta"):
                built[preset, variant] = build_model(preset, variant)
        return built[preset, variant]

    return get


@pytest.fixture(scope="module")
def paper_hybrid():
    """The paper preset, materialised on the CPU once for this module."""
    return build_model("paper", "hybrid")


def check_outputs(model, outputs, batch: int) -> None:
    size = model.input_size
    assert set(outputs) == {"logits", "mask_logits"}
    assert outputs["logits"].shape == (batch,)
    if model.has_segmentation:
        assert outputs["mask_logits"].shape == (batch, 1, size, size)
    else:
        assert outputs["mask_logits"] is None


@pytest.mark.parametrize("variant", VARIANTS)
def test_tiny_forward_backward_reaches_every_parameter(variant):
    torch.manual_seed(0)
    model = build_model("tiny", variant)
    assert model.input_size == 64 and model.has_segmentation == VARIANT_PARTS[variant].cnn
    outputs = model(torch.randn(4, 3, 64, 64))
    check_outputs(model, outputs, batch=4)
    loss = outputs["logits"].square().mean()
    if outputs["mask_logits"] is not None:
        loss = loss + outputs["mask_logits"].sigmoid().mean()
    loss.backward()
    # DDP needs every parameter in the graph; a finite gradient also shows nothing is broken.
    no_grad = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.isfinite().all()]
    assert not no_grad, f"parameters without a finite gradient: {no_grad[:5]}"


def test_tiny_accepts_128_pixels_and_is_deterministic_in_eval():
    model = build_model("tiny", "hybrid", input_size=128).eval()
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        first, second = model(x), model(x)
    check_outputs(model, first, batch=2)
    assert torch.equal(first["logits"], second["logits"])
    assert torch.equal(first["mask_logits"], second["mask_logits"])


@pytest.mark.parametrize("preset", BIG_PRESETS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_big_presets_build_and_wire_up(meta_model, preset, variant):
    model = meta_model(preset, variant)
    with torch.device("meta"):
        outputs = model(torch.empty(2, 3, 256, 256))
    check_outputs(model, outputs, batch=2)
    parts = VARIANT_PARTS[variant]
    assert (model.cnn is not None) == parts.cnn and (model.swin is not None) == parts.swin


@pytest.mark.parametrize("preset", ["tiny", *BIG_PRESETS])
def test_encoders_honour_their_channels_and_reductions(meta_model, preset):
    """Like timm's feature_info: each encoder's maps have its declared channels at its declared reductions."""
    model = meta_model(preset, "hybrid")
    with torch.device("meta"):
        size = model.input_size
        x = torch.empty(1, 3, size, size)
        resnet, estan = model.cnn.resnet, model.cnn.estan
        stages, taps = resnet(x)
        checks = [
            (stages, resnet.stage_channels, resnet.reductions),
            (taps, resnet.tap_channels, resnet.reductions),
            (estan(x), estan.out_channels, estan.reductions),
            (model.swin(x), model.swin.out_channels, model.swin.reductions),
        ]
    for maps, channels, reductions in checks:
        assert [tuple(m.shape[1:]) for m in maps] == [(c, size // r, size // r) for c, r in zip(channels, reductions)]


def test_paper_preset_runs_one_forward_pass_on_cpu(paper_hybrid):
    assert paper_hybrid.config == {
        "preset": "paper",
        "variant": "hybrid",
        "overrides": {},
        "input_size": 256,
        "network_version": 3,
    }
    paper_hybrid.eval()
    with torch.no_grad():
        outputs = paper_hybrid(torch.randn(1, 3, 256, 256))
    check_outputs(paper_hybrid, outputs, batch=1)
    assert outputs["logits"].isfinite().all() and outputs["mask_logits"].isfinite().all()


def test_paper_widths_are_the_authors(meta_model):
    model = meta_model("paper", "hybrid")
    assert model.cnn.estan.out_channels == (32, 64, 128, 256, 512)
    assert model.cnn.resnet.stage_channels == (64, 256, 512, 1024, 2048)
    assert model.cnn.resnet.tap_channels == (64, 64, 128, 256, 512)
    assert model.swin.out_channels == (128, 256, 512, 1024)
    # Classifier input: the authors' pooled Up-Block-1 input (2048) + the pooled Swin+AAA map (1024).
    assert model.head.mlp[0].in_features == 2048 + 1024
    assert [m.out_features for m in model.head.mlp if isinstance(m, torch.nn.Linear)] == [512, 128, 1]


def test_summary_prints_every_variant_per_component(capsys, paper_hybrid):
    assert summary.main(["--preset", "paper"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "aaa_placement=block_pair aaa_gate=channel fusion=multiscale" in lines[0]
    assert lines[1].split() == ["component", *VARIANTS]
    table = {line[:12].strip(): line[12:].split() for line in lines[2:]}
    assert list(table) == ["ResNet", "ESTAN", "Swin", "AAA", "decoder", "heads", "total", "AAA blocks"]
    counts = {
        name: {variant: 0 if cell == "-" else int(cell.replace(",", "")) for variant, cell in zip(VARIANTS, cells)}
        for name, cells in table.items()
    }
    assert counts["total"]["hybrid"] == sum(p.numel() for p in paper_hybrid.parameters())
    parts = ("ResNet", "ESTAN", "Swin", "AAA", "decoder", "heads")
    for variant in VARIANTS:
        assert sum(counts[name][variant] for name in parts) == counts["total"][variant]
    assert counts["ResNet"]["hybrid"] == 23_508_032  # timm resnet50 without its classifier
    assert counts["AAA"]["swin"] == counts["AAA"]["hybrid_noaaa"] == 0
    assert counts["AAA blocks"] == {
        "hybrid": 12,
        "hybrid_noaaa": 0,
        "mt_estan": 0,
        "swin": 0,
        "swin_aaa": 12,
        "hybrid_sgate": 12,
    }
    # The parameter-matched control: spatial gates add 48 k parameters, per-channel ones 90.8 M.
    assert 0 < counts["total"]["hybrid_sgate"] - counts["total"]["hybrid_noaaa"] < 100_000
    assert counts["AAA"]["hybrid"] == 90_752_640


def test_summary_takes_the_architecture_options(capsys):
    """The busnet-before-issue-13 options give that network's parameter counts back."""
    old_options = ["--aaa-placement", "stage", "--fusion", "bottleneck"]
    assert summary.main(["--preset", "paper", "--variant", "hybrid", *old_options]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split() == ["component", "hybrid"]
    assert lines[-2].split() == ["total", "181,626,170"] and lines[-1].split() == ["AAA", "blocks", "4"]


def test_config_is_json_and_rebuilds_the_same_network():
    model = build_model("tiny", "hybrid_noaaa", estan_widths=(4, 8, 16, 32, 64), dropout=0.25)
    config = json.loads(json.dumps(model.config))
    assert config["overrides"] == {"estan_widths": [4, 8, 16, 32, 64], "dropout": 0.25}
    again = build_model(config["preset"], config["variant"], **config["overrides"])
    assert {k: v.shape for k, v in again.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}


def test_random_init_is_said_out_loud(caplog):
    """A warning where timm publishes weights for the encoder (paper, small), a note for tiny."""
    with caplog.at_level(logging.INFO, logger="models.network"):
        with torch.device("meta"):
            build_model("small", "mt_estan")
        build_model("tiny", "swin")
    said = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert (logging.WARNING, "ResNet of preset 'small' is randomly initialised (pretrained none)") in said
    assert (logging.INFO, "Swin of preset 'tiny' is randomly initialised (pretrained none)") in said


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"preset": "huge"}, "unknown preset 'huge'"),
        ({"variant": "unet"}, "unknown variant 'unet'"),
        ({"input_sise": 64}, "unknown override(s) input_sise"),
        ({"input_size": "64"}, "override input_size='64'"),
        ({"estan_widths": (8, 16)}, "estan_widths needs 5 positive values"),
        ({"input_size": 192}, "Swin stage 4"),  # 6x6 tokens, 4x4 windows
        ({"swin_window": 3}, "Swin stage 1"),
        ({"input_size": 160}, "not a multiple of 64"),
        ({"variant": "mt_estan", "input_size": 80}, "not a multiple of 32"),
        ({"aaa_init": "closed"}, "aaa_init='closed': choose one of identity, open"),
        ({"resnet_layers": [0, 1, 1, 1]}, "resnet_layers needs 4 positive values, got [0, 1, 1, 1]"),
        ({"swin_embed_dim": 10, "swin_heads": (3, 3, 3, 3)}, "Swin stage 1: 10 channels do not split into 3 heads"),
        ({"dropout": 1.0}, "dropout must be in [0, 1)"),
        ({"aaa_placement": "block"}, "aaa_placement='block': choose one of block_pair, stage"),
        ({"aaa_gate": "pixel"}, "aaa_gate='pixel': choose one of channel, spatial"),
        ({"fusion": "late"}, "fusion='late': choose one of multiscale, bottleneck"),
        ({"variant": "swin", "input_size": 96}, "Swin stage 3"),  # plain Swin: 32 divides 96, 4 does not tile 6
        ({"resnet": "vit_base_patch16_224"}, "resnet='vit_base_patch16_224' is not a timm ResNet"),
        (
            {"variant": "swin", "swin": "swinv2_cr_tiny_224"},
            "swin='swinv2_cr_tiny_224' is not a timm Swin Transformer V2",
        ),
        ({"variant": "mt_estan", "resnet": "resnet18", "resnet_channels": None}, "need a bottleneck ResNet"),
    ],
)
def test_bad_options_fail_at_build_time(kwargs, message):
    with pytest.raises(ValueError) as error:
        build_model(**{"preset": "tiny", **kwargs})
    assert message in str(error.value)


def test_cnn_only_variant_takes_sizes_the_swin_cannot_tile():
    assert window_tiling_problem(96, 4) is not None
    model = build_model("tiny", "mt_estan", input_size=96)
    with torch.no_grad():
        check_outputs(model, model(torch.randn(1, 3, 96, 96)), batch=1)


def test_wrong_input_shape_is_refused():
    model = build_model("tiny", "swin")
    with pytest.raises(ValueError, match=r"expected input \[B, 3, 64, 64\]"):
        model(torch.randn(1, 3, 128, 128))


def test_presets_are_the_documented_three():
    assert list(PRESETS) == ["tiny", "small", "paper"]  # smallest first, as the CLI lists them
    assert VARIANTS == ("hybrid", "hybrid_noaaa", "mt_estan", "swin", "swin_aaa", "hybrid_sgate")
