"""(4) Load generator capacity: the open-loop rate one generator process sustains with < 1% late
sends, gRPC and REST, against the no-op server (another process, never the bottleneck).

Rates are stepped up until a step fails: more than 1% of the sends late, the run marked
invalid (generator saturated), or fewer answers than offered. The figure is the last rate that
passed, per generator process (one process uses at most one core, so it is also per core);
its CPU use is in the notes.
Run: python -m benchmarks.generator_capacity
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Any

from benchmarks.common import finish, generator_cpu_percent, locust_run, noop_server, result

RATES = {"grpc": (1000, 1500, 2000, 2500, 3000), "rest": (2000, 3000, 4000, 5000, 6000)}
TARGETS = {"grpc": ">= 2000", "rest": ">= 4000"}
SECONDS = 4.0
LATE_LIMIT = 0.01


def step_passed(run: Mapping[str, Any], rate: float) -> bool:
    """< 1% late sends, a valid run, no errors or drops, and (nearly) all the rate answered."""
    sent = run["sent"] or 1
    return (
        run["late"] / sent < LATE_LIMIT
        and run["result"]["valid"]
        and run["error_count"] == 0
        and run["dropped"] == 0
        and run["throughput_rps"] >= 0.97 * rate
    )


def step_up(server, protocol: str, rates: Sequence[float]) -> list[dict[str, Any]]:
    steps = []
    for rate in rates:
        run = locust_run(
            server,
            protocol,
            "mlp",
            load_kind="rate",
            load=rate,
            seconds=SECONDS,
            arrival="constant",
        )
        step = {
            "rate_rps": rate,
            "throughput_rps": run["throughput_rps"],
            "late_fraction": run["late"] / (run["sent"] or 1),
            "valid": run["result"]["valid"],
            "invalid_reasons": run["result"]["invalid_reasons"],
            "generator_cpu_percent": generator_cpu_percent(run),
            "passed": step_passed(run, rate),
        }
        steps.append(step)
        if not step["passed"]:
            break
    return steps


def capacity_rows(protocol: str, steps: Sequence[Mapping[str, Any]]) -> list:
    """The rate sustained, and what it costs: req/s per CPU-second of the generator (the rate
    one whole core would sustain when the machine's other load leaves the process less)."""
    passed = [step for step in steps if step["passed"]]
    best = passed[-1] if passed else None
    tried = ", ".join(
        f"{s['rate_rps']:g}/s {'ok' if s['passed'] else 'failed'} "
        f"({s['late_fraction']:.1%} late, CPU {s['generator_cpu_percent'] or 0:.0f}%)"
        for s in steps
    )
    cpu = best["generator_cpu_percent"] if best else None
    per_core = best["throughput_rps"] / (cpu / 100) if best and cpu else None
    return [
        result(
            f"generator capacity {protocol} (open loop, 1 process)",
            best["rate_rps"] if best else None,
            TARGETS[protocol],
            "req/s",
            f"steps: {tried}",
        ),
        result(
            f"generator capacity {protocol} per CPU-second",
            per_core,
            TARGETS[protocol],
            "req/s",
            "throughput / generator CPU share at the last passing step",
        ),
    ]


def main() -> int:
    details = {}
    with noop_server() as server:
        for protocol, rates in RATES.items():
            details[protocol] = step_up(server, protocol, rates)
    rows = [row for protocol, steps in details.items() for row in capacity_rows(protocol, steps)]
    return finish("generator_capacity", rows, details)


if __name__ == "__main__":
    sys.exit(main())
