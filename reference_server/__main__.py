"""``reference-server`` / ``python -m reference_server``: tensorflow_model_server's command line."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version

# TensorFlow's C++ logging floods stderr with start-up noise; keep warnings and errors.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

from reference_server.config_files import ConfigError
from reference_server.flags import (
    FlagError,
    combination_warnings,
    ignored_flags,
    parse_flags,
    usage,
)

PROGRAM = "reference-server"
log = logging.getLogger("reference_server")


def _version() -> str:
    try:
        return version("batchbench")
    except PackageNotFoundError:
        return "unknown"


def _configure_logging() -> None:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s.%(msecs)03d %(levelname).1s %(name)s] %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S",
        stream=sys.stderr,
    )


def _warn_about(flags) -> None:
    for message in combination_warnings(flags):
        log.warning(message)
    for name in ignored_flags(flags):
        log.warning("--%s is accepted for compatibility but has no effect here", name)


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        flags = parse_flags(argv)
    except FlagError as exc:
        print(f"{PROGRAM}: {exc}\nRun '{PROGRAM} --help' for the flags.", file=sys.stderr)
        return 1
    if flags.help:
        print(usage(PROGRAM))
        return 0
    if flags.version:
        print(f"{PROGRAM} {_version()} (TensorFlow Serving compatible)")
        return 0
    _configure_logging()
    _warn_about(flags)
    from reference_server.server import serve  # imports TensorFlow: only once flags are good

    try:
        finished = asyncio.run(serve(flags))
    except ConfigError as exc:
        print(f"Failed to start server. Error: {exc}", file=sys.stderr)
        return 1
    if not finished:
        # A batch still running past --shutdown_grace_seconds must not keep the process alive:
        # a normal exit would wait for its thread and run TensorFlow's teardown under it.
        logging.shutdown()
        sys.stdout.flush()
        os._exit(0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
