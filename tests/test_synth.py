"""busnet synth: BUSI layout, cases.csv, masks, determinism, sizes, class signal, CLI."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from jobs.cli import main
from jobs.data.synth import generate
from jobs.data.synth.lesion import draw_lesion
from jobs.errors import BusnetError

SMALL = {"min_size": 96, "max_size": 160}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("synth") / "data"
    return out, generate(out, 30, seed=7, images_per_case=(2, 4), **SMALL)


def _read_cases(out: Path) -> list[dict]:
    with open(out / "cases.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def _digests(out: Path) -> dict[str, str]:
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.rglob("*.png"))}


def test_layout_and_file_names(dataset):
    out, summary = dataset
    images = sorted(p for p in out.rglob("*.png") if not p.stem.endswith("_mask"))
    assert len(images) == summary["images"] == 30
    assert summary["benign"] + summary["malignant"] == 30 and summary["benign"] > 0 and summary["malignant"] > 0
    for label in ("benign", "malignant"):
        names = sorted(p.name for p in (out / label).iterdir() if not p.stem.endswith("_mask"))
        assert names == sorted(f"{label} ({i}).png" for i in range(1, summary[label] + 1))
        for name in names:
            assert (out / label / name.replace(".png", "_mask.png")).is_file()
    assert {p.name for p in out.iterdir()} == {"benign", "malignant", "cases.csv", "synth.json"}


def test_cases_csv_is_consistent(dataset):
    out, summary = dataset
    rows = _read_cases(out)
    assert list(rows[0]) == ["image", "case_id"]
    listed = [row["image"] for row in rows]
    on_disk = sorted(str(p.relative_to(out)) for p in out.rglob("*.png") if not p.stem.endswith("_mask"))
    assert sorted(listed) == on_disk and len(set(listed)) == len(listed)
    labels_per_case: dict[str, set] = {}
    for row in rows:
        labels_per_case.setdefault(row["case_id"], set()).add(row["image"].split("/")[0])
    assert len(labels_per_case) == summary["cases"] < summary["images"]
    assert all(len(labels) == 1 for labels in labels_per_case.values())
    sizes = [sum(row["case_id"] == case for row in rows) for case in labels_per_case]
    assert max(sizes) >= 2 and max(sizes) <= 4


def test_images_and_masks(dataset):
    out, _ = dataset
    shapes = []
    for image_path in sorted(out.rglob("*).png")):
        image = np.asarray(Image.open(image_path))
        with Image.open(image_path.with_name(image_path.stem + "_mask.png")) as mask_file:
            assert mask_file.mode == "L"
            mask = np.asarray(mask_file)
        assert image.dtype == np.uint8 and image.ndim == 2
        assert mask.shape == image.shape
        assert set(np.unique(mask)) <= {0, 255} and (mask == 255).sum() >= 4
        lesion = mask == 255
        ring = ndimage.binary_dilation(lesion, iterations=6) & ~lesion
        assert image[lesion].mean() < image[ring].mean()  # lesions are hypoechoic
        assert image.std() > 10  # not a flat picture
        shapes.append(image.shape)
    for height, width in shapes:
        assert SMALL["min_size"] <= min(height, width) and max(height, width) <= SMALL["max_size"]
        assert height != width
    assert len(set(shapes)) > 3


def test_same_seed_same_bytes_other_seed_other_images(tmp_path):
    generate(tmp_path / "a", 6, seed=1, **SMALL)
    generate(tmp_path / "b", 6, seed=1, **SMALL)
    generate(tmp_path / "c", 6, seed=2, **SMALL)
    a, b, c = (_digests(tmp_path / name) for name in "abc")
    assert a == b
    assert (tmp_path / "a" / "cases.csv").read_bytes() == (tmp_path / "b" / "cases.csv").read_bytes()
    assert not set(a.values()) & set(c.values())


def test_refuses_a_foreign_folder_unless_forced(tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(BusnetError, match="not empty"):
        generate(tmp_path, 2, seed=0, **SMALL)
    assert (tmp_path / "notes.txt").read_text() == "keep me"
    summary = generate(tmp_path, 2, seed=0, force=True, **SMALL)
    assert summary["images"] == 2
    generate(tmp_path, 2, seed=0, **SMALL)  # same parameters: allowed
    with pytest.raises(BusnetError, match="not empty"):
        generate(tmp_path, 3, seed=0, **SMALL)  # different ones: refused


def test_class_signal_exists_but_classes_overlap():
    """Lesion traits differ between classes in distribution, with overlap both ways."""
    rng = np.random.default_rng(0)
    traits = {label: [draw_lesion(rng, label, 500) for _ in range(200)] for label in (0, 1)}
    aspect = {label: np.array([lesion.aspect for lesion in traits[label]]) for label in (0, 1)}
    posterior = {label: np.array([lesion.posterior_db for lesion in traits[label]]) for label in (0, 1)}
    assert np.median(aspect[0]) < 0.85 < np.median(aspect[1])
    assert np.median(posterior[0]) > 0 > np.median(posterior[1])
    # Overlap: taller-than-wide benign and wider-than-tall malignant lesions both exist.
    assert 0.02 < (aspect[0] > 1).mean() < 0.3 and 0.15 < (aspect[1] < 0.85).mean() < 0.6
    assert (posterior[0] < 0).mean() > 0.05 and (posterior[1] > 0).mean() > 0.05
    # AUC of one trait alone stays well below 1 (Mann-Whitney).
    auc = (aspect[1][:, None] > aspect[0][None, :]).mean()
    assert 0.65 < auc < 0.95


def _trait_auc(difficulty: float) -> float:
    """ROC-AUC of a logistic regression on the drawn BI-RADS traits (half the lesions fit, half scored)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(1)
    lesions = [(draw_lesion(rng, label, 500, difficulty), label) for label in (0, 1) for _ in range(150)]
    traits = np.array(
        [
            [np.log(x.aspect), x.posterior_db, x.margin_blur / x.half_width, x.heterogeneity_db, np.std(x.radius)]
            for x, _ in lesions
        ]
    )
    labels = np.array([label for _, label in lesions])
    fitted = LogisticRegression(max_iter=2000).fit(traits[::2], labels[::2])
    return float(roc_auc_score(labels[1::2], fitted.decision_function(traits[1::2])))


def test_difficulty_sets_how_far_the_classes_traits_overlap():
    easy, default, impossible = (_trait_auc(d) for d in (0.1, 0.5, 1.0))
    assert easy > 0.95 and 0.65 < default < 0.9 and abs(impossible - 0.5) < 0.12


def test_easy_data_makes_lesions_stand_out_and_leaves_the_default_alone():
    from jobs.data.synth.lesion import conspicuity_db

    def mean_darkness(difficulty: float) -> float:
        rng = np.random.default_rng(3)
        lesions = [draw_lesion(rng, label, 500, difficulty) for label in (0, 1) for _ in range(200)]
        return float(np.mean([lesion.darkness_db for lesion in lesions]))

    assert conspicuity_db(0.5) == conspicuity_db(0.8) == 0.0 and conspicuity_db(0.1) == pytest.approx(6.0)
    assert mean_darkness(0.1) - mean_darkness(0.5) > 4.0  # dB: a few less from the classes' suspicion


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--n", "0"], "n must be a positive"),
        (["--n", "3", "--min-size", "200", "--max-size", "150"], "max_size"),
        (["--n", "3", "--malignant-fraction", "1.5"], "malignant_fraction"),
        (["--n", "3", "--images-per-case", "3", "2"], "images_per_case"),
        (["--n", "3", "--difficulty", "1.5"], "difficulty"),
    ],
)
def test_cli_rejects_bad_arguments(tmp_path, capsys, argv, message):
    assert main(["synth", "--out", str(tmp_path / "out"), "--seed", "0", *argv]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_cli_writes_dataset(tmp_path, capsys):
    code = main(
        [
            "synth",
            "--out",
            str(tmp_path / "cli"),
            "--n",
            "4",
            "--seed",
            "3",
            "--min-size",
            "96",
            "--max-size",
            "128",
            "--malignant-fraction",
            "0.5",
        ]
    )
    assert code == 0
    assert "wrote 4 images" in capsys.readouterr().out
    assert len(_read_cases(tmp_path / "cli")) == 4
