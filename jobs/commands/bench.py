"""Measure the platform: `busnet bench data|train|serve|predict|scale|gpu` prints a table (and, with --json, one JSON
object).

data:  images/s through the Ray Data pipeline vs. a plain single-process loop over the same Parquet (start cost apart).
train: training images/s of a bare PyTorch loop vs. `busnet train`'s path (Ray Train on the decoded split); DDP share.
serve: closed-loop HTTP load vs. the bare request pipeline: requests/s, p50/p99 latency, mean batch size.
predict: images/s of batch inference (busnet predict) vs. the bare batched pipeline in one process.
scale: training images/s, driver memory and per-node cache bytes as data grows, on a simulated multi-node cluster.
gpu: the ready GPU check: training MFU and memory, serving and predict speed, a 2-epoch run that serves (one JSON).
"""

from __future__ import annotations

import argparse
import importlib

BENCHMARKS = {
    "data": "jobs.bench.data",
    "train": "jobs.bench.train",
    "serve": "jobs.bench.serve",
    "predict": "jobs.bench.predict",
    "scale": "jobs.bench.scale",
    "gpu": "jobs.bench.gpu",
}


def _available() -> dict:
    found = {}
    for name, module_name in BENCHMARKS.items():
        try:
            found[name] = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
    return found


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)
    for name, module in _available().items():
        bench = sub.add_parser(
            name, help=(module.__doc__ or name).strip().splitlines()[0].replace("%", "%%"), description=module.__doc__
        )
        module.add_arguments(bench)
        bench.set_defaults(_bench=module.run)


def run(args: argparse.Namespace) -> dict:
    """The benchmark's report; with --json the CLI prints it as the one object on stdout (and, as Ray prints
    its processes' log lines to the driver's sys.stdout, sends everything else to stderr meanwhile)."""
    return args._bench(args)
