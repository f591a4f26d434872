"""The ready GPU check: training MFU, memory, serving and batch inference speed, and a training run that serves.

One command for a machine with a GPU: the paper preset's training images/s and MFU in bf16 with and
without torch.compile, its peak memory and the largest batch that fits, serving latency and
throughput through the replica's predictor, `busnet predict` images/s, and a 2-epoch `busnet train`
whose checkpoint then answers over HTTP. Each section records its seconds and its error (the others
still run); a section that cannot finish before the deadline is skipped and says so. Without CUDA (or
with --reduced) it runs the reduced form: the tiny preset at 64 px in fp32 on the CPU, a few steps.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from jobs.bench import gpu_sections
from jobs.commands.flags import add_flags, from_flags

REPORT_FILE = "bench-gpu.json"
SECTIONS: dict[str, tuple[str, Callable[[gpu_sections.Bench], dict]]] = {
    "train": ("training, eager", gpu_sections.train_throughput),
    "train_compiled": ("training, torch.compile", lambda bench: gpu_sections.train_throughput(bench, compiled=True)),
    "largest_batch": ("largest training batch", gpu_sections.largest_batch),
    "serving": ("serving predictor", gpu_sections.serving),
    "predict": ("busnet predict --data", gpu_sections.batch_predict),
    "train_and_serve": ("2-epoch train, then serve", gpu_sections.train_and_serve),
}
# On the 2-core development machine (shared, loaded) torch.compile took 50 s just to trace the tiny
# model's forward and backward (backend "eager": no code generated), and inductor had not finished
# after several minutes: the reduced form leaves it out.
NOT_REDUCED = {"train_compiled": "torch.compile is left out of the reduced form (minutes on a CPU)"}


@dataclass(frozen=True, kw_only=True)
class GpuCheckOptions:
    """`busnet bench gpu`'s options (its flags are generated from these fields)."""

    reduced: bool = field(
        default=False,
        metadata={"help": "the reduced form: tiny preset, 64 px, fp32 on the CPU, a few steps (default without CUDA)"},
    )
    data: str | None = field(
        default=None, metadata={"help": "dataset URI", "unset": "a synthetic dataset made in a temp folder"}
    )
    out: str | None = field(
        default=None, metadata={"help": f"folder to write {REPORT_FILE} into, after every section", "unset": "none"}
    )
    sections: str = field(
        default=",".join(SECTIONS), metadata={"help": "comma-separated sections to run, in this order"}
    )
    deadline: float | None = field(
        default=None,
        metadata={
            "help": "seconds; a section that cannot finish before them is skipped (0 skips all)",
            "unset": f"full form {gpu_sections.FULL.deadline_s:g}, reduced {gpu_sections.REDUCED.deadline_s:g}",
        },
    )
    peak_tflops: float | None = field(
        default=None,
        metadata={
            "help": "the device's dense bf16 peak TFLOP/s for the MFU",
            "unset": "models.flops's table of known GPUs",
        },
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_flags(parser, GpuCheckOptions)


def run(args: argparse.Namespace) -> dict:
    import torch

    from jobs.errors import BusnetError
    from models.flops import peak_flops
    from models.presets import PRESETS

    started = time.monotonic()
    options = from_flags(GpuCheckOptions, args)
    chosen = [name.strip() for name in options.sections.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in SECTIONS]
    if unknown or not chosen:
        raise BusnetError(f"--sections {options.sections!r}: choose from {', '.join(SECTIONS)}")
    if options.deadline is not None and not options.deadline >= 0:
        raise BusnetError(f"--deadline {options.deadline:g}: must be seconds, 0 or more (0 skips every section)")
    out = _report_path(options.out)
    cuda = torch.cuda.is_available()
    plan = gpu_sections.REDUCED if options.reduced or not cuda else gpu_sections.FULL
    why = "--reduced" if options.reduced else ("no CUDA device" if not cuda else "a CUDA device")
    device = torch.device("cuda" if plan is gpu_sections.FULL else "cpu")
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = peak_flops(device_name, options.peak_tflops) if device.type == "cuda" else None
    report = {
        "form": plan.form,
        "form_reason": why,
        "device": device_name,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "preset": plan.preset,
        "input_size": plan.input_size or PRESETS[plan.preset].input_size,
        "peak_flops": peak,
        "mfu_missing_reason": _mfu_missing(device_name, peak),
        "deadline_s": plan.deadline_s if options.deadline is None else options.deadline,
        "sections": {},
        "failed": [],
        "skipped": [],
    }
    print(
        f"GPU check, {plan.form} form ({why}): {plan.preset} preset on {device_name}"
        + (f", peak {peak / 1e12:g} TFLOP/s" if peak else f"; MFU: {report['mfu_missing_reason']}"),
        flush=True,
    )
    print(f"{'section':<30}{'seconds':>9}  result", flush=True)
    with tempfile.TemporaryDirectory(prefix="busnet-bench-gpu-") as scratch:
        bench = gpu_sections.Bench(
            plan=plan,
            device=device,
            deadline=started + report["deadline_s"],
            scratch=Path(scratch),
            data=options.data,
            peak_flops=peak,
        )
        for name in chosen:
            if name in ("serving", "predict", "train_and_serve"):  # other processes need the device now
                bench.release_model()
            result = _run_section(name, bench)
            report["sections"][name] = result
            if result["error"] or result.get("skipped"):
                report["failed" if result["error"] else "skipped"].append(name)
            report["wall_seconds"] = time.monotonic() - started
            print(f"{SECTIONS[name][0]:<30}{result['seconds']:>9.1f}  {_summary(result)}", flush=True)
            _write(out, report)
        bench.release_model()
    print(
        f"{'total':<30}{report['wall_seconds']:>9.1f}  "
        + "; ".join(f"{key}: {', '.join(report[key])}" for key in ("failed", "skipped") if report[key])
    )
    return report


def _run_section(name: str, bench: gpu_sections.Bench) -> dict:
    """The section's result with its seconds and error (None, or one line); skipped ones say why."""
    if bench.plan.form == "reduced" and name in NOT_REDUCED:
        return {"seconds": 0.0, "error": None, "skipped": NOT_REDUCED[name]}
    needs, left = bench.plan.needs_s.get(name, 0.0), bench.seconds_left()
    if left <= needs:
        why = f"{left:.0f} s left before the deadline, the section needs about {needs:g} s" if left > 0 else ""
        why = why or "the deadline has passed"
        return {"seconds": 0.0, "error": None, "skipped": why}
    print(f"bench gpu: {SECTIONS[name][0]}...", file=sys.stderr, flush=True)
    started = time.monotonic()
    try:
        result, error = SECTIONS[name][1](bench), None
    except Exception as exc:  # noqa: BLE001 - recorded in the report; the other sections still run
        lines = [line for line in str(exc).splitlines() if line.strip()]
        result, error = {}, f"{type(exc).__name__}: {lines[-1] if lines else ''}".rstrip(": ")
    return {**result, "seconds": time.monotonic() - started, "error": error}


def _mfu_missing(device_name: str, peak: float | None) -> str | None:
    if peak:
        return None
    if device_name == "cpu":
        return "no GPU"
    return f"no dense bf16 peak known for {device_name!r} (models.flops.PEAK_TFLOPS); give --peak-tflops"


def _report_path(out: str | None) -> Path | None:
    from jobs.errors import BusnetError

    if out is None:
        return None
    folder = Path(out)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BusnetError(f"--out {out}: cannot create the folder ({exc.strerror})") from exc
    return folder / REPORT_FILE


def _write(path: Path | None, report: dict) -> None:
    """The report so far, replaced whole after each section: a run stopped midway keeps what it measured."""
    if path is not None:
        partial = path.with_suffix(".json.part")
        partial.write_text(json.dumps(report, indent=1, default=str), encoding="utf-8")
        partial.replace(path)


def _summary(result: dict) -> str:
    """One line of what a section measured."""
    if result.get("error"):
        return f"error: {result['error']}"
    if result.get("skipped"):
        return f"skipped: {result['skipped']}"
    if "mfu" in result:
        mfu = f"MFU {100 * result['mfu']:.1f}%" if result["mfu"] is not None else "MFU n/a"
        memory = _gib(result["peak_memory_bytes"])
        return f"{result['images_per_s']:.1f} images/s at batch {result['batch_size']}, {mfu}, peak memory {memory}"
    if "largest_batch_size" in result:
        failing = result["smallest_failing_batch_size"]
        return (
            f"batch {result['largest_batch_size']} fits ({_gib(result['peak_memory_bytes'])})"
            + (f", {failing} does not" if failing else "")
            + f"; stopped by {result['limited_by']}"
        )
    if "p50_ms_batch_1" in result:
        rates = ", ".join(f"batch {size} {rate:.1f} images/s" for size, rate in result["images_per_s"].items())
        return f"p50 {result['p50_ms_batch_1']:.1f} ms at batch 1; {rates} ({result['precision']})"
    if "answer" in result:
        answer = result["answer"]
        return (
            f"{result['epochs']} epochs in {result['train_seconds']:.0f} s; served over HTTP: "
            f"{answer['label']} ({answer['malignant_probability']:.3f})"
        )
    return f"{result['images_per_s']:.1f} images/s over {result['images']} images"


def _gib(value: int | None) -> str:
    return f"{value / 2**30:.1f} GiB" if value is not None else "n/a on CPU"
