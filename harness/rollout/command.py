"""``batchbench rollout``'s options turned into a ``RolloutSpec``, and the command itself."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from harness.errors import UserError
from harness.rollout.run import RolloutSpec, run_rollout
from harness.sweep.load_runner import LoadPlan

TARGETS = ("reference", "tfserving", "external")
NEW_VERSION_SEED = 1  # the built-in model's new version: other weights than version 1's


def add_rollout_options(commands) -> None:
    rollout = commands.add_parser(
        "rollout",
        help="measure a model version roll-out under steady load (with and without warm-up)",
        description="Serve the old version under steady load, switch to the new version at a "
        "chosen moment (drop it into the base path, or run --switch-command), keep measuring, "
        "and report what clients saw: when the new version answered first and the old one "
        "last, every failed request, p99 before, during and after, the switch's excess "
        "latency. One roll-out per --warmup-records value, each on a fresh server.",
    )
    what = rollout.add_argument_group("the model")
    what.add_argument("--model", default="mlp", help="built-in model (default mlp)")
    what.add_argument("--option", action="append", default=[], metavar="KEY=VALUE")
    what.add_argument("--base-path", help="your SavedModel base path instead of --model")
    what.add_argument("--old-version", type=int, help="with --base-path: the version served first")
    what.add_argument("--new-version", type=int, help="with --base-path: the version rolled out")
    what.add_argument("--model-name", help="the served model's name (default: the model's)")
    what.add_argument("--models-dir", default="reports/models", help="built-in models go here")
    where = rollout.add_argument_group("the server")
    where.add_argument("--target", choices=TARGETS, default="reference")
    where.add_argument("--binary", default="tensorflow_model_server", help="for --target tfserving")
    where.add_argument("--grpc", help="external: gRPC HOST:PORT")
    where.add_argument("--rest", help="external: REST URL (status polling, REST load)")
    where.add_argument(
        "--switch-command",
        help="shell command that makes the switch (external: required; otherwise it replaces "
        "the drop of the new version, e.g. a config reload or a label move)",
    )
    where.add_argument(
        "--server-flag",
        action="append",
        default=[],
        metavar="FLAG",
        help="a server flag, written --server-flag=--FLAG=VALUE (repeatable)",
    )
    load = rollout.add_argument_group("the load")
    load.add_argument("--protocol", choices=("grpc", "rest"), default="grpc")
    load.add_argument("--concurrency", type=int, help="closed loop: users (default 8)")
    load.add_argument("--rate", type=float, help="open loop: requests/s (Poisson)")
    load.add_argument("--switch-after", type=float, default=10.0, help="seconds of load first")
    load.add_argument("--after", type=float, default=20.0, help="seconds of load after it")
    load.add_argument(
        "--warmup-records",
        type=int,
        action="append",
        metavar="N",
        help="warm-up records in the new version; repeat for one roll-out each (default 0)",
    )
    rollout.add_argument("--out", help="the run folder (default reports/<time>-rollout)")
    rollout.add_argument("--no-report", action="store_true", help="do not write report.html")
    rollout.set_defaults(run=run_command)


def run_command(args: argparse.Namespace) -> int:
    spec = spec_from_args(args)
    out = Path(args.out or f"reports/{time.strftime('%Y%m%d-%H%M%S')}-rollout")
    out.mkdir(parents=True, exist_ok=True)
    document = run_rollout(spec, out)
    for run in document["runs"]:
        print(summary_line(run))
    if not args.no_report:
        from harness.report.rollout import write_rollout_report

        print(write_rollout_report(out))
    else:
        print(out)
    return 1 if any(run["figures"]["failed"] for run in document["runs"]) else 0


def summary_line(run: dict) -> str:
    figures = run["figures"]

    def n(value: float | None, unit: str) -> str:
        return "—" if value is None else f"{value:.3g} {unit}"

    server = run["server"]
    old = figures["old_version"] or server.get("old_version") or "?"
    versions = f"version {old} -> {figures['new_version'] or server.get('new_version') or '?'}"
    if run["protocol"] == "rest":
        versions += " (REST answers do not name their version)"
    return (
        f"warm-up records {run['warmup_records']}: {versions}, first new answer "
        f"{n(figures['first_new_after_s'], 's')} after the switch, "
        f"last old {n(figures['last_old_after_s'], 's')}, "
        f"{figures['failed']} failed of {figures['requests']}, p99 before/during/after "
        f"{n(figures['p99_before_ms'], 'ms')} / {n(figures['p99_during_ms'], 'ms')} / "
        f"{n(figures['p99_after_ms'], 'ms')}, excess {n(figures['excess_p99_ms_s'], 'ms·s')}"
    )


def spec_from_args(args: argparse.Namespace) -> RolloutSpec:
    if args.concurrency is not None and args.rate is not None:
        raise UserError("give --concurrency or --rate, not both")
    if args.switch_after <= 0 or args.after <= 0:
        raise UserError("--switch-after and --after must be > 0 seconds")
    records = tuple(args.warmup_records or [0])
    if any(not 0 <= r <= 1000 for r in records):
        raise UserError("--warmup-records must be in 0..1000")
    model_name, old_dir, new_dir = _versions(args)
    rate = args.rate is not None
    load = LoadPlan(
        protocol=args.protocol,
        targets=(),
        model_name=model_name,
        load_kind="rate" if rate else "concurrency",
        load=args.rate if rate else float(args.concurrency or 8),
        warmup_s=0.0,
        window_s=args.switch_after + args.after,
        windows=1,
    )
    return RolloutSpec(
        target=args.target,
        protocol=args.protocol,
        model_name=model_name,
        load=load,
        switch_after_s=args.switch_after,
        old_version_dir=old_dir,
        new_version_dir=new_dir,
        warmup_records=records,
        server_flags=tuple(args.server_flag),
        binary=args.binary,
        endpoints=((args.grpc or "", args.rest or ""),) if args.target == "external" else (),
        switch_command=args.switch_command,
    )


def _versions(args: argparse.Namespace) -> tuple[str, Path | None, Path | None]:
    """The model's name and its old and new version folders (none for an external target)."""
    if args.target == "external":
        if not args.switch_command or not args.model_name:
            raise UserError("--target external needs --switch-command and --model-name")
        if not (args.grpc if args.protocol == "grpc" else args.rest):
            raise UserError(f"--target external needs --{args.protocol} (the address to load)")
        return args.model_name, None, None
    if args.base_path:
        base = Path(args.base_path)
        if args.old_version is None or args.new_version is None:
            raise UserError("--base-path needs --old-version and --new-version")
        old, new = base / str(args.old_version), base / str(args.new_version)
        for path in (old, new):
            if not path.is_dir():
                raise UserError(f"{path}: no such version folder")
        return args.model_name or base.name, old, new
    return _builtin_versions(args)


def _builtin_versions(args: argparse.Namespace) -> tuple[str, Path, Path]:
    """Version 1 of the built-in model (the sweeps' copy) and a version 2 with other weights,
    each built on first use."""
    from harness.cli import parse_option
    from harness.models import zoo

    options: dict[str, Any] = dict(parse_option(text) for text in args.option)
    try:
        base = zoo.ensure_model(Path(args.models_dir), args.model, options)
        next_base = base.with_name(base.name + "-next")
        if not (next_base / "2").is_dir():
            zoo.build_model(
                args.model, next_base, version=2, seed=NEW_VERSION_SEED, **dict(options)
            )
    except ValueError as exc:
        raise UserError(str(exc)) from None
    return args.model_name or args.model, base / "1", next_base / "2"
