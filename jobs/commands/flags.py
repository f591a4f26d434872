"""CLI flags generated from a config dataclass, so that a default lives in one place: the field.

A field becomes `--field-name` when its metadata has a "help" (and "choices" when it has them); its
default, type and the "(default X)" of its help text come from the field itself. A field whose
default is None shows its metadata's "unset" text instead ("(default: the preset's)"); a field
whose type is itself a config dataclass adds that class's flags in its place (TrainConfig.loss ->
--w1 --alpha --gamma). Metadata "argparse" passes what a field's type cannot say (nargs, metavar, a
parsing type, "positional": an argument without `--`). `from_flags` turns the parsed arguments back
into the config.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import types
import typing
from collections.abc import Collection
from typing import Any

Config = typing.TypeVar("Config")


def add_flags(
    parser: argparse.ArgumentParser,
    config_type: type,
    *,
    skip: Collection[str] = (),
    only: Collection[str] | None = None,
) -> None:
    """One flag per field of `config_type` with a help text, in field order (`skip`/`only` by field name)."""
    hints = typing.get_type_hints(config_type)
    for field in dataclasses.fields(config_type):
        if field.name in skip or (only is not None and field.name not in only):
            continue
        kind = _plain(hints[field.name])
        if dataclasses.is_dataclass(kind):
            add_flags(parser, kind)
        elif "help" in field.metadata:
            extra = dict(field.metadata.get("argparse", {}))
            if extra.pop("positional", False):
                argument = _argument(field, kind)
                argument.pop("required", None)
                parser.add_argument(field.name, **{**argument, **extra})
            else:
                parser.add_argument(f"--{field.name.replace('_', '-')}", **{**_argument(field, kind), **extra})


def from_flags(config_type: type[Config], args: argparse.Namespace, **given: Any) -> Config:
    """The config of the flags `add_flags` made (fields without a flag keep their defaults) plus `given`."""
    hints = typing.get_type_hints(config_type)
    values = dict(given)
    for field in dataclasses.fields(config_type):
        kind = _plain(hints[field.name])
        if field.name in values:
            continue
        if dataclasses.is_dataclass(kind):
            if all(hasattr(args, f.name) for f in dataclasses.fields(kind)):
                values[field.name] = from_flags(kind, args)
        elif hasattr(args, field.name):
            values[field.name] = getattr(args, field.name)
    return config_type(**values)


def show(value: Any) -> str:
    """A default as the help text shows it: 3.0 -> 3, 1e-05 -> 1e-5."""
    if isinstance(value, (tuple, list)):
        return " ".join(show(item) for item in value)
    if isinstance(value, float):
        return re.sub(r"e([+-])0*(\d)", r"e\1\2", f"{value:g}").replace("e+", "e")
    return str(value)


def _argument(field: dataclasses.Field, kind: type) -> dict[str, Any]:
    help_text = field.metadata["help"]
    if kind is bool:  # on by default: --name and --no-name
        if field.default is True:
            return {"action": argparse.BooleanOptionalAction, "default": True, "help": f"{help_text} (default on)"}
        return {"action": "store_true", "help": help_text}
    required = field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
    argument: dict[str, Any] = {"type": kind} if kind is not str else {}
    if required:
        argument["required"] = True
    else:
        default = field.default if field.default_factory is dataclasses.MISSING else field.default_factory()
        argument["default"] = default
        if default is not None and default != ():
            help_text += f" (default {show(default)})"
        elif "unset" in field.metadata:
            help_text += f" (default: {field.metadata['unset']})"
    if "choices" in field.metadata:
        argument["choices"] = tuple(field.metadata["choices"])
    return {**argument, "help": help_text.replace("%", "%%")}


def _plain(hint: Any) -> Any:
    """`int | None` -> int: the type a flag's value has when it is given."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        options = [option for option in typing.get_args(hint) if option is not type(None)]
        return options[0] if len(options) == 1 else hint
    return hint
