"""Hybrid-MT-ESTAN and its ablation variants, built from a preset: `build_model(preset, variant, **overrides)`.

Variants (models.presets.VARIANT_PARTS), named by what they are: `hybrid` (MT-ESTAN + Swin V2 with
AAA blocks: Table 3 "Ours"), `hybrid_noaaa` ("MT-ESTAN + Swin Trans."), `mt_estan` ("MT-ESTAN", the
authors' network exactly), `swin` (a plain Swin V2 classifier: "Swin Trans."), `swin_aaa` (Swin V2
with AAA blocks as a classifier; not in the paper). The classification-only variants pool the last
Swin map into the same dense head, so Table 3's rows differ only by their encoders; their
`mask_logits` is None. The input is expected normalised already (models.preprocess).

Fusion of the two encoders (the paper does not publish it), preset field `fusion`:
- "multiscale" (default): Swin stage i joins the decoder at its resolution (1/4, 1/8, 1/16: the Up
  Blocks' concatenation with the ResNet stage output of that size; 1/32: the bottleneck). The paper's
  conclusion reads "Hybrid-MT-ESTAN ... alleviates the lack of global contextual information in the
  low-level layers of CNN-based approaches" and "exploits multi-scale local patterns and global
  long-range dependencies provided by MT-ESTAN and AAA Transformer blocks": the Swin's context has
  to reach the high-resolution layers, and every stage's AAA output is used. Section 2.3's "four
  skip connections from the MT-ESTAN encoder, i.e., ... from each MT-ESTAN block 1 to 4" stays as
  written: the Swin maps join beside the ResNet maps, not in place of an ESTAN skip.
- "bottleneck": only the last Swin map (1/32) joins, at the bottleneck beside ResNet layer4's output
  and its first-BN tap (busnet before issue 13): every MT-ESTAN connection as the authors wrote it.
In both, the last Swin map's global average pool is also concatenated to the classifier's input
beside the authors' pooled Up-Block-1 input: the transformer is there for global context, which
matters most to classification, the primary task.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
from torch import nn

from models.cnn_encoder import MTEstanEncoder, ResNetTaps
from models.decoder import MTEstanDecoder
from models.estan import EstanEncoder
from models.heads import ClassificationHead
from models.presets import BASELINE, NETWORK_VERSION, PRESETS, VARIANT_PARTS, VARIANTS, NetworkPreset, resolve_preset
from models.pretrained import CHECKPOINT, IMAGENET, WeightFile, is_none, load_pretrained, locate, no_published_weights
from models.swin_aaa import SwinAAAEncoder

log = logging.getLogger(__name__)

PRETRAINED_PRESETS = ("paper", "small")  # timm publishes weights for their encoder architectures
SWIN_HEAD = ("head.", "norm.")  # timm's classifier and the final norm before it: the encoder has neither

__all__ = ["PRESETS", "VARIANTS", "HybridMTEstan", "build_model"]


class HybridMTEstan(nn.Module):
    """MT-ESTAN encoder + Swin V2 (+AAA) encoder -> MT-ESTAN decoder (masks) and dense head (malignancy)."""

    def __init__(self, preset: NetworkPreset, variant: str):
        super().__init__()
        parts = VARIANT_PARTS[variant]
        self.input_size = preset.input_size
        self.cnn = self.swin = self.decoder = None
        self.swin_levels: dict[int, int] = {}  # Swin stage index -> decoder level it joins
        head_inputs = 0
        if parts.swin:
            self.swin = SwinAAAEncoder(
                preset.swin,
                preset.input_size,
                preset.swin_window,
                aaa_placement=preset.aaa_placement if parts.aaa else None,
                aaa_gate=parts.gate or preset.aaa_gate,
                aaa_init=preset.aaa_init,
                **preset.swin_kwargs(),
            )
            head_inputs += self.swin.out_channels[-1]
        if parts.cnn:
            resnet = ResNetTaps(preset.resnet, **preset.resnet_kwargs())
            self.cnn = MTEstanEncoder(resnet, EstanEncoder(preset.estan_widths))
            if self.swin is not None:
                stages = range(len(self.swin.reductions))
                joined = stages if preset.fusion == "multiscale" else stages[-1:]
                self.swin_levels = {i: resnet.reductions.index(self.swin.reductions[i]) for i in joined}
            self.decoder = MTEstanDecoder(
                resnet.stage_channels,
                resnet.tap_channels,
                preset.estan_widths,
                extra_channels={level: self.swin.out_channels[i] for i, level in self.swin_levels.items()},
            )
            head_inputs += self.decoder.class_channels
        self.head = ClassificationHead(head_inputs, preset.head_widths, preset.dropout)
        self.has_segmentation = self.decoder is not None
        init_weights(self)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor | None]:
        """x [B, 3, S, S] (normalised) -> {"logits": [B], "mask_logits": [B, 1, S, S] or None}."""
        size = self.input_size
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[2] != size or x.shape[3] != size:
            raise ValueError(f"expected input [B, 3, {size}, {size}], got {list(x.shape)}")
        swin_maps = self.swin(x) if self.swin is not None else []
        pooled, mask_logits = [], None
        if self.cnn is not None:
            extra = {level: swin_maps[i] for i, level in self.swin_levels.items()}
            mask_logits, class_map = self.decoder(self.cnn(x), extra)
            pooled.append(class_map)
        return {"logits": self.head(pooled + swin_maps[-1:]), "mask_logits": mask_logits}


LESION_PRIOR = 0.1  # share of lesion pixels the mask head starts at (BUSI's median lesion is 5-10% of the image)
AAA_OPEN_START = 2.0  # aaa_init "open": sigmoid(2) = 0.88, each AAA gate starts nearly open


def init_weights(model: HybridMTEstan) -> None:
    """Initialise what timm does not (ESTAN blocks, decoder, AAA blocks, heads); timm's encoders keep theirs.

    PyTorch's default conv init (uniform, gain 1/3 of He's) shrinks the signal through the ~20 plain
    ReLU convs of ESTAN and the decoder, which have no normalisation between most of them; He init
    keeps it. The AAA gate multiplies the Swin token stream at every block pair: a gate starting at
    sigmoid(0) = 0.5 would halve the stream 3-12 times before any training, so its last conv starts
    at zero: with `aaa_init="identity"` (gain 2) the gate is exactly 1, with "open" its bias is +2
    (0.88 per block: 0.22 after 12). The heads
    start where the data are: the malignancy logit near 0 (p = 0.5), the mask logits at the lesion
    prior, as RetinaNet does for its rare class, so Dice does not start from a mask covering every pixel.
    """
    ours = [m for m in (model.cnn.estan if model.cnn else None, model.decoder, model.head) if m is not None]
    if model.swin is not None:
        ours.append(model.swin.attention)
    for part in ours:
        for module in part.modules():
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
    if model.swin is not None:
        for block in model.swin.attention:
            last = block.row_col[-1]
            nn.init.zeros_(last.weight)
            nn.init.constant_(last.bias, 0.0 if block.gain == 2.0 else AAA_OPEN_START)
    final = model.head.mlp[-1]
    nn.init.normal_(final.weight, std=0.01)
    if model.decoder is not None:
        nn.init.normal_(model.decoder.head.weight, std=0.01)
        nn.init.constant_(model.decoder.head.bias, math.log(LESION_PRIOR / (1 - LESION_PRIOR)))


def build_model(
    preset: str = "tiny",
    variant: str = "hybrid",
    *,
    backbone: str | None = None,
    pretrained: str | None = None,
    **overrides: Any,
) -> nn.Module:
    """Build a variant of a preset; `pretrained`: "imagenet", a weights folder URI, or None/"none".

    `overrides` replace preset fields by name (see models.presets.NetworkPreset). Unknown names,
    bad values and input sizes the encoders cannot tile raise ValueError before anything is built.
    Variant "baseline" is the timm model `backbone`, see models.baseline. The weights each encoder
    got are in `model.pretrained_weights` ({component: models.pretrained.WeightFile}).
    """
    if variant == BASELINE:
        from models.baseline import build_baseline

        return build_baseline(preset, backbone, pretrained=pretrained, **overrides)
    if backbone is not None:
        raise ValueError(f"backbone is an option of variant {BASELINE!r}, not {variant!r}")
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    parts = VARIANT_PARTS[variant]
    config, json_overrides = resolve_preset(preset, overrides)
    config.validate(parts)
    model = HybridMTEstan(config, variant)
    model.config = {
        "preset": preset,
        "variant": variant,
        "overrides": json_overrides,
        "input_size": config.input_size,
        "network_version": NETWORK_VERSION,
    }
    model.pretrained_weights = _load_encoders(model, preset, config, pretrained)
    return model


def _load_encoders(model: HybridMTEstan, preset: str, config: NetworkPreset, spec: str | None) -> dict[str, WeightFile]:
    """Load each encoder's weights for `spec`; say out loud which encoder stays randomly initialised."""
    from timm.models.swin_transformer_v2 import checkpoint_filter_fn

    resnet = None if model.cnn is None else model.cnn.resnet.body
    swin = None if model.swin is None else model.swin.backbone
    encoders = (
        ("ResNet", resnet, config.resnet, config.resnet_kwargs(), None, ("fc.",)),
        ("Swin", swin, config.swin, config.swin_kwargs(), checkpoint_filter_fn, SWIN_HEAD),
    )
    loaded = {}
    for component, module, arch, narrowed, filter_fn, ignore in encoders:
        if module is None:
            continue
        if is_none(spec):
            if spec != CHECKPOINT:
                level = logging.WARNING if preset in PRETRAINED_PRESETS else logging.INFO
                log.log(level, "%s of preset %r is randomly initialised (pretrained none)", component, preset)
            continue
        if spec == IMAGENET and narrowed:
            raise ValueError(no_published_weights(preset, arch, narrowed))
        weights = locate(spec, arch)
        loaded[component] = load_pretrained(
            module, weights, component=component, filter_fn=filter_fn, ignore_prefixes=ignore
        )
    return loaded
