"""Generate synthetic breast ultrasound images with lesion masks, in BUSI's folder layout.

Writes benign/benign (N).png + benign (N)_mask.png, malignant/malignant (N).png + ..._mask.png,
cases.csv (image, case_id: several views of one lesion share a case) and synth.json (parameters).
Same seed and options -> byte-identical files.

example:
  busnet synth --out data/synth --n 200 --seed 0
"""

from __future__ import annotations

import argparse
import time

from jobs.commands.flags import add_flags, from_flags
from jobs.commands.options import SynthOptions


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_flags(parser, SynthOptions)


def run(args: argparse.Namespace) -> dict:
    from jobs.data.synth import generate

    options = from_flags(SynthOptions, args)
    started = time.perf_counter()
    summary = generate(
        options.out,
        options.n,
        options.seed,
        min_size=options.min_size,
        max_size=options.max_size,
        malignant_fraction=options.malignant_fraction,
        images_per_case=tuple(options.images_per_case),
        difficulty=options.difficulty,
        force=options.force,
        progress=True,
    )
    seconds = time.perf_counter() - started
    print(
        f"wrote {summary['images']} images ({summary['benign']} benign, {summary['malignant']} malignant) "
        f"in {summary['cases']} cases to {summary['out_dir']} in {seconds:.1f} s"
    )
    return {**summary, "seconds": round(seconds, 1)}
