"""Network presets: the paper's configuration and two narrower ones for smaller machines.

A preset is a flat, frozen record; `build_model(..., **overrides)` may replace any field by name.
`None` in a timm architecture field means "as timm's named model defines it", so `paper` and `small`
are exactly the timm architectures whose published weight files load into them.

The preset and variant names here are the one list the CLI offers; this module imports neither
torch nor timm until a preset is validated, so `busnet --help` can read them instantly.

The architecture options the paper leaves open (`aaa_placement`, `aaa_gate`, `aaa_init`, `fusion`) are
fields here too, so a checkpoint's config.json records them; their defaults are our most faithful
reading of the paper, argued where each is built (models.swin_aaa, models.network).
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any, Union, get_args, get_origin, get_type_hints

PAPER_WIDTHS = (32, 64, 128, 256, 512)  # ESTAN blocks 1-5 as the authors built them
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
# A baseline's classifier: one Dense(1) on the pooled features (ours), or the authors' BUSBench head
# (GAP -> Dense 512 ReLU -> Dropout 0.3 -> Dense 64 ReLU -> Dense 1; with --gamma 0 --balance-classes
# the loss is their class-weighted BCE).
BASELINE_HEADS = ("linear", "busbench")
CNN_REDUCTION = 32  # ResNet layer4 (1/32) meets ESTAN block 5 (1/16) after one 2x up-sampling
AAA_PLACEMENTS = ("block_pair", "stage")  # after each W-MSA/SW-MSA block pair (eq. 5) | after each stage
AAA_GATES = ("channel", "spatial")  # sigmoid gate as wide as the map | one map shared by all channels
FUSIONS = ("multiscale", "bottleneck")  # Swin stage i joins the decoder at its resolution | only at 1/32
# How each AAA gate starts: O = y * 2 sigmoid(z) with z = 0, the identity on the token stream, so a
# pretrained Swin sees its own features at the start | O = y * sigmoid(z), z = +2: 0.88 per block,
# 0.88^12 = 0.22 of the stream after the paper preset's 12 blocks (busnet before it had this option).
AAA_INITS = ("identity", "open")


@dataclass(frozen=True)
class VariantParts:
    """What a variant is made of: the MT-ESTAN CNN (and so the decoder), the Swin V2 encoder, AAA blocks."""

    cnn: bool
    swin: bool
    aaa: bool
    gate: str | None = None  # forces the preset's aaa_gate (the parameter-matched control)


VARIANT_PARTS = {  # named by what they are; the paper's Table 3 rows first
    "hybrid": VariantParts(cnn=True, swin=True, aaa=True),  # "Ours": Hybrid-MT-ESTAN
    "hybrid_noaaa": VariantParts(cnn=True, swin=True, aaa=False),  # "MT-ESTAN + Swin Trans."
    "mt_estan": VariantParts(cnn=True, swin=False, aaa=False),  # "MT-ESTAN": the authors' network exactly
    "swin": VariantParts(cnn=False, swin=True, aaa=False),  # "Swin Trans.": plain Swin V2 classifier
    "swin_aaa": VariantParts(cnn=False, swin=True, aaa=True),  # not in the paper: Swin V2 + AAA classifier
    # Not in the paper: the hybrid with one spatial gate map per AAA block (48 k parameters in all at
    # paper size), so that "hybrid_sgate vs hybrid_noaaa" compares attention at (nearly) equal capacity,
    # where "hybrid vs hybrid_noaaa" also adds the per-channel gates' parameters (90.8 M at paper size).
    "hybrid_sgate": VariantParts(cnn=True, swin=True, aaa=True, gate="spatial"),
}
VARIANTS = tuple(VARIANT_PARTS)
TABLE3_VARIANTS = VARIANTS[:4]  # the paper's ablation rows (swin_aaa is ours)

# config.json's model record: version 2 added the options above and renamed the Swin+AAA classifier
# `swin_aaa` (version 1 called it `swin`); version 3 added `aaa_init` (earlier records are "open").
# A record without `network_version` is version 1.
NETWORK_VERSION = 3
VERSION_1 = {"aaa_placement": "stage", "aaa_gate": "channel", "fusion": "bottleneck", "aaa_init": "open"}
VERSION_2 = {"aaa_init": "open"}


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
    aaa_placement: str = "block_pair"  # AAA_PLACEMENTS
    aaa_gate: str = "channel"  # AAA_GATES
    aaa_init: str = "identity"  # AAA_INITS
    fusion: str = "multiscale"  # FUSIONS

    def resnet_kwargs(self) -> dict[str, Any]:
        return _given(layers=self.resnet_layers, channels=self.resnet_channels)

    def swin_kwargs(self) -> dict[str, Any]:
        return _given(embed_dim=self.swin_embed_dim, depths=self.swin_depths, num_heads=self.swin_heads)

    def validate(self, parts: VariantParts) -> None:
        """Raise ValueError naming the first field that cannot work for a network made of these parts."""
        from models.swin_aaa import NUM_STAGES, window_tiling_problem

        for name, allowed in (
            ("aaa_placement", AAA_PLACEMENTS),
            ("aaa_gate", AAA_GATES),
            ("aaa_init", AAA_INITS),
            ("fusion", FUSIONS),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}={getattr(self, name)!r}: choose one of {', '.join(allowed)}")
        cnn, swin = parts.cnn, parts.swin
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
        if swin and (problem := window_tiling_problem(self.input_size, self.swin_window, aaa=parts.aaa)):
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


def upgrade_model_config(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A checkpoint's model record as `build_model` reads it now, describing the same network.

    Version 1 records (no `network_version`) get the options' version-1 values under their own
    overrides, and their `swin` (then Swin+AAA) becomes `swin_aaa`; version 2 records get
    `aaa_init="open"`; the weights' keys are unchanged.
    """
    spec = dict(spec)
    version = spec.get("network_version", 1)
    if version not in (1, 2, NETWORK_VERSION):
        raise ValueError(f"network_version {version!r} is not one this busnet reads (1-{NETWORK_VERSION})")
    if version == 1:
        spec["variant"] = "swin_aaa" if spec.get("variant") == "swin" else spec.get("variant")
    if version < NETWORK_VERSION and spec.get("variant") != BASELINE:
        spec["overrides"] = {**(VERSION_1 if version == 1 else VERSION_2), **spec.get("overrides", {})}
    spec["network_version"] = NETWORK_VERSION
    return spec


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
