"""Data that outgrows one node: training images/s, the driver's peak memory and the decoded bytes each node
holds, for synthetic datasets of growing size on a simulated multi-node cluster.

A `ray.cluster_utils.Cluster` runs on this machine: a head without CPUs (as KubeRay's head: it runs the
driver, no work) and `--nodes` worker nodes, each with its own raylet and an object store capped at
`--object-store-mb`. For each size, a synthetic dataset is made and ingested, then a `busnet train` driver
runs in its own process against the cluster (RAY_ADDRESS): it opens the dataset, decodes the splits once
into blocks spread over the nodes (`jobs.data.cache`) and trains two epochs with `--workers`
data-parallel workers. Reported per size: decode time, training images/s (Ray Train's figure for the
second epoch: the first pays the workers' start), the driver's peak RSS (its own `getrusage`), and the
decoded bytes each worker node holds against an even share. Targets: images/s within 10% across sizes,
driver peak RSS within +10% from the smallest to the largest, each node at most its share + 10%.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

NODE_CPUS = 2
# Every node of the simulated cluster listens on 127.0.0.1; without this, a driver joining it maps
# 127.0.0.1 to the machine's outward address (Ray's "node IP from the perspective" of the network).
LOOPBACK_ONLY = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sizes", default="500,2000,8000", help="dataset sizes in images (default 500,2000,8000)")
    parser.add_argument("--input-size", type=int, default=64, help="image side in pixels (default 64)")
    parser.add_argument("--nodes", type=int, default=2, help="worker nodes beside the head (default 2)")
    parser.add_argument(
        "--object-store-mb", type=int, default=400, help="object store of each node, in MB (default 400)"
    )
    parser.add_argument("--workers", type=int, default=2, help="Ray Train workers (default 2)")


def run(args: argparse.Namespace) -> dict:
    from jobs.errors import BusnetError

    try:
        sizes = [int(size) for size in args.sizes.split(",")]
    except ValueError:
        raise BusnetError(f"--sizes {args.sizes!r}: expected comma-separated image counts") from None
    if min(sizes + [args.input_size, args.nodes, args.object_store_mb, args.workers]) < 1:
        raise BusnetError("--sizes, --input-size, --nodes, --object-store-mb and --workers must be positive")
    rows = []
    with tempfile.TemporaryDirectory(prefix="busnet-bench-scale-") as scratch, _cluster(args) as address:
        if not args.json:
            print(
                f"scale: tiny preset at {args.input_size} px, {args.workers} workers, 2 epochs; a head and "
                f"{args.nodes} worker nodes, {args.object_store_mb} MB object store each"
            )
            print(f"{'images':>8}{'decode s':>10}{'train img/s':>13}{'driver peak MB':>16}  cached MB per node (share)")
        for size in sizes:
            data = _dataset(os.path.join(scratch, f"data-{size}"), size)
            row = {"images": size, **_driver(data, os.path.join(scratch, f"runs-{size}"), args, address)}
            rows.append(row)
            if not args.json:
                nodes = ", ".join(f"{mb / 1e6:.0f}" for mb in row["node_bytes"])
                print(
                    f"{size:>8}{row['decode_seconds']:>10.1f}{row['images_per_s']:>13.1f}"
                    f"{row['driver_peak_rss'] / 1e6:>16.0f}  {nodes} ({row['node_share'] / 1e6:.0f})",
                    flush=True,
                )
    report = {"input_size": args.input_size, "nodes": args.nodes + 1, "workers": args.workers, "sizes": rows}
    report.update(_targets(rows))
    if not args.json:
        print(
            f"images/s spread {100 * report['images_per_s_spread']:.0f}% (target <= 10%); driver peak RSS growth "
            f"{100 * report['driver_rss_growth']:+.0f}% (target <= +10%); fullest node "
            f"{100 * report['max_node_over_share']:+.0f}% over its share (target <= +10%)"
        )
    return report


def _targets(rows: list[dict]) -> dict:
    speeds = [row["images_per_s"] for row in rows]
    over = [max(row["node_bytes"]) / row["node_share"] - 1 for row in rows if row["node_share"]]
    return {
        "images_per_s_spread": (max(speeds) - min(speeds)) / max(speeds),
        "driver_rss_growth": rows[-1]["driver_peak_rss"] / rows[0]["driver_peak_rss"] - 1,
        "max_node_over_share": max(over, default=0.0),
    }


class _cluster:
    """A head and `args.nodes` worker nodes on this machine, each with a capped object store; the
    address to join it with."""

    def __init__(self, args: argparse.Namespace):
        self.args = args

    def __enter__(self) -> str:
        from ray.cluster_utils import Cluster

        from jobs.runtime import free_port

        store = self.args.object_store_mb * 1_000_000
        self.cluster = Cluster(
            initialize_head=True,
            head_node_args={
                "num_cpus": 0,
                "object_store_memory": store,
                "node_ip_address": "127.0.0.1",
                "include_dashboard": True,  # Ray Train's cleanup asks the State API
                "dashboard_host": "127.0.0.1",
                "dashboard_port": free_port(),
            },
        )
        for _ in range(self.args.nodes):
            self.cluster.add_node(num_cpus=NODE_CPUS, object_store_memory=store, node_ip_address="127.0.0.1")
        self.cluster.wait_for_nodes()
        return self.cluster.address

    def __exit__(self, *exc) -> None:
        self.cluster.shutdown()


def _dataset(folder: str, images: int) -> str:
    from jobs.data.ingest import ingest
    from jobs.data.synth import generate

    generate(os.path.join(folder, "raw"), images, seed=0, min_size=96, max_size=160)
    uri = os.path.join(folder, "dataset")
    ingest({"synthetic": os.path.join(folder, "raw")}, uri, seed=0, progress=False)
    return uri


def _driver(data: str, out: str, args: argparse.Namespace, address: str) -> dict:
    """One training driver in its own process (so its peak RSS is its own), joined to the cluster."""
    job = {"data": data, "out": out, "input_size": args.input_size, "workers": args.workers}
    env = {**os.environ, **LOOPBACK_ONLY, "RAY_ADDRESS": address, "BUSNET_SCALE_JOB": json.dumps(job)}
    code = "from jobs.bench.scale import measure_driver; measure_driver()"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        from jobs.errors import BusnetError

        raise BusnetError(f"the training driver failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure_driver() -> None:
    """The child: `busnet train`'s driver (prepare, decode once, fit two epochs), then one JSON line."""
    import contextlib
    import resource

    import ray

    from jobs.runtime import init_ray, quiet_ray
    from jobs.train.config import TrainConfig
    from jobs.train.driver import decode_splits, fit_or_explain, prepare

    job = json.loads(os.environ["BUSNET_SCALE_JOB"])
    quiet_ray()
    config = TrainConfig(
        data=job["data"],
        out=job["out"],
        name="scale",
        input_size=job["input_size"],
        epochs=2,
        workers=job["workers"],
        keep=1,
        select="val_loss",
        max_failures=0,
    )
    with contextlib.redirect_stdout(sys.stderr):
        prepared = prepare(config)
        init_ray()
        started = time.perf_counter()
        prepared = decode_splits(config, prepared)
        decode_seconds = time.perf_counter() - started
        node_bytes = _bytes_per_node([block.ref for split in prepared.decoded.values() for block in split.blocks])
        result = fit_or_explain(config, prepared, name="scale", storage_uri=config.out)
    nodes = [node["NodeID"] for node in ray.nodes() if node["Alive"] and node["Resources"].get("CPU")]
    held = [node_bytes.get(node, 0) for node in nodes]
    report = {
        "decode_seconds": decode_seconds,
        "images_per_s": float(result.metrics["images_per_s"]),
        "driver_peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "node_bytes": sorted(held, reverse=True),
        "node_share": sum(held) / len(held),
    }
    print(json.dumps(report), flush=True)


def _bytes_per_node(refs: list) -> dict[str, int]:
    """Bytes of `refs` held in each node's object store (an object on several nodes counts on each)."""
    import ray.experimental

    held: dict[str, int] = {}
    for location in ray.experimental.get_object_locations(refs).values():
        for node in location["node_ids"]:
            held[node] = held.get(node, 0) + (location["object_size"] or 0)
    return held
