"""Pre-flight checks: warnings, refusals, and the time estimate shown before a sweep starts."""

from __future__ import annotations

import pytest

from harness.errors import UserError
from harness.plan.points import expand_matrix
from harness.plan.preflight import check, estimate_duration, raise_refusals, refusals
from harness.plan.spec import load_preset, validate_spec


def spec(**sections):
    raw = {"model": {"builtin": "mlp"}, "load": {"concurrency": [64]}, **sections}
    return validate_spec(raw)


def findings(s):
    return check(s, expand_matrix(s))


def codes(s, level=None):
    return [f.code for f in findings(s) if level is None or f.level == level]


@pytest.mark.parametrize("name", ["default", "ci"])
def test_presets_pass_preflight_cleanly(name):
    preset = load_preset(name)
    assert findings(preset) == []


def test_default_preset_takes_four_to_six_minutes_with_its_confirmation():
    preset = load_preset("default")
    estimate = estimate_duration(preset, expand_matrix(preset))
    assert 150 <= estimate.total_min_s <= 240
    assert estimate.total_max_s <= 360
    assert (estimate.runs, estimate.runs_max) == (20 + 3, 20 + 3 * 3)


def test_ci_preset_estimate_is_short():
    preset = load_preset("ci")
    assert estimate_duration(preset, expand_matrix(preset)).total_max_s <= 300


def test_estimate_counts_startup_warmup_and_windows():
    s = spec(
        server={"batching": {"max_batch_size": [8, 16]}},
        measurement={"warmup_s": 2, "window_s": 3, "stable_windows": 3, "max_windows": 5},
    )
    estimate = estimate_duration(s, expand_matrix(s), startup_s=1)
    assert (estimate.runs, estimate.per_run_min_s, estimate.per_run_max_s) == (2, 12, 18)
    assert (estimate.total_min_s, estimate.total_max_s) == (24, 36)
    assert estimate.describe() == "2 points × 12–18 s ≈ 0.4–0.6 min"


def test_estimate_of_a_search_counts_its_probes():
    s = spec(
        load={"find_max_rate": {"slo": {"latency_p99_ms": 50}, "precision": 0.05, "max_probes": 12}}
    )
    estimate = estimate_duration(s, expand_matrix(s), startup_s=0)
    assert estimate.runs == 2 + 5  # a pass, a fail, then log2(1/0.05) bisections
    assert estimate.runs_max == 12


def test_timeout_at_least_the_p99_slo_is_warned():
    s = spec(
        server={"batching": {"max_batch_size": [64], "batch_timeout_micros": [1000, 50_000]}},
        recommend={"slo": {"latency_p99_ms": 50}},
    )
    (finding,) = findings(s)
    assert (finding.level, finding.code) == ("warning", "timeout_vs_slo")
    assert "batch_timeout_micros 50000 (50 ms) is at least the p99 SLO (50 ms)" in finding.message


def test_no_slo_no_timeout_warning():
    s = spec(server={"batching": {"max_batch_size": [64], "batch_timeout_micros": [500_000]}})
    assert "timeout_vs_slo" not in codes(s)


def test_closed_loop_concurrency_below_max_batch_size_is_warned():
    s = spec(server={"batching": {"max_batch_size": [32, 128]}}, load={"concurrency": [16, 200]})
    messages = [f.message for f in findings(s) if f.code == "batches_cannot_fill"]
    assert len(messages) == 2
    assert (
        "concurrency 16 over 1 replica(s) with max_batch_size 32: batches can never fill"
        in messages[0]
    )
    assert "concurrency 16 over 1 replica(s) with max_batch_size 128" in messages[1]


def test_replicas_split_the_clients():
    s = spec(
        server={"replicas": [2], "batching": {"max_batch_size": [48]}}, load={"concurrency": [64]}
    )
    (finding,) = findings(s)
    assert "fill only when one replica gets more than its share (32 users)" in finding.message


def test_unset_max_batch_size_is_tf_servings_1000():
    assert "batches_cannot_fill" in codes(spec())


def test_open_loop_and_baseline_points_have_no_fill_warning():
    s = spec(server={"enable_batching": [False]})
    assert codes(s) == []
    s = spec(server={"batching": {"max_batch_size": [64]}}, load={"rate": [10]})
    assert codes(s) == []


def test_allowed_batch_sizes_not_ending_at_max_batch_size_is_refused():
    s = spec(
        server={"batching": {"max_batch_size": [64], "allowed_batch_sizes": [[16, 32], [16, 64]]}}
    )
    refused = refusals(findings(s))
    assert [f.code for f in refused] == ["allowed_batch_sizes"]
    assert "last entry was 32; expected 64" in refused[0].message
    with pytest.raises(UserError, match="refused before it started:\n  allowed_batch_sizes"):
        raise_refusals(findings(s))


def test_allowed_batch_sizes_from_an_include_rule_are_checked_too():
    s = spec(
        server={"batching": {"max_batch_size": [64]}},
        matrix={"include": [{"max_batch_size": 8, "allowed_batch_sizes": [4]}]},
    )
    assert codes(s, "refusal") == ["allowed_batch_sizes"]


def test_sweep_far_beyond_max_duration_is_refused_with_the_estimate():
    s = spec(
        server={"batching": {"max_batch_size": [64, 128, 256, 512]}},
        measurement={"window_s": 60},
        max_duration_s=60,
    )
    (finding,) = refusals(findings(s))
    assert finding.code == "too_long"
    assert finding.message.startswith("estimated 4 points × ")
    assert "far beyond max_duration_s 60 s" in finding.message


def test_sweep_that_may_overrun_is_only_warned():
    s = spec(
        server={"batching": {"max_batch_size": [64]}},
        load={"concurrency": [64]},
        measurement={"warmup_s": 0, "window_s": 10, "stable_windows": 3, "max_windows": 10},
        max_duration_s=60,
    )
    assert codes(s) == ["may_be_long"]


def test_no_refusals_means_raise_refusals_is_silent():
    raise_refusals(findings(spec(server={"batching": {"max_batch_size": [8]}})))


# --- placement -----------------------------------------------------------------------------------


def placement_findings(s, machine):
    from harness.plan.placement import plan_placement

    points = expand_matrix(s)
    replicas = sorted({p.replicas for p in points})
    choice = s.placement
    placements = {
        r: plan_placement(
            machine,
            r,
            mode=choice.mode,
            servers=choice.servers or (),
            generator=choice.generator or (),
        )
        for r in replicas
    }
    placement_codes = {
        "placement_none",
        "placement_shared",
        "placement_cpus",
        "replicas_share_cores",
    }
    return [f for f in check(s, points, placements=placements) if f.code in placement_codes]


def test_two_cores_and_two_replicas_warn_that_replicas_share_the_server_core():
    found = placement_findings(spec(server={"replicas": [1, 2]}), (0, 1))
    assert [f.code for f in found] == ["replicas_share_cores"]
    assert "2 replicas on 1 server core(s) (0)" in found[0].message


def test_one_core_cannot_separate_servers_and_generator():
    found = placement_findings(spec(), (0,))
    assert [f.code for f in found] == ["placement_shared"]
    assert "0.59-0.69" in found[0].message


def test_placement_none_warns_what_sharing_costs():
    found = placement_findings(spec(placement="none"), (0, 1))
    assert [f.code for f in found] == ["placement_none"]
    assert "share all 2 cores" in found[0].message


def test_explicit_cpus_outside_the_machine_are_refused():
    s = spec(placement={"servers": "0-1", "generator": "7"})
    found = placement_findings(s, (0, 1))
    assert [f.code for f in found if f.level == "refusal"] == ["placement_cpus"]
    assert "placement.generator: CPU(s) 7 are not usable here; usable CPUs: 0-1" in str(
        [f.message for f in found]
    )


def test_enough_cores_give_no_placement_finding():
    assert placement_findings(spec(server={"replicas": [1, 2]}), range(8)) == []


def test_a_busy_machine_is_named_before_the_sweep():
    from harness.plan.placement import plan_placement

    s = spec()
    points = expand_matrix(s)
    auto = {1: plan_placement((0, 1), 1)}
    busy = [f for f in check(s, points, placements=auto, load_average=11.2)]
    found = [f for f in busy if f.code == "busy_machine"]
    assert len(found) == 1 and "load average 11.2 on 2 usable cores" in found[0].message
    assert "placement auto" in found[0].message
    none = {1: plan_placement((0, 1), 1, mode="none")}
    unpinned = [
        f for f in check(s, points, placements=none, load_average=3) if f.code == "busy_machine"
    ]
    assert unpinned and "placement auto" not in unpinned[0].message
    quiet = check(s, points, placements=auto, load_average=0.4)
    assert "busy_machine" not in [f.code for f in quiet]
    assert "busy_machine" not in [f.code for f in check(s, points, load_average=11.2)]
