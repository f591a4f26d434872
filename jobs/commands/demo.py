"""Run the whole platform once, end to end, on local defaults (about 5 minutes on 2 CPU cores).

Generates a synthetic dataset, ingests it into a local object-store folder, runs a short Ray Tune
search over w1, alpha, gamma with the tiny preset, evaluates the best model on the test split, serves
it with Ray Serve on 127.0.0.1, sends test images to it (as `busnet predict` does), prints the metrics and the
predictions, and shuts down (or keeps serving). Everything lands under --workdir; a second run
reuses the stages whose output is complete and whose parameters did not change.

example:
  busnet demo --workdir ./busnet-work
  busnet demo --extra-busi ../shared/data/busi-sample --keep-serving
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from jobs.demo import DemoConfig as D

    parser.add_argument(
        "--workdir", type=Path, default=Path("busnet-work"), help="where everything goes (default ./busnet-work)"
    )
    parser.add_argument(
        "--extra-busi", type=Path, default=None, help="also ingest real images in BUSI's layout from this folder"
    )
    parser.add_argument(
        "--keep-serving", action="store_true", help="keep the model served after the demo (Ctrl-C stops)"
    )
    parser.add_argument("--images", type=int, default=D.images, help=f"synthetic images (default {D.images})")
    parser.add_argument("--trials", type=int, default=D.trials, help=f"Ray Tune trials (default {D.trials})")
    parser.add_argument("--epochs", type=int, default=D.epochs, help=f"epochs per trial (default {D.epochs})")
    parser.add_argument(
        "--input-size", type=int, default=D.input_size, help=f"network input side in px (default {D.input_size})"
    )
    parser.add_argument(
        "--port", type=int, default=D.port, help=f"HTTP port on 127.0.0.1 (default {D.port}; a free one if busy)"
    )
    parser.add_argument(
        "--difficulty",
        type=float,
        default=D.difficulty,
        help=f"synthetic data difficulty 0..1 (busnet synth --difficulty; default {D.difficulty})",
    )
    parser.add_argument("--seed", type=int, default=D.seed, help=f"random seed (default {D.seed})")


def run(args: argparse.Namespace) -> int | None:
    from jobs.demo import DemoConfig, run_demo

    run_demo(
        DemoConfig(
            workdir=args.workdir,
            images=args.images,
            trials=args.trials,
            epochs=args.epochs,
            input_size=args.input_size,
            seed=args.seed,
            difficulty=args.difficulty,
            extra_busi=args.extra_busi,
            port=args.port,
            keep_serving=args.keep_serving,
        )
    )
    return 0
