"""Request mixes, traces and the access-log importer (scenarios.mixes, scenarios.trace)."""

from __future__ import annotations

import io
import json
import random
from collections import Counter
from pathlib import Path

import pytest

from scenarios.mixes import (
    Distribution,
    MixError,
    MixSampler,
    RequestKind,
    RequestMix,
    parse_distribution,
)
from scenarios.trace import (
    Trace,
    TraceEntry,
    TraceError,
    TraceSchedule,
    from_access_log,
    main,
    read_trace,
    write_trace,
)

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "traces"


def test_distributions_fixed_ranges_and_weights() -> None:
    assert parse_distribution("4") == Distribution(("4",), (1.0,))
    assert parse_distribution("8-11").values == ("8", "9", "10", "11")
    assert parse_distribution("8-11").weights == (0.25,) * 4
    weighted = parse_distribution("1:7, 4:2, 16:1")
    assert weighted.values == ("1", "4", "16")
    assert weighted.weights == pytest.approx((0.7, 0.2, 0.1))
    assert weighted.text() == "1:0.7,4:0.2,16:0.1"
    assert weighted.mean() == pytest.approx(0.7 + 0.8 + 1.6)
    assert parse_distribution("mlp:3,transformer", numeric=False).weights == (0.75, 0.25)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("0", "must be >= 1"),
        ("x", "not a whole number"),
        ("9-3", "must go up"),
        ("1:0.5:2", "VALUE:WEIGHT"),
        ("1:-1,2:1", "must be >= 0"),
        ("1:1,1:2", "values must differ"),
        ("1:0,2:0", "more than 0"),
    ],
)
def test_bad_distributions_are_named(text: str, message: str) -> None:
    with pytest.raises(MixError, match=f"--rows: .*{message}"):
        parse_distribution(text, what="--rows")


def test_a_mix_draws_its_weights_and_lists_every_kind() -> None:
    mix = RequestMix(
        parse_distribution("a:1,b:1", numeric=False),
        parse_distribution("1:0.7,4:0.2,16:0.1"),
        Distribution.fixed(8),
    )
    assert len(mix.kinds()) == 6
    sampler = MixSampler(mix, random.Random(3))
    drawn = Counter(sampler.draw() for _ in range(20_000))
    assert set(drawn) <= set(mix.kinds())
    rows = Counter()
    for kind, count in drawn.items():
        rows[kind.rows] += count
    assert rows[1] / 20_000 == pytest.approx(0.7, abs=0.015)
    assert rows[16] / 20_000 == pytest.approx(0.1, abs=0.01)
    too_many = RequestMix(mix.models, parse_distribution("1-100"), parse_distribution("1-100"))
    with pytest.raises(MixError, match="20000 different requests"):
        too_many.kinds()


def _trace(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "t.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_trace_reads_its_requests(tmp_path: Path) -> None:
    path = _trace(
        tmp_path,
        '{"t": 0}',
        "",
        '{"t": 0.5, "model": "mlp", "rows": 4, "length": 32}',
        '{"t": 0.5, "payload": "big.npz"}',
    )
    trace = read_trace(path)
    assert trace.entries == (
        TraceEntry(0.0),
        TraceEntry(0.5, "mlp", 4, 32),
        TraceEntry(0.5, payload=str(tmp_path / "big.npz")),
    )
    assert trace.models() == {"mlp"}
    assert trace.duration_s == pytest.approx(0.75)  # last t + one mean gap


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (['{"t": 1}', '{"t": 0.5}'], r"t\.jsonl:2: t 0.5 is earlier than the line before"),
        (['{"t": -1}'], r't\.jsonl:1: "t" must be a number of seconds >= 0'),
        (['{"time": 1}'], r"unknown key\(s\) \['time'\]; valid keys: t, model"),
        (['{"t": 0, "rows": 0}'], r"'rows' must be a whole number >= 1"),
        (['{"t": 0, "rows": 1.5}'], r"'rows' must be a whole number"),
        (["[1, 2]"], "must be a JSON object"),
        (["{t: 0}"], "not JSON"),
        ([""], "has no requests"),
    ],
)
def test_bad_traces_get_one_line_naming_file_and_line(
    tmp_path: Path, lines: list[str], message: str
) -> None:
    with pytest.raises(TraceError, match=message) as caught:
        read_trace(_trace(tmp_path, *lines))
    assert "\n" not in str(caught.value)


def test_a_trace_is_checked_against_models_and_max_batch_size(tmp_path: Path) -> None:
    trace = read_trace(_trace(tmp_path, '{"t": 0, "model": "mlp", "rows": 8}', '{"t": 1}'))
    trace.check({"mlp"}, 8)
    with pytest.raises(
        TraceError, match=r"t\.jsonl:1: model 'mlp' is not served; valid models: half_plus_two"
    ):
        trace.check({"half_plus_two"}, None)
    with pytest.raises(
        TraceError, match=r"t\.jsonl:1: rows 8 is over max_batch_size 4 .*; valid rows: 1-4"
    ):
        trace.check(None, 4)
    # A model's own limit applies to its requests; the overall one to requests left to the mix.
    trace.check(None, 4, {"mlp": 8})
    with pytest.raises(TraceError, match=r"t\.jsonl:1: rows 8 is over max_batch_size 6"):
        trace.check(None, 16, {"mlp": 6})


def test_a_schedule_deals_the_trace_out_and_loops() -> None:
    trace = Trace("t", tuple(TraceEntry(t) for t in (0.0, 1.0, 2.0, 3.0)))
    first = TraceSchedule(trace, 0, 2, speed=2.0, loop=False, start=10.0)
    assert [first.claim() for _ in range(3)] == [
        (10.0, TraceEntry(0.0)),
        (11.0, TraceEntry(2.0)),
        None,
    ]
    looping = TraceSchedule(trace, 1, 2, speed=1.0, loop=True, start=0.0)
    times = [claimed[0] for claimed in (looping.claim() for _ in range(4)) if claimed]
    assert times == [1.0, 3.0, 5.0, 7.0]  # a pass lasts 4 s: 3 s + one mean gap


def test_the_access_log_importer_matches_its_golden_trace() -> None:
    with open(GOLDEN / "access.log", encoding="utf-8") as handle:
        entries = from_access_log(handle)
    out = io.StringIO()
    assert write_trace(entries, out) == 5
    assert out.getvalue() == (GOLDEN / "access.trace.jsonl").read_text()
    assert read_trace(GOLDEN / "access.trace.jsonl").entries == tuple(entries)


def test_the_importer_command_writes_a_trace(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "day.jsonl"
    assert main(["from-access-log", str(GOLDEN / "access.log"), "-o", str(out)]) == 0
    assert out.read_text() == (GOLDEN / "access.trace.jsonl").read_text()
    assert "5 Predict calls" in capsys.readouterr().err
    broken = tmp_path / "broken.log"
    broken.write_text(json.dumps({"method": "/tensorflow.serving.PredictionService/Predict"}))
    assert main(["from-access-log", str(broken)]) == 2
    assert 'broken.log:1: a Predict line without a readable "time"' in capsys.readouterr().err


def test_request_kinds_sort_and_label() -> None:
    assert RequestKind("mlp", 4, 8).label() == "mlp rows=4 length=8"
    assert sorted([RequestKind("b", 1, 1), RequestKind("a", 2, 1)])[0].model == "a"
