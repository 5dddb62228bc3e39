"""(8) Independent check: one REST point measured by us (Locust, closed loop) and by ``wrk`` at
the same concurrency, against the same server. Throughputs within 10%.

The point is server-bound by construction, so the two generators' different CPU costs do not
decide it: the ``synthetic`` model (2 ms + 0.5 ms per row, sleeping) behind a batcher of at
most 4 rows and one batch thread serves about 1,000 rows/s whoever asks. ``wrk`` (the Debian
package) posts a TF Serving row-format body set by a Lua script; it is installed with apt-get
when missing and the check is skipped, with a note, when that is impossible.
Run: python -m benchmarks.wrk_check
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import (
    find_tool,
    finish,
    locust_run,
    model_path,
    reference_server,
    relative_error,
    result,
)
from harness.plan.batching_file import BatchingParams

USERS = 16
SECONDS = 8
BATCHING = BatchingParams(
    max_batch_size=4, batch_timeout_micros=0, num_batch_threads=1, max_enqueued_batches=64
)
MODEL_OPTIONS = {"fixed_ms": 2.0, "per_item_ms": 0.5}
_RATE = re.compile(r"^Requests/sec:\s+([\d.]+)", re.MULTILINE)
_NON_2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")


def predict_body(rows: int, features: int) -> str:
    """A TF Serving REST row-format Predict body: ``rows`` instances of ``features`` floats."""
    return json.dumps({"instances": [[0.5] * features for _ in range(rows)]})


def lua_string(text: str) -> str:
    """``text`` as a double-quoted Lua string literal."""
    escaped = (
        text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    )
    return f'"{escaped}"'


def wrk_script(body: str) -> str:
    """The wrk Lua script that POSTs ``body`` as JSON on every request."""
    return (
        'wrk.method = "POST"\n'
        f"wrk.body = {lua_string(body)}\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
    )


def parse_wrk(output: str) -> tuple[float | None, int]:
    """(requests/s, non-2xx answers) from wrk's summary."""
    rate = _RATE.search(output)
    bad = _NON_2XX.search(output)
    return (float(rate.group(1)) if rate else None), (int(bad.group(1)) if bad else 0)


def run_wrk(wrk: str, url: str, model: str) -> str:
    with tempfile.TemporaryDirectory(prefix="bench-wrk-") as tmp:
        script = Path(tmp) / "predict.lua"
        script.write_text(wrk_script(predict_body(1, 4)))
        argv = [wrk, "-t1", f"-c{USERS}", f"-d{SECONDS}s", "-s", str(script)]
        done = subprocess.run(
            [*argv, f"{url}/v1/models/{model}:predict"], capture_output=True, text=True,
            timeout=SECONDS + 30,
        )  # fmt: skip
    return done.stdout + done.stderr


def main() -> int:
    wrk, how = find_tool("wrk", "wrk")
    if wrk is None:
        row = result(
            "wrk check: REST throughput ours vs wrk", None, "<= 0.1", notes=f"skipped: {how}"
        )
        return finish("wrk_check", [row])
    base = model_path("synthetic", **MODEL_OPTIONS)
    with reference_server("synthetic", base, BATCHING) as server:
        ours = locust_run(server, "rest", "synthetic", load=USERS, seconds=SECONDS)
        output = run_wrk(wrk, server.rest_url, "synthetic")
    wrk_rps, non_2xx = parse_wrk(output)
    error = relative_error(ours["throughput_rps"], wrk_rps)
    notes = (
        f"{USERS} connections, {SECONDS} s each: ours {ours['throughput_rps']:,.0f} req/s, "
        f"wrk {wrk_rps or 0:,.0f} req/s ({non_2xx} non-2xx)"
    )
    row = result("wrk check: REST throughput ours vs wrk", error, "<= 0.1", notes=notes)
    return finish("wrk_check", [row], {"ours": ours["throughput_rps"], "wrk_output": output})


if __name__ == "__main__":
    sys.exit(main())
