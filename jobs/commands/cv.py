"""Cross-validate: train and test each fold of the dataset, then report mean +- sd (the paper's protocol).

Fold K trains with `busnet train --fold K` (fold K's own train and validation sides) into
OUT/NAME/fold-K/ and is tested with `busnet evaluate --fold K --split test` into OUT/NAME/fold-K/eval/.
On a dataset made by `busnet ingest --folds-from` (the benchmark's predefined folds) each fold has its own test
images; on drawn folds every fold is tested on the stored test split. Writes OUT/NAME/cv.json (each
fold's test metrics, their mean and sd, overall and per source, at each fold's validation-chosen
threshold and at the paper's 0.5) and OUT/NAME/cv.md; folds already trained and tested are reused,
so running the same command again with --resume goes on where it stopped (as `busnet train --resume`).
The other flags are those of `busnet train`.

example:
  busnet cv --data ./busnet-work/dataset --out ./busnet-work/cv --name tiny --epochs 3 --lr 1e-3 \\
      --input-size 64
"""

from __future__ import annotations

import argparse
import dataclasses

from jobs import storage, tracking
from jobs.commands import config_file, resume
from jobs.commands.flags import add_flags, from_flags
from jobs.errors import BusnetError
from jobs.train.config import CvOptions, TrainConfig

CONFIG_FILE = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_flags(parser, CvOptions)
    add_flags(parser, TrainConfig, skip=("fold",))  # each fold is one run
    add_flags(parser, resume.ResumeOptions)
    add_flags(parser, tracking.TrackingOptions)


def run(args: argparse.Namespace) -> dict:
    from jobs.data.dataset import open_dataset
    from jobs.evaluate.cv import cross_validate, render

    if args.name is not None and ("/" in args.name or not args.name.strip()):
        raise BusnetError(f"--name {args.name!r}: use a plain name without '/'")
    config = from_flags(TrainConfig, args)
    config = dataclasses.replace(config, name=config.run_name())
    effective = {**config_file.effective(args._parser, args), "name": config.name}
    resume.start(storage.join(config.out, config.name), effective, open_dataset(config.data), resume=args.resume)
    config_file.announce("cv", effective)
    with tracking.session("cv", config.out, enabled=not args.no_track):
        outcome = cross_validate(config, from_flags(CvOptions, args))
    print(render(outcome.summary))
    print(f"summary: {outcome.summary_uri}")
    return {"summary_uri": outcome.summary_uri, "summary": outcome.summary}
