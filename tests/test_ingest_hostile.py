"""Nothing lost, nothing leaked: hostile or careless input to `busnet ingest`.

Each test is one finding of issue 14 (all of them passed silently before): a table path or symlink
leading out of the source, files sharing a name, one image under two labels (as stored bytes, or
as the same pixels in another container), a Dataset B table whose rows disagree, a missing source,
and text/EXIF metadata carried into the stored images.
"""

from __future__ import annotations

import csv
import io
import shutil
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from jobs.cli import main
from jobs.data.dataset import read_manifest
from jobs.data.ingest import ingest
from jobs.errors import BusnetError
from tests.busbench_layouts import build_combined, build_datasetb, table
from tests.ingest_layouts import decoded, rows, write_image, write_mask

FAST = {"val": 0.0, "test": 0.0, "folds": 2, "progress": False}
PHI = ("Jane Doe", "MRN 0042-1337", "1961-07-04", "St. Elsewhere Radiology")


def _reasons(manifest: dict) -> dict[str, str]:
    return {Path(r["file"]).name: r["reason"] for r in manifest["rejects"]}


def _folder_table(path: Path, *lines: list[str]) -> Path:
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows([["image", "mask", "label"], *lines])
    return path


@pytest.mark.parametrize(
    "line, reason",
    [
        (["../elsewhere/secret.png", "", "B"], "image path has a '..' part"),
        (["{elsewhere}/secret.png", "", "B"], "image path is absolute"),
        (["img/b.png", "../elsewhere/mask.png", "M"], "mask path '../elsewhere/mask.png': has a '..' part"),
        (["img/b.png", "{elsewhere}/mask.png", "M"], "mask path '{elsewhere}/mask.png': is absolute"),
    ],
)
def test_table_paths_that_leave_the_folder_are_rejected_unread(tmp_path, line, reason):
    elsewhere = tmp_path / "elsewhere"
    secret = write_image(elsewhere / "secret.png", 20, 20, seed=2)
    write_mask(elsewhere / "mask.png", 20, 20, (0, 0, 4, 4))
    inside = tmp_path / "hospital"
    write_image(inside / "img" / "a.png", 20, 20, seed=1)
    write_image(inside / "img" / "b.png", 20, 20, seed=3)
    write_image(inside / "img" / "c.png", 20, 20, seed=4)
    line = [cell.format(elsewhere=elsewhere) for cell in line]
    listed = _folder_table(inside / "list.csv", ["img/a.png", "", "B"], ["img/c.png", "", "M"], line)

    manifest = ingest({"folder": listed}, str(tmp_path / "ds"), **FAST)
    (reject,) = manifest["rejects"]
    assert reason.format(elsewhere=elsewhere) in reject["reason"] and "the table's folder" in reject["reason"]
    stored = [decoded(r["image"]) for r in rows(str(tmp_path / "ds")).values()]
    assert len(stored) == 2 and not any(np.array_equal(s, decoded(secret.read_bytes())) for s in stored)
    assert all(r["mask"] is None for r in rows(str(tmp_path / "ds")).values())


def test_symlinks_are_followed_only_inside_the_source_root(tmp_path):
    root = tmp_path / "busi"
    write_image(root / "benign" / "benign (1).png", 20, 20, seed=1)
    kept = write_image(root / "archive" / "original.png", 20, 20, seed=2)  # inside the root, not a class folder
    secret = write_image(tmp_path / "elsewhere" / "secret.png", 20, 20, seed=3)
    write_mask(tmp_path / "elsewhere" / "mask.png", 20, 20, (0, 0, 5, 5))
    (root / "benign" / "benign (2).png").symlink_to(kept)
    (root / "malignant").mkdir()
    (root / "malignant" / "malignant (1).png").symlink_to(secret)
    write_image(root / "malignant" / "malignant (2).png", 20, 20, seed=4)
    (root / "malignant" / "malignant (2)_mask.png").symlink_to(tmp_path / "elsewhere" / "mask.png")

    manifest = ingest({"busi": root}, str(tmp_path / "ds"), **FAST)
    assert sorted(rows(str(tmp_path / "ds"))) == ["busi/benign/benign (1).png", "busi/benign/benign (2).png"]
    reasons = _reasons(manifest)
    assert set(reasons) == {"malignant (1).png", "malignant (2).png"}
    assert f"image resolves outside the source root {root}" in reasons["malignant (1).png"]
    assert (
        "mask " in reasons["malignant (2).png"] and "resolves outside the source root" in reasons["malignant (2).png"]
    )


def _accounted(manifest: dict) -> int:
    skipped = sum(n for per in manifest["counts"]["skipped"].values() for n in per.values())
    return manifest["num_rows"] + len(manifest["rejects"]) + skipped


def test_files_sharing_a_name_are_all_rejected_never_one_silently_dropped(tmp_path):
    """Dataset B from its real xlsx, BUS_Combined from its real csv, BUSI: `a.png` + `a.jpg` in each."""
    datasetb = build_datasetb(tmp_path / "DatasetB")
    write_image(datasetb / "imgs" / "000007.jpg", 16, 12, seed=7)
    combined_rows = [r for r in table("BUS_Combined.csv") if r["img name"] in ("2879", "3155", "3694")]
    combined = build_combined(tmp_path / "BUS_Combined", combined_rows)
    write_image(combined / "imgs" / "3155.bmp", 16, 4, seed=8)
    busi = tmp_path / "busi"
    write_image(busi / "benign" / "benign (1).png", 20, 20, seed=1)
    write_image(busi / "benign" / "benign (1).jpg", 20, 20, seed=2)
    write_mask(busi / "benign" / "benign (1)_mask.png", 20, 20, (0, 0, 4, 4))
    write_image(busi / "malignant" / "malignant (1).png", 20, 20, seed=3)

    manifest = ingest({"datasetb": datasetb, "busbench": combined, "busi": busi}, str(tmp_path / "ds"), **FAST)
    reasons = _reasons(manifest)
    for pair in (("000007.png", "000007.jpg"), ("3155.png", "3155.bmp"), ("benign (1).png", "benign (1).jpg")):
        for name in pair:
            assert f"2 files named {Path(name).stem} ({pair[0]}, {pair[1]})" in reasons[name] or (
                f"({pair[1]}, {pair[0]})" in reasons[name]
            ), reasons
    assert "ambiguous image name benign (1)" in reasons["benign (1)_mask.png"]
    ids = rows(str(tmp_path / "ds"))
    assert len(ids) == 162 + 2 + 1 and not [i for i in ids if "000007" in i or "3155" in i or "benign" in i]
    on_disk = sum(
        1 for d in (datasetb / "imgs", combined / "imgs", busi / "benign", busi / "malignant") for _ in d.iterdir()
    )
    assert _accounted(manifest) == on_disk  # every file is a row or a reject


def test_the_same_bytes_under_two_labels_reject_both_copies(tmp_path, busi_sample):
    """Real BUSI: `malignant (145).png` is byte-identical to `benign (433).png`; which label is right is unknown."""
    root = tmp_path / "busi"
    shutil.copytree(busi_sample, root, ignore=shutil.ignore_patterns("*.md"))
    for folder, stem in (("benign", "benign (433)"), ("malignant", "malignant (145)")):
        shutil.copyfile(busi_sample / "benign" / "benign (1).png", root / folder / f"{stem}.png")
        shutil.copyfile(busi_sample / "benign" / "benign (1)_mask.png", root / folder / f"{stem}_mask.png")
    (root / "benign" / "benign (1).png").unlink()
    (root / "benign" / "benign (1)_mask.png").unlink()

    # one image per shard: the kept copy, rejected later, leaves no empty shard and no row out of step
    manifest = ingest({"busi": root}, str(tmp_path / "ds"), shard_mb=0.01, val=0.2, test=0.2, folds=2, progress=False)
    reasons = _reasons(manifest)
    assert set(reasons) == {"benign (433).png", "malignant (145).png"}
    assert reasons["benign (433).png"] == (
        "conflicting labels, every copy rejected: same bytes as busi/malignant/malignant (145).png, "
        "labelled benign and malignant"
    )
    assert "same bytes as busi/benign/benign (433).png" in reasons["malignant (145).png"]
    got = rows(str(tmp_path / "ds"))
    assert len(got) == manifest["num_rows"] == len(manifest["files"]) == 19
    assert not [i for i in got if "433" in i or "145" in i]
    for split, tally in manifest["counts"]["by_split"].items():  # each row got its own split
        labels = [r["label"] for r in got.values() if r["split"] == split]
        assert (len(labels), labels.count(0), labels.count(1)) == (tally["images"], tally["benign"], tally["malignant"])


def test_the_same_pixels_in_another_container_are_one_image(tmp_path):
    """PNG vs BMP, gray stored as RGB: equal decoded pixels. Same label -> one kept; labels differ -> none."""
    root = tmp_path / "busi"
    gray = write_image(root / "benign" / "benign (1).png", 24, 20, mode="L", seed=1)
    (root / "malignant").mkdir()
    Image.open(gray).convert("RGB").save(root / "malignant" / "malignant (1).bmp")  # other container and mode
    rgb = write_image(root / "benign" / "benign (2).png", 24, 20, seed=2)
    Image.open(rgb).save(root / "benign" / "benign (3).bmp")
    Image.open(rgb).save(rgb, compress_level=0)  # not the bytes a default PNG of the BMP's pixels has
    write_image(root / "malignant" / "malignant (2).png", 24, 20, seed=3)

    manifest = ingest({"busi": root}, str(tmp_path / "ds"), **FAST)
    reasons = _reasons(manifest)
    assert reasons == {
        "benign (1).png": "conflicting labels, every copy rejected: same pixels as busi/malignant/malignant (1).bmp, "
        "labelled benign and malignant",
        "malignant (1).bmp": "conflicting labels, every copy rejected: same pixels as busi/benign/benign (1).png, "
        "labelled benign and malignant",
        "benign (3).bmp": "duplicate image: same pixels as busi/benign/benign (2).png",
    }
    assert sorted(rows(str(tmp_path / "ds"))) == ["busi/benign/benign (2).png", "busi/malignant/malignant (2).png"]


def _datasetb_with_rows(root: Path, *extra: tuple[str, str]) -> Path:
    import openpyxl

    build_datasetb(root)
    book = openpyxl.load_workbook(root / "DatasetB.xlsx")
    for image, kind in extra:
        book["Hoja1"].append([image, kind])
    book.save(root / "DatasetB.xlsx")
    return root


def test_datasetb_rows_that_disagree_reject_the_image_instead_of_overwriting(tmp_path):
    """The real DatasetB.xlsx lists 000007 as Benign; a second row saying Malignant must not win."""
    root = _datasetb_with_rows(tmp_path / "raw", ("000007", "Malignant"), ("000008", "benign"))  # 8: agrees
    manifest = ingest({"datasetb": root}, str(tmp_path / "ds"), **FAST)
    assert _reasons(manifest) == {
        "000007.png": "conflicting rows in DatasetB.xlsx (row 8: 'Benign', row 165: 'Malignant')"
    }
    got = rows(str(tmp_path / "ds"))
    assert len(got) == 162 and got["datasetb/imgs/000008.png"]["label"] == 0


def test_listings_that_disagree_on_the_label_reject_the_image(tmp_path):
    """Any adapter's table: BUS_Combined.csv listing an image twice, once benign and once malignant."""
    listed = [r for r in table("BUS_Combined.csv") if r["img name"] in ("2879", "3155", "3694")]
    root = build_combined(tmp_path / "BUS_Combined", [*listed, {**listed[0], "tumor type": "1"}])
    manifest = ingest({"busbench": root}, str(tmp_path / "ds"), **FAST)
    assert _reasons(manifest) == {"2879.png": "listed more than once, with different labels"}
    assert sorted(rows(str(tmp_path / "ds"))) == ["busbench/imgs/3155.png", "busbench/imgs/3694.png"]


def test_a_missing_source_stops_before_anything_is_published(tmp_path, capsys):
    good = tmp_path / "busi"
    write_image(good / "benign" / "benign (1).png", 20, 20, seed=1)
    write_image(good / "malignant" / "malignant (1).png", 20, 20, seed=2)
    out = str(tmp_path / "ds")
    before = ingest({"busi": good}, out, **FAST)
    with pytest.raises(BusnetError, match=r"--source busis=.*/nosuch: not found"):
        ingest({"busi": good, "busis": tmp_path / "nosuch"}, out, **FAST)
    code = main(["ingest", "--source", f"busi={good}", "--source", f"busis={tmp_path / 'nosuch'}", "--out", out])
    assert code == 1 and "nosuch: not found" in capsys.readouterr().err
    assert read_manifest(out)["content_hash"] == before["content_hash"]  # the earlier dataset, untouched
    assert main(["ingest", "--source", f"busi={tmp_path / 'typo'}", "--out", str(tmp_path / "new")]) == 1
    assert not (tmp_path / "new").exists()


def _png_with_metadata(path: Path, pixels: np.ndarray) -> None:
    info = PngImagePlugin.PngInfo()
    info.add_text("Patient", PHI[0])
    info.add_text("Comment", PHI[1], zip=True)  # zTXt
    info.add_itxt("Description", PHI[2], lang="en", tkey="Beschreibung")
    exif = Image.Exif()
    exif[0x013B] = PHI[3]  # Artist
    Image.fromarray(pixels).save(path, pnginfo=info, exif=exif)
    path.write_bytes(path.read_bytes() + PHI[0].encode())  # bytes after IEND are carried too


def _jpeg_with_metadata(path: Path, pixels: np.ndarray, **options) -> None:
    exif = Image.Exif()
    exif[0x010E] = PHI[0]  # ImageDescription
    exif[0x013B] = PHI[3]  # Artist
    xmp = f'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:Description>{PHI[1]}</rdf:Description></x:xmpmeta>'
    Image.fromarray(pixels).save(path, exif=exif, comment=PHI[2], xmp=xmp.encode(), quality=95, **options)


def _text_in(data: bytes) -> list[str]:
    """The PHI strings in the bytes, plain or in any zlib stream (zTXt/iTXt compress them)."""
    found = [text for text in PHI if text.encode() in data]
    for start in range(len(data) - 1):
        if data[start] == 0x78 and data[start + 1] in (0x01, 0x5E, 0x9C, 0xDA):
            try:
                plain = zlib.decompressobj().decompress(data[start:], 1 << 20)
            except zlib.error:
                continue
            found += [text for text in PHI if text.encode() in plain]
    return found


def test_stored_images_carry_no_text_or_exif(tmp_path):
    root = tmp_path / "busi"
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (40, 48), dtype=np.uint8)
    color = np.repeat(gray[..., None], 3, axis=2)
    color[..., 1] //= 2  # a colour image (not gray in RGB)
    for folder in ("benign", "malignant"):
        (root / folder).mkdir(parents=True)
    _png_with_metadata(root / "benign" / "benign (1).png", gray)
    _png_with_metadata(root / "benign" / "benign (2).png", color[::-1].copy())
    _jpeg_with_metadata(root / "malignant" / "malignant (1).jpg", color)
    _jpeg_with_metadata(root / "malignant" / "malignant (2).jpg", gray[::-1].copy(), progressive=True)
    for path in root.glob("*/*"):
        assert len(_text_in(path.read_bytes())) >= 2, path  # the test images do carry the text

    ingest({"busi": root}, str(tmp_path / "ds"), **FAST)
    got = rows(str(tmp_path / "ds"))
    assert len(got) == 4
    for image_id, row in got.items():
        original = root / image_id.removeprefix("busi/")
        assert _text_in(row["image"]) == [], image_id
        stored = Image.open(io.BytesIO(row["image"]))
        assert not stored.getexif() and not getattr(stored, "text", {}), image_id
        assert not {"comment", "xmp", "exif", "icc_profile"} & set(stored.info), (image_id, stored.info)
        assert np.array_equal(decoded(row["image"]), decoded(original.read_bytes())), image_id  # pixels as found
        assert stored.format == Image.open(original).format  # stripped, not re-encoded
