"""The `modelgate` command line. Heavy imports happen inside each command so `--help` stays fast.

One error handler maps every ModelgateError to one line on stderr and its exit code (errors.py);
argparse usage errors exit 2 too. SIGTERM is turned into `Interrupted` so servers are torn down.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from .errors import EXIT_BAD_INPUT, EXIT_INTERRUPTED, BadInput, Interrupted, ModelgateError


def _home(config: Path) -> Path:
    env = os.environ.get("MODELGATE_HOME")
    return Path(env).resolve() if env else config.resolve().parent / ".modelgate"


def cmd_gate(args) -> int:
    from . import report as reports
    from .config import load_release
    from .gate import run_gate

    release = load_release(args.config)
    report = run_gate(release, home=_home(args.config), run_dir=args.run_dir, tracking_uri=args.tracking_uri,
                      pr=args.pr, enforce_eager=args.enforce_eager)
    print(reports.to_console(report))
    return report["exit_code"]


def cmd_lock(args) -> int:
    from .lock import lock
    from .progress import progress_for

    files = lock(args.config, _home(args.config), revision=args.revision, progress=progress_for("lock"))
    print(f"locked {len(files)} file(s) in {args.config}")
    return 0


def cmd_fetch(args) -> int:
    from .config import load_release
    from .fetch import fetch
    from .progress import progress_for

    release = load_release(args.config)
    pin = release.candidate
    model_dir = fetch(pin, release.repo_location(pin), _home(args.config), file=str(release.path),
                      allowlist=release.remote_code_allowlist, progress=progress_for("fetch"))
    print(model_dir.path)
    return 0


def cmd_demo_init(args) -> int:
    from .demo.hub import publish_demo_hub
    from .progress import progress_for

    home = Path(args.home).resolve() if args.home else _home(args.config)
    manifest = publish_demo_hub(home, progress=progress_for("demo"))
    for name, variant in manifest["variants"].items():
        print(f"{name:<10} {variant['revision']}")
    print(f"hub: {manifest['repo_path']}")
    return 0


def cmd_report(args) -> int:
    from . import report as reports

    from .errors import BadInput

    path = Path(args.path)
    if not path.is_file():
        raise BadInput("no such report file", file=str(path))
    try:
        data = reports.load(path)
    except ValueError as exc:
        raise BadInput(f"not a gate report: {exc}", file=str(path)) from exc
    print(reports.to_markdown(data) if args.format == "markdown" else
          __import__("json").dumps(data, indent=2))
    return 0


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2, like every other bad input
        self.exit(EXIT_BAD_INPUT, f"modelgate: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="modelgate", description="Evaluation-gated release pipeline for self-hosted LLMs.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def with_config(p):
        p.add_argument("--config", type=Path, default=Path("release.yaml"), help="release.yaml (default: ./release.yaml)")
        return p

    gate = with_config(sub.add_parser("gate", help="run the gate on the pinned candidate"))
    gate.add_argument("--pr", type=int, help="pull request number, recorded with the gate")
    gate.add_argument("--run-dir", type=Path, help="where the local report goes (default: runs/<gate id>)")
    gate.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, then mlflow/mlflow.db)")
    gate.add_argument("--enforce-eager", action=argparse.BooleanOptionalAction, default=None,
                      help="override serving.enforce_eager (faster start, slower decode)")
    gate.set_defaults(func=cmd_gate)

    lock = with_config(sub.add_parser("lock", help="write the sha256 of every file of the pin into release.yaml"))
    lock.add_argument("--revision", help="pin this 40-hex commit (default: the one in release.yaml)")
    lock.set_defaults(func=cmd_lock)

    fetch = with_config(sub.add_parser("fetch", help="fetch and verify the pinned candidate; print its path"))
    fetch.set_defaults(func=cmd_fetch)

    demo = sub.add_parser("demo", help="the bundled demo model hub")
    demo_sub = demo.add_subparsers(dest="demo_command", required=True, parser_class=_Parser)
    init = with_config(demo_sub.add_parser("init", help="convert SmolLM2-135M-Instruct and publish the local hub"))
    init.add_argument("--home", help="where the hub goes (default: $MODELGATE_HOME or .modelgate/)")
    init.set_defaults(func=cmd_demo_init)

    rep = sub.add_parser("report", help="render a gate report")
    rep.add_argument("path", help="a report.json")
    rep.add_argument("--format", choices=["markdown", "json"], default="markdown")
    rep.set_defaults(func=cmd_report)
    return parser


def _on_sigterm(signum, frame):
    raise Interrupted("SIGTERM")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("modelgate: interrupted by SIGINT", file=sys.stderr)
        return EXIT_INTERRUPTED
    except ModelgateError as exc:
        from .secrets import redact

        kind = "error" if isinstance(exc, BadInput) else type(exc).__name__
        print(f"modelgate: {kind}: {redact(exc.one_line())}", file=sys.stderr)
        tail = getattr(exc, "log_tail", "")
        if tail:
            print(f"--- last lines of {exc.log_file} ---\n{redact(tail)}", file=sys.stderr)
        return exc.exit_code
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
