"""Export a checkpoint for other runtimes: `busnet export --checkpoint URI --format onnx --out DIR`.

Writes DIR/model.onnx. The ONNX file takes the normalised image batch `image` [B, 3, S, S] and returns
`logits` [B] (and `mask_logits` [B, 1, S, S] with a mask head); its metadata `busnet_config` holds the
checkpoint's config (preprocessing size, mean and std; threshold). An existing file is never
overwritten. vgg16 baselines do not export (models/export.py says why).

example:
  busnet export --checkpoint runs/train/demo/best --format onnx --out exported/
"""

from __future__ import annotations

import argparse

from jobs.commands.flags import add_flags, from_flags
from jobs.commands.options import ExportOptions
from jobs.errors import BusnetError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_flags(parser, ExportOptions)


def run(args: argparse.Namespace) -> dict:
    from jobs import storage
    from models import load_checkpoint
    from models.export import export_onnx

    options = from_flags(ExportOptions, args)
    if storage.is_file(options.out):
        raise BusnetError(f"--out {options.out}: is a file; give a folder (model.{options.format} goes there)")
    target = storage.join(options.out, f"model.{options.format}")
    if storage.exists(target):
        raise BusnetError(f"{target}: already exists; choose another --out (nothing is overwritten)")
    try:
        model, config = load_checkpoint(options.checkpoint)
    except (ValueError, OSError, KeyError) as exc:
        raise BusnetError(f"cannot load checkpoint {options.checkpoint}: {str(exc).strip().splitlines()[0]}") from exc
    try:
        data = export_onnx(model, config)
    except ValueError as exc:
        spec = config["model"]
        name = spec.get("backbone") or spec["variant"]
        raise BusnetError(f"{options.checkpoint} ({spec['preset']}/{name}): {exc}") from exc
    storage.write_bytes(target, data)
    print(f"wrote {target} ({len(data) / 1e6:.1f} MB, {options.format})")
    return {"file": target, "bytes": len(data), "format": options.format}
