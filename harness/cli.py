"""``batchbench``: the command line. Parses arguments, calls the library, prints UserErrors."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from harness.errors import UserError

# Exit codes: 0 success, 1 failure of the thing measured (later: a regression), 2 usage/data error.
EXIT_USAGE = 2


def _make_model(args: argparse.Namespace) -> int:
    from harness import model_zoo

    options = dict(_parse_option(text) for text in args.option)
    try:
        path = model_zoo.build_model(
            args.name, Path(args.dir), version=args.version, seed=args.seed, **options
        )
    except ValueError as exc:
        raise UserError(str(exc)) from None
    print(path)
    return 0


def _parse_option(text: str) -> tuple[str, str]:
    """KEY=VALUE; the model zoo converts the value to the option's type and checks it."""
    key, sep, value = text.partition("=")
    if not sep:
        raise UserError(f"--option expects KEY=VALUE, got {text!r}")
    return key, value


def _demo(args: argparse.Namespace) -> int:
    from harness.demo import run_demo

    run_demo(Path(args.out))
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from harness.spec import load_preset, load_spec
    from harness.sweep import run_sweep

    if (args.spec is None) == (args.preset is None):
        raise UserError("give a spec file or --preset NAME (not both)")
    spec = load_spec(args.spec) if args.spec else load_preset(args.preset)
    out = Path(args.resume or args.out) if (args.resume or args.out) else None
    run_dir = run_sweep(spec, out, resume=bool(args.resume), report=not args.no_report)
    print(f"run folder: {run_dir}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from harness.serve import serve

    return serve(args.server_flags, args.replicas, ready_timeout=args.ready_timeout)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="batchbench",
        description="Benchmark and tune model servers that batch (TensorFlow Serving and "
        "its reference stand-in).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

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
    make_model.set_defaults(run=_make_model)

    demo = commands.add_parser(
        "demo", help="run the default sweep on the built-in mlp model and write its report"
    )
    demo.add_argument("--out", default="reports", help="where models and runs are written")
    demo.set_defaults(run=_demo)

    sweep = commands.add_parser("sweep", help="run a sweep spec; results go to reports/RUN-ID")
    sweep.add_argument("spec", nargs="?", help="the sweep spec (YAML)")
    sweep.add_argument("--preset", help="a shipped spec instead: default or ci")
    sweep.add_argument("--out", help="the run folder (default: reports/<run-id>)")
    sweep.add_argument(
        "--resume", metavar="RUN", help="continue the run in this folder, skipping done points"
    )
    sweep.add_argument("--no-report", action="store_true", help="do not write report.html")
    sweep.set_defaults(run=_sweep)

    serve = commands.add_parser(
        "serve",
        help="run N reference-server replicas as one service until Ctrl-C",
        description="Start N reference-server replicas with the given tensorflow_model_server "
        "flags (each gets free ports and its share of the cores), wait until all are "
        "AVAILABLE, print the endpoints, stop all on Ctrl-C or SIGTERM.",
    )
    serve.add_argument("--replicas", type=int, default=1)
    serve.add_argument("--ready-timeout", type=float, default=120.0, help="seconds")
    serve.add_argument(
        "server_flags", nargs=argparse.REMAINDER, help="reference-server flags, e.g. --model_name=m"
    )
    serve.set_defaults(run=_serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except UserError as exc:
        print(f"batchbench: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("batchbench: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
