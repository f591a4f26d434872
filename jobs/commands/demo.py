"""Run the whole platform once, end to end, on local defaults (about 5 minutes on 2 CPU cores).

Generates a synthetic dataset, ingests it into a local object-store folder, runs a short Ray Tune
search over w1, alpha, gamma with the tiny preset, evaluates the best model on the test split, serves
it with Ray Serve on 127.0.0.1, sends test images to it (as `busnet predict` does), prints the metrics and the
predictions, and shuts down (or keeps serving). Everything lands under --workdir; a second run
reuses the stages whose output is complete and whose parameters did not change.

examples:
  busnet demo --workdir ./busnet-work
  busnet demo --extra-busi ../shared/data/busi-sample --keep-serving
"""

from __future__ import annotations

import argparse

from jobs.commands.flags import add_flags, from_flags


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from jobs.demo import DemoConfig

    add_flags(parser, DemoConfig)


def run(args: argparse.Namespace) -> dict:
    from jobs.demo import DemoConfig, run_demo

    return run_demo(from_flags(DemoConfig, args))
