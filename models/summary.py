"""Print a network's parameter count per component: `python -m models.summary --preset paper [--variant hybrid]`.

The model is built on PyTorch's meta device (shapes without memory or initialisation), so even the
paper preset is counted in about a second.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import torch
from torch import nn

from models.network import PRESETS, VARIANTS, HybridMTEstan, build_model


def count(module: nn.Module | None) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())


def parameter_table(model: HybridMTEstan) -> list[tuple[str, int]]:
    """(component, parameters) rows; absent components count 0; the last row is the total."""
    cnn, swin = model.cnn, model.swin
    return [
        ("ResNet", count(None if cnn is None else cnn.resnet)),
        ("ESTAN", count(None if cnn is None else cnn.estan)),
        ("Swin+AAA", count(swin)),
        ("  of which AAA", count(None if swin is None else swin.attention)),
        ("decoder", count(model.decoder)),
        ("heads", count(model.head)),
        ("total", count(model)),
    ]


def format_table(rows: list[tuple[str, int]], title: str) -> str:
    total = rows[-1][1]
    lines = [title, f"{'component':<16}{'parameters':>14}{'share':>8}"]
    for name, params in rows:
        shown, share = (f"{params:,}", f"{100 * params / total:.1f}%") if params else ("-", "-")
        lines.append(f"{name:<16}{shown:>14}{share:>8}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.summary", description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="paper", choices=list(PRESETS))
    parser.add_argument("--variant", default="hybrid", choices=VARIANTS)
    args = parser.parse_args(argv)
    with torch.device("meta"):
        model = build_model(args.preset, args.variant)
    title = f"Hybrid-MT-ESTAN preset={args.preset} variant={args.variant} input={model.input_size}px"
    print(format_table(parameter_table(model), title))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
