"""Typed configs of training, tuning, cross-validation and ablation: every default once, the CLI flags from them.

`busnet train` and `busnet tune` build their flags from these fields (`jobs.commands.flags`: the
metadata holds the help text and choices), the driver checks and runs a `TrainConfig`, and each Ray
Train worker receives a frozen `LoopConfig` (Ray pickles it). Nothing here imports torch or Ray:
`busnet --help` reads these classes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from models.loss_weights import LossWeights
from models.presets import AAA_GATES, AAA_PLACEMENTS, BASELINE, BASELINES, FUSIONS, PRESETS, TABLE3_VARIANTS, VARIANTS

ARCHITECTURE_OPTIONS = ("aaa_placement", "aaa_gate", "fusion")  # models.presets.NetworkPreset fields
SEARCHES = ("random", "optuna", "hyperopt")  # Ray Tune search algorithms (jobs.train.tune)


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """One training run. Hyperparameter defaults are the paper's (3.3); `epochs` is ours (not stated)."""

    name: str | None = field(default=None, metadata={"help": "run name; reuse it to resume", "unset": "run-<time>"})
    data: str = field(metadata={"help": "dataset URI (path, file:// or s3://) made by busnet ingest"})
    out: str = field(metadata={"help": "output URI: runs go to OUT/NAME/"})
    preset: str = field(default="tiny", metadata={"help": "network size", "choices": tuple(PRESETS)})
    variant: str = field(
        default="hybrid",
        metadata={
            "help": "network variant of the paper's ablation (Table 3), or a Table 2 baseline (with --backbone)",
            "choices": (*VARIANTS, BASELINE),
        },
    )
    backbone: str | None = field(
        default=None,
        metadata={
            "help": f"timm model of --variant {BASELINE}, e.g. {', '.join(BASELINES[:3])}",
            "unset": "none",
        },
    )
    workers: int = field(default=1, metadata={"help": "Ray Train workers, data-parallel"})
    gpu: bool = field(default=False, metadata={"help": "one GPU per worker (NCCL, bf16 autocast)"})
    cpus_per_worker: float = field(default=1.0, metadata={"help": "CPUs reserved per worker"})
    epochs: int = field(default=30, metadata={"help": "epochs; the paper gives none"})
    batch_size: int = field(default=4, metadata={"help": "images per worker and step"})
    lr: float = field(default=1e-5, metadata={"help": "Adam learning rate"})
    loss: LossWeights = field(default_factory=LossWeights)
    fold: int | None = field(
        default=None,
        metadata={"help": "hold out fold K of train+val for validation", "unset": "the stored val split"},
    )
    pretrained_cnn: str | None = field(default=None, metadata={"help": "timm ResNet weight file (path or URI)"})
    pretrained_swin: str | None = field(default=None, metadata={"help": "timm Swin V2 weight file (path or URI)"})
    pretrained_backbone: str | None = field(
        default=None, metadata={"help": f"timm weight file of --variant {BASELINE}'s --backbone (path or URI)"}
    )
    input_size: int | None = field(default=None, metadata={"help": "input side in pixels", "unset": "the preset's"})
    aaa_placement: str | None = field(
        default=None,
        metadata={
            "help": "where AAA blocks sit in the Swin encoder",
            "choices": AAA_PLACEMENTS,
            "unset": "the preset's",
        },
    )
    aaa_gate: str | None = field(
        default=None,
        metadata={
            "help": "AAA's sigmoid gate: per channel or one spatial map",
            "choices": AAA_GATES,
            "unset": "the preset's",
        },
    )
    fusion: str | None = field(
        default=None,
        metadata={"help": "where Swin maps join the decoder", "choices": FUSIONS, "unset": "the preset's"},
    )
    keep: int = field(default=3, metadata={"help": "checkpoints kept per run, best by --metric"})
    metric: str = field(default="val_auc", metadata={"help": "validation metric that picks the best checkpoint"})
    max_failures: int = field(
        default=2, metadata={"help": "worker group restarts from the last checkpoint before giving up"}
    )
    seed: int = field(default=0, metadata={"help": "random seed"})

    def architecture(self) -> dict:
        """The network options given (input size, AAA, fusion): `build_model` overrides of the preset."""
        names = ("input_size", *ARCHITECTURE_OPTIONS)
        return {name: getattr(self, name) for name in names if getattr(self, name) is not None}

    def run_name(self) -> str:
        return self.name or time.strftime("run-%Y%m%d-%H%M%S")


@dataclass(frozen=True)
class LoopConfig:
    """What each Ray Train worker gets: the run's config and what the driver learnt before it started."""

    train: TrainConfig
    overrides: dict  # the model's resolved preset overrides (models `config["overrides"]`)
    preprocessing: dict  # models.preprocess.Preprocessing.to_dict()
    lineage: dict  # written as the checkpoints' lineage.json (plus the epoch)


@dataclass(frozen=True, kw_only=True)
class TuneOptions:
    """`busnet tune`'s own options; each trial is a `TrainConfig` with the sampled loss weights."""

    samples: int = field(default=8, metadata={"help": "trials to run"})
    max_concurrent: int = field(default=1, metadata={"help": "trials running at once"})
    search: str = field(
        default="random",
        metadata={"help": "search algorithm; hyperopt needs `pip install hyperopt`", "choices": SEARCHES},
    )
    grace_period: int = field(default=1, metadata={"help": "epochs every trial runs before ASHA may stop it"})


@dataclass(frozen=True, kw_only=True)
class CvOptions:
    """`busnet cv`'s own options; the rest is the `TrainConfig` every fold trains with."""

    folds: str | None = field(
        default=None, metadata={"help": "comma-separated folds to run, e.g. 0,2", "unset": "every fold"}
    )
    bootstrap: int = field(
        default=0, metadata={"help": "bootstrap resamples for each fold's 95% intervals; 0 turns them off"}
    )


@dataclass(frozen=True, kw_only=True)
class AblationOptions:
    """`busnet ablation`'s own options; with `CvOptions` and the `TrainConfig` every variant shares."""

    variants: str = field(
        default=",".join(TABLE3_VARIANTS),
        metadata={"help": f"comma-separated variants to compare; {BASELINE}:<timm name> adds a Table 2 baseline"},
    )
