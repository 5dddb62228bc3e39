"""Malformed REST requests against real servers: every answer a client error, nothing else hurt.

Arbitrary and truncated bodies, valid JSON of the wrong shape (every key of every JSON type),
tensor payloads with ragged rows, wrong widths, deep nesting, huge and non-finite numbers,
integers out of range, bad ``b64``, unicode edge cases (lone surrogates, invalid UTF-8), wrong
content types, unknown models, versions and labels on every route, and bodies over
``--max_request_bytes``. After each case a valid request must get the model's answer; on the
batched server malformed predicts are sent together with valid ones.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any
from urllib.parse import quote

import psutil
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fuzz.conftest import MAX_REQUEST_BYTES
from tests.fuzz.support import (
    EXAMPLES,
    FUZZ,
    RSS_BOUND_BYTES,
    FuzzServer,
    RestAnswer,
    Tally,
    beside_good_requests,
    check_rest_answer,
)

pytestmark = pytest.mark.timeout(3600)

SERVERS = ["unbatched", "batched"]
ACTIONS = [":predict", ":classify", ":regress"]
# One oversized body is a megabyte: the long profile sends fewer of them.
FEW = settings(FUZZ, max_examples=max(10, EXAMPLES // 20))


def send(
    server: FuzzServer,
    tally: Tally,
    category: str,
    method: str,
    path: str,
    body: Any = None,
    headers: dict | None = None,
    chunked: bool = False,
) -> RestAnswer:
    answer = server.rest.call(method, path, body, headers, chunked)
    if method == "HEAD":  # no body to check: only the status
        code = str(answer.status)
        assert answer.status in (200, 400, 404), answer
    else:
        code = check_rest_answer(answer)
    tally.add("rest", category, server.name, code)
    return answer


# -- strategies ----------------------------------------------------------------------------------

# JSON number tokens Python's json.dumps never writes: beyond double range, beyond 64 bits,
# exponents, negative zero.
RAW_NUMBERS = [
    "1e400",
    "-1e400",
    "1e-400",
    "18446744073709551616",
    "18446744073709551615",
    "-9223372036854775809",
    "9223372036854775808",
    "3.4028235e38",
    "16777217",
    "9007199254740993",
    "-0",
    "1E+2",
    "0.1e1",
]
_RAW = re.compile(r'"@@raw(\d+)@@"')
_DEEP = re.compile(r'"@@deep:(\d+):([al])@@"')

unicode_text = st.text(
    alphabet=st.one_of(st.characters(), st.characters(categories=["Cs"])), max_size=8
)
raw_numbers = st.sampled_from(range(len(RAW_NUMBERS))).map(lambda i: f"@@raw{i}@@")
b64_objects = st.one_of(
    st.binary(max_size=6).map(lambda b: {"b64": base64.b64encode(b).decode()}),
    st.sampled_from(["", "=", "a", "ab=", "a===", "*!", "YQ", "YWJj\n", "ü"]).map(
        lambda t: {"b64": t}
    ),
    st.just({"b64": 1}),
    st.just({"b64": "YQ==", "extra": 1}),
)
numbers = st.one_of(
    st.floats(),
    st.integers(-(2**70), 2**70),
    st.sampled_from([0, 1, -1, 2**31, 2**63, 2**64, -(2**63) - 1]),
    raw_numbers,
)
leaves = st.one_of(numbers, st.none(), st.booleans(), unicode_text, b64_objects)
json_values = st.recursive(
    leaves,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(["x", "b64", ""]) | unicode_text, inner, max_size=4)
    ),
    max_leaves=16,
)
KEYS = ["instances", "inputs", "examples", "signature_name", "context"]


def nested(value: Any, depth: int, as_object: bool = False) -> Any:
    """``value`` inside ``depth`` lists (or ``{"a": ...}`` objects). Deep ones are a marker
    that to_json writes out as text (of a leaf 1.0): Python's json and Hypothesis's printer
    recurse, so the client could not build or show them."""
    if depth > 3:
        return f"@@deep:{depth}:{'a' if as_object else 'l'}@@"
    for _ in range(depth):
        value = {"a": value} if as_object else [value]
    return value


def _deep_text(match: re.Match) -> str:
    depth, kind = int(match.group(1)), match.group(2)
    opening, closing = ('{"a": ', "}") if kind == "a" else ("[", "]")
    return opening * depth + "1.0" + closing * depth


depths = st.one_of(st.integers(0, 3), st.sampled_from([62, 63, 64, 65, 100, 300, 800, 2000]))
deep_values = st.builds(nested, leaves, depths, st.booleans())


def to_json(document: Any, ascii_only: bool) -> bytes:
    """The document as JSON text, raw number tokens put in, unicode written raw or escaped
    (raw lone surrogates become bytes that are not UTF-8)."""
    text = json.dumps(document, ensure_ascii=ascii_only)
    text = _RAW.sub(lambda m: RAW_NUMBERS[int(m.group(1))], text)
    text = _DEEP.sub(_deep_text, text)
    return text.encode("utf-8", "surrogatepass")


@st.composite
def rows(draw) -> list:
    width = draw(st.sampled_from([16, 16, 16, 15, 17, 0, 1]))
    ragged = draw(st.booleans())
    # Half the payloads hold plain numbers only: those decode, reach the model (or the batch
    # queue) and fail there when their shape is wrong.
    leaf = st.floats(-1e6, 1e6) if draw(st.booleans()) else st.one_of(numbers, numbers, leaves)
    items = []
    for _ in range(draw(st.integers(0, 4))):
        size = draw(st.sampled_from([width, 16, 3])) if ragged else width
        items.append(draw(st.lists(leaf, min_size=size, max_size=size)))
    depth = draw(st.sampled_from([0, 0, 0, 1, 2, 62, 63, 64, 65, 100, 300]))
    return [nested(item, depth) for item in items]


@st.composite
def tensor_documents(draw) -> Any:
    payload = draw(rows())
    form = draw(st.sampled_from(["instances", "inputs", "named inputs", "named rows", "scalar"]))
    if form == "named inputs":
        document = {"inputs": {"x": payload}}
    elif form == "named rows":
        extra = draw(st.dictionaries(st.sampled_from(["y", "b64"]), leaves, max_size=1))
        document = {"instances": [{"x": row, **extra} for row in payload]}
    elif form == "scalar":
        document = {draw(st.sampled_from(["inputs", "instances"])): draw(numbers)}
    else:
        document = {form: payload}
    if draw(st.booleans()):
        document["signature_name"] = draw(st.sampled_from(["serving_default", "", "nope"]))
    return document


documents = st.one_of(
    st.dictionaries(st.sampled_from(KEYS) | unicode_text, json_values | deep_values, max_size=4),
    json_values,
    deep_values,
)


@st.composite
def example_documents(draw) -> Any:
    feature = st.one_of(leaves, st.lists(leaves, max_size=4), deep_values)
    example = st.dictionaries(st.sampled_from(["x", "y"]) | unicode_text, feature, max_size=3)
    document = {"examples": draw(st.lists(st.one_of(example, leaves), max_size=4))}
    if draw(st.booleans()):
        document["context"] = draw(st.one_of(example, leaves))
    return document


header_text = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=20)
content_types = st.one_of(
    st.sampled_from(
        ["application/json", "text/plain", "application/x-www-form-urlencoded", "", "*/*"]
    ),
    header_text,
)
names = st.one_of(st.sampled_from(["mlp", "MLP", "nope", "mlp%2F", "a b"]), unicode_text)
versions = st.one_of(
    st.sampled_from(["1", "0", "01", "2", "99999999999999999999", "9223372036854775807"]),
    st.integers(0, 2**64).map(str),
)
SUFFIXES = ["", "/metadata", "/", "/metadata/x", ":predict", ":PREDICT", ":foo", "?x=1"]


@st.composite
def model_paths(draw) -> str:
    path = "/v1/models"
    if draw(st.integers(0, 9)):
        path += "/" + quote(draw(names), safe="")
    where = draw(st.sampled_from(["", "", "versions", "labels", "version"]))
    if where:
        label = draw(st.one_of(versions, unicode_text))
        path += f"/{where}/" + quote(label, safe="")
    return path + draw(st.sampled_from(SUFFIXES))


def action_paths() -> st.SearchStrategy[str]:
    mlp = st.sampled_from(["/v1/models/mlp", "/v1/models/mlp/versions/1"])
    other = st.sampled_from(
        ["/v1/models/nope", "/v1/models/mlp/versions/9", "/v1/models/mlp/labels/x"]
    )
    return st.builds(str.__add__, st.one_of(mlp, mlp, mlp, other), st.sampled_from(ACTIONS))


# -- properties ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SERVERS)
def test_arbitrary_and_truncated_bodies(
    name, fuzz_servers, tally, rss_at_start, valid_rows, expected_y
):
    server = fuzz_servers[name]
    valid_body = json.dumps({"instances": valid_rows.tolist()}).encode()
    bodies = st.one_of(
        st.binary(max_size=256),
        st.integers(0, len(valid_body)).map(lambda n: valid_body[:n]),
    )

    @FUZZ
    @given(path=action_paths(), body=bodies, content_type=content_types)
    def case(path: str, body: bytes, content_type: str) -> None:
        send(server, tally, "bytes", "POST", path, body, {"Content-Type": content_type})
        server.assert_serves(valid_rows, expected_y)

    case()


@pytest.mark.parametrize("name", SERVERS)
def test_json_of_the_wrong_shape(name, fuzz_servers, tally, valid_rows, expected_y):
    server = fuzz_servers[name]

    @FUZZ
    @given(path=action_paths(), document=documents, ascii_only=st.booleans())
    def case(path: str, document: Any, ascii_only: bool) -> None:
        send(server, tally, "json shape", "POST", path, to_json(document, ascii_only))
        server.assert_serves(valid_rows, expected_y)

    case()


@pytest.mark.parametrize("name", SERVERS)
def test_tensor_payloads(name, fuzz_servers, tally, valid_rows, expected_y):
    server = fuzz_servers[name]

    @FUZZ
    @given(document=tensor_documents(), ascii_only=st.booleans())
    def case(document: Any, ascii_only: bool) -> None:
        body = to_json(document, ascii_only)

        def bad() -> RestAnswer:
            return send(server, tally, "tensors", "POST", "/v1/models/mlp:predict", body)

        if server.batched:
            beside_good_requests(server, server.valid_rest, valid_rows, expected_y, bad)
        else:
            bad()
        server.assert_serves(valid_rows, expected_y)

    case()


@pytest.mark.parametrize("name", SERVERS)
def test_examples_for_classify_and_regress(name, fuzz_servers, tally, valid_rows, expected_y):
    server = fuzz_servers[name]

    @FUZZ
    @given(
        action=st.sampled_from([":classify", ":regress"]),
        document=example_documents(),
        ascii_only=st.booleans(),
    )
    def case(action: str, document: Any, ascii_only: bool) -> None:
        body = to_json(document, ascii_only)
        send(server, tally, "examples", "POST", "/v1/models/mlp" + action, body)
        server.assert_serves(valid_rows, expected_y)

    case()


@pytest.mark.parametrize("name", SERVERS)
def test_status_metadata_and_unknown_routes(name, fuzz_servers, tally, valid_rows, expected_y):
    server = fuzz_servers[name]
    methods = st.sampled_from(["GET", "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"])

    @FUZZ
    @given(method=methods, path=model_paths(), body=st.none() | st.binary(max_size=32))
    def case(method: str, path: str, body: bytes | None) -> None:
        send(server, tally, "routes", method, path, body)
        server.assert_serves(valid_rows, expected_y)

    case()


def test_bodies_over_the_request_limit(fuzz_servers, tally, valid_rows, expected_y):
    server = fuzz_servers["batched"]  # the server with --max_request_bytes

    @FEW
    @given(extra=st.integers(1, 64 * 1024), chunked=st.booleans(), path=action_paths())
    def case(extra: int, chunked: bool, path: str) -> None:
        body = b" " * (MAX_REQUEST_BYTES + extra)
        if chunked:  # no Content-Length: refused while reading
            answer = send(server, tally, "oversize", "POST", path, iter([body]), chunked=True)
        else:
            answer = send(server, tally, "oversize", "POST", path, body)
        assert answer.status == 400
        assert b"--max_request_bytes" in answer.body
        server.assert_serves(valid_rows, expected_y)

    case()


def test_servers_are_alive_and_bounded_after_rest_fuzzing(
    fuzz_servers, tally, rss_at_start, valid_rows, expected_y
):
    for name, server in fuzz_servers.items():
        server.assert_serves(valid_rows, expected_y)
        rss = psutil.Process(server.pid).memory_info().rss
        tally.rss[f"rest {name}"] = {"before": rss_at_start[name], "after": rss}
        assert rss - rss_at_start[name] < RSS_BOUND_BYTES, (name, rss_at_start[name], rss)
