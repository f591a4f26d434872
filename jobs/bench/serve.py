"""Serve benchmark: closed-loop HTTP load at several concurrencies against a local Ray Serve app.

Starts the app on 127.0.0.1 (one replica), measures the bare model's batched forward pass in this
process with the replica's thread count, then for each concurrency drives load from a second
process (jobs/bench/loadgen.py) and reports requests/s, p50/p99 latency, the mean batch size the replica
ran (from GET /v1/model's batch counters) and served throughput / bare forward throughput. Every
level is bounded by --requests and --duration.

Example:
  busnet bench serve --concurrency 1,4,16 --requests 200 --duration 20
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import time
from pathlib import Path

from jobs.errors import BusnetError

APP_NAME = "busnet-bench"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint", metavar="URI", help="checkpoint to serve (default: a fresh tiny model saved to a temp dir)"
    )
    parser.add_argument("--concurrency", default="1,4,16", help="comma-separated client counts (default 1,4,16)")
    parser.add_argument("--requests", type=int, default=200, help="requests per concurrency level (default 200)")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per level at most (default 20)")
    parser.add_argument("--max-batch-size", type=int, default=16, help="the replica's largest batch (default 16)")
    parser.add_argument("--batch-wait-ms", type=float, default=5.0, help="batch fill wait (default 5 ms)")
    parser.add_argument("--cpus-per-replica", type=float, default=1.0, help="CPUs (and torch threads) of the replica")
    parser.add_argument(
        "--image", metavar="PATH", help="image to send (default: a synthetic 500x500 8-bit PNG, BUSI-sized)"
    )


def run(args: argparse.Namespace) -> int:
    import requests

    from jobs.runtime import free_port
    from serve.app import build_app
    from serve.launch import start_app, stop_app

    levels = _concurrencies(args.concurrency)
    if args.requests < 1 or args.duration <= 0:
        raise BusnetError("--requests must be >= 1 and --duration > 0")
    body, image_desc = _image(args.image)
    with tempfile.TemporaryDirectory(prefix="busnet-bench-serve-") as tmp:
        checkpoint = args.checkpoint or _tiny_checkpoint(Path(tmp) / "tiny")
        threads = max(1, round(args.cpus_per_replica))
        bare = bare_forward(checkpoint, args.max_batch_size, threads, max(2.0, args.duration / 4))
        _log(
            args, f"bare forward: {bare['images_per_s']:.1f} images/s (batch {bare['batch_size']}, {threads} thread(s))"
        )
        app = build_app(
            checkpoint,
            max_batch_size=args.max_batch_size,
            batch_wait_ms=args.batch_wait_ms,
            num_cpus=args.cpus_per_replica,
        )
        try:
            url = start_app(app, port=free_port(), name=APP_NAME)
            info = requests.get(f"{url}/v1/model", timeout=30).json()
            results = [_level(url, body, c, args, bare["images_per_s"]) for c in levels]
            for row in results:
                _log(args, f"concurrency {row['concurrency']}: {row['requests_per_s']:.1f} req/s")
        finally:
            stop_app(APP_NAME)
    report = {
        "checkpoint": args.checkpoint or "fresh tiny model",
        "model": info["model"]["name"],
        "preset": info["model"]["preset"],
        "input_size": info["config"]["preprocessing"]["size"],
        "image": image_desc,
        "replicas": 1,
        "cpus_per_replica": args.cpus_per_replica,
        "max_batch_size": args.max_batch_size,
        "batch_wait_ms": args.batch_wait_ms,
        "bare_forward": bare,
        "levels": results,
    }
    print(json.dumps(report) if args.json else _table(report))
    return 0


def bare_forward(checkpoint: str, batch_size: int, threads: int, budget_s: float, max_iterations: int = 200) -> dict:
    """Images/s of the model's batched forward pass alone (no HTTP, decoding or postprocessing)."""
    import numpy as np
    import torch

    from models import load_checkpoint
    from serve.predictor import forward, load_model

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        loaded = load_model(checkpoint, load_checkpoint, torch.device("cpu"))
        size = loaded.preprocessing.size
        batch = np.random.default_rng(0).standard_normal((batch_size, 3, size, size)).astype(np.float32)
        forward(loaded, batch)  # warm-up
        iterations, start = 0, time.perf_counter()
        while iterations < max_iterations and time.perf_counter() - start < budget_s:
            forward(loaded, batch)
            iterations += 1
        elapsed = time.perf_counter() - start
    finally:
        torch.set_num_threads(previous)
    return {
        "batch_size": batch_size,
        "threads": threads,
        "iterations": iterations,
        "images_per_s": iterations * batch_size / elapsed,
    }


def _level(url: str, body: bytes, concurrency: int, args: argparse.Namespace, bare_ips: float) -> dict:
    """One concurrency level: warm up, then measured load from a second process."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    import numpy as np
    import requests

    from jobs.bench.loadgen import drive

    endpoint = f"{url}/v1/predict"
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        pool.submit(drive, endpoint, body, "image/png", concurrency, 2 * concurrency, args.duration).result()
        before = requests.get(f"{url}/v1/model", timeout=30).json()["stats"]
        load = pool.submit(drive, endpoint, body, "image/png", concurrency, args.requests, args.duration).result()
        after = requests.get(f"{url}/v1/model", timeout=30).json()["stats"]
    latencies = np.array(load["latencies_s"]) * 1000
    batches = after["batches"] - before["batches"]
    rps = len(latencies) / load["elapsed_s"]
    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "errors": load["errors"],
        "error_samples": load["error_samples"],
        "elapsed_s": load["elapsed_s"],
        "requests_per_s": rps,
        "p50_ms": float(np.percentile(latencies, 50)) if len(latencies) else None,
        "p99_ms": float(np.percentile(latencies, 99)) if len(latencies) else None,
        "mean_batch_size": (after["requests"] - before["requests"]) / batches if batches else None,
        "vs_bare_forward": rps / bare_ips,
    }


def _table(report: dict) -> str:
    bare = report["bare_forward"]
    lines = [
        f"serve bench: {report['model']} ({report['preset']}, {report['input_size']} px) from "
        f"{report['checkpoint']}; 1 replica x {report['cpus_per_replica']:g} CPU, max batch "
        f"{report['max_batch_size']}, wait {report['batch_wait_ms']:g} ms; image {report['image']}",
        f"bare batched forward (batch {bare['batch_size']}, {bare['threads']} thread(s)): "
        f"{bare['images_per_s']:.1f} images/s",
        f"{'concurrency':>11} {'requests':>8} {'errors':>6} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'mean batch':>10} {'vs bare':>8}",
    ]
    for row in report["levels"]:

        def fmt(value, spec):
            return format(value, spec) if value is not None else "-"

        lines.append(
            f"{row['concurrency']:>11} {row['requests']:>8} {row['errors']:>6} {row['requests_per_s']:>8.1f} "
            f"{fmt(row['p50_ms'], '>8.1f')} {fmt(row['p99_ms'], '>8.1f')} "
            f"{fmt(row['mean_batch_size'], '>10.2f')} {row['vs_bare_forward']:>8.3f}"
        )
    return "\n".join(lines)


def _concurrencies(text: str) -> list[int]:
    try:
        levels = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        levels = []
    if not levels or min(levels) < 1:
        raise BusnetError(f"--concurrency wants positive integers like 1,4,16; got {text!r}")
    return levels


def _image(path: str | None) -> tuple[bytes, str]:
    import numpy as np
    from PIL import Image

    if path:
        try:
            return Path(path).read_bytes(), path
        except OSError as exc:
            raise BusnetError(f"cannot read --image {path}: {exc.strerror}") from exc
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:500, :500]
    lesion = ((yy - 260) / 90.0) ** 2 + ((xx - 230) / 130.0) ** 2 < 1
    pixels = np.clip(rng.normal(120, 30, (500, 500)) - 70 * lesion, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue(), "synthetic 500x500 gray PNG"


def _tiny_checkpoint(directory: Path) -> str:
    from models import build_model, save_checkpoint

    save_checkpoint(build_model("tiny"), directory)
    return str(directory)


def _log(args: argparse.Namespace, message: str) -> None:
    import sys

    print(f"bench serve: {message}", file=sys.stderr, flush=True)
