"""A multi-node Ray cluster on this machine loses a worker node mid-epoch; run as a script (its own Ray).

    python tests/cluster_node_loss.py DATA OUT MARKERS

`ray.cluster_utils.Cluster` starts a head and two worker nodes, real raylets on 127.0.0.1, 3 CPUs
each. `busnet train` runs 2 workers of 2 CPUs, so no node holds two (one worker per node) and each
keeps a CPU for Ray Data. In epoch 2 both workers stop (tests.faults.wait_for_node_loss) and this
script removes a worker node that holds one of them, processes and all; Ray Train restarts the group
from epoch 1's checkpoint on what is left (the head and the other node). Prints one JSON line:
the workers' nodes, the removed node and the outcome. The test session's Ray is not touched: a
process holds one Ray, so this runs in its own.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

NODE_CPUS = 3
OBJECT_STORE_BYTES = 100 * 1024 * 1024
WAIT_S = 300.0  # how long the stopped workers wait for the node to go
RUN_S = 1500.0  # how long the remover waits for them: cluster start + epoch 1 took 10 min on a loaded 2-core machine


def main(data: str, out: str, markers: Path) -> dict:
    # Ray swaps 127.0.0.1 in an address for the machine's IP (multi-node clusters) unless told not to;
    # the nodes here listen on 127.0.0.1 only. Read when ray is imported, so set first.
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    import ray
    from ray.cluster_utils import Cluster

    from jobs.train.config import TrainConfig
    from jobs.train.driver import train
    from tests.faults import wait_for_node_loss

    node = dict(num_cpus=NODE_CPUS, object_store_memory=OBJECT_STORE_BYTES, node_ip_address="127.0.0.1")
    cluster, workers = _start(Cluster, node)
    ray.init(address=cluster.address, _node_ip_address="127.0.0.1", logging_level="WARNING")
    seen: dict = {}
    remover = threading.Thread(target=_remove_a_worker_node, args=(cluster, workers, markers, seen), daemon=True)
    remover.start()
    try:
        config = TrainConfig(
            data=data,
            out=out,
            name="run",
            preset="tiny",
            input_size=64,
            epochs=3,
            lr=1e-3,
            workers=2,
            cpus_per_worker=2,
            keep=3,
            select="val_loss",
            max_failures=1,
        )
        outcome = train(config, loop=wait_for_node_loss(markers, timeout_s=WAIT_S))
    finally:
        ray.shutdown()
        cluster.shutdown()
    remover.join(timeout=1)
    return {**seen, "best_uri": outcome.best_uri, "best_metrics": outcome.best_metrics}


def _start(cluster_class, node: dict, attempts: int = 5) -> tuple:
    """(cluster, its two worker nodes); Ray gives a node 30 s to start, which a loaded machine can
    miss, and a free port picked for the dashboard can be taken before it binds: then again."""
    from jobs.runtime import free_port

    for attempt in range(1, attempts + 1):
        cluster = cluster_class()
        try:
            cluster.add_node(**node, include_dashboard=True, dashboard_host="127.0.0.1", dashboard_port=free_port())
            workers = [cluster.add_node(**node) for _ in range(2)]
            cluster.wait_for_nodes()
            return cluster, workers
        except Exception as exc:
            cluster.shutdown()
            if not any(k in str(exc) for k in ("timed out during startup", "already occupied")) or attempt == attempts:
                raise
    raise AssertionError("unreachable")


def _remove_a_worker_node(cluster, workers: list, markers: Path, seen: dict) -> None:
    """Once both ranks wait in epoch 2, remove a worker node (never the head) that holds one of them."""
    deadline = time.monotonic() + RUN_S
    while time.monotonic() < deadline and len(list(markers.glob("rank-*"))) < 2:
        time.sleep(0.5)
    placed = {path.name: path.read_text() for path in markers.glob("rank-*")}
    seen["worker_nodes"] = placed
    victim = next((n for n in workers if n.node_id in placed.values()), None)
    if victim is None:
        seen["error"] = f"no worker node holds a training worker: {placed}"
        return
    seen["removed"] = victim.node_id
    seen["head"] = cluster.head_node.node_id
    cluster.remove_node(victim, allow_graceful=False)


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2], Path(sys.argv[3]))), flush=True)
