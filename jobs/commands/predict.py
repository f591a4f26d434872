"""Send images to a running `busnet serve` and print one line per image.

Each line: file, label, malignancy probability (and the checkpoint's threshold), lesion area and
bounding box. With --overlay DIR, also writes DIR/<name>.overlay.png: the image with the predicted
lesion contour drawn in red. Exits 1 if any image failed (its line says why).

Example:
  busnet predict --url http://127.0.0.1:8000 scans/*.png --overlay overlays/
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from jobs.errors import BusnetError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="PNG, JPEG or BMP files")
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the service (default http://127.0.0.1:8000)")
    parser.add_argument("--overlay", metavar="DIR", help="write <name>.overlay.png files with the mask contour here")
    parser.add_argument(
        "--json", action="store_true", help="print each answer as one JSON line (with a `file` field) instead"
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait per image (default 60)")


def run(args: argparse.Namespace) -> int:
    from serve.client import PredictionFailed, overlay, predict_file, summary

    out_dir = Path(args.overlay) if args.overlay else None
    if out_dir:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BusnetError(f"cannot create --overlay folder {out_dir}: {exc.strerror}") from exc
    failed = 0
    for name in args.images:
        path = Path(name)
        try:
            answer = predict_file(args.url, path, timeout_s=args.timeout)
            written = None
            if out_dir:
                written = out_dir / f"{path.stem}.overlay.png"
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
