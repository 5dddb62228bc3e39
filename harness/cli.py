"""``batchbench``: the command line. Parses arguments, calls the library, prints UserErrors."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from harness.errors import UserError

# Exit codes: 0 success, 1 failure of the thing measured (later: a regression), 2 usage/data error.
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # as a shell reports a process stopped by SIGINT


def _make_model(args: argparse.Namespace) -> int:
    from harness.models import zoo as model_zoo

    options = dict(parse_option(text) for text in args.option)
    try:
        path = model_zoo.build_model(
            args.name,
            Path(args.dir),
            version=args.version,
            seed=args.seed,
            warmup_records=args.warmup_records,
            **options,
        )
    except ValueError as exc:
        raise UserError(str(exc)) from None
    print(path)
    return 0


def _warmup_file(args: argparse.Namespace) -> int:
    from harness.models import warmup_file

    try:
        path = warmup_file.write_for_version(
            Path(args.version_dir),
            args.records,
            payload=args.payload,
            model_name=args.model_name,
            signature=args.signature,
            rows=args.rows,
        )
    except ValueError as exc:
        raise UserError(str(exc)) from None
    print(path)
    return 0


def parse_option(text: str) -> tuple[str, str]:
    """KEY=VALUE; the model zoo converts the value to the option's type and checks it."""
    key, sep, value = text.partition("=")
    if not sep:
        raise UserError(f"--option expects KEY=VALUE, got {text!r}")
    return key, value


def _demo(args: argparse.Namespace) -> int:
    from harness.demo import run_demo

    run_demo(Path(args.out), placement=(args.placement, args.server_cpus, args.generator_cpus))
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from harness.plan.spec import load_preset, load_spec, with_placement
    from harness.store.results import ResultStore
    from harness.sweep.loop import run_sweep

    if (args.spec is None) == (args.preset is None):
        raise UserError("give a spec file or --preset NAME (not both)")
    spec = load_spec(args.spec) if args.spec else load_preset(args.preset)
    spec = with_placement(spec, args.placement, args.server_cpus, args.generator_cpus)
    out = Path(args.resume or args.out) if (args.resume or args.out) else None
    run_dir = run_sweep(spec, out, resume=bool(args.resume), report=not args.no_report)
    print(f"run folder: {run_dir}")
    if ResultStore.open(run_dir).run_info().get("interrupted"):
        where = args.spec or f"--preset {args.preset}"
        print(f"interrupted; carry on with: batchbench sweep {where} --resume {run_dir}")
        return EXIT_INTERRUPTED
    return 0


def _serve(args: argparse.Namespace) -> int:
    from harness.servers.serve import serve, serve_placement

    placement = serve_placement(args.replicas, args.placement, args.server_cpus)
    return serve(
        args.server_flags, args.replicas, ready_timeout=args.ready_timeout, placement=placement
    )


def _add_placement_options(
    parser: argparse.ArgumentParser, default: str, *, generator: bool = True
) -> None:
    parser.add_argument(
        "--placement",
        choices=("auto", "none", "cpus"),
        help=f"CPU placement of servers and load generator (default: {default})",
    )
    parser.add_argument(
        "--server-cpus", metavar="LIST", help="the servers' CPUs, e.g. 0-2 (implies cpus)"
    )
    if generator:
        parser.add_argument(
            "--generator-cpus",
            metavar="LIST",
            help="the load generator's CPUs, e.g. 3 (implies cpus)",
        )


def _report(args: argparse.Namespace) -> int:
    from harness.report import write_report
    from harness.report.rollout import is_rollout_folder, write_rollout_report
    from harness.report.screenshot import capture
    from harness.store.layout import REPORT_PNG_FILE

    run_dir = Path(args.run_dir)
    html = write_rollout_report(run_dir) if is_rollout_folder(run_dir) else write_report(run_dir)
    print(f"report: {html}")
    if not args.screenshot:
        return 0
    check = capture(html, html.with_name(REPORT_PNG_FILE))
    print(f"screenshot: {check.png} ({check.width}x{check.height})")
    for problem in [*check.console_errors, *(f"request: {u}" for u in check.outside_requests)]:
        print(f"batchbench: report problem: {problem}", file=sys.stderr)
    return 0 if check.clean else 1


# --- recommend, compare, ci ---------------------------------------------------------------------


def _recommend(args: argparse.Namespace) -> int:
    from harness.decide import ranking
    from harness.decide.recommend import recommend, write_recommendation
    from harness.store.run_folder import load_run

    if args.confirm:
        from harness.sweep.confirm import run_confirmation

        spec = load_run(Path(args.run_dir)).checked_spec()
        top = args.confirm_top or (spec.confirm.top if spec.confirm else 3)
        rounds = args.confirm_rounds or (spec.confirm.rounds if spec.confirm else 3)
        run_confirmation(Path(args.run_dir), top, rounds)
    data = load_run(Path(args.run_dir))
    slo = ranking.merged_slo(
        ranking.default_slo(data.checked_spec()),
        p99_ms=args.slo_p99_ms,
        error_rate=args.max_error_rate,
        constraints=args.constraint,
    )
    objective = ranking.parse_objective(args.objective) if args.objective else None
    result = recommend(data, slo=slo, objective=objective, top=args.top)
    paths = write_recommendation(result, Path(args.run_dir))
    print(result.sentence)
    for name, path in paths.items():
        print(f"{name}: {path}")
    return EXIT_USAGE if result.status == "no_candidates" else 0


def _compare(args: argparse.Namespace) -> int:
    from harness.decide import compare

    thresholds = compare.parse_thresholds(
        args.threshold_throughput, args.threshold_p99, args.threshold
    )
    base, current = compare.load_side(args.base), compare.load_side(args.current)
    result = compare.compare_sides(base, current, thresholds, seed=args.seed)
    out = Path(args.out) if args.out else _compare_out(current)
    paths = compare.write_outputs(result, out)
    if args.step_summary:
        compare.append_step_summary(result, Path(args.step_summary))
    print(compare.summary_line(result))
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0 if result.passed else 1


def _compare_out(current) -> Path:
    """Compare's files go beside CURRENT's points (a run folder), else the working folder."""
    return Path(current.label) if current.kind == "run" else Path.cwd()


def _ci(args: argparse.Namespace) -> int:
    from harness.ci import run_ci, run_ci_ab
    from harness.decide import compare

    thresholds = compare.parse_thresholds(
        args.threshold_throughput, args.threshold_p99, args.threshold
    )
    step_summary = Path(args.step_summary) if args.step_summary else None
    out = Path(args.out) if args.out else None
    if args.ab:
        if args.update_baseline or args.baseline:
            raise UserError("--ab compares in one job: it takes no --baseline or --update-baseline")
        return run_ci_ab(
            args.ab, out, rounds=args.rounds, thresholds=thresholds, step_summary=step_summary
        )
    return run_ci(
        out,
        Path(args.baseline) if args.baseline else None,
        update=args.update_baseline,
        thresholds=thresholds,
        step_summary=step_summary,
        keep=args.keep_runs,
    )


def _ab(args: argparse.Namespace) -> int:
    from harness.ab import BASE, HEAD, run_ab
    from harness.decide import compare

    thresholds = compare.parse_thresholds(
        args.threshold_throughput, args.threshold_p99, args.threshold
    )
    return run_ab(
        _spec_of(args),
        _arm(args, BASE),
        _arm(args, HEAD),
        rounds=args.rounds,
        out=Path(args.out) if args.out else None,
        thresholds=thresholds,
        step_summary=Path(args.step_summary) if args.step_summary else None,
    )


def _spec_of(args: argparse.Namespace):
    from harness.plan.spec import load_preset, load_spec

    if (args.spec is None) == (args.preset is None):
        raise UserError("give a spec file or --preset NAME (not both)")
    return load_spec(args.spec) if args.spec else load_preset(args.preset)


def _arm(args: argparse.Namespace, name: str):
    """An A/B arm from the ``--<name>-*`` options."""
    import shlex

    from harness.plan.rounds import Arm

    model, command = getattr(args, f"{name}_model"), getattr(args, f"{name}_command")
    batching = getattr(args, f"{name}_batching")
    return Arm(
        name,
        model_base_path=Path(model).resolve() if model else None,
        command=tuple(shlex.split(command)) if command else (),
        server_flags=tuple(getattr(args, f"{name}_flag")),
        batching_file=Path(batching).resolve() if batching else None,
    )


def _add_arm_options(parser: argparse.ArgumentParser, name: str) -> None:
    what = "BASE (the reference)" if name == "base" else "HEAD (the change under test)"
    parser.add_argument(f"--{name}-model", metavar="PATH", help=f"model base path of {what}")
    parser.add_argument(
        f"--{name}-command",
        metavar="CMD",
        help=f"server program of {what}, e.g. 'other-venv/bin/reference-server'",
    )
    parser.add_argument(
        f"--{name}-flag",
        action="append",
        default=[],
        metavar="FLAG",
        help=f"server flag added for {what} (repeatable; write --{name}-flag=--x=1)",
    )
    parser.add_argument(
        f"--{name}-batching", metavar="FILE", help=f"batching parameters file of {what}"
    )


def _number(low: float, high: float | None = None):
    """An argparse type: a number in [low, high] (or > low when high is None)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        ok = low <= value <= high if high is not None else value > low
        if not ok:
            want = f"between {low:g} and {high:g}" if high is not None else f"> {low:g}"
            raise argparse.ArgumentTypeError(f"expects a number {want}, got {text!r}")
        return value

    return parse


def _add_threshold_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--threshold-throughput",
        type=_number(0, 1),
        help="relative throughput drop that counts (default 0.05)",
    )
    parser.add_argument(
        "--threshold-p99", type=_number(0, 10), help="relative p99 rise that counts (default 0.10)"
    )
    parser.add_argument(
        "--threshold",
        action="append",
        default=[],
        metavar="METRIC=FRACTION",
        help="also gate another metric, e.g. latency_p50_ms=0.1 (repeatable)",
    )
    parser.add_argument(
        "--step-summary",
        metavar="PATH",
        help='append the Markdown summary to PATH (in GitHub Actions: "$GITHUB_STEP_SUMMARY")',
    )


def _add_gate_commands(commands) -> None:
    _add_recommend(commands)
    _add_compare(commands)
    _add_ci(commands)
    _add_ab(commands)


def _add_recommend(commands) -> None:
    recommend = commands.add_parser(
        "recommend",
        help="rank a run's points and write recommendation.json and batching_parameters.txt",
    )
    recommend.add_argument("run_dir", metavar="RUN", help="the run folder")
    recommend.add_argument("--slo-p99-ms", type=_number(0), help="p99 latency bound (ms)")
    recommend.add_argument("--max-error-rate", type=_number(0, 1), help="error rate bound")
    recommend.add_argument(
        "--constraint",
        action="append",
        default=[],
        metavar="METRIC<=X|METRIC>=X",
        help="a bound on any metric ID, e.g. latency_p95_ms<=20 (repeatable)",
    )
    recommend.add_argument(
        "--objective",
        metavar="maximize:ID|minimize:ID|weights:ID=W,...",
        help="default: the spec's (maximise throughput_rps)",
    )
    recommend.add_argument("--top", type=int, default=3, help="runners-up to name (default 3)")
    recommend.add_argument(
        "--confirm",
        action="store_true",
        help="first re-measure the tied-best configurations (and the unbatched baseline) in "
        "interleaved rounds on fresh servers; the recommendation then comes from those rounds",
    )
    recommend.add_argument(
        "--confirm-top", type=int, metavar="N", help="at most N tied configurations (default 3)"
    )
    recommend.add_argument(
        "--confirm-rounds", type=int, metavar="R", help="confirmation rounds (default 3)"
    )
    recommend.set_defaults(run=_recommend)


def _add_compare(commands) -> None:
    compare = commands.add_parser(
        "compare",
        help="compare two runs (or a baseline file); exit 1 on a regression beyond noise",
    )
    compare.add_argument("base", help="the run folder or baseline JSON compared against")
    compare.add_argument("current", help="the run folder (or baseline JSON) to check")
    compare.add_argument(
        "--out", help="where compare.json/.md/-junit.xml go (default: CURRENT's run folder)"
    )
    compare.add_argument("--seed", type=int, default=20240601, help="bootstrap seed")
    _add_threshold_options(compare)
    compare.set_defaults(run=_compare)


def _add_ci(commands) -> None:
    ci = commands.add_parser(
        "ci", help="run the ci preset and compare it with the baseline file in this repo"
    )
    ci.add_argument(
        "--baseline", help="baseline file (default: .batchbench/ci-baseline.json in this repo)"
    )
    ci.add_argument(
        "--update-baseline", action="store_true", help="keep this run as the new baseline"
    )
    ci.add_argument(
        "--keep-runs",
        type=int,
        default=3,
        metavar="K",
        help="--update-baseline keeps the last K runs; their between-run spread joins the "
        "gate's noise (default 3)",
    )
    ci.add_argument("--out", help="the run folder (default: reports/<run-id>)")
    ci.add_argument(
        "--ab",
        metavar="BASE_COMMAND",
        help="instead of the stored baseline: measure the ci preset's points in interleaved "
        "rounds on BASE_COMMAND's server (e.g. base-venv/bin/reference-server) and on this "
        "one, and compare them paired",
    )
    ci.add_argument("--rounds", type=int, default=4, help="rounds of --ab (default 4)")
    _add_threshold_options(ci)
    ci.set_defaults(run=_ci)


def _add_ab(commands) -> None:
    ab = commands.add_parser(
        "ab",
        help="compare two arms in interleaved rounds in one job; exit 1 when HEAD regressed",
        description="Measure a spec's points on BASE and HEAD in interleaved rounds (A B, B A, "
        "...; fresh servers per measurement) and compare them paired, with compare's "
        "thresholds, outputs and exit codes. Arms with no differences make an A/A check.",
    )
    ab.add_argument("spec", nargs="?", help="the sweep spec (YAML) whose points are measured")
    ab.add_argument("--preset", help="a shipped spec instead: default or ci")
    ab.add_argument("--rounds", type=int, default=4, help="interleaved rounds (default 4)")
    ab.add_argument("--out", help="the A/B folder (default: reports/<run-id>)")
    _add_arm_options(ab, "base")
    _add_arm_options(ab, "head")
    _add_threshold_options(ab)
    ab.set_defaults(run=_ab)


def _add_make_model(commands) -> None:
    make_model = commands.add_parser(
        "make-model", help="write a built-in SavedModel (mlp, cnn, transformer, synthetic)"
    )
    make_model.add_argument("name", help="mlp | cnn | transformer | synthetic")
    make_model.add_argument("dir", help="model base path; the model is written to DIR/VERSION/")
    make_model.add_argument("--version", type=int, default=1)
    make_model.add_argument("--seed", type=int, default=0)
    make_model.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="model option, e.g. fixed_ms=2 for synthetic (repeatable)",
    )
    make_model.add_argument(
        "--warmup-records",
        type=int,
        default=0,
        metavar="N",
        help="also write TF Serving's warm-up file: N one-row Predict requests of random data "
        "in VERSION/assets.extra/tf_serving_warmup_requests",
    )
    make_model.set_defaults(run=_make_model)


def _add_warmup_file(commands) -> None:
    warmup = commands.add_parser(
        "warmup-file",
        help="write a model version's TF Serving warm-up file from a payload (or random data)",
    )
    warmup.add_argument("version_dir", metavar="VERSION_DIR", help="e.g. models/mlp/2")
    warmup.add_argument(
        "--payload", help=".npy / .npz / TF Serving REST JSON (default: random data)"
    )
    warmup.add_argument("--records", type=int, default=1, help="records to write (1-1000)")
    warmup.add_argument("--rows", type=int, default=1, help="rows of random data per record")
    warmup.add_argument("--signature", default="serving_default")
    warmup.add_argument(
        "--model-name", default="", help="model name in each request (TF Serving ignores it)"
    )
    warmup.set_defaults(run=_warmup_file)


def _add_demo(commands) -> None:
    demo = commands.add_parser(
        "demo", help="run the default sweep on the built-in mlp model and write its report"
    )
    demo.add_argument("--out", default="reports", help="where models and runs are written")
    _add_placement_options(demo, "auto")
    demo.set_defaults(run=_demo)


def _add_sweep(commands) -> None:
    sweep = commands.add_parser("sweep", help="run a sweep spec; results go to reports/RUN-ID")
    sweep.add_argument("spec", nargs="?", help="the sweep spec (YAML)")
    sweep.add_argument("--preset", help="a shipped spec instead: default, ci, bursty or search")
    sweep.add_argument("--out", help="the run folder (default: reports/<run-id>)")
    sweep.add_argument(
        "--resume", metavar="RUN", help="continue the run in this folder, skipping done points"
    )
    sweep.add_argument("--no-report", action="store_true", help="do not write report.html")
    _add_placement_options(sweep, "the spec's placement, else auto")
    sweep.set_defaults(run=_sweep)


def _add_serve(commands) -> None:
    serve = commands.add_parser(
        "serve",
        help="run N reference-server replicas as one service until Ctrl-C",
        usage="batchbench serve [--replicas N] [--ready-timeout S] [--placement auto|none] "
        "[--server-cpus LIST] --model_name=M --model_base_path=P [other reference-server flags]",
        description="Start N reference-server replicas with the given tensorflow_model_server "
        "flags (each gets free ports and its share of the cores, or with a placement its own "
        "CPU set), wait until all are AVAILABLE, print the endpoints, stop all on Ctrl-C or "
        "SIGTERM.",
    )
    serve.add_argument("--replicas", type=int, default=1)
    serve.add_argument("--ready-timeout", type=float, default=120.0, help="seconds")
    _add_placement_options(
        serve, "none; auto keeps cores free for a load generator", generator=False
    )
    # Every other argument is a reference-server flag (--model_name=m ...): see main().
    serve.set_defaults(run=_serve, takes_server_flags=True)


def _worker(args: argparse.Namespace) -> int:
    from harness.sweep.worker import run_worker

    return run_worker(args.master, name=args.name, processes=args.processes, runs=args.runs)


def _add_worker(commands) -> None:
    worker = commands.add_parser(
        "worker",
        help="run Locust workers for sweeps with load.workers, on a load host, until Ctrl-C",
        description="A Locust worker (locust --worker) for a sweep's master: it takes the "
        "scenario and its options from the master, and starts again after every test.",
    )
    worker.add_argument("--master", required=True, metavar="HOST:PORT", help="the sweep's master")
    worker.add_argument("--name", help="this worker's name in point files (default: host name)")
    worker.add_argument(
        "--processes", type=_count, default=1, help="worker processes on this host (default 1)"
    )
    worker.add_argument("--runs", type=_count, help="stop after this many tests (default: never)")
    worker.set_defaults(run=_worker)


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 (got {value})")
    return value


def _add_report(commands) -> None:
    report = commands.add_parser(
        "report", help="write RUN/report.html (and report.json) from a run folder"
    )
    report.add_argument("run_dir", metavar="RUN", help="the run folder")
    report.add_argument(
        "--screenshot",
        action="store_true",
        help="also save RUN/report.png from headless Chromium (fails on console errors or "
        "requests outside the file)",
    )
    report.set_defaults(run=_report)


def _add_rollout(commands) -> None:
    from harness.rollout.command import add_rollout_options

    add_rollout_options(commands)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="batchbench",
        description="Benchmark and tune model servers that batch (TensorFlow Serving and "
        "its reference stand-in).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    _add_make_model(commands)
    _add_warmup_file(commands)
    _add_demo(commands)
    _add_sweep(commands)
    _add_serve(commands)
    _add_report(commands)
    _add_worker(commands)
    _add_gate_commands(commands)
    _add_rollout(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "takes_server_flags", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.server_flags = extra
    try:
        return args.run(args)
    except UserError as exc:
        print(f"batchbench: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("batchbench: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
