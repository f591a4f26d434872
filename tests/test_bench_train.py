"""busnet bench train end to end on the session's Ray: 2 DDP workers report their step time and the
all-reduce share beside the bare loop; the numbers are never timed assertions, only well-formed."""

from __future__ import annotations

import json

import pytest


@pytest.mark.slow
def test_two_workers_report_the_ddp_step_and_its_all_reduce_share(ray_local, synthetic_dataset, capsys):
    from jobs.cli import main

    argv = ["bench", "train", "--data", synthetic_dataset, "--batch-size", "2"]
    assert main([*argv, "--workers", "2", "--threads", "2", "--steps", "2", "--warmup", "1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["workers"] == 2 and report["input_size"] == 64 and report["device"] == "cpu"
    for key in ("bare_images_per_s", "ray_images_per_s", "ratio_ray_to_bare", "ray_step_ms", "ray_no_sync_step_ms"):
        assert report[key] > 0, key
    assert 0.0 <= report["ray_allreduce_share"] < 1.0
    assert 0.0 <= report["ray_data_wait"] <= 1.0 and 0.0 <= report["bare_data_wait"] <= 1.0
    assert report["flops_per_image"] > 0 and report["peak_flops"] is None and report["ray_mfu"] is None
