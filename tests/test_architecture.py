"""The network is the one the paper and the authors' code describe: tests that fail on a wrong wiring.

Expected values are written out here from the sources (the authors' MT-ESTAN Keras code, the paper's
eq. 1-7 and Table 3), not read back from the code under test. `paper` networks are built on the meta
device (shapes only); wiring is checked on `tiny` with a real forward pass and forward hooks.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from models.estan import EstanBlock
from models.network import VARIANTS, build_model
from models.swin_aaa import AnatomyAwareAttention

pytestmark = pytest.mark.usefixtures("one_thread")

# The authors' ESTAN blocks 1-5: square branch, row-column branch, fuse kernel, BatchNorm (REFERENCE.md).
AUTHORS_ESTAN = (
    ([(1, 1), (3, 3)], [(1, 15), (15, 1), (3, 3)], (5, 5), True),
    ([(3, 3), (3, 3)], [(1, 13), (13, 1), (3, 3)], (5, 5), True),
    ([(3, 3), (3, 3)], [(1, 11), (11, 1), (1, 1)], (3, 3), True),
    ([(3, 3), (3, 3)], [(1, 9), (9, 1), (3, 3)], (1, 1), True),
    ([(3, 3), (3, 3)], [(3, 7), (7, 3), (3, 3)], (1, 1), False),
)
# Table 3's rows and the one extra variant: does it hold AAA blocks? (swin = "Swin Trans.", plain)
HAS_AAA = {
    "hybrid": True,
    "hybrid_noaaa": False,
    "mt_estan": False,
    "swin": False,
    "swin_aaa": True,
    "hybrid_sgate": True,
}
# swinv2_base depths (2, 2, 18, 2): eq. 5 after each W-MSA/SW-MSA pair = the odd-indexed blocks.
PAPER_PAIRS = ((0, 1), (1, 1), *((2, block) for block in range(1, 18, 2)), (3, 1))


@pytest.fixture(scope="module")
def paper():
    """Builds (variant, overrides) of the paper preset once on the meta device."""
    built = {}

    def get(variant: str = "hybrid", **overrides):
        key = (variant, tuple(sorted(overrides.items())))
        if key not in built:
            with torch.device("meta"):
                built[key] = build_model("paper", variant, **overrides)
        return built[key]

    return get


def aaa_blocks(model: nn.Module) -> list[AnatomyAwareAttention]:
    return [module for module in model.modules() if isinstance(module, AnatomyAwareAttention)]


def kernels(module: nn.Module) -> list[tuple[int, int]]:
    return [tuple(conv.kernel_size) for conv in module.modules() if isinstance(conv, nn.Conv2d)]


def test_the_swin_variant_has_no_aaa_module(paper):
    model = paper("swin")
    assert aaa_blocks(model) == [] and model.cnn is None and model.decoder is None
    assert model.head.mlp[0].in_features == 1024  # the pooled last Swin V2-B stage, nothing else


@pytest.mark.parametrize("variant", VARIANTS)
def test_which_variants_hold_aaa_and_how_many(paper, variant):
    model = paper(variant)
    expected = len(PAPER_PAIRS) if HAS_AAA[variant] else 0
    assert len(aaa_blocks(model)) == expected
    if expected:
        assert model.swin.aaa_positions == PAPER_PAIRS
        assert len(aaa_blocks(paper(variant, aaa_placement="stage"))) == 4


def test_aaa_acts_after_the_shifted_window_block_of_each_pair(paper):
    """Eq. 5: y = M(f^{l+1}), the output of the SW-MSA block; timm shifts odd blocks where the map exceeds a window."""
    swin = paper("hybrid").swin
    for stage, block in swin.aaa_positions:
        shift = swin.backbone.layers[stage].blocks[block].shift_size
        assert block % 2 == 1 and (shift == (4, 4) or stage == 3)  # stage 4: 8x8 tokens = one 8x8 window


def test_a_stage_of_odd_depth_ends_with_its_own_aaa_block():
    model = build_model("tiny", "swin_aaa", swin_depths=(2, 3, 2, 1))
    assert model.swin.aaa_positions == ((0, 1), (1, 1), (1, 2), (2, 1), (3, 0))
    assert [block.up.out_channels for block in aaa_blocks(model)] == [16, 32, 32, 64, 128]


def test_aaa_gates_channel_wise_or_with_one_spatial_map():
    torch.manual_seed(0)
    y = torch.rand(2, 8, 8, 8) + 0.5  # positive: the gate is O / y
    channel, spatial = AnatomyAwareAttention(8, 8), AnatomyAwareAttention(8, 1)
    assert kernels(channel.row_col) == [(9, 1), (1, 9)] and tuple(channel.up.kernel_size) == (2, 2)
    with torch.no_grad():
        gate_c, gate_s = channel(y) / y, spatial(y) / y
    assert not torch.allclose(gate_c[:, :1].expand_as(gate_c), gate_c)  # a gate per channel
    assert torch.allclose(gate_s[:, :1].expand_as(gate_s), gate_s)  # one map for every channel
    assert ((gate_s > 0) & (gate_s < 1)).all()


@pytest.mark.parametrize("block", range(5))
def test_estan_kernel_sizes_are_the_authors(paper, block):
    square, row_col, fuse, batch_norm = AUTHORS_ESTAN[block]
    estan: EstanBlock = paper("mt_estan").cnn.estan.blocks[block]
    assert kernels(estan.square) == square
    assert kernels(estan.row_col) == row_col
    assert kernels(estan.fuse) == [fuse]
    assert any(isinstance(m, nn.BatchNorm2d) for m in estan.modules()) == batch_norm


def test_up_blocks_have_the_authors_widths_and_kernels(paper):
    blocks = paper("mt_estan").decoder.up_blocks
    assert [b.reduce[0].out_channels for b in blocks] == [256, 128, 64, 32]
    assert [kernels(b.fuse) for b in blocks] == [[(1, 1)], [(1, 1)], [(1, 1)], [(5, 5)]]
    assert [kernels(b.reduce) + kernels(b.out) for b in blocks] == [[(3, 3), (3, 3)]] * 4


@pytest.mark.parametrize("fusion", ["multiscale", "bottleneck"])
def test_up_block_skips_are_estan_blocks_4_to_1_and_swin_joins_where_fusion_says(fusion):
    """Each Up Block gets its level's ESTAN block and ResNet tap; Swin stage i joins at its resolution or not."""
    torch.manual_seed(0)
    model = build_model("tiny", "hybrid", fusion=fusion).eval()
    seen: dict[str, object] = {}

    def keep(name):
        return lambda module, args, output: seen.__setitem__(name, (args, output))

    for index, block in enumerate(model.cnn.estan.blocks):
        block.register_forward_hook(keep(f"estan{index + 1}"))
    for index, block in enumerate(model.decoder.up_blocks):
        block.register_forward_hook(keep(f"up{index + 1}"))
    model.cnn.resnet.register_forward_hook(keep("resnet"))
    model.swin.register_forward_hook(keep("swin"))
    model.decoder.bottleneck_up.register_forward_hook(keep("bottleneck"))
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 64))
    stages, taps = seen["resnet"][1]
    swin_maps = seen["swin"][1]
    for up, level in zip(range(1, 5), (3, 2, 1, 0)):  # Up Block 1 works at 1/16 = level 3
        (joined, tap, skip), _ = seen[f"up{up}"]
        assert skip is seen[f"estan{level + 1}"][1]  # Up Block k <- ESTAN block 5 - k
        assert tap is taps[level]
        swin_stage = level - 1  # Swin stage reductions 4..32 are ResNet levels 1..4
        joins_swin = fusion == "multiscale" and swin_stage >= 0
        authors = 2 * model.cnn.estan.out_channels[-1] if up == 1 else model.cnn.estan.out_channels[level + 1]
        expected = authors + model.cnn.resnet.stage_channels[level]
        assert joined.shape[1] == expected + (model.swin.out_channels[swin_stage] if joins_swin else 0)
        assert torch.equal(joined[:, authors:expected], stages[level])
        if joins_swin:
            assert torch.equal(joined[:, expected:], swin_maps[swin_stage])
    (bottom,), _ = seen["bottleneck"]
    assert torch.equal(bottom[:, -model.swin.out_channels[-1] :], swin_maps[-1])  # both fusions join 1/32
    assert model.decoder.extra_levels == ((1, 2, 3, 4) if fusion == "multiscale" else (4,))


@pytest.mark.parametrize(
    ("variant", "pooled"),
    [
        ("hybrid", 2048 + 1024),  # the authors' Up-Block-1 input (1024 + 1024) + the last Swin map
        ("hybrid_noaaa", 2048 + 1024),
        ("mt_estan", 2048),  # exactly the authors' head
        ("swin", 1024),
        ("swin_aaa", 1024),
    ],
)
def test_classification_head_widths(paper, variant, pooled):
    mlp = paper(variant).head.mlp
    dense = [(m.in_features, m.out_features) for m in mlp if isinstance(m, nn.Linear)]
    assert dense == [(pooled, 512), (512, 128), (128, 1)]
    assert [type(m).__name__ for m in mlp] == ["Linear", "ReLU", "Dropout", "Linear", "ReLU", "Linear"]
    assert mlp[2].p == 0.5


@pytest.mark.parametrize(("init", "gate"), [("identity", 1.0), ("open", torch.sigmoid(torch.tensor(2.0)).item())])
def test_aaa_gates_start_as_the_identity_or_nearly_open(init, gate):
    """identity: every AAA block passes the Swin stream unchanged before training (a pretrained Swin sees
    its own features); open: eq. 7 with bias +2, 0.88 per block."""
    torch.manual_seed(0)
    model = build_model("tiny", "swin_aaa", aaa_init=init).eval()
    y = torch.rand(2, 16, 16, 16) + 0.5
    with torch.no_grad():
        ratio = model.swin.attention[0](y) / y
    assert torch.allclose(ratio, torch.full_like(ratio, gate), atol=1e-6)
