"""Experiment tracking with MLflow: what `busnet train/tune/evaluate/cv/ablation` record, and where.

A `busnet` command turns tracking on for its process with `session(command, out)`; the stages open
`run(name, params=..., tags=...)` around their work and record on it. Without a session (a library call,
a test, `--no-track`) a run records nothing and MLflow is never imported. A run opened inside another is
its child (a cv's folds and their tests; a tune's trials through Ray Tune's own MLflowLoggerCallback), so
the MLflow UI shows one tree per command. Per-epoch metrics come from a Ray Train callback on the Train
controller (it runs on the driver's node) as the workers report them, so the training loop knows nothing
of tracking, and a run's history is complete even when only the best few checkpoints are kept.

The store: MLFLOW_TRACKING_URI when set, else MLflow's SQLite store in a local folder next to the run,
OUT/mlruns/ (mlflow.db, artifacts/): no server, nothing downloaded, MLflow's telemetry off. MLflow's
plain-file store would be simpler but MLflow 3 refuses it by default (maintenance mode). A remote OUT
(s3://) without MLFLOW_TRACKING_URI is not tracked, with one line saying so: a SQLite file cannot live
in a bucket.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STORE_FOLDER = "mlruns"
PARAM_CHARS = 6000  # MLflow's limit on a parameter's value


@dataclass(frozen=True, kw_only=True)
class TrackingOptions:
    """The tracking flag of every tracked command."""

    no_track: bool = field(
        default=False,
        metadata={"help": "record nothing in MLflow (default: record the run in OUT/mlruns, or MLFLOW_TRACKING_URI)"},
    )


@dataclass
class _Session:
    command: str
    tracking_uri: str
    artifact_root: str | None  # None: the tracking server's or the URI's own default
    experiment_id: str | None = None

    @property
    def experiment(self) -> str:
        return f"busnet-{self.command}"

    def client_and_experiment(self):
        """The MLflow client and this command's experiment, made on first use (the store too)."""
        client = _client(self.tracking_uri)
        if self.experiment_id is None:
            found = client.get_experiment_by_name(self.experiment)
            self.experiment_id = (
                found.experiment_id
                if found
                else client.create_experiment(
                    self.experiment,
                    artifact_location=f"{self.artifact_root}/{self.experiment}" if self.artifact_root else None,
                )
            )
        return client, self.experiment_id


_SESSION: ContextVar[_Session | None] = ContextVar("busnet_tracking_session", default=None)
_PARENT_RUN: ContextVar[str | None] = ContextVar("busnet_tracking_parent_run", default=None)


@contextlib.contextmanager
def session(command: str, out: str, *, enabled: bool = True) -> Iterator[None]:
    """Track the runs of `busnet <command>` whose output is `out` (the store: see the module doc)."""
    from jobs import storage  # pyarrow: not at import, `busnet --help` reads TrackingOptions

    tracking_uri, artifact_root = os.environ.get("MLFLOW_TRACKING_URI"), None
    if not enabled:
        yield
        return
    if not tracking_uri:
        if storage.is_remote(out):
            print(
                f"[busnet {command}] not tracked in MLflow: {out} is not a local folder; set MLFLOW_TRACKING_URI "
                "(a tracking server or a sqlite:/// file) to track it",
                file=sys.stderr,
                flush=True,
            )
            yield
            return
        tracking_uri = store_uri(out)
    if tracking_uri.startswith("sqlite:///"):
        # beside the database, not MLflow's default ./mlruns of whatever the working directory is
        artifact_root = (Path(tracking_uri.removeprefix("sqlite:///")).parent / "artifacts").as_uri()
    token = _SESSION.set(_Session(command, tracking_uri, artifact_root))
    user_uri = os.environ.get("MLFLOW_TRACKING_URI")
    try:
        yield
    finally:
        _SESSION.reset(token)
        # Ray Tune's MLflow callback sets MLFLOW_TRACKING_URI to this session's store for the rest of the
        # process: the next session in it (a test suite, a notebook) would track into this one's store.
        if user_uri is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = user_uri


def store_uri(out: str) -> str:
    """The tracking URI of the store next to a local `out` (what `mlflow ui --backend-store-uri` takes)."""
    from jobs import storage

    return f"sqlite:///{storage.local_path(out) / STORE_FOLDER / 'mlflow.db'}"


class Run:
    """One MLflow run of a stage; every method does nothing when tracking is off (`run_id` None)."""

    def __init__(self, tracking_uri: str | None = None, run_id: str | None = None):
        self.tracking_uri, self.run_id = tracking_uri, run_id

    def log_params(self, params: Mapping[str, Any]) -> None:
        if self.run_id and params:
            from mlflow.entities import Param

            flat = _flatten(params)
            batch = [Param(k, str(v)[:PARAM_CHARS]) for k, v in flat.items() if v is not None]
            _client(self.tracking_uri).log_batch(self.run_id, params=batch)

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """The finite numbers of `metrics` (nested dicts flattened to a.b.c), at `step` when given."""
        if self.run_id:
            _log_metrics(self.tracking_uri, self.run_id, metrics, step)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        if self.run_id:
            client = _client(self.tracking_uri)
            for key, value in tags.items():
                if value is not None:
                    client.set_tag(self.run_id, key, str(value))

    def log_artifacts(self, *uris: str | Path) -> None:
        """Files (local paths or storage URIs) as artifacts, each under its own name."""
        if not self.run_id:
            return
        from jobs import storage

        client = _client(self.tracking_uri)
        with tempfile.TemporaryDirectory(prefix="busnet-artifacts-") as scratch:
            for uri in uris:
                local = Path(scratch) / Path(str(uri)).name
                local.write_bytes(storage.read_bytes(str(uri)))
                client.log_artifact(self.run_id, str(local))

    def record_checkpoint(self, uri: str, metrics: Mapping[str, Any]) -> None:
        """The published checkpoint: its URI and epoch as tags, its metrics as best.*, its JSON files as
        artifacts (config, metrics, lineage: enough to know what was published without the weights)."""
        from jobs import storage

        version = storage.resolve(uri)  # the version `uri` points to now: its files, and its name as a tag
        self.set_tags({"checkpoint_uri": uri, "checkpoint_version": version, "best_epoch": metrics.get("epoch")})
        self.log_metrics({"best": metrics})
        self.log_artifacts(
            *(storage.join(version, path.rsplit("/", 1)[-1]) for path in storage.list_files(version, ".json"))
        )

    def epoch_callbacks(self) -> list:
        """Ray Train callbacks that log each epoch's metrics (worker 0's report) at step `epoch`; [] when off."""
        if not self.run_id:
            return []
        from ray.train import UserCallback

        tracking_uri, run_id = self.tracking_uri, self.run_id

        class LogEpochs(UserCallback):
            def after_report(self, run_context, metrics, checkpoint) -> None:
                if metrics:
                    _log_metrics(tracking_uri, run_id, metrics[0], metrics[0].get("epoch"))

        return [LogEpochs()]

    def tune_callbacks(self) -> list:
        """Ray Tune's MLflow logger: each trial a child run with its config and per-epoch metrics."""
        current = _SESSION.get()
        if not self.run_id or current is None:
            return []
        from ray.air.integrations.mlflow import MLflowLoggerCallback

        return [
            MLflowLoggerCallback(
                tracking_uri=self.tracking_uri,
                experiment_name=current.experiment,
                tags={"mlflow.parentRunId": self.run_id},
            )
        ]


@contextlib.contextmanager
def run(name: str, *, params: Mapping[str, Any] | None = None, tags: Mapping[str, Any] | None = None) -> Iterator[Run]:
    """An MLflow run around a stage, the child of the run around it; FAILED if the stage raises."""
    current = _SESSION.get()
    if current is None:
        yield Run()
        return
    client, experiment_id = current.client_and_experiment()
    parent = _PARENT_RUN.get()
    created = client.create_run(
        experiment_id,
        run_name=name,
        tags={"busnet.command": current.command, **({"mlflow.parentRunId": parent} if parent else {})},
    )
    tracked = Run(current.tracking_uri, created.info.run_id)
    tracked.log_params(params or {})
    tracked.set_tags(tags or {})
    token = _PARENT_RUN.set(tracked.run_id)
    status = "FAILED"
    try:
        yield tracked
        status = "FINISHED"
    finally:
        _PARENT_RUN.reset(token)
        client.set_terminated(tracked.run_id, status)


@functools.cache
def _client(tracking_uri: str):
    """The MLflow client for `tracking_uri`, quiet, with telemetry off (set before MLflow is imported)."""
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    # The SQLite store's first use logs its table creation at INFO: noise in every command's output.
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def _log_metrics(tracking_uri: str, run_id: str, metrics: Mapping[str, Any], step: int | None) -> None:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    batch = [
        Metric(key, float(value), now, int(step or 0))
        for key, value in _flatten(metrics).items()
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ]
    if batch:
        _client(tracking_uri).log_batch(run_id, metrics=batch)


def _flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}: MLflow keys are flat."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
