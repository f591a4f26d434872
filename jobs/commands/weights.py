"""Fetch timm's ImageNet weights into a folder for clusters without internet: `busnet weights fetch`.

`busnet weights fetch --out URI [--preset paper] [--backbones densenet121,vgg16]` reads the weights
of the preset's ResNet and Swin V2 (and of each baseline backbone) as `--pretrained imagenet` does:
from the Hugging Face cache (HF_HOME), fetching them first where the hub is reachable. It publishes
them as one folder: each file as safetensors, named after its published name, and weights.json
with every file's architecture, name and sha256. Then `--pretrained URI` on train, tune, cv and
ablation loads from there (each file checked against its sha256). A preset that narrows timm's
architectures (tiny) has no published weights and is refused.

example:
  busnet weights fetch --out s3://bucket/weights --preset paper --backbones densenet121
  busnet train --data s3://bucket/dataset --out s3://bucket/runs --preset paper --pretrained s3://bucket/weights
"""

from __future__ import annotations

import argparse

from jobs.commands.flags import add_flags, from_flags
from jobs.errors import BusnetError
from jobs.train.config import WeightsOptions


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    fetch = sub.add_parser("fetch", help="publish a preset's (and baselines') ImageNet weights into --out")
    add_flags(fetch, WeightsOptions)


def run(args: argparse.Namespace) -> int:
    import tempfile

    from jobs import storage
    from models.pretrained import read_hub_file, write_folder

    options = from_flags(WeightsOptions, args)
    try:
        files = [read_hub_file(arch) for arch in architectures(options)]
    except ValueError as exc:
        raise BusnetError(str(exc)) from exc
    with tempfile.TemporaryDirectory(prefix="busnet-weights-") as staging:
        index = write_folder(staging, files)
        version = storage.publish_dir(staging, options.out, keep=None)
    for arch, entry in index["weights"].items():
        print(f"{arch}: {entry['name']} sha256 {entry['sha256']}")
    print(f"published {len(files)} weight file(s): {version} (use --pretrained {options.out})")
    return 0


def architectures(options: WeightsOptions) -> list[str]:
    """The timm architectures to fetch, in order; BusnetError for a preset or name timm publishes nothing for."""
    import timm

    from models.presets import PRESETS

    preset = PRESETS[options.preset]
    narrowed = preset.resnet_kwargs() or preset.swin_kwargs()
    if narrowed:
        raise BusnetError(
            f"preset {options.preset!r} narrows timm's {preset.resnet} and {preset.swin}: timm publishes no "
            "ImageNet weights for it; fetch those of small or paper"
        )
    names = [preset.resnet, preset.swin]
    for name in filter(None, (part.strip() for part in (options.backbones or "").split(","))):
        if not timm.is_model(name):
            raise BusnetError(f"--backbones: {name!r} is not a timm model name")
        names.append(name)
    return list(dict.fromkeys(names))
