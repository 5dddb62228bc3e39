"""Several models on one server: the spec's ``models:``, configurations and keys, the files the
servers get, the pre-flight of a trace against them, per-model figures and recommendation."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.decide.deploy import per_model_batching
from harness.decide.ranking import build_candidates, model_misses
from harness.errors import UserError
from harness.plan import preflight
from harness.plan.batching_fields import BatchingParams
from harness.plan.points import Point, ServerConfig, expand_matrix
from harness.plan.spec import validate_spec
from harness.servers.hosted_models import hosted_flags, model_config_text
from harness.store.results import PointResult
from harness.sweep.load_runner import LoadPlan
from harness.sweep.measure import Measurement, add_run, model_figures
from tests.unit.test_load_runner import stage

MODELS = [
    {"builtin": "mlp", "weight": 3, "batching": {"max_batch_size": [8, 16]}},
    {"builtin": "synthetic"},
]


def multi(**changes):
    raw = {"models": MODELS, "load": {"concurrency": [4]}, **changes}
    return validate_spec(raw, "s.yaml")


def problems_of(raw) -> str:
    with pytest.raises(UserError) as err:
        validate_spec(raw, "s.yaml")
    return str(err.value)


# --- the spec -----------------------------------------------------------------------------------


def test_models_list_the_hosted_models_their_weights_and_own_axes():
    s = multi()
    assert [m.served_name for m in s.hosted_models] == ["mlp", "synthetic"]
    assert s.model.served_name == "mlp"  # code serving one model reads the first
    assert s.multi_model and s.model_mix == "mlp:3,synthetic:1"
    one = validate_spec({"model": {"builtin": "mlp"}, "load": {"concurrency": [4]}}, "s.yaml")
    assert not one.multi_model and one.model_mix == "mlp"
    assert [m.served_name for m in one.hosted_models] == ["mlp"]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            {"model": {"builtin": "mlp"}, "models": MODELS},
            "(top level): give model (one model) or models (several), not both",
        ),
        (
            {"models": [{"builtin": "mlp"}, {"builtin": "mlp"}]},
            "models[1].name: 'mlp' is served twice; give each a name",
        ),
        (
            {"models": [{"builtin": "mlp"}, {"builtin": "synthetic", "rows_per_request": 4}]},
            "models[1].rows_per_request: must be the same for every model",
        ),
        (
            {"models": [{"builtin": "mlp"}, {"builtin": "cnn", "payload": "x.npy"}]},
            "models[1].payload: only with one model",
        ),
        (
            {"models": [{"builtin": "mlp"}, {"builtin": "nope"}]},
            "models[1].builtin: unknown built-in model 'nope'; built-in models:",
        ),
        (
            {"models": [{"builtin": "mlp", "weight": 0}]},
            "models[0].weight: must be > 0",
        ),
        (
            {"models": [{"builtin": "mlp", "batching": {"max_batch_size": [4]}}]},
            "models: hosts several models: give two or more (one model goes in model:)",
        ),
        (
            {"models": [{"builtin": "mlp", "size": 2}]},
            "models[0].size: unknown key; valid keys: builtin, base_path, name, options, "
            "signature, rows_per_request, length, payload, version_split, weight, batching",
        ),
    ],
)
def test_a_bad_models_list_is_one_line_per_problem_naming_the_entry(raw, expected):
    problems = problems_of({"load": {"concurrency": [4]}, **raw})
    assert expected in problems
    assert "  model." not in problems  # told once, at models[i], not again at its copy


def test_rows_over_a_models_own_max_batch_size_are_refused():
    models = [
        {"builtin": "mlp", "rows_per_request": 4, "batching": {"max_batch_size": [2]}},
        {"builtin": "synthetic", "rows_per_request": 4},
    ]
    raw = {"models": models, "load": {"concurrency": [4]}}
    assert "requests of up to 4 rows are over max_batch_size 2" in problems_of(raw)


# --- configurations, keys, files ----------------------------------------------------------------


def test_configurations_combine_shared_and_own_axes_with_readable_keys():
    s = multi(
        server={"batching": {"batch_timeout_micros": [0, 500]}, "enable_batching": [True, False]}
    )
    keys = [p.server.key for p in expand_matrix(s)]
    assert keys == [
        "bt0-mlp.mbs8-r1",
        "bt0-mlp.mbs16-r1",
        "bt500-mlp.mbs8-r1",
        "bt500-mlp.mbs16-r1",
        "nobatch-r1",
    ]
    config = expand_matrix(s)[1].server
    assert config.params_for("mlp") == BatchingParams(max_batch_size=16)
    assert config.params_for("synthetic") == BatchingParams(batch_timeout_micros=0)
    assert ServerConfig.from_dict(config.as_dict()) == config
    assert ServerConfig(None, 1, config.own).params_for("mlp") is None  # batching off


def test_one_model_points_keep_their_files_and_keys():
    config = ServerConfig(BatchingParams(max_batch_size=8), 2)
    assert config.key == "mbs8-r2" and "models" not in config.as_dict()


def test_each_configuration_serves_its_models_from_linked_copies_with_their_own_files(tmp_path):
    bases = {}
    for name in ("mlp", "synthetic"):
        version = tmp_path / "zoo" / name / "1"
        (version / "variables").mkdir(parents=True)
        (version / "saved_model.pb").write_bytes(b"graph")
        bases[name] = tmp_path / "zoo" / name
    shared = BatchingParams(max_batch_size=4, batch_timeout_micros=2000)
    config = ServerConfig(shared, 1, (("mlp", BatchingParams(max_batch_size=16)),))
    folder = tmp_path / "servers" / config.key
    flags = hosted_flags(config, bases, folder)
    assert flags == [
        f"--model_config_file={(folder / 'models.config').resolve()}",
        "--enable_per_model_batching_parameters=true",
    ]
    mlp = folder / "models" / "mlp" / "1"
    assert (mlp / "batching_params.pbtxt").read_text() == "max_batch_size { value: 16 }\n"
    assert (folder / "models/synthetic/1/batching_params.pbtxt").read_text() == (
        "max_batch_size { value: 4 }\nbatch_timeout_micros { value: 2000 }\n"
    )
    assert (mlp / "saved_model.pb").read_bytes() == b"graph" and (mlp / "variables").is_dir()
    assert not (bases["mlp"] / "1" / "batching_params.pbtxt").exists()  # originals untouched
    assert (
        f'name: "mlp" base_path: "{(folder / "models" / "mlp").resolve()}"'
        in (folder / "models.config").read_text()
    )
    # Shared parameters only: one global batching file, the models served where they are.
    assert hosted_flags(ServerConfig(shared), bases, tmp_path / "other") == [
        f"--model_config_file={(tmp_path / 'other' / 'models.config').resolve()}"
    ]


def test_the_model_config_is_tf_servings_text_format():
    text = model_config_text({"a": Path("/m/a"), "b": Path("/m/b")})
    assert text == (
        "model_config_list {\n"
        '  config { name: "a" base_path: "/m/a" model_platform: "tensorflow" }\n'
        '  config { name: "b" base_path: "/m/b" model_platform: "tensorflow" }\n'
        "}\n"
    )


# --- the trace's pre-flight against the hosted models ------------------------------------------


def test_a_trace_is_checked_against_each_models_own_max_batch_size(tmp_path):
    trace = tmp_path / "day.jsonl"
    trace.write_text(
        '{"t": 0, "model": "synthetic", "rows": 8}\n\n{"t": 1, "model": "mlp", "rows": 12}\n'
    )
    s = multi(load={"trace": str(trace)}, server={"batching": {"max_batch_size": [8]}})
    with pytest.raises(UserError) as err:
        preflight.check_trace(s, expand_matrix(s))
    assert str(err.value) == (
        f"load.trace: {trace}:3: rows 12 is over max_batch_size 8 (the server refuses it); "
        "valid rows: 1-8"
    )
    trace.write_text('{"t": 0, "model": "synthetic", "rows": 8}\n{"t": 1, "model": "bert"}\n')
    with pytest.raises(
        UserError, match=r"day\.jsonl:2: model 'bert' is not served; valid models: mlp, synthetic"
    ):
        preflight.check_trace(s, expand_matrix(s))
    assert preflight.rows_limits(expand_matrix(s), ["mlp", "synthetic"]) == {
        "mlp": 8,
        "synthetic": 8,
    }


# --- per-model figures, misses and files --------------------------------------------------------


def _entry(model: str, rows: int, latencies_us: list[int]) -> dict:
    return {"model": model, "rows": rows, "length": 8, "payload": None, **stage(latencies_us, 2.0)}


def test_each_models_figures_add_its_kinds_and_count_each_runs_time_once():
    measurement = Measurement()
    plan = LoadPlan("grpc", ("grpc://h:1",), "mlp:3,synthetic:1", "rate", 100, 1.0, 1.0, 2)
    kinds = [
        _entry("mlp", 1, [1000] * 60),
        _entry("mlp", 4, [1000] * 20),
        _entry("synthetic", 1, [9000] * 20),
    ]
    for _ in range(2):
        add_run(measurement, {"stages": [], "by_kind": kinds, "timeline": []}, plan, 0)
    figures = {entry["model"]: entry["metrics"] for entry in model_figures(measurement.kinds)}
    assert figures["mlp"]["requests"] == 160 and figures["synthetic"]["requests"] == 40
    assert figures["mlp"]["throughput_rps"] == pytest.approx(160 / 4)  # two runs of 2 s
    assert figures["synthetic"]["latency_p99_ms"] == pytest.approx(9, rel=0.01)
    one = Measurement()
    add_run(one, {"stages": [], "by_kind": kinds[:2], "timeline": []}, plan, 0)
    assert model_figures(one.kinds) == []


def _result(p99: dict[str, float], repeat: int = 0) -> PointResult:
    server = ServerConfig(
        BatchingParams(max_batch_size=4), 1, (("mlp", BatchingParams(max_batch_size=16)),)
    )
    point = Point(server, "concurrency", 4, "grpc", repeat)
    by_model = [
        {"model": m, "metrics": {"latency_p99_ms": v, "throughput_rps": 10.0, "error_rate": 0.0}}
        for m, v in p99.items()
    ]
    metrics = {"latency_p99_ms": min(p99.values()), "throughput_rps": 20.0, "error_rate": 0.0}
    stability = {"verdict": "stable"}
    return PointResult(point, metrics=metrics, by_model=by_model, stability=stability)


def test_the_slo_holds_for_each_models_requests_and_repeats_count_by_their_worst():
    slo = {"latency_p99_ms": 50.0, "throughput_rps": 15.0}
    members = [_result({"mlp": 10, "synthetic": 40}), _result({"mlp": 12, "synthetic": 80}, 1)]
    assert model_misses(members, slo) == {"latency_p99_ms (synthetic)": pytest.approx(0.6)}
    candidates, _ = build_candidates(members, slo)
    assert candidates[0].misses == {"latency_p99_ms (synthetic)": pytest.approx(0.6)}
    assert model_misses([_result({"mlp": 10, "synthetic": 40})], slo) == {}


def test_the_recommendation_has_a_batching_file_per_model():
    s = multi()
    candidates, _ = build_candidates([_result({"mlp": 10, "synthetic": 40})], {})
    texts = per_model_batching(candidates[0], s, "run-1")
    assert texts["mlp"].endswith("\nmax_batch_size { value: 16 }\n")
    assert texts["synthetic"].endswith("\nmax_batch_size { value: 4 }\n")
    assert "copy into each version folder (BASE/VERSION/batching_params.pbtxt)" in texts["mlp"]
    assert (
        per_model_batching(
            candidates[0],
            validate_spec({"model": {"builtin": "mlp"}, "load": {"concurrency": [4]}}, "s.yaml"),
            "run-1",
        )
        == {}
    )
