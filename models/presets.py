"""Network presets: the paper's configuration and two narrower ones for smaller machines.

A preset is a flat, frozen record; `build_model(..., **overrides)` may replace any field by name.
`None` in a timm architecture field means "as timm's named model defines it", so `paper` and `small`
are exactly the timm architectures whose published weight files load into them.

The preset and variant names here are the one list the CLI offers; this module imports neither
torch nor timm until a preset is validated, so `busnet --help` can read them instantly.
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any, Union, get_args, get_origin, get_type_hints

PAPER_WIDTHS = (32, 64, 128, 256, 512)  # ESTAN blocks 1-5 as the authors built them
VARIANTS = ("hybrid", "hybrid_noaaa", "mt_estan", "swin")  # paper Table 3 (models.network)
BASELINE = "baseline"  # a Table 2 baseline: a classification-only timm model (models.baseline)
# Table 2's baselines that timm has (MobileNet is its v1; resnet50 and vgg16 are the usual references).
BASELINES = (
    "densenet121",
    "mobilenetv1_100",
    "mobilenetv2_100",
    "resnet50",
    "vgg16",
    "vit_base_patch16_224",
    "swinv2_base_window8_256",
)
CNN_REDUCTION = 32  # ResNet layer4 (1/32) meets ESTAN block 5 (1/16) after one 2x up-sampling


@dataclass(frozen=True)
class NetworkPreset:
    """Every choice that shapes the network (all JSON-friendly)."""

    input_size: int  # S: square input side in pixels
    resnet: str  # timm bottleneck ResNet entrypoint
    swin: str  # timm Swin Transformer V2 entrypoint
    swin_window: int  # Swin window side (tokens)
    resnet_layers: tuple[int, ...] | None = None  # blocks per stage
    resnet_channels: tuple[int, ...] | None = None  # bottleneck widths per stage (outputs are 4x)
    swin_embed_dim: int | None = None
    swin_depths: tuple[int, ...] | None = None
    swin_heads: tuple[int, ...] | None = None
    estan_widths: tuple[int, ...] = PAPER_WIDTHS  # ESTAN blocks 1-5; the decoder's widths too
    head_widths: tuple[int, ...] = (512, 128)  # the two hidden dense layers
    dropout: float = 0.5

    def resnet_kwargs(self) -> dict[str, Any]:
        return _given(layers=self.resnet_layers, channels=self.resnet_channels)

    def swin_kwargs(self) -> dict[str, Any]:
        return _given(embed_dim=self.swin_embed_dim, depths=self.swin_depths, num_heads=self.swin_heads)

    def validate(self, *, cnn: bool, swin: bool) -> None:
        """Raise ValueError naming the first field that cannot work for a network with these encoders."""
        from models.swin_aaa import NUM_STAGES, window_tiling_problem

        if cnn and _timm_family(self.resnet) != "resnet":
            raise ValueError(f"resnet={self.resnet!r} is not a timm ResNet (e.g. resnet50, resnet26)")
        if swin and _timm_family(self.swin) != "swin_transformer_v2":
            raise ValueError(f"swin={self.swin!r} is not a timm Swin Transformer V2 (e.g. swinv2_base_window8_256)")
        if self.input_size <= 0:
            raise ValueError(f"input_size must be positive, got {self.input_size}")
        if cnn and self.input_size % CNN_REDUCTION:
            raise ValueError(
                f"input_size {self.input_size} is not a multiple of {CNN_REDUCTION} "
                f"(the ResNet's deepest stage is 1/{CNN_REDUCTION} of the input)"
            )
        if swin and (problem := window_tiling_problem(self.input_size, self.swin_window)):
            raise ValueError(f"{problem}; pick another input_size or swin_window")
        lengths = {
            "estan_widths": 5,
            "head_widths": 2,
            "resnet_layers": 4,
            "resnet_channels": 4,
            "swin_depths": NUM_STAGES,
            "swin_heads": NUM_STAGES,
        }
        for name, length in lengths.items():
            value = getattr(self, name)
            if value is not None and (len(value) != length or min(value) < 1):
                raise ValueError(f"{name} needs {length} positive values, got {list(value)}")
        if self.swin_window < 1 or (self.swin_embed_dim is not None and self.swin_embed_dim < 1):
            raise ValueError("swin_window and swin_embed_dim must be positive")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


PRESETS: dict[str, NetworkPreset] = {  # smallest first: the order the CLI lists them in
    # Same code path, smallest widths, 64 px (128 also tiles): CPU tests and the demo.
    "tiny": NetworkPreset(
        input_size=64,
        resnet="resnet26",
        swin="swinv2_tiny_window8_256",
        swin_window=4,
        resnet_layers=(1, 1, 1, 1),
        resnet_channels=(8, 16, 32, 64),
        swin_embed_dim=16,
        swin_depths=(1, 1, 2, 1),
        swin_heads=(1, 2, 4, 8),
        estan_widths=(8, 16, 32, 64, 128),
        head_widths=(64, 32),
    ),
    # Same design for one modest GPU: shallower ResNet, Swin-T, half-width ESTAN/decoder/head.
    "small": NetworkPreset(
        input_size=256,
        resnet="resnet26",
        swin="swinv2_tiny_window8_256",
        swin_window=8,
        estan_widths=(16, 32, 64, 128, 256),
        head_widths=(256, 64),
    ),
    # The paper: timm resnet50 + swinv2_base_window8_256 at 256 px, ESTAN 32..512, head 512/128.
    "paper": NetworkPreset(input_size=256, resnet="resnet50", swin="swinv2_base_window8_256", swin_window=8),
}


def resolve_preset(name: str, overrides: Mapping[str, Any]) -> tuple[NetworkPreset, dict[str, Any]]:
    """The named preset with `overrides` applied, and the overrides as JSON-friendly values.

    Unknown preset, unknown field or a value of the wrong type -> ValueError.
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    hints = get_type_hints(NetworkPreset)
    unknown = sorted(set(overrides) - {f.name for f in fields(NetworkPreset)})
    if unknown:
        raise ValueError(f"unknown override(s) {', '.join(unknown)}; preset fields are {', '.join(hints)}")
    clean = {key: _coerce(key, value, hints[key]) for key, value in overrides.items()}
    json_ready = {key: list(value) if isinstance(value, tuple) else value for key, value in clean.items()}
    return replace(PRESETS[name], **clean), json_ready


def _timm_family(name: str) -> str | None:
    """timm's module for a model name ('resnet', 'swin_transformer_v2', ...), None if timm has no such model."""
    import timm

    return timm.models.model_entrypoint(name).__module__.rsplit(".", 1)[-1] if timm.is_model(name) else None


def _given(**kwargs: Any) -> dict[str, Any]:
    return {key: value for key, value in kwargs.items() if value is not None}


def _coerce(name: str, value: Any, hint: Any) -> Any:
    """`value` as the field's type (lists become tuples), or ValueError saying what was expected."""
    options = get_args(hint) if get_origin(hint) in (Union, types.UnionType) else (hint,)
    if value is None and type(None) in options:
        return None
    expected = next(option for option in options if option is not type(None))
    if expected == tuple[int, ...] and isinstance(value, (list, tuple)) and all(_is_int(v) for v in value):
        return tuple(value)
    if expected is int and _is_int(value):
        return value
    if expected is float and (_is_int(value) or isinstance(value, float)):
        return float(value)
    if expected is str and isinstance(value, str):
        return value
    raise ValueError(f"override {name}={value!r}: expected {expected}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
