"""Predict images: through a running `busnet serve` (--url), or a whole archive in batch (--data).

HTTP client mode (IMAGE arguments): each line: file, label, malignancy probability (and the
checkpoint's threshold), lesion area and bounding box. With --overlay DIR, also writes
DIR/<name>.overlay.png: the image with the predicted lesion contour drawn in red.
Exits 1 if any image failed (its line says why).

Batch mode (--checkpoint, --data, --out): Ray Data batch inference with model actors over every image
of a busnet dataset (or one --split) or of a folder of PNG/JPEG/BMP files, streamed to Parquet in
--out/predictions/ (image_id, malignant_probability, label, mask_png, lesion area and box), plus
--out/metrics.json (evaluate's format) for a dataset. A rerun of an interrupted run resumes it; an
--out holding anything else is refused.

Examples:
  busnet predict --url http://127.0.0.1:8000 scans/*.png --overlay overlays/
  busnet predict --checkpoint runs/train/demo/best --data runs/data --out runs/predictions
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from jobs.errors import BusnetError

BATCH_FLAGS = ("checkpoint", "data", "out")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="*", metavar="IMAGE", help="PNG, JPEG or BMP files (HTTP client mode)")
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the service (default http://127.0.0.1:8000)")
    parser.add_argument("--overlay", metavar="DIR", help="write <name>.overlay.png files with the mask contour here")
    parser.add_argument(
        "--json", action="store_true", help="print each answer as one JSON line (with a `file` field) instead"
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait per image (default 60)")
    batch = parser.add_argument_group("batch mode")
    batch.add_argument("--checkpoint", help="checkpoint directory URI (e.g. a run's best/)")
    batch.add_argument("--data", help="busnet dataset URI, or a folder (path, file://, s3://) of PNG/JPEG/BMP files")
    batch.add_argument("--out", help="folder or storage URI for the Parquet predictions (resumed when rerun)")
    batch.add_argument("--split", choices=("train", "val", "test"), help="only this split of a dataset (default: all)")
    batch.add_argument("--gpu", action="store_true", help="one GPU per model actor")
    batch.add_argument("--batch-size", type=int, default=16, help="images per forward pass (default 16)")
    batch.add_argument(
        "--workers", type=int, default=None, help="model actors (default: 2 on CPUs, one per GPU with --gpu)"
    )
    batch.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples of the metrics (default 1000)")


def run(args: argparse.Namespace) -> int:
    given = [f"--{name}" for name in BATCH_FLAGS if getattr(args, name)]
    if given:
        if len(given) < len(BATCH_FLAGS) or args.images:
            raise BusnetError("batch mode needs --checkpoint, --data and --out, and no IMAGE arguments")
        return _run_batch(args)
    if not args.images:
        raise BusnetError("give IMAGE files (HTTP client mode) or --checkpoint, --data and --out (batch mode)")
    return _run_client(args)


def _run_batch(args: argparse.Namespace) -> int:
    from jobs.evaluate.batch import predict_archive
    from jobs.evaluate.report import render_summary

    result = predict_archive(
        args.checkpoint,
        args.data,
        args.out,
        split=args.split,
        gpu=args.gpu,
        workers=args.workers,
        batch_size=args.batch_size,
        n_bootstrap=args.bootstrap,
        progress=lambda message: print(f"busnet predict: {message}", file=sys.stderr, flush=True),
    )
    print(f"{result['images']} images in {args.out} ({result['predicted']} predicted now, {result['skipped']} before)")
    if result["errors"]:
        print(f"{result['errors']} of them could not be read: their rows say why (column error)")
    if result["metrics"]:
        print(render_summary(result["metrics"]))
    return 0


def _run_client(args: argparse.Namespace) -> int:
    from serve.client import PredictionFailed, overlay, predict_file, summary

    out_dir = Path(args.overlay) if args.overlay else None
    if out_dir:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BusnetError(f"cannot create --overlay folder {out_dir}: {exc.strerror}") from exc
    failed, names = 0, overlay_names(args.images)
    for name in args.images:
        path = Path(name)
        try:
            answer = predict_file(args.url, path, timeout_s=args.timeout)
            written = None
            if out_dir:
                written = out_dir / names[name]
                overlay(path.read_bytes(), answer).save(written)
        except PredictionFailed as exc:
            failed += 1
            print(json.dumps({"file": name, "error": str(exc)}) if args.json else f"{name}: error: {exc}", flush=True)
            continue
        if args.json:
            print(json.dumps({"file": name, **answer, "overlay": str(written) if written else None}), flush=True)
        else:
            print(f"{name}: {summary(answer)}" + (f"  -> {written}" if written else ""), flush=True)
    return 1 if failed else 0


def overlay_names(images: list[str]) -> dict[str, str]:
    """`<stem>.overlay.png` per image, distinct: a second image of the same stem (a/x.png, b/x.png)
    gets `<stem>-2.overlay.png`, and so on (each printed line says which file is whose)."""
    names: dict[str, str] = {}
    for name in images:
        stem, number = Path(name).stem, 1
        while (chosen := f"{stem}{f'-{number}' if number > 1 else ''}.overlay.png") in names.values():
            number += 1
        names[name] = chosen
    return names
