"""Serve a checkpoint over HTTP with Ray Serve until Ctrl-C.

Endpoints: POST /v1/predict (an image: raw body with an image/* content type, or multipart field
`file`), GET /v1/health, GET /v1/model, the OpenAPI schema at /openapi.json. Starts a local Ray on 127.0.0.1, or
joins the cluster in RAY_ADDRESS. The checkpoint is checked before anything starts. A request gets
its answer or a 408 within 60 s (serve.settings.REQUEST_TIMEOUT_S, as in serve/config.yaml).

example:
  busnet serve --checkpoint runs/tune/best --port 8000
  curl -H 'Content-Type: image/png' --data-binary @scan.png http://127.0.0.1:8000/v1/predict
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time

from jobs.commands import config_file
from jobs.commands.flags import add_flags, from_flags
from jobs.commands.options import ServeOptions
from jobs.errors import BusnetError

CONFIG_FILE = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_flags(parser, ServeOptions)


def add_serving_arguments(parser: argparse.ArgumentParser) -> None:
    """The replica's serving flags, shared with `busnet bench serve` so that the benchmark measures, at
    the same defaults, what the command runs."""
    add_flags(parser, ServeOptions, only=("ingress", "cpus_per_replica", "max_batch_size", "batch_wait_ms"))


def run(args: argparse.Namespace) -> dict:
    from serve.app import build_app
    from serve.ingress import use_ingress
    from serve.launch import check_port, start_app, stop_app

    effective = config_file.effective(args._parser, args)
    args = from_flags(ServeOptions, args)
    _check_arguments(args)
    ingress = use_ingress(args.ingress)
    if not os.environ.get("RAY_ADDRESS"):
        check_port(args.host, args.port)  # before the checkpoint and Ray: a taken port fails in a second
    model_name = _check_checkpoint(args.checkpoint)
    config_file.announce("serve", effective)
    print(
        f"busnet serve: checkpoint {args.checkpoint} ({model_name}) OK; starting Ray Serve ({ingress} ingress)",
        flush=True,
    )
    app = build_app(
        args.checkpoint,
        replicas=args.replicas or 1,
        autoscale=args.autoscale,
        max_replicas=args.max_replicas,
        gpu=args.gpu,
        num_cpus=args.cpus_per_replica,
        max_batch_size=args.max_batch_size,
        batch_wait_ms=args.batch_wait_ms,
        precision=args.precision,
    )
    signal.signal(signal.SIGTERM, _interrupt)
    url = None
    try:
        url = start_app(app, args.host, args.port)
        print(f"busnet serve: {url}/v1/predict  (API {url}/openapi.json; Ctrl-C to stop)", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("busnet serve: stopping", file=sys.stderr, flush=True)
    finally:
        stop_app()
    return {"url": url, "checkpoint": args.checkpoint, "model": model_name, "stopped": True}


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _check_arguments(args: ServeOptions) -> None:
    if args.replicas is not None and args.autoscale:
        raise BusnetError("--replicas and --autoscale: choose one")
    if (args.replicas is not None and args.replicas < 1) or args.max_replicas < 1:
        raise BusnetError("--replicas and --max-replicas must be at least 1")
    if args.max_batch_size < 1 or args.batch_wait_ms < 0:
        raise BusnetError("--max-batch-size must be >= 1 and --batch-wait-ms >= 0")
    if args.precision in ("fp16", "bf16") and not args.gpu:
        raise BusnetError(f"--precision {args.precision} needs --gpu")


def _check_checkpoint(uri: str) -> str:
    """Load the checkpoint once here: a bad URI fails in a second with one line, not in a replica."""
    from models import load_checkpoint

    try:
        model, config = load_checkpoint(uri)
    except (ValueError, OSError) as exc:
        raise BusnetError(f"cannot load checkpoint {uri}: {exc}") from exc
    del model
    network = config.get("model", {})
    return f"{network.get('variant')}/{network.get('preset')}, input {network.get('input_size')} px"
