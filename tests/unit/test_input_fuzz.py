"""Property tests for the files a user hands the harness: a sweep spec, a payload file, a
baseline file and a run folder given to ``recommend`` / ``report`` / ``compare``.

Whatever the bytes (truncated, a value of the wrong type anywhere, random), reading them ends in
the thing read or in one error the CLI prints as a line naming the file: ``UserError`` (harness)
or ``PayloadError`` (scenarios, turned into a ``UserError`` by the harness). Never a traceback.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from harness.decide.compare import compare_sides, load_side, write_baseline
from harness.decide.recommend import recommend
from harness.errors import UserError
from harness.plan.points import expand_matrix
from harness.plan.presets import preset_names, preset_path
from harness.plan.spec import parse_spec
from harness.report.data import build_report_data
from harness.store.run_folder import load_run
from scenarios.payloads import PayloadError, load_inputs
from scenarios.signatures import Signature, TensorSpec
from tests.helpers import fuzz_settings

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "runs"
# Examples per property: small in `make test`; BATCHBENCH_FUZZ_EXAMPLES=N for a long profile.
FUZZ = fuzz_settings(25)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


# --- mutations: what a disk, an editor or a truncated copy does to a file ------------------------


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value inside nested dicts and lists, the root included."""
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*prefix, index))
    return found


def _replaced(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {**value, head: _replaced(value[head], rest, new)}
    return [_replaced(item, rest, new) if i == head else item for i, item in enumerate(value)]


def _dropped(value: Any, path: tuple[Any, ...]) -> Any:
    if not path:
        return value
    if len(path) == 1:
        if isinstance(value, dict):
            return {k: v for k, v in value.items() if k != path[0]}
        return [item for i, item in enumerate(value) if i != path[0]]
    return _replaced(value, path[:-1], _dropped(_at(value, path[:-1]), path[-1:]))


def _at(value: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        value = value[step]
    return value


@st.composite
def mutated_data(draw: st.DrawFn, data: Any) -> Any:
    """``data`` with one value replaced by any JSON value, or one key or item dropped."""
    path = draw(st.sampled_from(_paths(data)))
    if path and draw(st.booleans()):
        return _dropped(data, path)
    return _replaced(data, path, draw(json_values))


@st.composite
def mutated_text(
    draw: st.DrawFn, text: bytes, parse: Callable[[bytes], Any] | None = None
) -> bytes:
    """``text`` truncated, bit-flipped, replaced by random bytes, or (given ``parse``, which
    reads it) parsed, one value mutated and written back as JSON."""
    how = draw(st.sampled_from(["truncate", "flip", "random", "value"]))
    if how == "truncate":
        return text[: draw(st.integers(0, max(len(text) - 1, 0)))]
    if how == "flip" and text:
        at = draw(st.integers(0, len(text) - 1))
        return text[:at] + bytes([text[at] ^ (1 << draw(st.integers(0, 7)))]) + text[at + 1 :]
    if how == "random" or parse is None:
        return draw(st.binary(max_size=200))
    return json.dumps(draw(mutated_data(parse(text)))).encode()


def _only_user_errors(action: Callable[[], Any], errors: tuple[type[Exception], ...]) -> None:
    """Run ``action``; an error it raises must be one of ``errors``, on one line."""
    try:
        action()
    except errors as exc:
        message = str(exc)
        assert message and "Traceback" not in message


# --- sweep specs --------------------------------------------------------------------------------

PRESET_TEXTS = {name: preset_path(name).read_text() for name in preset_names()}


def _spec_problem_or_points(text: bytes, source: str) -> None:
    def read() -> None:
        spec = parse_spec(text.decode("utf-8", "replace"), source=source)
        expand_matrix(spec)

    try:
        read()
    except UserError as exc:
        assert str(exc).startswith(source), str(exc)


@FUZZ
@given(st.sampled_from(sorted(PRESET_TEXTS)), st.data())
def test_a_mutated_spec_is_read_or_refused_naming_its_source(name, data):
    text = PRESET_TEXTS[name].encode()
    mutated = data.draw(mutated_text(text, lambda raw: yaml.safe_load(raw)))
    _spec_problem_or_points(mutated, f"spec-{name}.yaml")


# --- payload files ------------------------------------------------------------------------------

SIGNATURES = {
    "one": Signature("serving_default", "", {"x": TensorSpec("x", "DT_FLOAT", (-1, 4))}),
    "two": Signature(
        "serving_default",
        "",
        {
            "a": TensorSpec("a", "DT_INT64", (-1, 2)),
            "b": TensorSpec("b", "DT_STRING", (-1,)),
        },
    ),
}


def _payload_files(tmp: Path) -> dict[str, bytes]:
    """One valid payload per format, as bytes."""
    npy, npz = tmp / "p.npy", tmp / "p.npz"
    np.save(npy, np.ones((2, 4), dtype=np.float32))
    np.savez(npz, a=np.ones((2, 2), dtype=np.int64), b=np.array([b"x", b"yz"]))
    body = {"instances": [{"a": [1, 2], "b": {"b64": "eHl6"}}, {"a": [3, 4], "b": "w"}]}
    return {".npy": npy.read_bytes(), ".npz": npz.read_bytes(), ".json": json.dumps(body).encode()}


@pytest.fixture(scope="module")
def payload_files(tmp_path_factory) -> dict[str, bytes]:
    return _payload_files(tmp_path_factory.mktemp("payloads"))


@FUZZ
@given(st.sampled_from([".npy", ".npz", ".json"]), st.sampled_from(sorted(SIGNATURES)), st.data())
def test_a_mutated_payload_file_is_read_or_refused_naming_it(
    payload_files, tmp_path_factory, suffix, signature, data
):
    original = payload_files[suffix]
    how = data.draw(st.sampled_from(["truncate", "flip", "random", "deep"]))
    if how == "deep":  # rows nested deeper than any parser's stack
        depth = data.draw(st.integers(50, 5000))
        mutated = ('{"instances": ' + "[" * depth + "1" + "]" * depth + "}").encode()
    else:
        mutated = data.draw(mutated_text(original, json.loads if suffix == ".json" else None))
    path = tmp_path_factory.mktemp("payload") / f"payload{suffix}"
    path.write_bytes(mutated)
    try:
        load_inputs(path, SIGNATURES[signature])
    except PayloadError as exc:
        assert str(path) in str(exc) or "payload" in str(exc), str(exc)


# --- baseline files and run folders -------------------------------------------------------------


def _mutated_file(data: st.DataObject, path: Path) -> None:
    raw = path.read_bytes()
    parse = json.loads if path.suffix == ".json" else None
    path.write_bytes(data.draw(mutated_text(raw, parse)))


@FUZZ
@given(st.data())
def test_a_mutated_baseline_file_is_compared_or_refused(tmp_path_factory, data):
    tmp = tmp_path_factory.mktemp("baseline")
    baseline = write_baseline(GOLDEN / "ci-base", tmp / "baseline.json")
    _mutated_file(data, baseline)

    def compare() -> None:
        compare_sides(load_side(baseline), load_side(GOLDEN / "ci-rerun"))

    _only_user_errors(compare, (UserError,))


RUNS = ["report-grid", "report-maxrate", "decide-confirmed", "report-traffic", "ci-base"]


@FUZZ
@given(st.sampled_from(RUNS), st.data())
def test_a_run_folder_with_a_mutated_file_is_read_or_refused(tmp_path_factory, name, data):
    run = tmp_path_factory.mktemp("run") / name
    shutil.copytree(GOLDEN / name, run)
    files = sorted(p for p in run.rglob("*") if p.is_file())
    _mutated_file(data, data.draw(st.sampled_from(files)))

    def read_everything() -> None:
        recommend(load_run(run))
        build_report_data(run)
        load_side(run)

    _only_user_errors(read_everything, (UserError,))
