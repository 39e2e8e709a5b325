"""The `modelgate` command line: the top-level parser (each command group's module adds its own parsers) and the
one error handler, which maps every ModelgateError to one line on stderr and its exit code (errors.py); argparse
usage errors exit 2 too. SIGTERM is turned into `Interrupted` so servers are torn down; SIGINT and SIGTERM are
routed to the main thread (util/interrupts.py). Heavy imports happen
inside each command so `--help` stays fast."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from types import FrameType
from typing import NoReturn

from pipeline.cli import demo, gate, github, model, release, report, watch
from pipeline.cli.common import Parser
from pipeline.errors import EXIT_INFRA, EXIT_INTERRUPTED, BadInput, Interrupted, ModelgateError
from pipeline.util.interrupts import route_to_main_thread
from pipeline.util.secrets import redact

GROUPS = (gate, release, watch, model, report, github, demo)  # the order of --help's commands: the gate first


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="modelgate", description="Evaluation-gated release pipeline for self-hosted LLMs.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for group in GROUPS:
        group.register(sub)
    return parser


def _on_sigterm(signum: int, frame: FrameType | None) -> NoReturn:
    raise Interrupted("SIGTERM")



# MLflow's client retries a refused connection for minutes by default; a gate should fail closed in seconds
# (the report is kept locally and `modelgate sync` uploads it later). A user's own settings win.
# Its artifact downloads (promote reads the signed statement) print no progress bar: stderr is one line per error.
MLFLOW_CLIENT_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                          "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    forward = getattr(args, "forward", None)  # `modelgate demo <command> ...`: that command, on the demo's profile
    if extra and forward is None:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    for key, value in MLFLOW_CLIENT_DEFAULTS.items():
        os.environ.setdefault(key, value)
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    unroute = route_to_main_thread()  # a signal that lands on a busy worker thread would wait for the main one
    try:
        if forward is not None:
            args = parser.parse_args(forward(args, extra))
        return args.func(args)
    except KeyboardInterrupt:
        print("modelgate: interrupted by SIGINT", file=sys.stderr)
        return EXIT_INTERRUPTED
    except ModelgateError as exc:
        kind = "error" if isinstance(exc, BadInput) else type(exc).__name__
        print(f"modelgate: {kind}: {redact(exc.one_line())}", file=sys.stderr)
        tail = getattr(exc, "log_tail", "")
        if tail:
            print(f"--- last lines of {getattr(exc, 'log_file', None)} ---\n{redact(tail)}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # a disk or file problem no stage caught: infrastructure, one line, exit 3
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        print(f"modelgate: InfraError: {redact(type(exc).__name__ + ': ' + str(exc.strerror or exc))}{where}",
              file=sys.stderr)
        return EXIT_INFRA
    finally:
        unroute()
        signal.signal(signal.SIGTERM, previous)

