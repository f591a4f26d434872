"""busnet bench gpu in its reduced form (tiny preset, 64 px, fp32 on the CPU): every section runs through
busnet's own paths into one well-formed JSON; a failing section records its error and the others still run;
the deadline skips what it cannot finish."""

from __future__ import annotations

import json

import pytest

from jobs.bench.gpu import REPORT_FILE, SECTIONS
from jobs.cli import main


def _report(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.mark.slow
def test_the_reduced_form_runs_every_section_into_one_json(ray_local, synthetic_dataset, tmp_path, capsys):
    argv = ["bench", "gpu", "--reduced", "--data", synthetic_dataset, "--out", str(tmp_path), "--deadline", "1800"]
    assert main([*argv, "--json"]) == 0
    report = _report(capsys)
    assert report == json.loads((tmp_path / REPORT_FILE).read_text())
    assert (report["form"], report["device"], report["input_size"]) == ("reduced", "cpu", 64)
    assert report["peak_flops"] is None and report["mfu_missing_reason"] == "no GPU"
    sections = report["sections"]
    assert list(sections) == list(SECTIONS) and report["failed"] == [] and report["skipped"] == ["train_compiled"]
    assert "left out of the reduced form" in sections["train_compiled"]["skipped"]
    for name in set(SECTIONS) - {"train_compiled"}:
        assert sections[name]["error"] is None and sections[name]["seconds"] > 0, name
    train = sections["train"]
    assert train["images_per_s"] > 0 and train["flops_per_image"] > 0 and train["steps"] == 2
    assert train["mfu"] is None and train["peak_memory_bytes"] is None and train["precision"] == "fp32"
    largest = sections["largest_batch"]
    assert (largest["largest_batch_size"], largest["limited_by"]) == (4, "max_batch")
    assert [t["batch_size"] for t in largest["tries"]] == [2, 4] and all(t["fits"] for t in largest["tries"])
    serving = sections["serving"]
    assert serving["p50_ms_batch_1"] > 0 and serving["precision"] == "float32"
    assert set(serving["images_per_s"]) == set(serving["forward_images_per_s"]) == {"2", "4"}
    assert sections["predict"]["images"] == 40 and sections["predict"]["images_per_s"] > 0
    trained = sections["train_and_serve"]
    assert trained["epochs"] == 2 and "model.safetensors" in trained["checkpoint_files"]
    answer = trained["answer"]
    assert answer["label"] in ("benign", "malignant") and 0 <= answer["malignant_probability"] <= 1


def test_a_failing_section_records_its_error_and_the_next_still_runs(ray_local, tmp_path, capsys):
    missing = tmp_path / "no-dataset"
    argv = ["bench", "gpu", "--reduced", "--sections", "predict,serving", "--data", str(missing), "--json"]
    assert main(argv) == 1  # a section failed: the check fails, its report still printed
    report = _report(capsys)
    assert report["failed"] == ["predict"] and list(report["sections"]) == ["predict", "serving"]
    assert str(missing) in report["sections"]["predict"]["error"]
    serving = report["sections"]["serving"]
    assert serving["error"] is None and serving["p50_ms_batch_1"] > 0


def test_the_deadline_skips_what_cannot_run_and_bad_options_are_one_line(capsys):
    assert main(["bench", "gpu", "--reduced", "--sections", "train,serving", "--deadline", "0", "--json"]) == 0
    report = _report(capsys)
    assert report["skipped"] == ["train", "serving"] and report["failed"] == []
    assert all("deadline" in report["sections"][name]["skipped"] for name in ("train", "serving"))
    assert main(["bench", "gpu", "--sections", "train,bogus"]) == 1
    assert "--sections 'train,bogus': choose from train, train_compiled" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("memory", "largest", "failing", "why", "first"),
    [
        (200, 200, 204, "out of memory", [32, 64, 128, 256, 192]),  # doubles, then bisects to within 1/32
        (10, 10, 11, "out of memory", [32, 16, 8, 12, 10, 11]),  # the first batch already too big
        (0, None, 1, "out of memory", [32, 16, 8, 4, 2, 1]),  # nothing fits
        (10**6, 4096, None, "max_batch", [32, 64, 128, 256, 512, 1024, 2048, 4096]),
    ],
)
def test_the_largest_batch_search_doubles_then_bisects(memory, largest, failing, why, first):
    """The search that the GPU's out-of-memory errors drive (the CPU has none): here a batch fits when it is
    at most `memory` images."""
    import time

    from jobs.bench.gpu_sections import search_largest

    found = search_largest(lambda size: {"fits": size <= memory}, 32, 4096, time.monotonic() + 60)
    assert (found["largest_batch_size"], found["smallest_failing_batch_size"], found["limited_by"]) == (
        largest,
        failing,
        why,
    )
    assert [t["batch_size"] for t in found["tries"]][: len(first)] == first
    assert all(t["fits"] == (t["batch_size"] <= memory) for t in found["tries"])


def test_the_largest_batch_search_stops_at_its_time_after_one_try():
    import time

    from jobs.bench.gpu_sections import search_largest

    found = search_largest(lambda size: {"fits": True}, 32, 4096, time.monotonic() - 1)
    assert (found["largest_batch_size"], found["limited_by"], len(found["tries"])) == (32, "time", 1)
