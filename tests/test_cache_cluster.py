"""The decode cache on a simulated multi-node cluster (`ray.cluster_utils.Cluster`: a head and two
worker nodes, each its own raylet and object store): blocks spread over the nodes, each row in exactly
one rank's share every epoch with ranks on different nodes, the same rows as the uncached path, a lost
node's blocks rebuilt, and training that streams when the cache would not fit the object store.

The cluster runs in a child process: the test session's own Ray is already connected in this one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

CHILD_TIMEOUT_S = 600


@pytest.mark.slow
def test_the_cache_on_a_multi_node_cluster(synthetic_dataset, tmp_path):
    from jobs.bench.scale import LOOPBACK_ONLY

    env = {**os.environ, **LOOPBACK_ONLY, "RAY_AUTH_MODE": "disabled", "BUSNET_TEST_DATA": synthetic_dataset}
    env["TMP_OUT"] = str(tmp_path)
    env.pop("RAY_ADDRESS", None)
    done = subprocess.run(
        [sys.executable, "-c", "from tests.test_cache_cluster import child; child()"],
        cwd=Path(__file__).resolve().parents[1],
        env=env,
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    # decoded where it was read, not gathered on one node
    assert found["blocks"] >= 5 and found["nodes_holding_blocks"] >= 2, found
    assert found["rank_nodes"] == 2, found  # the two ranks ran on two different nodes
    for epoch in found["epochs"]:
        assert epoch["each_row_once"] and epoch["same_rows_as_uncached"], epoch
    assert found["epochs"][0]["order"] != found["epochs"][1]["order"]
    assert found["rebuilt_after_node_loss"], found
    assert "streaming from Parquet" in found["train_output"] and found["trained_epochs"] == 1, found


def _ids_of_shares(split, epochs: tuple[int, ...], world: int, out: str) -> None:
    """Ray Train worker: the image ids of this rank's share of each epoch, loaded from the blocks it
    touches, written to a file (Ray Train V2 keeps only rank 0's reports)."""
    import ray
    import ray.train

    from jobs.data.cache import epoch_share

    rank = ray.train.get_context().get_world_rank()
    for epoch in epochs:
        pieces = epoch_share([block.rows for block in split.blocks], seed=0, epoch=epoch, rank=rank, world=world)
        ids = [str(i) for index, start, stop in pieces for i in split.blocks[index].load_ids()[start:stop]]
        report = {"ids": ids, "node": ray.get_runtime_context().get_node_id(), "rank": rank}
        Path(out, f"ids-{epoch}-{rank}.json").write_text(json.dumps(report))
    ray.train.report({"rank": rank})


def child() -> None:
    import contextlib
    import io

    import ray
    import ray.train
    from ray.cluster_utils import Cluster
    from ray.train.torch import TorchTrainer

    from jobs.data import cache, pipeline
    from jobs.data.dataset import open_dataset
    from jobs.data.pipeline import read_split
    from jobs.runtime import free_port
    from jobs.train.config import TrainConfig
    from jobs.train.driver import train
    from models.preprocess import Preprocessing

    store = 150_000_000
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 1,
            "object_store_memory": store,
            "node_ip_address": "127.0.0.1",
            "include_dashboard": True,
            "dashboard_host": "127.0.0.1",
            "dashboard_port": free_port(),
        },
    )
    workers = [cluster.add_node(num_cpus=2, object_store_memory=store, node_ip_address="127.0.0.1") for _ in range(2)]
    cluster.wait_for_nodes()
    os.environ["RAY_ADDRESS"] = cluster.address
    ray.init(address=cluster.address)
    found: dict = {}
    try:
        dataset = open_dataset(os.environ["BUSNET_TEST_DATA"])
        pre = Preprocessing(size=64)
        pipeline.DECODE_BATCH_ROWS = 4  # decode tasks as small as the blocks (3 rows: two per CPU)
        split = cache.decode_split(dataset, "train", fold=None, preprocessing=pre)
        locations = ray.experimental.get_object_locations([block.ref for block in split.blocks])
        found["blocks"] = len(split.blocks)
        found["nodes_holding_blocks"] = len({node for where in locations.values() for node in where["node_ids"]})
        uncached = sorted(str(row["image_id"]) for row in read_split(dataset, "train", preprocessing=pre).take_all())

        trainer = TorchTrainer(
            lambda config: _ids_of_shares(split, (1, 2), 2, os.environ["TMP_OUT"]),
            scaling_config=ray.train.ScalingConfig(
                num_workers=2, resources_per_worker={"CPU": 2}, placement_strategy="STRICT_SPREAD"
            ),
            run_config=ray.train.RunConfig(name="ids", storage_path=os.environ["TMP_OUT"]),
        )
        trainer.fit()
        found["epochs"] = []
        for epoch in (1, 2):
            reports = [json.loads(Path(os.environ["TMP_OUT"], f"ids-{epoch}-{r}.json").read_text()) for r in (0, 1)]
            every = [i for report in reports for i in report["ids"]]
            found["rank_nodes"] = len({report["node"] for report in reports})
            found["epochs"].append(
                {
                    "each_row_once": len(every) == len(set(every)) == split.rows,
                    "same_rows_as_uncached": sorted(every) == uncached,
                    "order": every,
                }
            )

        cluster.remove_node(workers[0], allow_graceful=False)  # its blocks are gone with it
        rows = sum(len(batch["label"]) for batch in cache.all_batches(split, batch_size=4, device=_cpu()))
        found["rebuilt_after_node_loss"] = rows == split.rows
        cluster.add_node(num_cpus=2, object_store_memory=store, node_ip_address="127.0.0.1")
        cluster.wait_for_nodes()

        cache.OBJECT_STORE_SHARE = 1e-9  # as if the dataset were far larger than every object store
        config = TrainConfig(
            data=dataset.uri, out=os.environ["TMP_OUT"], name="streamed", input_size=64, epochs=1, workers=2,
            cpus_per_worker=1, keep=1, select="val_loss", max_failures=0,
        )  # fmt: skip
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            outcome = train(config)
        found["train_output"] = printed.getvalue()
        found["trained_epochs"] = outcome.epochs_reported
    finally:
        ray.shutdown()
        cluster.shutdown()
    print(json.dumps(found), flush=True)


def _cpu():
    import torch

    return torch.device("cpu")
