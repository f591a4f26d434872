"""`--resume`: going on with a run is asked for, and only with the data and configuration it started with.

Before a train, tune, cv or ablation starts, its run folder is checked: a folder that already holds a
run is refused without --resume (reusing a name used to resume silently, even on another dataset);
with --resume, the configuration saved there (`config.yaml`, every flag's value) and the dataset's
content hash (`dataset.json`) must match this one's, else the differences are named. Then both are
saved (again), so the next --resume compares against them. Flags that do not change what is
computed, and --epochs (a run goes on for longer), may differ (MAY_CHANGE).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from jobs import storage
from jobs.commands import config_file
from jobs.errors import BusnetError

if TYPE_CHECKING:
    from jobs.data.dataset import Dataset

DATASET_FILE = "dataset.json"
# calibrate: each checkpoint's temperature is fitted on its own validation pass; training does not read it.
MAY_CHANGE = ("epochs", "resume", "verbose", "no_track", "max_failures", "compile", "keep", "calibrate")


@dataclass(frozen=True, kw_only=True)
class ResumeOptions:
    resume: bool = field(
        default=False,
        metadata={
            "help": "go on with the run in the run folder (same dataset and configuration); without it, "
            "an existing run folder is refused"
        },
    )


def start(run_folder: str, config: dict[str, Any], dataset: Dataset, *, resume: bool) -> None:
    """Refuse an existing run without `resume`, or a resumed one whose data or configuration differ;
    then save this configuration and dataset hash in `run_folder`. `dataset`: the command's one open."""
    content_hash, data = dataset.content_hash, dataset.uri
    taken = _has_run(run_folder)
    if taken and not resume:
        raise BusnetError(
            f"{run_folder} already holds a run: pass --resume to go on with it, or choose another --name/--out"
        )
    if resume and not taken:
        raise BusnetError(f"--resume: there is no run in {run_folder} to go on with")
    if taken:
        _compare(run_folder, config, content_hash)
    config_file.save(config, run_folder)
    dataset = {"uri": data, "content_hash": content_hash}
    storage.write_bytes(storage.join(run_folder, DATASET_FILE), (json.dumps(dataset, indent=2) + "\n").encode())


def _has_run(run_folder: str) -> bool:
    """True once the run wrote anything of its own: a run refused before it started (a bad flag, too few
    CPUs) leaves only this module's two files, and its name stays free."""
    _, root = storage.filesystem(run_folder)
    ours = {f"{root.rstrip('/')}/{name}" for name in (config_file.SAVED_NAME, DATASET_FILE)}
    return any(path not in ours for path in storage.list_files(run_folder))


def _compare(run_folder: str, config: dict[str, Any], content_hash: str) -> None:
    saved = config_file.load_saved(run_folder)
    dataset_uri = storage.join(run_folder, DATASET_FILE)
    if saved is None or not storage.exists(dataset_uri):
        raise BusnetError(
            f"--resume: {run_folder} has no saved {config_file.SAVED_NAME} and {DATASET_FILE} to compare with "
            "(a run from an older busnet); choose another --name"
        )
    earlier_hash = json.loads(storage.read_bytes(dataset_uri))["content_hash"]
    if earlier_hash != content_hash:
        raise BusnetError(
            f"--resume: the dataset changed (content hash {earlier_hash[:12]} when the run started, now "
            f"{content_hash[:12]}); choose another --name"
        )
    differs = [
        f"{key} {saved.get(key)!r} -> {config.get(key)!r}"
        for key in sorted(set(saved) | set(config))
        if key not in MAY_CHANGE and saved.get(key) != config.get(key)
    ]
    if differs:
        raise BusnetError(f"--resume: the configuration differs from the run's ({'; '.join(differs)})")
