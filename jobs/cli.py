"""`busnet`: one console script, one thin module per command under `jobs/commands/`.

Each command module defines `add_arguments(parser)` and `run(args) -> int | None` and keeps heavy
imports (ray, torch) inside `run`, so that `busnet --help` is instant. Failures print one line and
exit non-zero; set BUSNET_DEBUG=1 to see the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback

# The order in which `busnet --help` lists the commands; a command appears once its module exists.
COMMAND_ORDER = (
    "synth",
    "ingest",
    "train",
    "tune",
    "evaluate",
    "cv",
    "ablation",
    "models",
    "weights",
    "serve",
    "predict",
    "export",
    "bench",
    "demo",
)


def _command_modules() -> dict:
    found = {}
    for name in COMMAND_ORDER:
        try:
            found[name] = importlib.import_module(f"jobs.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"jobs.commands.{name}":
                raise
    return found


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="busnet",
        description="Train, tune, evaluate and serve Hybrid-MT-ESTAN (breast ultrasound) on Ray.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module in _command_modules().items():
        summary = (module.__doc__ or name).strip().splitlines()[0].replace("%", "%%")
        command = sub.add_parser(
            name,
            help=summary,
            description=module.__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(command)
        command.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from jobs.runtime import quiet_ray

    quiet_ray(getattr(args, "verbose", False))  # every command, before anything imports ray.data
    try:
        code = args._run(args)
    except KeyboardInterrupt:
        print(f"busnet {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # one clear line, not a traceback
        if os.environ.get("BUSNET_DEBUG"):
            traceback.print_exc()
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"busnet {args.command}: error: {message}", file=sys.stderr)
        return 1
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
