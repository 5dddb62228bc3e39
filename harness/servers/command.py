"""A ``command`` target: the user's own deployment tooling runs each server configuration.

Per configuration the harness writes its ``batching_parameters.txt`` and runs the spec's
hooks through the shell, in the configuration's folder: ``apply`` (deploy it: ``kubectl
apply``, ``docker run``, ``helm upgrade`` ...), ``ready`` again and again until it exits 0
(``kubectl rollout status``, a ``curl`` of the model's status), then ``endpoints``, which
prints the addresses to load, one per line:

    grpc 10.0.0.5:8500
    rest http://10.0.0.5:8501
    metrics http://10.0.0.5:8501/monitoring/prometheus/metrics

(one line per replica and protocol; without ``metrics`` lines the REST address's
``/monitoring/prometheus/metrics`` is read, as for an ``external`` target). When the sweep
moves on, ``teardown`` removes it. A hook that fails or overruns its time-out fails the point
with the hook's output; the harness then runs ``teardown`` and the sweep goes on.
"""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from harness.errors import UserError
from harness.plan import hooks
from harness.plan.batching_file import write_batching_file
from harness.plan.points import ServerConfig
from harness.plan.spec import Endpoint, Hook, SweepSpec

# Default time-outs per hook (seconds): a rollout can take minutes, printing addresses cannot.
TIMEOUTS_S = {"apply": 600.0, "ready": 600.0, "endpoints": 60.0, "teardown": 300.0}
READY_POLL_S = 1.0
OUTPUT_LINES = 60  # of a hook's output kept with a failed point
ENDPOINT_KINDS = ("grpc", "rest", "metrics")


class HookError(UserError):
    """A hook failed or overran its time-out; the message ends with its output."""


@dataclass(frozen=True)
class HookRun:
    name: str
    returncode: int | None  # None: killed at its time-out
    output: str
    seconds: float


def hook_values(
    spec: SweepSpec, config: ServerConfig, folder: Path, model_base: Path | None
) -> dict[str, str]:
    """The placeholders' values for ``config`` (harness.plan.hooks); writes its batching file."""
    batching_file = ""
    if config.batching is not None:
        batching_file = str(
            write_batching_file(folder / "batching_parameters.txt", config.batching).resolve()
        )
    return {
        "config": config.key,
        "replicas": str(config.replicas),
        "enable_batching": "true" if config.batching is not None else "false",
        "batching_file": batching_file,
        "batching": Path(batching_file).read_text() if batching_file else "",
        "model": spec.model.served_name,
        "model_base_path": str(model_base.resolve()) if model_base else "",
        "folder": str(folder.resolve()),
    }


def run_hook(name: str, hook: Hook, values: Mapping[str, str], folder: Path) -> HookRun:
    """Run one hook through the shell in ``folder``, in its own process group (killed whole at
    its time-out, so a hook's children do not outlive it)."""
    timeout = hook.timeout_s or TIMEOUTS_S[name]
    env = {**os.environ, **hooks.environment(values)}
    started = time.monotonic()
    with subprocess.Popen(
        hooks.render(hook.run, values),
        shell=True,
        cwd=folder,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    ) as process:
        try:
            output, _ = process.communicate(timeout=timeout)
            code: int | None = process.returncode
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            output, _ = process.communicate()
            code = None
    return HookRun(name, code, output or "", time.monotonic() - started)


def _failure(run: HookRun, hook: Hook, config: ServerConfig, polled: bool = False) -> HookError:
    timeout = hook.timeout_s or TIMEOUTS_S[run.name]
    if polled:
        what = f"not ready within {timeout:g} s; last exit code {run.returncode}"
    elif run.returncode is None:
        what = f"timed out after {timeout:g} s"
    else:
        what = f"exit code {run.returncode}"
    tail = "\n".join(run.output.splitlines()[-OUTPUT_LINES:])
    return HookError(f"target.hooks.{run.name} failed for {config.key} ({what})\n{tail}")


def parse_endpoints(text: str) -> list[Endpoint]:
    """The ``endpoints`` hook's output as one Endpoint per replica (the i-th grpc, rest and
    metrics lines belong together); ValueError naming the line that is not ``KIND ADDRESS``."""
    found: dict[str, list[str]] = collections.defaultdict(list)
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2 or parts[0] not in ENDPOINT_KINDS:
            raise ValueError(
                f"line {number}: {line.strip()!r} is not KIND ADDRESS with KIND one of "
                f"{', '.join(ENDPOINT_KINDS)} (e.g. 'grpc 10.0.0.5:8500')"
            )
        found[parts[0]].append(parts[1])
    count = max((len(found[kind]) for kind in ("grpc", "rest")), default=0)
    if not count:
        raise ValueError("no grpc or rest address printed")
    return [
        Endpoint(
            grpc=_nth(found["grpc"], i),
            rest=_nth(found["rest"], i),
            metrics=_nth(found["metrics"], i),
        )
        for i in range(count)
    ]


def _nth(items: list[str], index: int) -> str | None:
    return items[index] if index < len(items) else None


class CommandDeployment:
    """One configuration deployed by the hooks; ``stop`` runs ``teardown`` (once)."""

    def __init__(
        self, spec: SweepSpec, config: ServerConfig, folder: Path, values: Mapping[str, str]
    ) -> None:
        assert spec.target.hooks is not None
        self.hooks = spec.target.hooks
        self.config = config
        self.folder = folder
        self.values = dict(values)
        self.runs: list[HookRun] = []
        self.stopped = False

    def run(self, name: str, hook: Hook) -> HookRun:
        result = run_hook(name, hook, self.values, self.folder)
        self.runs.append(result)
        (self.folder / f"hook-{name}.log").write_text(result.output)
        if result.returncode != 0:
            raise _failure(result, hook, self.config)
        return result

    def wait_ready(self) -> None:
        """Run ``ready`` until it exits 0, within its time-out (its last output kept)."""
        hook = self.hooks.ready
        if hook is None:
            return
        deadline = time.monotonic() + (hook.timeout_s or TIMEOUTS_S["ready"])
        while True:
            attempt = Hook(run=hook.run, timeout_s=max(deadline - time.monotonic(), 0.1))
            result = run_hook("ready", attempt, self.values, self.folder)
            if result.returncode == 0 or time.monotonic() + READY_POLL_S >= deadline:
                break
            time.sleep(READY_POLL_S)
        self.runs.append(result)
        (self.folder / "hook-ready.log").write_text(result.output)
        if result.returncode != 0:
            raise _failure(result, hook, self.config, polled=True)

    def endpoints(self) -> list[Endpoint]:
        result = self.run("endpoints", self.hooks.endpoints)
        try:
            return parse_endpoints(result.output)
        except ValueError as exc:
            raise HookError(
                f"target.hooks.endpoints printed no usable addresses for {self.config.key}: "
                f"{exc}\n{result.output}"
            ) from None

    def stop(self) -> None:
        if self.stopped or self.hooks.teardown is None:
            self.stopped = True
            return
        self.stopped = True
        result = run_hook("teardown", self.hooks.teardown, self.values, self.folder)
        (self.folder / "hook-teardown.log").write_text(result.output)
        if result.returncode != 0:
            print(f"warning: {_failure(result, self.hooks.teardown, self.config)}", flush=True)

    def log_tail(self) -> str | None:
        """The hooks' outputs so far, for a failed point."""
        parts = [f"--- {run.name} (exit {run.returncode}) ---\n{run.output}" for run in self.runs]
        return "\n".join(parts) or None


def deploy(
    spec: SweepSpec, config: ServerConfig, folder: Path, model_base: Path | None
) -> tuple[CommandDeployment, list[Endpoint]]:
    """Deploy ``config`` with the hooks and return it with its endpoints; HookError (after
    ``teardown``) when a hook fails."""
    folder.mkdir(parents=True, exist_ok=True)
    deployment = CommandDeployment(
        spec, config, folder, hook_values(spec, config, folder, model_base)
    )
    try:
        deployment.run("apply", deployment.hooks.apply)
        deployment.wait_ready()
        endpoints = deployment.endpoints()
    except BaseException:
        deployment.stop()
        raise
    return deployment, endpoints
