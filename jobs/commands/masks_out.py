"""`busnet predict --format masks`: batch predictions as files people open, beside the Parquet.

From OUT/predictions/*.parquet (jobs.evaluate.batch writes them) this writes OUT/masks/<image>_mask.png
(the predicted mask, 0/255, at the image's own size), OUT/predictions.csv (one row per image: the
Parquet's columns but the mask, plus the mask file's name) and, with an overlay folder, the image with
the lesion contour (serve.client.overlay, as `busnet predict --url` draws it). A nested image id
(`sub/a.png` in a folder) becomes `sub__a_mask.png`. Rerunning rewrites the same files.
"""

from __future__ import annotations

import base64
import csv
import io
from pathlib import Path

from jobs import storage

MASKS_DIR = "masks"
CSV_NAME = "predictions.csv"
COLUMNS = ("image_id", "source", "label", "malignant_probability", "true_label", "lesion_area_px", "lesion_bbox")


def file_stem(image_id: str) -> str:
    """A flat file name for an image id: its path without the suffix, '/' as '__'."""
    return str(Path(image_id).with_suffix("")).replace("/", "__")


def write_masks(out: str, data: str, overlay_dir: str | None = None) -> dict:
    """Write the masks, the CSV (and overlays); returns where they went and how many."""
    from jobs.evaluate.batch import PARTS_DIR

    parts = storage.list_files(storage.join(out, PARTS_DIR), suffix=".parquet")
    rows = [row for part in sorted(parts) for row in _rows(part)]
    rows.sort(key=lambda row: row["image_id"])
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow([*COLUMNS, "mask_file"])
    masks = 0
    for row in rows:
        name = None
        if row["mask_png"] is not None:
            name = f"{MASKS_DIR}/{file_stem(row['image_id'])}_mask.png"
            storage.write_bytes(storage.join(out, name), row["mask_png"])
            masks += 1
        writer.writerow([_cell(row[column]) for column in COLUMNS] + [name or ""])
    storage.write_bytes(storage.join(out, CSV_NAME), buffer.getvalue().encode())
    overlays = _write_overlays(rows, data, Path(overlay_dir)) if overlay_dir else 0
    print(f"wrote {masks} masks to {storage.join(out, MASKS_DIR)} and {storage.join(out, CSV_NAME)}")
    return {"csv": storage.join(out, CSV_NAME), "masks": masks, "overlays": overlays}


def _rows(part_uri: str) -> list[dict]:
    import pyarrow.parquet as pq

    columns = [*COLUMNS, "mask_png"]
    return pq.read_table(io.BytesIO(storage.read_bytes(part_uri)), columns=columns).to_pylist()


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return " ".join(map(str, value))
    if isinstance(value, float):
        return f"{value:.6f}"
    return str(value)


def _write_overlays(rows: list[dict], data: str, folder: Path) -> int:
    """The image with its predicted contour, read from the folder of images or the dataset it came from;
    none for an image without a prediction (unreadable: its row says why)."""
    from serve.client import overlay

    folder.mkdir(parents=True, exist_ok=True)
    rows = [row for row in rows if row["malignant_probability"] is not None]
    images = _images(data, [row["image_id"] for row in rows])
    for row in rows:
        answer = {
            "label": row["label"],
            "malignant_probability": row["malignant_probability"],
            "mask_png": base64.b64encode(row["mask_png"]).decode() if row["mask_png"] is not None else None,
        }
        overlay(images(row["image_id"]), answer).save(folder / f"{file_stem(row['image_id'])}.overlay.png")
    return len(rows)


def _images(data: str, image_ids: list[str]):
    """image id -> its bytes: from the dataset's `image` column, or the file under a folder of images."""
    from jobs.data.dataset import MANIFEST, read_table

    if storage.exists(storage.join(storage.resolve(data), MANIFEST)):
        import pyarrow.compute as pc

        table = read_table(data, columns=["image_id", "image"], filters=pc.field("image_id").isin(image_ids))
        found = dict(zip(table.column("image_id").to_pylist(), table.column("image").to_pylist()))
        return found.__getitem__
    return lambda image_id: storage.read_bytes(storage.join(data, image_id))
