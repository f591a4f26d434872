"""Hybrid-MT-ESTAN and its ablation variants, built from a preset: `build_model(preset, variant, **overrides)`.

Fusion of the two encoders (the paper does not publish it; this is our choice):
the Swin+AAA encoder's last map (1/32 of the input, 1024 channels at the paper preset: 8x8 at
256 px) is concatenated into the MT-ESTAN bottleneck beside ResNet layer4's output (2048) and its
first-BN tap (512), before the bottleneck's 2x up-sampling; and its global average pool is
concatenated to the classifier's input beside the authors' pooled Up-Block-1 input. Why:
- the paper gives the decoder skips from MT-ESTAN blocks 1-4 only, so Swin features can enter the
  segmentation branch only at the bottom; 1/32 is where both encoders already share a resolution,
  and the authors' bottleneck is itself a concatenation of ResNet maps: adding one more keeps every
  MT-ESTAN connection as the authors wrote it (the `mt_estan` variant is their network exactly);
- the transformer is there for global context, which matters most to classification, the primary
  task: a direct pooled path keeps it from being squeezed through one 2x2 transposed conv;
- the ablation variants then differ only by which encoder is present, through one code path.

Variants (paper Table 3): `hybrid` (full), `hybrid_noaaa` (Swin without AAA blocks), `mt_estan`
(CNN only), `swin` (Swin+AAA only, classification only: `mask_logits` is None).
The input is expected normalised already (models.preprocess); nothing here re-normalises.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from models.cnn_encoder import MTEstanEncoder, ResNetTaps
from models.decoder import MTEstanDecoder
from models.estan import EstanEncoder
from models.heads import ClassificationHead
from models.presets import BASELINE, PRESETS, VARIANTS, NetworkPreset, resolve_preset
from models.pretrained import load_weights
from models.swin_aaa import SwinAAAEncoder

log = logging.getLogger(__name__)

PRETRAINED_PRESETS = ("paper", "small")  # timm publishes weights for their encoder architectures

__all__ = ["PRESETS", "VARIANTS", "HybridMTEstan", "build_model"]


class HybridMTEstan(nn.Module):
    """MT-ESTAN encoder + Swin+AAA encoder -> MT-ESTAN decoder (masks) and dense head (malignancy)."""

    def __init__(self, preset: NetworkPreset, variant: str):
        super().__init__()
        uses_cnn, uses_swin = variant != "swin", variant != "mt_estan"
        self.input_size = preset.input_size
        self.cnn = self.swin = self.decoder = None
        swin_channels = 0
        if uses_swin:
            self.swin = SwinAAAEncoder(
                preset.swin,
                preset.input_size,
                preset.swin_window,
                use_aaa=variant != "hybrid_noaaa",
                **preset.swin_kwargs(),
            )
            swin_channels = self.swin.out_channels[-1]
        head_inputs = swin_channels
        if uses_cnn:
            resnet = ResNetTaps(preset.resnet, **preset.resnet_kwargs())
            self.cnn = MTEstanEncoder(resnet, EstanEncoder(preset.estan_widths))
            self.decoder = MTEstanDecoder(
                resnet.stage_channels, resnet.tap_channels, preset.estan_widths, extra_bottleneck_channels=swin_channels
            )
            head_inputs += self.decoder.class_channels
        self.head = ClassificationHead(head_inputs, preset.head_widths, preset.dropout)
        self.has_segmentation = self.decoder is not None

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor | None]:
        """x [B, 3, S, S] (normalised) -> {"logits": [B], "mask_logits": [B, 1, S, S] or None}."""
        size = self.input_size
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[2] != size or x.shape[3] != size:
            raise ValueError(f"expected input [B, 3, {size}, {size}], got {list(x.shape)}")
        swin_maps = self.swin(x)[-1:] if self.swin is not None else []
        pooled, mask_logits = [], None
        if self.cnn is not None:
            mask_logits, class_map = self.decoder(self.cnn(x), swin_maps)
            pooled.append(class_map)
        return {"logits": self.head(pooled + swin_maps), "mask_logits": mask_logits}


def build_model(
    preset: str = "tiny",
    variant: str = "hybrid",
    *,
    pretrained_cnn: str | None = None,
    pretrained_swin: str | None = None,
    backbone: str | None = None,
    pretrained_backbone: str | None = None,
    **overrides: Any,
) -> nn.Module:
    """Build a variant of a preset; optional timm weight files (path or URI) for the two encoders.

    `overrides` replace preset fields by name (see models.presets.NetworkPreset). Unknown names,
    bad values and input sizes the encoders cannot tile raise ValueError before anything is built.
    Variant "baseline" is the timm model `backbone` (weights: `pretrained_backbone`), see models.baseline.
    """
    if variant == BASELINE:
        from models.baseline import build_baseline

        kwargs = {"pretrained_cnn": pretrained_cnn, "pretrained_swin": pretrained_swin, **overrides}
        return build_baseline(preset, backbone, pretrained=pretrained_backbone, **kwargs)
    if backbone is not None or pretrained_backbone is not None:
        raise ValueError(f"backbone and pretrained_backbone are options of variant {BASELINE!r}, not {variant!r}")
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    uses_cnn, uses_swin = variant != "swin", variant != "mt_estan"
    for option, uri, present, component in (
        ("pretrained_cnn", pretrained_cnn, uses_cnn, "ResNet"),
        ("pretrained_swin", pretrained_swin, uses_swin, "Swin"),
    ):
        if uri is not None and not present:
            raise ValueError(f"{option} was given, but variant {variant!r} has no {component}")
    config, json_overrides = resolve_preset(preset, overrides)
    config.validate(cnn=uses_cnn, swin=uses_swin)
    model = HybridMTEstan(config, variant)
    model.config = {"preset": preset, "variant": variant, "overrides": json_overrides, "input_size": config.input_size}
    _load_encoders(model, preset, pretrained_cnn, pretrained_swin)
    return model


def _load_encoders(model: HybridMTEstan, preset: str, cnn_uri: str | None, swin_uri: str | None) -> None:
    """Load the given weight files; say out loud which encoder stays randomly initialised."""
    from timm.models.swin_transformer_v2 import checkpoint_filter_fn

    encoders = (
        ("ResNet", None if model.cnn is None else model.cnn.resnet.body, cnn_uri, "pretrained_cnn", None, ("fc.",)),
        (
            "Swin",
            None if model.swin is None else model.swin.backbone,
            swin_uri,
            "pretrained_swin",
            checkpoint_filter_fn,
            ("head.", "norm."),
        ),
    )
    for component, module, uri, option, filter_fn, ignore in encoders:
        if module is None:
            continue
        if uri is not None:
            load_weights(module, uri, component=component, filter_fn=filter_fn, ignore_prefixes=ignore)
        else:
            level = logging.WARNING if preset in PRETRAINED_PRESETS else logging.INFO
            log.log(level, "%s of preset %r is randomly initialised (no %s file given)", component, preset, option)
