"""Roll-out figures, versions side by side, the answer's version and warm-up files: pure parts."""

from __future__ import annotations

import struct

import pytest

from harness.decide.versions import version_rows
from harness.models.warmup_file import crc32c, masked_crc, prediction_log, tfrecord
from harness.rollout.figures import rollout_figures
from scenarios.recording import Tally, encode_histogram, new_histogram
from scenarios.results import timeline, version_figures
from scenarios.tfs_wire import PredictResponse, answer_version


def second(s: int, answers: dict[str, tuple[int, float]], errors: dict[str, int] | None = None):
    """A timeline entry: per version (answers, latency in ms of each)."""
    histogram = new_histogram(2)
    for count, ms in answers.values():
        for _ in range(count):
            histogram.record_value(int(ms * 1000))
    ok = sum(count for count, _ in answers.values())
    p99 = histogram.get_value_at_percentile(99) / 1000 if ok else None
    return {
        "second": s,
        "ok": ok,
        "errors": sum((errors or {}).values()),
        "error_codes": errors or {},
        "latency_p99_ms": p99,
        "histogram": encode_histogram(histogram) if ok else "",
        "versions": {
            v: {"ok": n, "errors": {}, "latency_p99_ms": ms} for v, (n, ms) in answers.items()
        },
    }


SWITCH = [
    *(second(s, {"1": (100, 10.0)}) for s in range(0, 5)),
    second(5, {"1": (60, 10.0), "2": (20, 200.0)}),  # the switch second: a slow first answer
    second(6, {"1": (10, 10.0), "2": (90, 30.0)}, {"UNAVAILABLE": 2}),
    *(second(s, {"2": (100, 10.0)}) for s in range(7, 10)),
]


def test_the_switch_in_a_timeline() -> None:
    figures = rollout_figures(SWITCH, switch_at_s=5.4, settle_s=1)
    assert (figures.old_version, figures.new_version) == ("1", "2")
    assert figures.first_new_at_s == 5.0 and figures.first_new_after_s == 0.0
    assert figures.last_old_at_s == 7.0 and figures.last_old_after_s == pytest.approx(1.6)
    assert figures.failures == {"UNAVAILABLE": 2}
    assert figures.failed_seconds == [{"second": 6, "codes": {"UNAVAILABLE": 2}}]
    assert figures.p99_before_ms == pytest.approx(10.0, rel=0.01)
    assert figures.p99_during_ms == pytest.approx(200.0, rel=0.01)  # seconds 5 and 6
    assert figures.p99_after_ms == pytest.approx(10.0, rel=0.01)
    # seconds 5 and 6 rose above 10 ms; 7-9 did not
    expected = (SWITCH[5]["latency_p99_ms"] - 10.0) + (SWITCH[6]["latency_p99_ms"] - 10.0)
    assert figures.excess_p99_ms_s == pytest.approx(expected, rel=0.02)
    assert figures.answers_by_version == {"1": 570, "2": 410}
    assert figures.requests == 982 and figures.failed == 2


def test_no_switch_means_no_new_version() -> None:
    steady = [second(s, {"1": (50, 5.0)}) for s in range(8)]
    figures = rollout_figures(steady, switch_at_s=3.0)
    assert figures.new_version is None and figures.first_new_at_s is None
    assert figures.last_old_at_s is None and figures.excess_p99_ms_s == 0.0


def test_versions_side_by_side_with_intervals() -> None:
    by_version = [
        {"version": "1", "count": 900, "error_count": 0, "latency_p99_ms": 10.0},
        {"version": "2", "count": 95, "error_count": 5, "errors": {"INTERNAL": 5}},
    ]
    split = [second(s, {"1": (90, 10.0 + s % 2), "2": (10, 20.0 + s % 3)}) for s in range(10)]
    rows = {row["version"]: row for row in version_rows(by_version, split)}
    assert rows["1"]["reference"] and not rows["2"]["reference"]
    assert rows["2"]["share"] == pytest.approx(0.1) and rows["2"]["error_count"] == 5
    low, high = rows["2"]["share_ci"]
    assert low <= 0.1 <= high
    change = rows["2"]["p99_change"]
    assert change["ci_low"] > 0.5  # 20-22 ms against 10-11 ms: about twice, beyond the noise
    assert rows["1"]["p99_change"] is None
    assert version_rows(by_version[:1], split) == []  # one version: nothing to compare


def test_result_figures_by_version_and_per_second() -> None:
    tally = Tally()
    tally.histogram.record_value(1500)
    assert [v["version"] for v in version_figures({"10": tally, "9": tally, "b": tally}, 1.0)] == [
        "9",
        "10",
        "b",
    ]
    entries = timeline({0: tally}, {}, {(0, "9"): tally})
    assert entries[0]["versions"] == {"9": {"ok": 1, "errors": {}, "latency_p99_ms": 1.5}}
    assert entries[0]["histogram"] and entries[0]["error_codes"] == {}


def test_the_answers_version_is_read_without_decoding_the_outputs() -> None:
    response = PredictResponse()
    response.outputs["y"].tensor_content = b"\x01" * 5000
    assert answer_version(response.SerializeToString()) is None
    response.model_spec.name = "m"
    response.model_spec.version.value = 123
    assert answer_version(response.SerializeToString()) == 123
    assert answer_version(b"\xff\xff") is None  # not a message: no version, no exception


def test_tfrecord_framing_and_the_prediction_log() -> None:
    assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
    record = tfrecord(b"abc")
    (length,) = struct.unpack("<Q", record[:8])
    assert length == 3 and record[12:15] == b"abc"
    assert struct.unpack("<I", record[8:12])[0] == masked_crc(record[:8])
    assert struct.unpack("<I", record[15:])[0] == masked_crc(b"abc")
    # PredictionLog.predict_log (6) { PredictLog.request (1) { the request } }
    assert prediction_log(b"R") == bytes([6 << 3 | 2, 3, 1 << 3 | 2, 1]) + b"R"
