"""Remote Locust workers and the command target: spec, command lines, per-worker verdicts,
hook templates and the endpoints a hook prints."""

from __future__ import annotations

import re
import time

import pytest

from harness.errors import UserError
from harness.plan.hooks import environment, render, unknown_placeholders
from harness.plan.points import expand_matrix
from harness.plan.spec import Hook, validate_spec
from harness.servers.command import HookError, deploy, parse_endpoints, run_hook
from harness.sweep.load_runner import (
    LoadPlan,
    dropped_workers,
    generator_bound,
    local_worker_argv,
    locust_argv,
    split_address,
    worker_records,
)
from harness.sweep.worker import worker_argv

MINIMAL = {"model": {"builtin": "mlp"}, "load": {"concurrency": [4]}}
HOOKS = {"apply": "deploy {{replicas}}", "endpoints": "echo grpc 10.0.0.5:8500"}


def problems_of(raw) -> str:
    with pytest.raises(UserError) as err:
        validate_spec(raw, "s.yaml")
    return str(err.value)


def plan(**overrides) -> LoadPlan:
    values = dict(
        protocol="grpc",
        targets=("grpc://10.0.0.5:8500",),
        model_name="mlp",
        load_kind="concurrency",
        load=16,
        warmup_s=1,
        window_s=1,
        windows=2,
    )
    return LoadPlan(**{**values, **overrides})


def option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


# --- spec ----------------------------------------------------------------------------------------


def test_remote_workers_default_to_no_local_process_and_mix_with_local_ones():
    spec = validate_spec({**MINIMAL, "load": {"concurrency": [4], "workers": {"remote": 2}}})
    assert spec.load.remote_workers == 2 and spec.load.fixed_processes == 0
    assert spec.load.workers is not None and spec.load.workers.bind == "0.0.0.0:5557"
    mixed = validate_spec(
        {**MINIMAL, "load": {"concurrency": [4], "processes": 1, "workers": {"remote": 1}}}
    )
    assert mixed.load.fixed_processes == 1 and mixed.load.remote_workers == 1


def test_workers_spec_mistakes_name_the_key():
    text = problems_of({**MINIMAL, "load": {"concurrency": [4], "workers": {"remote": 0}}})
    assert "load.workers.remote: must be > 0" in text
    text = problems_of(
        {**MINIMAL, "load": {"concurrency": [4], "workers": {"remote": 1, "bind": "nohost"}}}
    )
    assert "load.workers.bind: must match" in text
    text = problems_of({**MINIMAL, "load": {"concurrency": [4], "processes": 0}})
    assert "load.processes: 0 only with load.workers" in text


def test_command_target_needs_hooks_and_takes_a_served_name():
    spec = validate_spec(
        {**MINIMAL, "model": {"name": "resnet"}, "target": {"kind": "command", "hooks": HOOKS}}
    )
    assert spec.target.hooks is not None and spec.target.hooks.apply.run == "deploy {{replicas}}"
    assert not spec.target.starts_servers
    assert "target.hooks: required for kind command" in problems_of(
        {**MINIMAL, "target": {"kind": "command"}}
    )
    assert "target.hooks: required for kind command, and only for it" in problems_of(
        {**MINIMAL, "target": {"hooks": HOOKS}}
    )


def test_a_hook_with_an_unknown_placeholder_is_refused_with_the_valid_ones():
    hooks = {**HOOKS, "apply": {"run": "kubectl scale --replicas={{replica}}", "timeout_s": 60}}
    text = problems_of({**MINIMAL, "target": {"kind": "command", "hooks": hooks}})
    assert (
        "target.hooks.apply: unknown placeholder {{replica}}; placeholders: config, replicas"
        in text
    )


# --- hook templates and endpoints ---------------------------------------------------------------


def test_placeholders_are_shell_quoted_and_go_templates_pass_through():
    values = {"replicas": "2", "batching": "max_batch_size { value: 32 }\n", "model": "m"}
    command = "scale {{ replicas }} && echo {{batching}} && kubectl get -o go-template='{{.x}}'"
    assert render(command, values) == (
        "scale 2 && echo 'max_batch_size { value: 32 }\n' && kubectl get -o go-template='{{.x}}'"
    )
    assert unknown_placeholders("{{replicas}} {{.status}} {{ nope }}") == ["nope"]
    assert environment(values)["BATCHBENCH_REPLICAS"] == "2"


def test_endpoints_pair_up_by_replica_and_a_bad_line_is_named():
    endpoints = parse_endpoints(
        "# two replicas\ngrpc 10.0.0.5:8500\nrest http://10.0.0.5:8501\n\n"
        "grpc 10.0.0.6:8500\nrest http://10.0.0.6:8501\n"
        "metrics http://10.0.0.5:8501/m\nmetrics http://10.0.0.6:8501/m\n"
    )
    assert [(e.grpc, e.rest, e.metrics) for e in endpoints] == [
        ("10.0.0.5:8500", "http://10.0.0.5:8501", "http://10.0.0.5:8501/m"),
        ("10.0.0.6:8500", "http://10.0.0.6:8501", "http://10.0.0.6:8501/m"),
    ]
    with pytest.raises(ValueError, match="line 2: 'http://x:1' is not KIND ADDRESS"):
        parse_endpoints("grpc a:1\nhttp://x:1\n")
    with pytest.raises(ValueError, match="no grpc or rest address"):
        parse_endpoints("metrics http://a/m\n")


# --- the master and its workers -----------------------------------------------------------------


def test_a_distributed_run_is_a_bound_master_waiting_for_every_worker(tmp_path):
    p = plan(processes=1, remote_workers=2, master_bind="10.0.0.1:6000", workers_wait_s=30)
    argv = locust_argv(p, tmp_path / "r.json")
    assert "--master" in argv and "--processes" not in argv
    assert option(argv, "--master-bind-host") == "10.0.0.1"
    assert option(argv, "--master-bind-port") == "6000"
    assert option(argv, "--expect-workers") == "3"
    assert option(argv, "--expect-workers-max-wait") == "30"
    local = local_worker_argv(p)
    assert "--worker" in local and option(local, "--master-host") == "10.0.0.1"
    anywhere = local_worker_argv(plan(remote_workers=1, master_bind="0.0.0.0:1"))
    assert (
        option(anywhere, "--master-host") == "127.0.0.1"
        and option(anywhere, "--master-port") == "1"
    )
    assert option(local_worker_argv(plan(master_bind="*:7")), "--master-host") == "127.0.0.1"
    assert split_address("[::1]:5557") == ("::1", 5557)


def test_batchbench_worker_takes_everything_from_the_master():
    argv = worker_argv("10.0.0.1:5557", processes=2)
    assert argv[argv.index("-f") + 1] == "-" and "--worker" in argv
    assert option(argv, "--master-host") == "10.0.0.1" and option(argv, "--processes") == "2"
    with pytest.raises(UserError, match=re.escape("--master: '10.0.0.1' is not HOST:PORT")):
        worker_argv("10.0.0.1")


def result_of(**processes: dict) -> dict:
    return {"generator": {"processes": processes}}


REMOTE = {"remote": "load-a", "host": "hosta", "final_report": True}


def test_a_saturated_remote_worker_invalidates_the_point_by_name():
    result = result_of(
        master={"cpu_percent": 5.0, "final_report": True},
        w1={**REMOTE, "cpu_percent": 60.0, "runnable_percent": 97.0},
        w2={**REMOTE, "remote": "load-b", "cpu_percent": 40.0, "runnable_percent": 50.0},
    )
    reason = generator_bound(result, plan(processes=0, remote_workers=2), machine_cores=2)
    assert reason is not None
    assert "remote worker load-a on hosta (w1) was runnable 97%" in reason
    # Remote workers' CPU is their own hosts': it does not count against this machine's set.
    calm = result_of(w1={**REMOTE, "cpu_percent": 85.0}, w2={**REMOTE, "cpu_percent": 85.0})
    assert generator_bound(calm, plan(processes=0, remote_workers=2, cpus=(1,)), 2) is None


def test_a_worker_that_dropped_out_invalidates_the_point_and_is_named():
    two = plan(processes=1, remote_workers=1)
    full = result_of(master={"final_report": True}, local={"final_report": True}, w1=REMOTE)
    assert dropped_workers(full, two) is None
    lost = result_of(master={"final_report": True}, local={"final_report": True})
    assert dropped_workers(lost, two) == (
        "worker dropped out: 1 of 2 Locust workers (1 remote, 1 local) finished the run: "
        "its requests are missing from the figures"
    )
    silent = result_of(local={"final_report": True}, w1={**REMOTE, "final_report": False})
    assert "(no final report from w1)" in (dropped_workers(silent, two) or "")
    assert dropped_workers(lost, plan(processes=2)) is None  # not distributed


def test_each_process_of_a_run_is_recorded_with_its_role_and_cpu():
    records = worker_records(
        result_of(
            master={"cpu_percent": 3.0, "final_report": True},
            w1={**REMOTE, "sent": 10},
            w2={"host": "here", "final_report": True},
            w3={"final_report": False},  # known to Locust, never reported to us
        )
    )
    assert [(r["id"], r["role"], r["remote"]) for r in records] == [
        ("master", "master", None),
        ("w1", "remote", "load-a"),
        ("w2", "local", None),
        ("w3", "unreported", None),
    ]
    assert records[1]["sent"] == 10 and records[1]["host"] == "hosta"


# --- running hooks (shell commands only, no servers) --------------------------------------------


def command_spec(**hooks):
    return validate_spec(
        {
            **MINIMAL,
            "model": {"name": "m"},
            "server": {"batching": {"max_batch_size": [8]}},
            "target": {"kind": "command", "hooks": hooks},
        }
    )


def test_a_hook_over_its_time_out_is_killed_with_its_children(tmp_path):
    started = time.monotonic()
    run = run_hook(
        "apply", Hook(run="echo started; sleep 30 & sleep 30", timeout_s=0.5), {}, tmp_path
    )
    assert run.returncode is None and run.output == "started\n"
    assert time.monotonic() - started < 10


def test_a_deployment_that_never_gets_ready_fails_names_the_hook_and_is_torn_down(tmp_path):
    spec = command_spec(
        apply="echo applied {{replicas}} replica > applied.txt",
        ready={"run": "echo not yet; exit 1", "timeout_s": 1.5},
        endpoints="echo grpc 127.0.0.1:1",
        teardown="echo gone > torn-down.txt",
    )
    config = expand_matrix(spec)[0].server
    with pytest.raises(HookError) as err:
        deploy(spec, config, tmp_path, None)
    assert str(err.value).startswith(
        f"target.hooks.ready failed for {config.key} (not ready within 1.5 s; last exit code 1)"
    )
    assert "not yet" in str(err.value)
    assert (tmp_path / "applied.txt").read_text() == "applied 1 replica\n"
    assert (tmp_path / "torn-down.txt").read_text() == "gone\n"


def test_a_deployment_gets_its_values_and_endpoints(tmp_path):
    spec = command_spec(
        apply='test "$BATCHBENCH_MODEL" = m && grep -q "value: 8" {{batching_file}}',
        endpoints="echo grpc 127.0.0.1:8500; echo rest http://127.0.0.1:8501",
    )
    deployment, endpoints = deploy(spec, expand_matrix(spec)[0].server, tmp_path, None)
    assert [(e.grpc, e.rest) for e in endpoints] == [("127.0.0.1:8500", "http://127.0.0.1:8501")]
    assert "--- apply (exit 0) ---" in (deployment.log_tail() or "")
    deployment.stop()  # no teardown hook: nothing to run


def test_a_command_target_hosts_one_model():
    raw = {**MINIMAL, "target": {"kind": "command", "hooks": HOOKS}}
    raw["models"] = [{"name": "a"}, {"name": "b"}]
    raw.pop("model", None)
    assert "models: not with target kind command: its hooks deploy one model" in problems_of(raw)
