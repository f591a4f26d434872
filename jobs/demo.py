"""The end-to-end demo on local defaults: synth -> ingest -> tune -> evaluate -> serve -> predict.

Every stage is the real `busnet` command (run in this process, on one local Ray) writing under one
workdir, so what the demo shows is exactly what a user gets from the CLI. A stage whose output is
complete and whose parameters are unchanged is reused on the next run (`demo-state.json`).
"""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from jobs.errors import BusnetError


@dataclass(frozen=True)
class DemoConfig:
    workdir: Path
    images: int = 100
    trials: int = 2
    epochs: int = 3
    input_size: int = 64
    seed: int = 0
    lr: float = 1e-3
    extra_busi: Path | None = None
    port: int = 8000
    predictions: int = 6
    keep_serving: bool = False


@dataclass(frozen=True)
class DemoPaths:
    synthetic: Path
    dataset: Path
    runs: Path
    best: Path
    report: Path
    overlays: Path
    state: Path

    @classmethod
    def under(cls, workdir: Path) -> DemoPaths:
        return cls(
            workdir / "synthetic",
            workdir / "dataset",
            workdir / "runs",
            workdir / "runs" / "best",
            workdir / "report",
            workdir / "overlays",
            workdir / "demo-state.json",
        )


class _Stages:
    """Announces stages, runs CLI commands in-process and remembers what is already done."""

    def __init__(self, paths: DemoPaths, total: int):
        self.paths, self.total, self.number = paths, total, 0
        self.state = json.loads(paths.state.read_text()) if paths.state.exists() else {}

    def announce(self, title: str) -> None:
        self.number += 1
        print(f"\n=== [{self.number}/{self.total}] {title} ===", flush=True)

    def reusable(self, stage: str, params: dict, done: bool) -> bool:
        if done and self.state.get(stage) == params:
            print("already done with the same parameters: reusing it")
            return True
        return False

    def finished(self, stage: str, params: dict) -> None:
        self.state[stage] = params
        self.paths.state.write_text(json.dumps(self.state, indent=2, default=str))

    @staticmethod
    def busnet(*argv: str) -> None:
        from jobs.cli import main

        print("$ busnet " + " ".join(argv), flush=True)
        if main(list(argv)) != 0:
            raise BusnetError(f"demo stopped: `busnet {argv[0]}` failed (its error is printed above)")


def run_demo(config: DemoConfig) -> dict:
    """Run every stage; returns the test metrics and the served predictions."""
    from jobs import storage
    from jobs.runtime import init_ray

    started = time.perf_counter()
    paths = DemoPaths.under(config.workdir.absolute())
    config.workdir.mkdir(parents=True, exist_ok=True)
    stages = _Stages(paths, total=6)
    init_ray()

    stages.announce(f"synth: {config.images} synthetic B-mode images with lesion masks")
    synth = {"n": config.images, "seed": config.seed}
    if not stages.reusable("synth", synth, (paths.synthetic / "cases.csv").exists()):
        stages.busnet(
            "synth", "--out", str(paths.synthetic), "--n", str(config.images), "--seed", str(config.seed), "--force"
        )
        stages.finished("synth", synth)

    stages.announce("ingest: one versioned Parquet dataset, split by case")
    sources = ["--source", f"synthetic={paths.synthetic}"]
    if config.extra_busi:
        sources += ["--source", f"busi={config.extra_busi}"]
    ingest = {"sources": sources, "seed": config.seed, "synth": synth}
    if not stages.reusable("ingest", ingest, storage.is_complete(str(paths.dataset))):
        stages.busnet("ingest", *sources, "--out", str(paths.dataset), "--seed", str(config.seed))
        stages.finished("ingest", ingest)

    stages.announce(
        f"tune: Ray Tune over w1, alpha, gamma ({config.trials} trials x {config.epochs} epochs, tiny preset)"
    )
    tune = {
        "trials": config.trials,
        "epochs": config.epochs,
        "size": config.input_size,
        "lr": config.lr,
        "seed": config.seed,
        "ingest": ingest,
    }
    if not stages.reusable("tune", tune, storage.is_complete(str(paths.best))):
        stages.busnet(
            "tune",
            "--data",
            str(paths.dataset),
            "--out",
            str(paths.runs),
            "--samples",
            str(config.trials),
            "--max-concurrent",
            "1",
            "--epochs",
            str(config.epochs),
            "--preset",
            "tiny",
            "--input-size",
            str(config.input_size),
            "--lr",
            str(config.lr),
            "--batch-size",
            "8",
            "--seed",
            str(config.seed),
        )
        stages.finished("tune", tune)

    stages.announce("evaluate: Table 2 metrics on the test split, bootstrap 95% CIs, plots")
    evaluate = {"tune": tune}
    if not stages.reusable("evaluate", evaluate, (paths.report / "metrics.json").exists()):
        stages.busnet(
            "evaluate",
            "--data",
            str(paths.dataset),
            "--checkpoint",
            str(paths.best),
            "--split",
            "test",
            "--out",
            str(paths.report),
        )
        stages.finished("evaluate", evaluate)
    metrics = json.loads((paths.report / "metrics.json").read_text())

    stages.announce("serve: the best checkpoint behind Ray Serve on 127.0.0.1")
    url = _start_serving(paths.best, _free_port_or(config.port))
    print(f"serving at {url}  (POST {url}/v1/predict, docs at {url}/docs)")

    stages.announce(f"predict: {config.predictions} test images through `busnet predict`")
    truth = _test_images(paths, config.predictions)
    predictions = _predict(stages, url, truth, paths.overlays)
    (config.workdir / "predictions.json").write_text(json.dumps(predictions, indent=2))

    print(f"\n=== done in {time.perf_counter() - started:.0f} s; everything is under {config.workdir} ===")
    print((paths.report / "report.md").read_text() if (paths.report / "report.md").exists() else "")
    if config.keep_serving:
        _serve_until_interrupted(url)
    else:
        from ray import serve

        serve.shutdown()
    return {"metrics": metrics, "predictions": predictions, "url": url}


def _free_port_or(preferred: int) -> int:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
            print(f"port {preferred} is busy: using {port}")
            return port


def _start_serving(checkpoint: Path, port: int) -> str:
    from ray import serve

    from serve.app import APP_NAME, build_app

    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app(str(checkpoint)), name=APP_NAME, route_prefix="/", blocking=False)
    return f"http://127.0.0.1:{port}"


def _predict(stages: _Stages, url: str, truth: dict[str, str], overlays: Path) -> list[dict]:
    """`busnet predict --json`, its answers kept for predictions.json and shown one line each."""
    import contextlib
    import io

    from serve.client import summary

    captured = io.StringIO()
    with contextlib.redirect_stdout(captured):
        stages.busnet("predict", "--url", url, *truth, "--overlay", str(overlays), "--json")
    answers = []
    for line in captured.getvalue().splitlines():
        if not line.startswith("{"):
            print(line)
            continue
        answer = json.loads(line)
        answer["true_label"] = truth[answer["file"]]
        answers.append(answer)
        print(f"{Path(answer['file']).name}: {summary(answer)}  (truth: {answer['true_label']})")
    return answers


def _test_images(paths: DemoPaths, count: int) -> dict[str, str]:
    """Original image files of the test split (never trained on), written out: {file: true label}."""
    from jobs.data.dataset import read_table

    test = read_table(
        str(paths.dataset), columns=["image_id", "label", "image"], filters=[("split", "==", "test")]
    ).to_pylist()
    by_label = [[r for r in test if r["label"] == label] for label in (0, 1)]
    rows = [r for pair in zip(*by_label) for r in pair][:count]  # benign and malignant in turn
    folder = paths.overlays.parent / "test-images"
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for row in rows:
        suffix = ".png" if row["image"][:4] == b"\x89PNG" else ".bmp" if row["image"][:2] == b"BM" else ".jpg"
        file = folder / f"{Path(row['image_id']).with_suffix('').as_posix().replace('/', '_')}{suffix}"
        file.write_bytes(row["image"])
        files[str(file)] = ("benign", "malignant")[row["label"]]
    return files


def _serve_until_interrupted(url: str) -> None:
    from ray import serve

    print(f"keeping {url} up; press Ctrl-C to stop")
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        serve.shutdown()
