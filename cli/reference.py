"""The CLI reference (`docs/cli.md`), generated from the Typer app so that it cannot drift.

    python -m sim2sg.cli.reference > docs/cli.md

Walks the click command tree that Typer builds from `sim2sg.cli.app.app`: every command (and every
command of a sub-group, for `sim2sg GROUP COMMAND`), its help text, and for each parameter its
names, type or choices, default and help. The output depends only on the app, never on the
terminal's width or colours, and `tests/test_docs_cli.py` checks `docs/cli.md` against it.
"""

from __future__ import annotations

import enum
import inspect
import sys
import types
import typing
from pathlib import PurePath
from typing import Any

import typer

_HEADER = """\
# CLI reference

Generated from the Typer app by `python -m sim2sg.cli.reference > docs/cli.md`; do not edit by
hand (`tests/test_docs_cli.py` fails when this page and the app disagree). Every command also
takes `--help`. A bad input prints one line `error: FILE: field: message` and exits with status 2.
"""


def _cell(text: str) -> str:
    """One markdown table cell: a single line with `|` escaped."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _unwrap_optional(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _annotation_label(annotation: Any) -> str:
    """A short type name for a parameter's Python annotation (Typer >= 0.29 keeps it on the
    parameter instead of a click ParamType)."""
    a = _unwrap_optional(annotation)
    origin = typing.get_origin(a)
    if origin in (list, tuple, set):
        args = [x for x in typing.get_args(a) if x is not Ellipsis]
        return " ".join(_annotation_label(x) for x in args) if origin is tuple else (
            f"{_annotation_label(args[0]) if args else 'text'} ...")
    if isinstance(a, type) and issubclass(a, enum.Enum):
        return "choice: " + ", ".join(str(m.value) for m in a)
    if isinstance(a, type) and issubclass(a, PurePath):
        return "path"
    return {bool: "flag", int: "integer", float: "number", str: "text"}.get(a, getattr(a, "__name__", str(a)))


def _type_label(param: Any) -> str:
    """Type, choices or range of a click/Typer parameter."""
    if getattr(param, "is_flag", False) and not getattr(param, "count", False):
        label = "flag"
    elif getattr(param, "count", False):
        label = "count"
    else:
        descriptor = getattr(param, "type_descriptor", None)
        ptype = getattr(param, "type", None)
        if descriptor is not None:
            label = _annotation_label(descriptor.annotation)
        elif ptype is not None and getattr(ptype, "choices", None):
            label = "choice: " + ", ".join(str(c) for c in ptype.choices)
        else:
            label = {"TEXT": "text", "INTEGER": "integer", "FLOAT": "number", "BOOLEAN": "flag",
                     "PATH": "path"}.get(getattr(ptype, "name", "text").upper(), getattr(ptype, "name", "text"))
    lo = getattr(param, "min", None)
    hi = getattr(param, "max", None)
    ptype = getattr(param, "type", None)
    if lo is None and hi is None and ptype is not None:
        lo, hi = getattr(ptype, "min", None), getattr(ptype, "max", None)
    if lo is not None and hi is not None:
        label += f", {lo} to {hi}"
    elif lo is not None:
        label += f", >= {lo}"
    elif hi is not None:
        label += f", <= {hi}"
    return label


def _default_label(param: Any) -> str:
    if getattr(param, "required", False):
        return "required"
    value = getattr(param, "default", None)
    if callable(value) and not isinstance(value, type):
        return "(computed)"
    if value is None or value == () or value == []:
        return "-"
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, bool):
        if getattr(param, "secondary_opts", None):
            return (param.opts if value else param.secondary_opts)[0]
        return "on" if value else "off"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v.value if isinstance(v, enum.Enum) else v) for v in value)
    return str(value)


def _is_argument(param: Any) -> bool:
    return getattr(param, "param_type_name", None) == "argument" or not any(
        o.startswith("-") for o in getattr(param, "opts", []))


def _usage(path: str, command: Any) -> str:
    pieces = [path]
    if any(not _is_argument(p) and not getattr(p, "hidden", False) for p in command.params):
        pieces.append("[OPTIONS]")
    for p in command.params:
        if _is_argument(p):
            name = (getattr(p, "metavar", None) or p.name).upper()
            if p.nargs != 1:
                name += "..."
            pieces.append(name if p.required else f"[{name}]")
    if getattr(command, "commands", None):
        pieces.append("COMMAND")
    return " ".join(pieces)


def _help_text(command: Any) -> str:
    text = inspect.cleandoc(command.help or "")
    return "\n".join(line for line in text.splitlines() if line.strip() != "\b").strip()


def _command_section(path: str, command: Any) -> list[str]:
    lines = [f"## `{path}`", ""]
    text = _help_text(command)
    if text:
        lines += [text, ""]
    lines += ["```", _usage(path, command), "```", ""]
    params = [p for p in command.params if not getattr(p, "hidden", False)]
    if params:
        lines += ["| parameter | type | default | help |", "|---|---|---|---|"]
        for p in params:
            if _is_argument(p):
                names = f"`{(getattr(p, 'metavar', None) or p.name).upper()}` (argument)"
            else:
                names = ", ".join(f"`{o}`" for o in [*p.opts, *getattr(p, "secondary_opts", [])])
            lines.append(f"| {names} | {_cell(_type_label(p))} | {_cell(_default_label(p))} | "
                         f"{_cell(getattr(p, 'help', None) or '')} |")
        lines.append("")
    return lines


def _walk(path: str, group: Any) -> list[tuple[str, Any]]:
    """(full command path, command) for every visible command under `group`, in registration order."""
    out = []
    for name, command in group.commands.items():
        if getattr(command, "hidden", False):
            continue
        sub = f"{path} {name}"
        out.append((sub, command))
        if getattr(command, "commands", None):
            out += _walk(sub, command)
    return out


def reference_markdown() -> str:
    """The CLI reference page for the `sim2sg` app, as markdown (deterministic)."""
    from sim2sg.cli.app import app

    root = typer.main.get_command(app)
    name = root.name or "sim2sg"
    commands = _walk(name, root)
    lines = [_HEADER, _help_text(root), ""]
    lines += ["| command | what it does |", "|---|---|"]
    for path, command in commands:
        summary = _help_text(command).split("\n\n")[0]
        anchor = path.replace(" ", "-")
        lines.append(f"| [`{path}`](#{anchor}) | {_cell(summary)} |")
    lines.append("")
    # The alignment vocabulary of `train`, `loop` and the benchmarks, from its one definition.
    from sim2sg.train import align

    lines += ["## Alignment", "", inspect.cleandoc(align.__doc__).split("\n\n", 1)[1], ""]
    for path, command in commands:
        lines += _command_section(path, command)
    return "\n".join(lines).rstrip("\n") + "\n"


def main() -> None:
    sys.stdout.write(reference_markdown())


if __name__ == "__main__":
    main()
