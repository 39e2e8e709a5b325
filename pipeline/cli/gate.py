"""`modelgate gate`, `plan` and `sync`: run a gate, plan a metric's margin, record kept gate reports."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pipeline.cli.common import TRACKING_URI_HELP, home, with_config
from pipeline.core.gatekind import ADVISORY, GATE_KINDS, RELEASE
from pipeline.errors import BadInput
from pipeline.util.progress import progress_for
from pipeline.util.secrets import redact


def cmd_gate(args: argparse.Namespace) -> int:
    from pipeline.config.release import load_release
    from pipeline.gate.run import run_gate
    from pipeline.releasing import signing
    from pipeline.report import console

    if args.kind == ADVISORY and args.signing_key_file:
        raise BadInput("an advisory gate is never signed: drop --signing-key-file (or use --kind release)",
                       path="--signing-key-file")
    signer = signing.load_signer(args.signing_key_file) if args.kind == RELEASE else None
    release = load_release(args.config)
    report = run_gate(release, home=home(args.config), run_dir=args.run_dir, tracking_uri=args.tracking_uri,
                      pr=args.pr, enforce_eager=args.enforce_eager, author=args.author, kind=args.kind,
                      signer=signer)
    print(redact(console.render(report.redacted())))
    return report.exit_code


def cmd_plan(args: argparse.Namespace) -> int:
    from pipeline.config.release import load_release
    from pipeline.gate.plan import plan

    release = load_release(args.config)
    result = plan(release, args.metric, args.margin, power=args.power, discordance=args.discordance, sd=args.sd,
                  tracking_uri=args.tracking_uri)
    print("\n".join(result.lines()))
    return 0


def cmd_sync(args: argparse.Namespace) -> int:
    from pipeline.gate.sync import kept_run_dirs, sync_all

    if args.all:
        run_dirs = kept_run_dirs(args.config.resolve().parent)
        if not run_dirs:
            print(f"no kept gate reports under {args.config.resolve().parent / 'runs'}")
            return 0
    else:
        run_dirs = [args.run_dir]
    for outcome in sync_all(run_dirs, uri_override=args.tracking_uri, progress=progress_for("sync")):
        print(outcome.line())
    return 0



def register(sub: Any) -> None:
    """The parsers of `gate`, `plan` and `sync` (`sub`: the top-level subparsers)."""
    gate = with_config(sub.add_parser("gate", help="run the gate on the pinned candidate"))
    gate.add_argument("--pr", type=int, help="pull request number, recorded with the gate")
    gate.add_argument("--author", help="who authored the change (a release manager cannot approve their own); "
                      "default: $MODELGATE_AUTHOR, then the HEAD commit's author email")
    gate.add_argument("--run-dir", type=Path, help="where the local report goes (default: runs/<gate id>)")
    gate.add_argument("--tracking-uri", help=TRACKING_URI_HELP)
    gate.add_argument("--enforce-eager", action=argparse.BooleanOptionalAction, default=None,
                      help="override serving.enforce_eager (faster start, slower decode)")
    gate.add_argument("--kind", choices=list(GATE_KINDS), default=RELEASE,
                      help="release (default): the full configuration, registered and signed, promotable; "
                      "advisory (pull requests): recorded in the advisory experiment, never registered")
    gate.add_argument("--signing-key-file", type=Path, help="Ed25519 private key (PEM) signing a release gate "
                      "(default: $MODELGATE_SIGNING_KEY; without either the record is unsigned, not promotable)")
    gate.set_defaults(func=cmd_gate)

    pln = with_config(sub.add_parser("plan", help="how many paired items a metric's margin needs (at 80%% power)"))
    pln.add_argument("--metric", required=True, help="e.g. support_facts/f1 or format/pass")
    pln.add_argument("--margin", type=float, required=True, help="the non-inferiority margin to plan for")
    pln.add_argument("--power", type=float, default=0.8, help="chance to detect a drop of the margin (default 0.8)")
    spread = pln.add_mutually_exclusive_group()
    spread.add_argument("--discordance", type=float, help="share of items two versions disagree on (0/1 metrics); "
                        "default: from production in the tracking store")
    spread.add_argument("--sd", type=float, help="sd of the per-item differences (scores); default: from production")
    pln.add_argument("--tracking-uri", help=TRACKING_URI_HELP)
    pln.set_defaults(func=cmd_plan)

    sync = with_config(sub.add_parser("sync", help="record gate reports kept locally while MLflow was unreachable"))
    which = sync.add_mutually_exclusive_group(required=True)
    which.add_argument("--run-dir", type=Path, help="one gate's run directory (holds report.json)")
    which.add_argument("--all", action="store_true", help="every kept report under runs/ beside --config")
    sync.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, then the "
                      "store the gate tried)")
    sync.set_defaults(func=cmd_sync)
