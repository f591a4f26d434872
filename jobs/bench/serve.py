"""Serve benchmark: closed-loop HTTP load at several concurrencies against a local Ray Serve app.

Two baselines first, in this process with the replica's thread count and no HTTP or Ray: the bare
forward pass (a batch of random inputs), and the bare pipeline a request runs through in the
replica, serve.predictor's own functions (decode -> preprocess -> forward -> mask restore ->
encode), one request at a time (its p50: the floor under served latency at concurrency 1) and in
batches of --max-batch-size (images/s: the ceiling of served throughput). Then the app on
127.0.0.1 (one replica), and for each concurrency load from a second process
(jobs/bench/loadgen.py): requests/s, p50/p99 latency, the mean batch size the replica ran (from
GET /v1/model's batch counters), served / bare batched pipeline throughput, and at concurrency 1
the latency that HTTP and Serve add to the bare single-request pipeline. Every level is bounded by
--requests and --duration.

Example:
  busnet bench serve --concurrency 1,4,16,32 --requests 200 --duration 20
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from jobs.commands.serve import add_serving_arguments
from jobs.errors import BusnetError

APP_NAME = "busnet-bench"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint", metavar="URI", help="checkpoint to serve (default: a fresh tiny model saved to a temp dir)"
    )
    # 32 = two full default batches (max_ongoing_requests): one fills while the other runs
    parser.add_argument("--concurrency", default="1,4,16,32", help="comma-separated client counts (default 1,4,16,32)")
    parser.add_argument("--requests", type=int, default=200, help="requests per concurrency level (default 200)")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per level at most (default 20)")
    add_serving_arguments(parser)
    parser.add_argument(
        "--image", metavar="PATH", help="image to send (default: a synthetic 500x500 8-bit PNG, BUSI-sized)"
    )


def run(args: argparse.Namespace) -> dict:
    import requests

    from jobs.runtime import free_port
    from serve.app import build_app
    from serve.ingress import use_ingress
    from serve.launch import start_app, stop_app

    levels = _concurrencies(args.concurrency)
    if args.requests < 1 or args.duration <= 0:
        raise BusnetError("--requests must be >= 1 and --duration > 0")
    use_ingress(args.ingress)
    body, image_desc = _image(args.image)
    with tempfile.TemporaryDirectory(prefix="busnet-bench-serve-") as tmp:
        checkpoint = args.checkpoint or _tiny_checkpoint(Path(tmp) / "tiny")
        threads = max(1, round(args.cpus_per_replica))
        bare = bare_baselines(checkpoint, body, args.max_batch_size, threads, max(2.0, args.duration / 4))
        _log(
            args,
            f"bare ({threads} thread(s)): forward {bare['forward']['images_per_s']:.1f} images/s, pipeline "
            f"{bare['pipeline_batched']['images_per_s']:.1f} images/s (batch {args.max_batch_size}), "
            f"single request p50 {bare['pipeline_single']['p50_ms']:.1f} ms",
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
            results = [_level(url, body, c, args, bare["pipeline_batched"]["images_per_s"]) for c in levels]
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
        "ingress": info["serving"]["ingress"],  # what the replica ran behind
        "cpus_per_replica": args.cpus_per_replica,
        "max_batch_size": args.max_batch_size,
        "batch_wait_ms": args.batch_wait_ms,
        "bare": bare,
        "levels": results,
        "best_vs_bare_pipeline": max(row["vs_bare_pipeline"] for row in results),
        "c1_p50_over_bare_ms": next(
            (
                row["p50_ms"] - bare["pipeline_single"]["p50_ms"]
                for row in results
                if row["concurrency"] == 1 and row["p50_ms"] is not None
            ),
            None,
        ),
    }
    print(_table(report))
    return report


def bare_baselines(checkpoint: str, body: bytes, batch_size: int, threads: int, budget_s: float) -> dict:
    """The replica's work without HTTP or Ray, each measured for up to `budget_s`: the batched
    forward pass alone, and serve.predictor's request pipeline (`prepare` + `answer_batch`, what
    the replica runs) for one request at a time and for batches of `batch_size`."""
    import numpy as np
    import torch

    from models import load_checkpoint
    from serve.predictor import answer_batch, forward, load_model, prepare

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        loaded = load_model(checkpoint, load_checkpoint, torch.device("cpu"))
        size = loaded.preprocessing.size
        inputs = np.random.default_rng(0).standard_normal((batch_size, 3, size, size)).astype(np.float32)

        def pipeline(count: int) -> None:
            failed = [
                a
                for a in answer_batch([(loaded, prepare(body, loaded)) for _ in range(count)])
                if isinstance(a, Exception)
            ]
            if failed:
                raise BusnetError(f"the bare pipeline failed on the benchmark image: {failed[0]}")

        single = _timed(lambda: pipeline(1), budget_s)
        return {
            "threads": threads,
            "forward": _rate(_timed(lambda: forward(loaded, inputs), budget_s), batch_size),
            "pipeline_single": {**_rate(single, 1), "p50_ms": float(np.percentile(single, 50)) * 1000},
            "pipeline_batched": _rate(_timed(lambda: pipeline(batch_size), budget_s), batch_size),
        }
    finally:
        torch.set_num_threads(previous)


def _timed(step: Callable[[], object], budget_s: float, max_iterations: int = 200) -> list[float]:
    """Seconds per call of `step` after one warm-up call, for up to `budget_s` in all."""
    step()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < max_iterations and time.perf_counter() - start < budget_s:
        began = time.perf_counter()
        step()
        times.append(time.perf_counter() - began)
    return times


def _rate(times: list[float], batch_size: int) -> dict:
    return {"batch_size": batch_size, "iterations": len(times), "images_per_s": len(times) * batch_size / sum(times)}


def _level(url: str, body: bytes, concurrency: int, args: argparse.Namespace, bare_pipeline_ips: float) -> dict:
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
        "vs_bare_pipeline": rps / bare_pipeline_ips,
    }


def _table(report: dict) -> str:
    bare = report["bare"]

    def fmt(value, spec):
        return format(value, spec) if value is not None else "-"

    lines = [
        f"serve bench: {report['model']} ({report['preset']}, {report['input_size']} px) from "
        f"{report['checkpoint']}; ingress {report['ingress']}; 1 replica x {report['cpus_per_replica']:g} CPU, "
        f"max batch {report['max_batch_size']}, wait {report['batch_wait_ms']:g} ms; image {report['image']}",
        f"bare, {bare['threads']} thread(s): forward {bare['forward']['images_per_s']:.1f} images/s (batch "
        f"{bare['forward']['batch_size']}); pipeline (decode, preprocess, forward, mask restore, encode) "
        f"{bare['pipeline_batched']['images_per_s']:.1f} images/s batched, "
        f"{bare['pipeline_single']['p50_ms']:.1f} ms p50 one request at a time",
        f"{'concurrency':>11} {'requests':>8} {'errors':>6} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'mean batch':>10} {'vs bare pipeline':>16}",
    ]
    for row in report["levels"]:
        lines.append(
            f"{row['concurrency']:>11} {row['requests']:>8} {row['errors']:>6} {row['requests_per_s']:>8.1f} "
            f"{fmt(row['p50_ms'], '>8.1f')} {fmt(row['p99_ms'], '>8.1f')} "
            f"{fmt(row['mean_batch_size'], '>10.2f')} {row['vs_bare_pipeline']:>16.3f}"
        )
    lines.append(
        f"best served / bare batched pipeline: {report['best_vs_bare_pipeline']:.3f}; p50 at concurrency 1 "
        f"minus bare single request: {fmt(report['c1_p50_over_bare_ms'], '.1f')} ms"
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
