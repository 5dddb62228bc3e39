"""TF Serving's ``--batching_parameters_file``: the BatchingParameters proto in text format.

Written for every point (and for the recommendation), read back to check a user's file. Only
fields that are set are written, so the server's own defaults apply to the rest exactly as they
would in TensorFlow Serving. Wrapper fields (``Int64Value``, ``BoolValue``, ``StringValue``) are
written as ``name { value: X }``; plain and repeated fields as ``name: X`` (once per item). Which
is which comes from the batching field table (``harness.plan.batching_fields``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from harness.errors import UserError
from harness.plan.batching_fields import PROTO_ORDER, BatchingField, BatchingParams

# Field name -> its row, in the proto's order (the order of the file and of "valid fields").
_FIELDS: dict[str, BatchingField[Any]] = {f.name: f for f in PROTO_ORDER}


def format_batching(params: BatchingParams) -> str:
    """The text-format file for ``params``: one line per set field, proto field order."""
    lines: list[str] = []
    for name, value in params.as_dict().items():
        wrapped = _FIELDS[name].wrapped
        if isinstance(value, list):
            lines.extend(f"{name}: {item}" for item in value)
        elif wrapped:
            lines.append(f"{name} {{ value: {_literal(value)} }}")
        else:
            lines.append(f"{name}: {_literal(value)}")
    return "\n".join(lines) + "\n"


def _literal(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return str(value)


# One field: `name { value: X }`, `name: { value: X }`, `name < value: X >` or `name: X`.
_ENTRY = re.compile(
    r"""\s*(?P<name>[A-Za-z_]\w*)\s*
        (?: :?\s*[{<]\s*value\s*:\s*(?P<wrapped>"(?:[^"\\]|\\.)*"|[^\s}>]+)\s*[}>]
          | :\s*(?P<plain>"(?:[^"\\]|\\.)*"|[^\s]+) )\s*""",
    re.VERBOSE,
)


def parse_batching(text: str, source: str = "batching parameters") -> BatchingParams:
    """Parse the text format; UserError naming the line for an unknown field or bad value.

    Fields may span lines (``name {\n  value: 128\n}``); ``#`` starts a comment.
    """
    values: dict[str, object] = {}
    repeated: dict[str, list[object]] = {}
    text = _strip_comments(text)
    for pos, name, raw, wrapped in _entries(text, source):
        where = f"{source}:{_line_of(text, pos)}"
        value = _field_value(name, raw, wrapped, where)
        if _FIELDS[name].repeated:
            repeated.setdefault(name, []).append(value)
        elif name in values:
            # As protobuf's text parser: a singular field given twice is an error, not "last wins".
            raise UserError(f"{where}: {name} is given more than once")
        else:
            values[name] = value
    return BatchingParams.from_dict({**values, **repeated})


def _line_of(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def _strip_comments(text: str) -> str:
    return "\n".join(line.split("#", 1)[0] for line in text.splitlines())


def _entries(text: str, source: str) -> list[tuple[int, str, str, bool]]:
    """Every ``(offset, name, raw value, wrapped)`` in ``text``, in order."""
    found, pos = [], 0
    while text[pos:].strip():
        match = _ENTRY.match(text, pos)
        if not match:
            start = len(text) - len(text[pos:].lstrip())
            snippet = text[start:].splitlines()[0]
            raise UserError(f"{source}:{_line_of(text, start)}: cannot parse {snippet!r}")
        wrapped = match.group("wrapped") is not None
        raw = match.group("wrapped" if wrapped else "plain")
        found.append((match.start("name"), match.group("name"), raw, wrapped))
        pos = match.end()
    return found


def _field_value(name: str, raw: str, wrapped: bool, where: str) -> object:
    if name not in _FIELDS:
        raise UserError(f"{where}: unknown field {name!r}; valid fields: {', '.join(_FIELDS)}")
    kind, expects_wrapper = _FIELDS[name].kind, _FIELDS[name].wrapped
    if wrapped != expects_wrapper:
        form = f"{name} {{ value: ... }}" if expects_wrapper else f"{name}: ..."
        raise UserError(f"{where}: {name} is written as `{form}`")
    try:
        return _convert(kind, raw)
    except ValueError:
        raise UserError(f"{where}: {name} expects {kind.__name__}, got {raw}") from None


def _convert(kind: type, raw: str) -> object:
    if kind is bool:
        if raw not in ("true", "false", "True", "False", "1", "0"):
            raise ValueError(raw)
        return raw in ("true", "True", "1")
    if kind is str:
        if not (len(raw) >= 2 and raw[0] == raw[-1] == '"'):
            raise ValueError(raw)
        return re.sub(r"\\(.)", r"\1", raw[1:-1])
    return int(raw)


def write_batching_file(path: Path, params: BatchingParams) -> Path:
    """Write ``params`` to ``path`` (creating folders); returns the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(format_batching(params))
    return path


def read_batching_file(path: Path) -> BatchingParams:
    """Read a batching parameters file; UserError when it is missing or malformed."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise UserError(f"cannot read batching parameters file {path}: {exc.strerror}") from None
    return parse_batching(text, source=str(path))
