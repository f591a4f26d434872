"""The published versions of a checkpoint: list them, promote one, roll back to an earlier one.

`busnet models list --checkpoint URI`: URI is a published checkpoint such as OUT/NAME/best (busnet
train) or OUT/best (busnet tune), local or s3://. Every publication is its own immutable version folder
URI/versions/v-<UTC time>-...; the current one (the one `busnet serve` and `busnet evaluate` load) is
marked `*`. An incomplete version (its publication was interrupted) is listed as such.
`promote` and `rollback` move the pointer to another complete version: nothing is deleted or copied,
and a running service picks the new current version up when its checkpoint is loaded again.

examples:
  busnet models list --checkpoint ./busnet-work/runs/best
  busnet models rollback --checkpoint ./busnet-work/runs/best
  busnet models promote --checkpoint ./busnet-work/runs/best --version v-20261203T094200-000000-ab12
"""

from __future__ import annotations

import argparse

from jobs.commands.flags import add_flags, from_flags
from jobs.commands.options import CheckpointOptions, PromoteOptions, RollbackOptions
from jobs.errors import BusnetError

SHOWN = ("epoch", "val_auc", "val_acc", "val_sens", "val_spec", "val_dsc", "val_loss")  # the table's columns
ACTIONS = {"list": CheckpointOptions, "promote": PromoteOptions, "rollback": RollbackOptions}
HELP = {
    "list": "the versions of a published checkpoint, with their metrics",
    "promote": "make a version the current one",
    "rollback": "make an earlier version the current one (default: the one before)",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, options in ACTIONS.items():
        add_flags(actions.add_parser(name, help=HELP[name], description=HELP[name]), options)


def run(args: argparse.Namespace) -> dict:
    from models.checkpoint import checkpoint_versions

    options = from_flags(ACTIONS[args.action], args)
    if args.action != "list":
        _move(options, checkpoint_versions(options.checkpoint))
    rows = checkpoint_versions(options.checkpoint)
    _print_table(rows)
    current = next((row["version"] for row in rows if row["current"]), None)
    return {"checkpoint": options.checkpoint, "current": current, "versions": rows}


def _move(options: PromoteOptions | RollbackOptions, rows: list[dict]) -> None:
    from jobs import storage

    names = [row["version"] for row in rows if row["complete"] and row["version"] != "-"]
    current = next((row["version"] for row in rows if row["current"]), None)
    version = options.version
    if isinstance(options, RollbackOptions):
        earlier = names[: names.index(current)] if current in names else []
        if version is None:
            if not earlier:
                raise BusnetError(f"{options.checkpoint}: no complete version before the current one ({current})")
            version = earlier[-1]
        elif version not in earlier:
            raise BusnetError(
                f"--version {version}: not a complete version older than the current one ({current}); "
                "use `busnet models promote` to move forward"
            )
    storage.point_to(options.checkpoint, version)
    print(f"{options.checkpoint}: current version {current} -> {version}")


def _print_table(rows: list[dict]) -> None:
    table = [["", "VERSION", "CREATED", *(name.upper() for name in SHOWN)]]
    for row in rows:
        metrics, lineage = row["metrics"] or {}, row["lineage"] or {}
        created = lineage.get("created_at") or ("(incomplete)" if not row["complete"] else "")
        table.append(["*" if row["current"] else "", row["version"], created, *(_cell(metrics.get(k)) for k in SHOWN)])
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    for line in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip())


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "-" if value is None else str(value)
