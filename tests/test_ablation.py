"""busnet ablation: variant lists checked before any training, the table and plot, and (slow) 2 variants x 2 folds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jobs import storage
from jobs.cli import main
from jobs.errors import BusnetError
from jobs.evaluate.ablation import Arm, paper_rows, parse_arms, plot, render, run_ablation
from jobs.evaluate.report import PAPER_COLUMNS, PAPER_ROWS
from jobs.train.config import CvOptions, TrainConfig
from models.presets import VARIANTS
from tests.test_tracking import artifact_names, assert_tracked_training, tracked_runs


def test_variants_and_baselines_are_parsed_into_arms():
    arms = parse_arms("mt_estan, hybrid,baseline:densenet121")
    assert arms == [Arm("mt_estan"), Arm("hybrid"), Arm("baseline", "densenet121")]
    assert [arm.label for arm in arms] == ["mt_estan", "hybrid", "baseline-densenet121"]
    assert parse_arms(",".join(VARIANTS)) == [Arm(v) for v in VARIANTS]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("hybrid,nope", "'nope' is neither a variant"),
        ("baseline", "'baseline' is neither"),
        ("baseline:no_such_net", "baseline:<timm model name>"),
        ("hybrid:resnet50", "'hybrid:resnet50' is neither"),
        ("swin,swin", "names a variant twice"),
    ],
)
def test_bad_variant_lists_are_refused_before_any_training(synthetic_dataset, tmp_path, text, message):
    with pytest.raises(BusnetError, match=message):
        run_ablation(TrainConfig(data=synthetic_dataset, out=str(tmp_path)), CvOptions(), text)
    assert not any(tmp_path.iterdir())


def _row(label: str, variant: str, backbone: str | None, acc: float, dsc: float | None) -> dict:
    """A variant's row: `acc` at the validation thresholds, 0.1 less at the paper's."""
    mean = {"acc": acc, "f1": 0.5, "auc_hard": 0.6, "dsc": dsc}
    sd = {"acc": 0.1, "f1": 0.05, "auc_hard": 0.1, "dsc": None if dsc is None else 0.02}
    paper = {"threshold": 0.5, "mean": {**mean, "acc": acc - 0.1}, "sd": sd}
    arm = {"label": label, "variant": variant, "backbone": backbone, "folds": [0, 1]}
    return {**arm, "mean": mean, "sd": sd, "paper_protocol": paper}


def test_table_puts_each_variant_beside_the_papers_rows(tmp_path):
    arms = [Arm("mt_estan"), Arm("baseline", "densenet121"), Arm("baseline", "resnet50")]
    assert arms[0].paper_row == PAPER_ROWS["mt_estan"] and arms[2].paper_row is None
    table = {
        "metrics": ["acc", "f1", "auc_hard", "dsc"],
        "rows": [
            _row("mt_estan", "mt_estan", None, 0.7, 0.6),
            _row("baseline-densenet121", "baseline", "densenet121", 0.65, None),
        ],
        "paper": paper_rows(arms),
    }
    text = render(table)
    assert "| mt_estan | 2 | validation | 70.0 +- 10.0 | 0.50 +- 0.05 | 60.0 +- 10.0 | 60.0 +- 2.0 |" in text
    assert "| mt_estan | 2 | 0.5 (paper protocol) | 60.0 +- 10.0 | 0.50 +- 0.05 | 60.0 +- 10.0 | 60.0 +- 2.0 |" in text
    assert "| baseline-densenet121 | 2 | validation | 65.0 +- 10.0 | 0.50 +- 0.05 | 60.0 +- 10.0 | n/a |" in text
    assert "| *DenseNet121 (paper, Table 2)* | - | 0.5 | 73.0 | 0.73 | 72.5 | - |" in text
    assert [line for line in text.splitlines() if "paper, Table" in line][:4] == [
        f"| *{title}* | - | 0.5 | " + " | ".join(_paper_cells(values)) + " |" for title, values in PAPER_ROWS.values()
    ]
    assert plot(table).startswith(b"\x89PNG")


def _paper_cells(values: tuple) -> list[str]:
    paper = dict(zip(PAPER_COLUMNS, values))
    dsc = paper["dsc"]
    return [
        f"{paper['acc']:.1f}",
        f"{paper['f1']:.2f}",
        f"{paper['auc_hard']:.1f}",
        "-" if dsc is None else f"{dsc:.1f}",
    ]


@pytest.mark.slow
def test_ablation_cross_validates_each_variant_and_tables_them(ray_local, synthetic_dataset, tmp_path, capsys):
    """End to end, busnet cv included (each fold trained, tested, reused on a second run)."""
    argv = ["ablation", "--data", synthetic_dataset, "--out", str(tmp_path), "--folds", "0,1"]
    argv += ["--variants", "mt_estan,baseline:resnet50", "--epochs", "1", "--input-size", "64", "--lr", "1e-3"]
    argv += ["--cpus-per-worker", "0.5", "--select", "val_loss"]
    assert main(argv) == 0
    table = json.loads((tmp_path / "ablation.json").read_text())
    assert [row["label"] for row in table["rows"]] == ["mt_estan", "baseline-resnet50"]
    for row in table["rows"]:
        summary = json.loads((tmp_path / row["label"] / "cv.json").read_text())
        assert row["folds"] == summary["folds"] == ["k0of6", "k1of6"]  # drawn folds: the k-fold protocol
        assert row["mean"] == summary["groups"]["overall"]["mean"]
        best = Path(storage.resolve(str(tmp_path / row["label"] / "fold-k1of6" / "best")))
        config = json.loads((best / "config.json").read_text())
        assert (config["model"]["variant"], config["model"].get("backbone")) == (row["variant"], row["backbone"])
    assert table["rows"][0]["mean"]["dsc"] is not None and "dsc" not in table["rows"][1]["mean"]
    assert table["rows"][1]["paper_protocol"]["mean"] == summary["paper_protocol"]["groups"]["overall"]["mean"]
    markdown = (tmp_path / "ablation.md").read_text()
    assert "| baseline-resnet50 | 2 | 0.5 (paper protocol) |" in markdown and "*MT-ESTAN (paper, Table 2)*" in markdown
    assert (tmp_path / "ablation.png").read_bytes().startswith(b"\x89PNG")
    # busnet cv underneath: each fold trained on its own sides and tested on its own test side
    cv = tmp_path / "mt_estan"
    summary = json.loads((cv / "cv.json").read_text())
    assert set(summary["paper_protocol"]["groups"]["overall"]["per_fold"]["auc_hard"]) == {"k0of6", "k1of6"}
    for fold in ("k0of6", "k1of6"):
        tested = json.loads((cv / f"fold-{fold}" / "eval" / "metrics.json").read_text())
        assert tested["evaluated"]["fold"] == fold and tested["evaluated"]["split"] == "test"
        lineage = json.loads((Path(storage.resolve(str(cv / f"fold-{fold}" / "best"))) / "lineage.json").read_text())
        assert lineage["hyperparameters"]["fold"] == fold
        acc = summary["groups"]["overall"]["per_fold"]["acc"][fold]
        assert acc == tested["overall"]["metrics"]["acc"]["value"]
    assert "mean +- sd" in (cv / "cv.md").read_text()
    _assert_tracked(tmp_path, synthetic_dataset)
    capsys.readouterr()
    assert main([*argv, "--resume"]) == 0  # everything is there: every fold is reused, nothing trains again
    assert capsys.readouterr().out.count("already trained and tested") == 4
    assert len(tracked_runs(tmp_path, "ablation")[1]) == 11 + 3  # a new ablation run and its two cv runs
    stale = cv / "fold-k1of6" / "eval" / "metrics.json"
    stale.write_text(json.dumps({**json.loads(stale.read_text()), "format_version": 1}))
    assert main([*argv, "--resume", "--no-track"]) == 0  # metrics of an older format: tested again, not trained again
    assert len(tracked_runs(tmp_path, "ablation")[1]) == 11 + 3  # --no-track: nothing recorded
    out = capsys.readouterr().out
    assert out.count("already trained and tested") == 3 and "fold k1of6: testing" in out and "training" not in out
    assert json.loads(stale.read_text())["format_version"] > 1


def _assert_tracked(out: Path, data_uri: str) -> None:
    """MLflow holds the ablation as one tree: ablation -> a cv per variant -> each fold's training and test."""
    from jobs.data.dataset import read_manifest

    client, runs = tracked_runs(out, "ablation")

    def children(run) -> list:
        return sorted(
            (r for r in runs if r.data.tags.get("mlflow.parentRunId") == run.info.run_id), key=lambda r: r.info.run_name
        )

    (root,) = [run for run in runs if "mlflow.parentRunId" not in run.data.tags]
    assert len(runs) == 11 and all(run.info.status == "FINISHED" for run in runs)
    assert root.data.params["variants"] == "mt_estan,baseline:resnet50" and root.data.params["epochs"] == "1"
    assert artifact_names(client, root) == {"ablation.json", "ablation.md", "ablation.png"}
    content_hash = read_manifest(data_uri)["content_hash"]
    for cv, label in zip(children(root), ["baseline-resnet50", "mt_estan"]):
        assert cv.info.run_name == f"cv {label}" and artifact_names(client, cv) == {"cv.json", "cv.md"}
        summary = json.loads((out / label / "cv.json").read_text())
        assert cv.data.metrics["acc"] == pytest.approx(summary["groups"]["overall"]["mean"]["acc"])
        tests, trainings = children(cv)[:2], children(cv)[2:]
        for fold, (tested, trained) in zip(("k0of6", "k1of6"), zip(tests, trainings)):
            folder = out / label / f"fold-{fold}"
            assert trained.info.run_name == f"fold-{fold}" and tested.info.run_name == f"evaluate test fold {fold}"
            assert_tracked_training(client, trained, folder, 1, str(folder / "best"), content_hash)
            metrics = json.loads((folder / "eval" / "metrics.json").read_text())
            assert tested.data.metrics["acc"] == pytest.approx(metrics["overall"]["metrics"]["acc"]["value"])
            assert tested.data.params["dataset_hash"] == content_hash and tested.data.params["fold"] == str(fold)
            assert {"metrics.json", "report.md", "predictions.csv", "roc.png"} <= artifact_names(client, tested)
