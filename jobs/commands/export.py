"""Export a checkpoint for other runtimes: `busnet export --checkpoint URI --format onnx --out FILE`.

The ONNX file takes the normalised image batch `image` [B, 3, S, S] and returns `logits` [B] (and
`mask_logits` [B, 1, S, S] with a mask head); its metadata `busnet_config` holds the checkpoint's
config (preprocessing size, mean and std; threshold). An existing FILE is never overwritten.
vgg16 baselines do not export (models/export.py says why).

example: busnet export --checkpoint runs/train/demo/best --format onnx --out hybrid.onnx
"""

from __future__ import annotations

import argparse

from jobs.errors import BusnetError

FORMATS = ("onnx",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="checkpoint directory URI (e.g. a run's best/)")
    parser.add_argument("--format", default="onnx", choices=FORMATS, help="file format (default onnx)")
    parser.add_argument("--out", required=True, metavar="FILE", help="the file to write (path, file://, s3://)")


def run(args: argparse.Namespace) -> int:
    from jobs import storage
    from models import load_checkpoint
    from models.export import export_onnx

    if storage.exists(args.out):
        raise BusnetError(f"--out {args.out}: already exists; choose another file (nothing is overwritten)")
    try:
        model, config = load_checkpoint(args.checkpoint)
    except (ValueError, OSError, KeyError) as exc:
        raise BusnetError(f"cannot load checkpoint {args.checkpoint}: {str(exc).strip().splitlines()[0]}") from exc
    try:
        data = export_onnx(model, config)
    except ValueError as exc:
        spec = config["model"]
        name = spec.get("backbone") or spec["variant"]
        raise BusnetError(f"{args.checkpoint} ({spec['preset']}/{name}): {exc}") from exc
    storage.write_bytes(args.out, data)
    print(f"wrote {args.out} ({len(data) / 1e6:.1f} MB, {args.format})")
    return 0
