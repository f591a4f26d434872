"""Print parameters per component for every variant: `python -m models.summary --preset paper [options]`.

The models are built on PyTorch's meta device (shapes without memory or initialisation), so even the
paper preset is counted in seconds. `--variant` (repeatable) narrows the columns; `--aaa-placement`,
`--aaa-gate` and `--fusion` override the preset's architecture options.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

import torch
from torch import nn

from models.network import PRESETS, VARIANTS, HybridMTEstan, build_model
from models.presets import AAA_GATES, AAA_PLACEMENTS, FUSIONS

COMPONENTS = ("ResNet", "ESTAN", "Swin", "AAA", "decoder", "heads", "total")


def count(module: nn.Module | None) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())


def parameter_table(model: HybridMTEstan) -> dict[str, int]:
    """{component: parameters} in COMPONENTS order (absent components count 0), plus "AAA blocks"."""
    cnn, swin = model.cnn, model.swin
    return {
        "ResNet": count(None if cnn is None else cnn.resnet),
        "ESTAN": count(None if cnn is None else cnn.estan),
        "Swin": count(None if swin is None else swin.backbone),
        "AAA": count(None if swin is None else swin.attention),
        "decoder": count(model.decoder),
        "heads": count(model.head),
        "total": count(model),
        "AAA blocks": 0 if swin is None else len(swin.attention),
    }


def format_table(tables: dict[str, dict[str, int]], title: str) -> str:
    """One row per component, one column per variant; '-' where a variant lacks the component."""
    width = max(14, *(len(name) + 2 for name in tables))
    lines = [title, f"{'component':<12}" + "".join(f"{name:>{width}}" for name in tables)]
    for row in (*COMPONENTS, "AAA blocks"):
        cells = (f"{table[row]:,}" if table[row] else "-" for table in tables.values())
        lines.append(f"{row:<12}" + "".join(f"{cell:>{width}}" for cell in cells))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.summary", description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="paper", choices=list(PRESETS))
    parser.add_argument("--variant", action="append", choices=VARIANTS, help="default: every variant")
    parser.add_argument("--aaa-placement", choices=AAA_PLACEMENTS)
    parser.add_argument("--aaa-gate", choices=AAA_GATES)
    parser.add_argument("--fusion", choices=FUSIONS)
    args = parser.parse_args(argv)
    options = {"aaa_placement": args.aaa_placement, "aaa_gate": args.aaa_gate, "fusion": args.fusion}
    overrides = {key: value for key, value in options.items() if value is not None}
    logging.getLogger("models.network").setLevel(logging.ERROR)  # random init is the point here
    tables = {}
    with torch.device("meta"):
        for variant in args.variant or VARIANTS:
            model = build_model(args.preset, variant, **overrides)
            tables[variant] = parameter_table(model)
    preset = PRESETS[args.preset]
    chosen = {key: overrides.get(key, getattr(preset, key)) for key in options}
    title = f"Hybrid-MT-ESTAN preset={args.preset} input={model.input_size}px " + " ".join(
        f"{key}={value}" for key, value in chosen.items()
    )
    print(format_table(tables, title))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
