"""The worked examples in docs/ (Kubernetes manifests, Helm values, sweep specs, the two-host
walk-through) are what the code accepts: parsed, and run through the same parsers."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.cli import build_parser
from harness.plan.hooks import PLACEHOLDERS, render
from harness.plan.spec import SweepSpec, load_spec, validate_spec
from reference_server.config_files import load_batching_parameters, load_monitoring_config
from reference_server.flags import parse_flags

DOCS = Path(__file__).resolve().parents[2] / "docs"
K8S = DOCS / "kubernetes"
SERVER_MANIFESTS = ("reference-server.yaml", "tfserving.yaml")


def documents(name: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((K8S / name).read_text()) if doc]


def of_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [doc for doc in docs if doc["kind"] == kind]
    return found


@pytest.mark.parametrize("name", SERVER_MANIFESTS)
def test_server_manifests_flags_and_config_files_are_what_the_servers_take(name, tmp_path):
    docs = documents(name)
    config_map, deployment = of_kind(docs, "ConfigMap"), of_kind(docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (server,) = pod["containers"]
    flags = parse_flags(server["args"])  # tensorflow_model_server's flags, as the server reads them
    assert flags.enable_batching and flags.model_name == "mlp"
    ports = {port["name"]: port["containerPort"] for port in server["ports"]}
    assert ports == {"grpc": flags.port, "rest": flags.rest_api_port}
    # The config files are where the ConfigMap is mounted, and parse as the server parses them.
    mounts = {m["name"]: m["mountPath"] for m in server["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    (config_volume,) = [n for n, v in volumes.items() if "configMap" in v]
    assert volumes[config_volume]["configMap"]["name"] == config_map["metadata"]["name"]
    for flag in ("batching_parameters_file", "monitoring_config_file"):
        path = Path(getattr(flags, flag))
        assert str(path.parent) == mounts[config_volume]
        (tmp_path / path.name).write_text(config_map["data"][path.name])
    batching = load_batching_parameters(tmp_path / Path(flags.batching_parameters_file).name)
    assert batching.max_batch_size == 32
    monitoring = load_monitoring_config(tmp_path / Path(flags.monitoring_config_file).name)
    assert monitoring.prometheus_enabled
    probe = server["readinessProbe"]["httpGet"]
    assert probe == {"path": f"/v1/models/{flags.model_name}", "port": flags.rest_api_port}
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/path"] == monitoring.prometheus_path
    # The model comes from an init container running our own make-model into the served path.
    (init,) = pod["initContainers"]
    args = build_parser().parse_args(init["command"][1:])
    assert Path(args.dir) == Path(flags.model_base_path) and args.name == flags.model_name


def test_the_command_sweep_drives_the_reference_manifest(tmp_path):
    spec = load_spec(K8S / "sweep-command.yaml")
    assert spec.target.kind == "command" and spec.target.hooks is not None
    deployment = of_kind(documents("reference-server.yaml"), "Deployment")
    config_map = of_kind(documents("reference-server.yaml"), "ConfigMap")
    name = deployment["metadata"]["name"]
    hooks = spec.target.hooks
    assert f"deployment/{name}" in hooks.apply.run and f"deployment/{name}" in hooks.ready.run
    assert f"configmap {config_map['metadata']['name']}" in hooks.apply.run
    label = deployment["spec"]["selector"]["matchLabels"]["app"]
    assert f"-l app={label}," in hooks.endpoints.run
    # The monitoring config the hook writes is the manifest's.
    assert config_map["data"]["monitoring_config.txt"].strip() in hooks.apply.run
    check_hook_syntax(spec)
    assert len(spec.server.replicas) > 1  # the replica count is an axis of this deployment


def test_helm_values_make_the_charts_workers_batchbench_workers():
    values = yaml.safe_load((K8S / "locust-workers-values.yaml").read_text())
    command = values["worker"]["command"]
    assert values["worker"]["args_include_default"] is False
    args = build_parser().parse_args(command[1:])
    assert args.command == "worker" and args.master.endswith(":5557")
    spec = load_spec(K8S / "sweep-command.yaml")
    assert spec.load.workers is not None
    assert spec.load.workers.remote == values["worker"]["replicas"]
    assert spec.load.workers.bind.endswith(":5557")


def test_the_image_installs_batchbench_from_the_checkout():
    text = (K8S / "Dockerfile").read_text()
    assert re.search(r"^RUN pip install .*\s\.\s", text, re.MULTILINE)
    for package in ("reference_server", "scenarios", "harness"):
        assert f"COPY {package} {package}" in text


def test_prometheus_config_scrapes_the_servers_metrics_page():
    (config_map,) = documents("prometheus.yaml")
    config = yaml.safe_load(config_map["data"]["prometheus.yml"])
    (job,) = config["scrape_configs"]
    assert job["metrics_path"] == "/monitoring/prometheus/metrics"
    keep = job["relabel_configs"][0]
    assert set(keep["regex"].split("|")) == {"reference-server", "tfserving"}


# --- the walk-through ---------------------------------------------------------------------------


def code_blocks(language: str) -> list[str]:
    text = (DOCS / "multi-host.md").read_text()
    return re.findall(rf"^ *```{language}\n(.*?)^ *```", text, re.MULTILINE | re.DOTALL)


def dedent_block(block: str) -> str:
    lines = block.splitlines()
    indent = min(len(line) - len(line.lstrip()) for line in lines if line.strip())
    return "\n".join(line[indent:] for line in lines)


def test_walk_through_commands_and_specs_are_valid():
    commands = [dedent_block(b) for b in code_blocks("console")]
    workers = [c for c in commands if c.startswith("batchbench worker")]
    assert workers
    args = build_parser().parse_args(shlex.split(workers[0])[1:])
    assert args.master == "10.0.0.1:5557" and args.processes == 2
    two_hosts, command_target = (yaml.safe_load(dedent_block(b)) for b in code_blocks("yaml"))
    spec = validate_spec(two_hosts, "multi-host.md")
    assert spec.load.workers is not None and spec.load.fixed_processes == 1
    docker = validate_spec(
        {**command_target, "model": {"name": "mlp"}, "load": {"concurrency": [8]}}, "docker"
    )
    check_hook_syntax(docker)


def check_hook_syntax(spec: SweepSpec) -> None:
    """Every hook, its placeholders filled in, is a command line the shell accepts."""
    values = {name: f"/x/{name} value" for name in PLACEHOLDERS}
    hooks = spec.target.hooks
    assert hooks is not None
    for name in ("apply", "ready", "endpoints", "teardown"):
        hook = getattr(hooks, name)
        if hook is not None:
            line = render(hook.run, values)
            done = subprocess.run(["sh", "-n", "-c", line], capture_output=True, text=True)
            assert done.returncode == 0, (name, line, done.stderr)
