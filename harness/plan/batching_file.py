"""TF Serving's ``--batching_parameters_file``: the BatchingParameters proto in text format.

Written for every point (and for the recommendation), read back to check a user's file. Only
fields that are set are written, so the server's own defaults apply to the rest exactly as they
would in TensorFlow Serving. Wrapper fields (``Int64Value``, ``BoolValue``, ``StringValue``) are
written as ``name { value: X }``; ``allowed_batch_sizes`` (repeated int64) and
``pad_variable_length_inputs`` (plain bool) are written as ``name: X``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from pathlib import Path

from harness.errors import UserError


@dataclass(frozen=True)
class BatchingParams:
    """The batching knobs of one server configuration; ``None`` means "server default"."""

    max_batch_size: int | None = None
    batch_timeout_micros: int | None = None
    max_enqueued_batches: int | None = None
    num_batch_threads: int | None = None
    thread_pool_name: str | None = None
    allowed_batch_sizes: tuple[int, ...] = ()
    pad_variable_length_inputs: bool | None = None
    enable_large_batch_splitting: bool | None = None
    max_execution_batch_size: int | None = None

    def as_dict(self) -> dict[str, object]:
        """The fields that are set, by proto field name (JSON-ready)."""
        out: dict[str, object] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None and value != ():
                out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> BatchingParams:
        """Inverse of :meth:`as_dict`."""
        values = dict(data)
        if "allowed_batch_sizes" in values:
            values["allowed_batch_sizes"] = tuple(values["allowed_batch_sizes"])  # type: ignore[arg-type]
        return cls(**values)  # type: ignore[arg-type]


# Field name -> (kind, wrapped). kind: how to parse the value; wrapped: `{ value: X }` syntax.
_FIELDS: dict[str, tuple[type, bool]] = {
    "max_batch_size": (int, True),
    "batch_timeout_micros": (int, True),
    "max_enqueued_batches": (int, True),
    "num_batch_threads": (int, True),
    "thread_pool_name": (str, True),
    "allowed_batch_sizes": (int, False),
    "pad_variable_length_inputs": (bool, False),
    "enable_large_batch_splitting": (bool, True),
    "max_execution_batch_size": (int, True),
}


def format_batching(params: BatchingParams) -> str:
    """The text-format file for ``params``: one line per set field, proto field order."""
    lines = []
    for name, value in params.as_dict().items():
        wrapped = _FIELDS[name][1]
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

    Fields may span lines (``max_batch_size {\n  value: 128\n}``); ``#`` starts a comment.
    """
    values: dict[str, object] = {}
    sizes: list[int] = []
    text = _strip_comments(text)
    for pos, name, raw, wrapped in _entries(text, source):
        where = f"{source}:{_line_of(text, pos)}"
        value = _field_value(name, raw, wrapped, where)
        if name == "allowed_batch_sizes":
            sizes.append(value)  # type: ignore[arg-type]
        elif name in values:
            # As protobuf's text parser: a singular field given twice is an error, not "last wins".
            raise UserError(f"{where}: {name} is given more than once")
        else:
            values[name] = value
    return BatchingParams(**values, allowed_batch_sizes=tuple(sizes))  # type: ignore[arg-type]


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
    kind, expects_wrapper = _FIELDS[name]
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
