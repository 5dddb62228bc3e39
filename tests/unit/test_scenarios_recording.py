"""scenarios.recording: exact, mergeable latency recording."""

from __future__ import annotations

import random

from scenarios.recording import (
    Key,
    Recorder,
    Tags,
    decode_histogram,
    encode_histogram,
    merge_histograms,
    new_histogram,
)

MEASURE = Key(0)


def record(recorder: Recorder, values: list[int], key: Key = MEASURE) -> None:
    for value in values:
        recorder.started(key)
        recorder.succeeded(key, value)


def test_request_outcomes_are_counted_apart() -> None:
    recorder = Recorder()
    record(recorder, [1000, 2000])
    recorder.started(MEASURE)
    recorder.failed(MEASURE, "UNAVAILABLE")
    recorder.started(MEASURE)
    recorder.abandoned(MEASURE)
    recorder.late(MEASURE)
    recorder.dropped(MEASURE)
    tally = recorder.tallies()[MEASURE]
    assert (tally.ok, tally.sent, tally.late, tally.dropped, tally.incomplete) == (2, 4, 1, 1, 1)
    assert tally.errors == {"UNAVAILABLE": 1}
    assert tally.histogram.values_are_equivalent(tally.histogram.get_max_value(), 2000)


def test_closing_counts_requests_in_flight_and_ignores_later_ones() -> None:
    recorder = Recorder()
    recorder.started(MEASURE)
    recorder.started(Key(0, warmup=True))
    assert recorder.in_flight() == 2
    recorder.close()
    recorder.succeeded(MEASURE, 500)  # answered after the window: not a sample
    recorder.started(MEASURE)
    tallies = recorder.tallies()
    assert tallies[MEASURE].incomplete == 1 and tallies[MEASURE].ok == 0
    assert tallies[MEASURE].sent == 1
    assert tallies[Key(0, warmup=True)].incomplete == 1


def test_latencies_outside_the_range_are_clamped_not_lost() -> None:
    recorder = Recorder()
    record(recorder, [0, 10**12])
    assert recorder.tallies()[MEASURE].ok == 2


def test_merged_deltas_equal_the_union_of_all_samples() -> None:
    rng = random.Random(3)
    workers = [Recorder() for _ in range(3)]
    merged, union = Recorder(), new_histogram()
    for round_ in range(4):  # several reports per worker, as Locust sends them
        for worker in workers:
            values = [int(rng.lognormvariate(8, 1)) + 1 for _ in range(500)]
            record(worker, values, Key(round_ % 2))
            for value in values:
                union.record_value(value)
            merged.merge(worker.take_delta())
    histograms = [tally.histogram for tally in merged.tallies().values()]
    total = new_histogram()
    for histogram in histograms:
        total.add(histogram)
    assert total.get_total_count() == 3 * 4 * 500
    for percentile in (50.0, 99.0, 99.9):
        assert total.get_value_at_percentile(percentile) == union.get_value_at_percentile(
            percentile
        )


def test_take_delta_empties_the_recorder_but_keeps_requests_in_flight() -> None:
    recorder = Recorder()
    record(recorder, [100])
    recorder.started(MEASURE)
    first = recorder.take_delta()
    assert first["0:measure"]["sent"] == 2
    assert recorder.take_delta() == {}
    recorder.succeeded(MEASURE, 300)
    second = recorder.take_delta()
    assert second["0:measure"]["sent"] == 0
    assert decode_histogram(second["0:measure"]["histogram"]).get_total_count() == 1


def test_encoded_histograms_merge_later() -> None:
    one, two = new_histogram(), new_histogram()
    one.record_value(1000)
    two.record_value(3000)
    merged = merge_histograms([encode_histogram(one), "", encode_histogram(two)])
    assert merged.get_total_count() == 2
    assert Key.parse(Key(3, warmup=True).text()) == Key(3, warmup=True)


def test_answers_are_counted_by_version_overall_and_per_second() -> None:
    recorder = Recorder()
    measured, warm = Key(0), Key(0, warmup=True)
    for key, second, version, ok in [
        (warm, 0, "1", True),
        (measured, 1, "1", True),
        (measured, 1, "2", True),
        (measured, 2, "2", False),
        (measured, 2, "", True),  # an answer that names no version counts nowhere by version
    ]:
        tags = Tags("kind", second)
        recorder.started(key, tags)
        if ok:
            recorder.succeeded(key, 1000, tags, version)
        else:
            recorder.failed(key, "UNAVAILABLE", tags, version)
    merged = Recorder()
    merged.merge(recorder.take_delta())
    versions = merged.versions()
    assert {v: (t.ok, dict(t.errors)) for v, t in versions.items()} == {
        "1": (1, {}),  # the warm-up answer is left out of the measured figures
        "2": (1, {"UNAVAILABLE": 1}),
    }
    seconds = {k: (t.ok, sum(t.errors.values())) for k, t in merged.second_versions().items()}
    assert seconds == {(0, "1"): (1, 0), (1, "1"): (1, 0), (1, "2"): (1, 0), (2, "2"): (0, 1)}
