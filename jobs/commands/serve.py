"""Serve a checkpoint over HTTP with Ray Serve until Ctrl-C.

Endpoints: POST /v1/predict (an image: raw body with an image/* content type, or multipart field
`file`), GET /v1/health, GET /v1/model, OpenAPI docs at /docs. Starts a local Ray on 127.0.0.1, or
joins the cluster in RAY_ADDRESS. The checkpoint is checked before anything starts. A request gets
its answer or a 408 within 60 s (serve.settings.REQUEST_TIMEOUT_S, as in serve/config.yaml).

Example:
  busnet serve --checkpoint runs/tune/best --port 8000
  curl -H 'Content-Type: image/png' --data-binary @scan.png http://127.0.0.1:8000/v1/predict
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time

from jobs.errors import BusnetError
from serve.ingress import HAPROXY, INGRESSES, PROXY
from serve.settings import PRECISIONS, ServeSettings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint",
        required=True,
        metavar="URI",
        help="checkpoint directory: path, file:// or s3:// (e.g. <run>/best)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="HTTP port (default 8000)")
    add_ingress_argument(parser)
    scaling = parser.add_mutually_exclusive_group()
    scaling.add_argument("--replicas", type=int, default=1, metavar="N", help="fixed number of replicas (default 1)")
    scaling.add_argument(
        "--autoscale", action="store_true", help="autoscale between 1 and --max-replicas replicas on requests in flight"
    )
    parser.add_argument("--max-replicas", type=int, default=4, help="upper bound with --autoscale (default 4)")
    parser.add_argument(
        "--gpu", action="store_true", help="one GPU per replica; inference in bf16 (or fp16 where bf16 is missing)"
    )
    parser.add_argument(
        "--cpus-per-replica",
        type=float,
        default=1.0,
        help="CPUs Ray reserves per replica; torch uses as many threads (default 1)",
    )
    # The batching and precision defaults are the replica's own (serve.settings), shown from there.
    settings = ServeSettings()
    parser.add_argument(
        "--max-batch-size",
        type=int,
        default=settings.max_batch_size,
        help=f"largest dynamic batch (default {settings.max_batch_size})",
    )
    wait_ms = settings.batch_wait_timeout_s * 1000
    parser.add_argument(
        "--batch-wait-ms",
        type=float,
        default=wait_ms,
        help=f"how long a batch waits for requests the replica is still decoding (a lone request never waits; "
        f"default {wait_ms:g} ms)",
    )
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=settings.precision,
        help="auto: bf16/fp16 on GPU, fp32 on CPU",
    )


def add_ingress_argument(parser: argparse.ArgumentParser) -> None:
    """--ingress, shared with `busnet bench serve` so the benchmark measures what the command runs."""
    parser.add_argument(
        "--ingress",
        choices=INGRESSES,
        default=PROXY,
        help=f"{PROXY}: Ray Serve's Python proxy (default); {HAPROXY}: HAProxy in front of replicas that take "
        "HTTP themselves, faster, but each replica then also listens on every interface (serve/README.md)",
    )


def run(args: argparse.Namespace) -> int:
    from serve.app import build_app
    from serve.ingress import use_ingress
    from serve.launch import check_port, start_app, stop_app

    _check_arguments(args)
    use_ingress(args.ingress)
    if not os.environ.get("RAY_ADDRESS"):
        check_port(args.host, args.port)  # before the checkpoint and Ray: a taken port fails in a second
    model_name = _check_checkpoint(args.checkpoint)
    print(f"busnet serve: checkpoint {args.checkpoint} ({model_name}) OK; starting Ray Serve", flush=True)
    app = build_app(
        args.checkpoint,
        replicas=args.replicas,
        autoscale=args.autoscale,
        max_replicas=args.max_replicas,
        gpu=args.gpu,
        num_cpus=args.cpus_per_replica,
        max_batch_size=args.max_batch_size,
        batch_wait_ms=args.batch_wait_ms,
        precision=args.precision,
    )
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        url = start_app(app, args.host, args.port)
        print(f"busnet serve: {url}/v1/predict  (docs {url}/docs; Ctrl-C to stop)", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("busnet serve: stopping", file=sys.stderr, flush=True)
    finally:
        stop_app()
    return 0


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _check_arguments(args: argparse.Namespace) -> None:
    if args.replicas < 1 or args.max_replicas < 1:
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
