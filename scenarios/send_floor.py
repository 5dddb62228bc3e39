"""How precisely this machine lets one gevent process keep send times: the floor under a replay.

A single greenlet sleeps until each time of a Poisson schedule and notes how late it woke, with
the open-loop streams' rule (wake ``EARLY_WAKE_S`` early, send then). Nothing is sent, so the
lag is the event loop's and the operating system's alone: no load generator, whatever its loop,
sends more precisely than this on the same machine at the same moment.

    python -m scenarios.send_floor --rate 1000 --seconds 10
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time

import gevent

from scenarios.loadgen import EARLY_WAKE_S


def lags(rate: float, seconds: float, seed: int = 1) -> list[float]:
    """Seconds each wake-up came after its intended time (negative: early)."""
    rng = random.Random(seed)
    start = time.perf_counter() + 0.1
    due, out = start, []
    while due < start + seconds:
        due += rng.expovariate(rate)
        while (wait := due - time.perf_counter() - EARLY_WAKE_S) > 0:
            gevent.sleep(wait)
        out.append(time.perf_counter() - due)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scenarios.send_floor")
    parser.add_argument("--rate", type=float, default=1000.0, help="wake-ups per second")
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args(argv)
    values = sorted(lags(args.rate, args.seconds))
    quantiles = {
        f"p{q}": values[min(len(values) - 1, int(q / 100 * len(values)))] for q in (50, 90, 99)
    }
    print(
        json.dumps(
            {
                "wakeups": len(values),
                "lag_ms": {name: round(1000 * value, 3) for name, value in quantiles.items()},
                "load_average": os.getloadavg()[0],
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
