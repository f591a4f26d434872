"""Table 2's baselines: classification-only timm models with the hybrid's output contract.

`build_model(preset, "baseline", backbone="densenet121")` builds timm's named model without its
classifier plus one Dense(1) logit, so that training, tuning, evaluation, checkpoints and serving
treat it like the `swin` variant: `forward` returns {"logits": [B], "mask_logits": None}.

The preset sets the input size. `paper` and `small` build timm's architecture unchanged at 256 px,
so timm's published weight files load (a model timm marks as of fixed input size, such as ViT or
Swin, is built for 256 px and its file goes through timm's own filter, which resamples the position
embeddings). `tiny` shrinks the families timm lets us shrink (`TINY_ARCH`) so that CPU tests and the
demo stay fast; a family without a shrink is built as timm defines it, at the tiny input size (VGG16:
its 14.7 M-parameter conv stack stays, at about 1.3 GFLOPs per 64 px image).
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import torch
from torch import nn

from models.heads import baseline_head
from models.presets import BASELINE, BASELINE_HEADS, NETWORK_VERSION, PRESETS
from models.pretrained import CHECKPOINT, IMAGENET, is_none, load_pretrained, locate, no_published_weights

log = logging.getLogger(__name__)

# Architecture keywords timm's entrypoints accept, per timm module, for the tiny preset.
TINY_ARCH: dict[str, dict[str, Any]] = {
    "resnet": {"layers": (1, 1, 1, 1), "channels": (8, 16, 32, 64), "stem_width": 8},
    "densenet": {"growth_rate": 8, "block_config": (1, 1, 1, 1)},
    "efficientnet": {"depth_multiplier": 0.25},  # the MobileNets: one block per stage
    "vgg": {"mlp_ratio": 1 / 64},  # the 7x7 pre-logits conv: 102 M parameters at mlp_ratio 1
    "vision_transformer": {"patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2},
    "swin_transformer_v2": {"embed_dim": 16, "depths": (1, 1, 2, 1), "num_heads": (1, 2, 4, 8), "window_size": 4},
}


class TimmBaseline(nn.Module):
    """A timm classifier body (no classifier) -> Dense(1): the malignancy logit, no mask."""

    has_segmentation = False

    def __init__(self, backbone: nn.Module, input_size: int, head: str = "linear"):
        super().__init__()
        self.backbone = backbone
        self.input_size = input_size
        self.head = baseline_head(getattr(backbone, "head_hidden_size", None) or backbone.num_features, head)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor | None]:
        """x [B, 3, S, S] (normalised) -> {"logits": [B], "mask_logits": None}."""
        size = self.input_size
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[2] != size or x.shape[3] != size:
            raise ValueError(f"expected input [B, 3, {size}, {size}], got {list(x.shape)}")
        return {"logits": self.head(self.backbone(x)).squeeze(1), "mask_logits": None}


def build_baseline(
    preset: str,
    backbone: str | None,
    *,
    pretrained: str | None = None,
    **overrides: Any,
) -> TimmBaseline:
    """The timm model `backbone` as a baseline of `preset`; `pretrained`: "imagenet", a weights folder URI or None.

    Only `input_size` may be overridden; anything else, an unknown timm name or a size the model
    cannot take raises ValueError before or while building.
    """
    import timm
    from timm.models import get_pretrained_cfg

    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    if not backbone or not timm.is_model(backbone):
        raise ValueError(f"variant {BASELINE!r} needs backbone=<timm model name> (e.g. densenet121), got {backbone!r}")
    if unknown := sorted(set(overrides) - {"input_size", "baseline_head"}):
        raise ValueError(
            f"variant {BASELINE!r} takes only the input_size and baseline_head overrides, got {', '.join(unknown)}"
        )
    head = overrides.get("baseline_head", "linear")
    if head not in BASELINE_HEADS:
        raise ValueError(f"baseline_head={head!r}: choose one of {', '.join(BASELINE_HEADS)}")
    size = overrides.get("input_size", PRESETS[preset].input_size)
    if isinstance(size, bool) or not isinstance(size, int) or size < 32:
        raise ValueError(f"input_size must be an integer >= 32, got {size!r}")
    family = timm.models.model_entrypoint(backbone).__module__.rsplit(".", 1)[-1]
    kwargs = dict(TINY_ARCH.get(family, {})) if preset == "tiny" else {}
    if getattr(get_pretrained_cfg(backbone), "fixed_input_size", False):  # position embeddings, windows
        kwargs["img_size"] = size
    try:
        body = timm.create_model(backbone, pretrained=False, num_classes=0, **kwargs)
    except (AssertionError, RuntimeError, TypeError, ValueError) as exc:
        raise ValueError(f"timm cannot build {backbone!r} at {size} px for preset {preset!r}: {exc}") from exc
    model = TimmBaseline(body, size, head)
    model.config = {
        "preset": preset,
        "variant": BASELINE,
        "backbone": backbone,
        "overrides": {key: value for key, value in overrides.items() if key in ("input_size", "baseline_head")},
        "input_size": size,
        "network_version": NETWORK_VERSION,
    }
    model.pretrained_weights = {}
    if is_none(pretrained):
        if pretrained != CHECKPOINT:
            level = logging.INFO if preset == "tiny" else logging.WARNING
            log.log(level, "%s of preset %r is randomly initialised (pretrained none)", backbone, preset)
        return model
    if pretrained == IMAGENET and preset == "tiny" and family in TINY_ARCH:
        raise ValueError(no_published_weights(preset, backbone, TINY_ARCH[family]))
    classifier = body.pretrained_cfg.get("classifier") or ()
    prefixes = tuple(f"{name}." for name in ((classifier,) if isinstance(classifier, str) else classifier))
    filter_fn = getattr(sys.modules[type(body).__module__], "checkpoint_filter_fn", None)
    weights = locate(pretrained, backbone)
    model.pretrained_weights[backbone] = load_pretrained(
        body, weights, component=backbone, filter_fn=filter_fn, ignore_prefixes=prefixes
    )
    return model
