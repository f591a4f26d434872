"""List the published versions of a checkpoint, with the metrics each was published with.

`busnet models list URI`: URI is a published checkpoint such as OUT/NAME/best (busnet train) or
OUT/best (busnet tune), local or s3://. Every publication is its own immutable version folder
URI/versions/v-<UTC time>-...; the current one (the one `busnet serve` and `busnet evaluate` load)
is marked `*`. An incomplete version (its publication was interrupted) is listed as such.

example:
  busnet models list ./busnet-work/tune/best
"""

from __future__ import annotations

import argparse
import json

SHOWN = ("epoch", "val_auc", "val_acc", "val_sens", "val_spec", "val_dsc", "val_loss")  # the table's columns


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="the versions of a published checkpoint, with their metrics")
    listing.add_argument("uri", metavar="URI", help="a published checkpoint: path, file:// or s3://bucket/prefix")
    listing.add_argument("--json", action="store_true", help="one JSON line per version, with every metric")


def run(args: argparse.Namespace) -> int:
    from models.checkpoint import checkpoint_versions

    rows = checkpoint_versions(args.uri)
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return 0
    table = [["", "VERSION", "CREATED", *(name.upper() for name in SHOWN)]]
    for row in rows:
        metrics, lineage = row["metrics"] or {}, row["lineage"] or {}
        created = lineage.get("created_at") or ("(incomplete)" if not row["complete"] else "")
        table.append(["*" if row["current"] else "", row["version"], created, *(_cell(metrics.get(k)) for k in SHOWN)])
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    for line in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip())
    return 0


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "-" if value is None else str(value)
