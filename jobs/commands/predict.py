"""Predict images: through a running `busnet serve` (--url), or a whole archive in batch (--data).

HTTP client mode (IMAGE arguments): each line: file, label, malignancy probability (and the
checkpoint's threshold), lesion area and bounding box. With --overlay DIR, also writes
DIR/<name>.overlay.png: the image with the predicted lesion contour drawn in red.
Exits 1 if any image failed (its line says why).

Batch mode (--checkpoint, --data, --out): Ray Data batch inference with model actors over every image
of a busnet dataset (or one --split) or of a folder of PNG/JPEG/BMP/DICOM (.dcm) files, streamed to Parquet in
OUT/predictions/ (image_id, malignant_probability, label, mask_png, lesion area and box), plus
OUT/metrics.json (evaluate's format) for a dataset. --format masks also writes OUT/masks/<image>_mask.png
(0/255 at the image's own size) and OUT/predictions.csv (with --overlay DIR, the overlays too). A rerun
of an interrupted run resumes it; an OUT holding anything else is refused.

examples:
  busnet predict --url http://127.0.0.1:8000 scans/*.png --overlay overlays/
  busnet predict --checkpoint runs/train/demo/best --data runs/data --out runs/predictions --format masks
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from jobs.commands.flags import add_flags, from_flags
from jobs.commands.options import PredictOptions
from jobs.errors import BusnetError

BATCH_FLAGS = ("checkpoint", "data", "out")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_flags(parser, PredictOptions)


def run(args: argparse.Namespace) -> dict:
    options = from_flags(PredictOptions, args)
    given = [name for name in BATCH_FLAGS if getattr(options, name)]
    if given:
        if len(given) < len(BATCH_FLAGS) or options.images:
            raise BusnetError("batch mode needs --checkpoint, --data and --out, and no IMAGE arguments")
        return _run_batch(options)
    if not options.images:
        raise BusnetError("give IMAGE files (HTTP client mode) or --checkpoint, --data and --out (batch mode)")
    return _run_client(options, json_lines=args.json)


def _run_batch(options: PredictOptions) -> dict:
    from jobs.evaluate.batch import predict_archive
    from jobs.evaluate.report import render_summary

    result = predict_archive(
        options.checkpoint,
        options.data,
        options.out,
        split=options.split,
        gpu=options.gpu,
        workers=options.actors,
        batch_size=options.batch_size,
        n_bootstrap=options.bootstrap,
        progress=lambda message: print(f"busnet predict: {message}", file=sys.stderr, flush=True),
    )
    summary = {"out": options.out, **result}
    if options.format == "masks":
        from jobs.commands.masks_out import write_masks

        summary["files"] = write_masks(options.out, options.data, overlay_dir=options.overlay)
    done = f"{result['predicted']} predicted now, {result['skipped']} before"
    print(f"{result['images']} images in {options.out} ({done})")
    if result["errors"]:
        print(f"{result['errors']} of them could not be read: their rows say why (column error)")
    if result["metrics"]:
        print(render_summary(result["metrics"]))
    return summary


def _run_client(options: PredictOptions, json_lines: bool) -> dict:
    """One line per image as it comes back; with --json, every answer in the one summary object instead."""
    from serve.client import PredictionFailed, overlay, predict_file, summary

    out_dir = Path(options.overlay) if options.overlay else None
    if out_dir:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BusnetError(f"cannot create --overlay folder {out_dir}: {exc.strerror}") from exc
    answers, names = [], overlay_names(options.images)
    for name in options.images:
        path = Path(name)
        try:
            answer = predict_file(options.url, path, timeout_s=options.timeout)
            written = None
            if out_dir:
                written = out_dir / names[name]
                overlay(path.read_bytes(), answer).save(written)
        except PredictionFailed as exc:
            answers.append({"file": name, "error": str(exc)})
            print(f"{name}: error: {exc}", flush=True)
            continue
        answers.append({"file": name, **answer, "overlay": str(written) if written else None})
        print(f"{name}: {summary(answer)}" + (f"  -> {written}" if written else ""), flush=True)
    failed = sum(1 for answer in answers if "error" in answer)
    return {"images": len(answers), "failed": failed, "predictions": answers}


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
