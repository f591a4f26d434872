"""Train Hybrid-MT-ESTAN data-parallel on Ray Train (checkpoints per epoch, best published as best/).

Runs on the local Ray (or RAY_ADDRESS). Each epoch: training with kornia augmentation on the worker,
validation on the val split (or the held-out --fold) with every metric, a checkpoint in the run folder
OUT/NAME/ (the best --keep by --select are kept); the best checkpoint ends up in OUT/NAME/best/.
An existing OUT/NAME is refused unless --resume (same dataset and configuration: the run folder keeps
config.yaml, every flag's value, usable as --config); the run then goes on after its last checkpoint.
The objective is the paper's (--w1 * Focal + Dice). The unset training options come from --recipe:
"busnet" (Adam lr 1e-3, batch 8, 1 warm-up epoch, cosine decay, clipping at 1, early stopping after
10 epochs without progress, random init, best score) or "paper" (Adam 1e-5, batch 4, ImageNet
weights, lowest val loss); a given flag wins. --pretrained imagenet loads timm's published weights
through the Hugging Face cache (HF_HOME; HF_HUB_OFFLINE=1 reads only the cache); --pretrained URI a
folder made by `busnet weights fetch`. --select score publishes the epoch with the best mean(val
ROC-AUC, val Dice) over the last --smooth epochs, val_loss the lowest val loss (the authors').
Each checkpoint carries a temperature fitted on validation (--no-calibrate: none), which evaluate,
predict and serve apply to the probability.
One line per epoch (on a terminal, a bar with an ETA within each epoch first); --verbose shows Ray's own
logs too.

example:
  busnet train --data ./busnet-work/dataset --out ./busnet-work/runs --name tiny1 --epochs 12 --input-size 64
  busnet train --data ./busnet-work/dataset --out ./busnet-work/runs --name paper1 --preset paper --recipe paper
"""

from __future__ import annotations

import argparse
import dataclasses

from jobs import storage, tracking
from jobs.commands import config_file, resume
from jobs.commands.flags import add_flags, from_flags
from jobs.errors import BusnetError
from jobs.train.config import TrainConfig

CONFIG_FILE = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_flags(parser, TrainConfig)
    add_flags(parser, resume.ResumeOptions)
    add_flags(parser, tracking.TrackingOptions)


def run(args: argparse.Namespace) -> dict:
    from jobs.data.dataset import open_dataset
    from jobs.train.driver import train

    if args.name is not None and ("/" in args.name or not args.name.strip()):
        raise BusnetError(f"--name {args.name!r}: use a plain name without '/'")
    config = from_flags(TrainConfig, args)
    config = dataclasses.replace(config, name=config.run_name())  # the folder checked is the one trained in
    effective = {**config_file.effective(args._parser, args), "name": config.name}
    dataset = open_dataset(config.data)  # once, for the resume check and the whole run
    resume.start(storage.join(config.out, config.name), effective, dataset, resume=args.resume)
    config_file.announce("train", effective)
    with tracking.session("train", config.out, enabled=not args.no_track):
        outcome = train(config, dataset=dataset)
    shown = ", ".join(
        f"{k}={v:.4g}" for k, v in outcome.best_metrics.items() if k.startswith("val_") and isinstance(v, float)
    )
    print(f"best checkpoint (epoch {outcome.best_metrics.get('epoch')}): {outcome.best_uri}")
    print(f"  {shown}")
    return {"run": storage.join(config.out, config.name), "best": outcome.best_uri, "metrics": outcome.best_metrics}
