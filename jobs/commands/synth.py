"""Generate synthetic breast ultrasound images with lesion masks, in BUSI's folder layout.

Writes benign/benign (N).png + benign (N)_mask.png, malignant/malignant (N).png + ..._mask.png,
cases.csv (image, case_id: several views of one lesion share a case) and synth.json (parameters).
Same seed and options -> byte-identical files. Example:

    busnet synth --out data/synth --n 200 --seed 0
"""

from __future__ import annotations

import argparse
import time

from jobs.data.synth.lesion import DEFAULT_DIFFICULTY


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out", required=True, help="output folder (created; must be empty or a previous synth output)"
    )
    parser.add_argument("--n", type=int, required=True, help="number of images")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--min-size", type=int, default=300, help="smallest image side in px (default 300)")
    parser.add_argument("--max-size", type=int, default=800, help="largest image side in px (default 800)")
    parser.add_argument("--malignant-fraction", type=float, default=0.5, help="share of malignant images (default 0.5)")
    parser.add_argument(
        "--images-per-case",
        type=int,
        nargs=2,
        default=(1, 4),
        metavar=("MIN", "MAX"),
        help="views of one lesion per case, drawn uniformly in MIN..MAX (default 1 4)",
    )
    parser.add_argument(
        "--difficulty",
        type=float,
        default=DEFAULT_DIFFICULTY,
        help=f"0..1: how much the classes' BI-RADS traits overlap, 0 barely, 1 fully (default {DEFAULT_DIFFICULTY})",
    )
    parser.add_argument("--force", action="store_true", help="replace the contents of a non-empty --out folder")


def run(args: argparse.Namespace) -> int | None:
    from jobs.data.synth import generate

    started = time.perf_counter()
    summary = generate(
        args.out,
        args.n,
        args.seed,
        min_size=args.min_size,
        max_size=args.max_size,
        malignant_fraction=args.malignant_fraction,
        images_per_case=tuple(args.images_per_case),
        difficulty=args.difficulty,
        force=args.force,
        progress=True,
    )
    seconds = time.perf_counter() - started
    print(
        f"wrote {summary['images']} images ({summary['benign']} benign, {summary['malignant']} malignant) "
        f"in {summary['cases']} cases to {summary['out_dir']} in {seconds:.1f} s"
    )
    return 0
