"""The release commands: `keygen`, `approve`, `promote`, `rollback`, `history` and `resolve`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.cli.common import TRACKING_URI_HELP, actor, home, store, with_config
from pipeline.core.secrets import AUDIT_KEY_ENV, SIGNING_KEY_ENV
from pipeline.errors import BadInput, Refused
from pipeline.util.progress import progress_for

if TYPE_CHECKING:
    from pipeline.releasing.promotion import Outcome


def cmd_keygen(args: argparse.Namespace) -> int:
    import yaml

    from pipeline.releasing.signing import generate

    path, entry = generate(args.out)
    secret, environment, field = ((AUDIT_KEY_ENV, "production", "audit_keys") if args.audit else
                                  (SIGNING_KEY_ENV, "release-gate", "public_keys"))
    print(f"wrote the Ed25519 private key to {path} (mode 0600): store it as the secret {secret} "
          f"of the GitHub environment {environment}, then delete this file", file=sys.stderr)
    print(f"# add to release.yaml under signing.{field} (a reviewed change):")
    print(yaml.safe_dump([entry], sort_keys=False).rstrip())
    return 0


def cmd_approve(args: argparse.Namespace) -> int:
    from pipeline.releasing.approval import approve

    release, uri = store(args)
    a = approve(release, uri, args.version, actor(args), args.reason)
    if a.new:
        print(f"approved {release.model_name} v{a.version} by {a.actor} at {a.at} (audit run {a.audit_run_id})")
    else:
        print(f"{a.actor} already approved {release.model_name} v{a.version} at {a.at}; nothing recorded")
    return 0


def _print_outcome(o: Outcome) -> None:
    for note in o.notes:
        print(note)
    if not o.noop:
        frm = f" (was v{o.from_version})" if o.from_version else ""
        print(f"{o.action}: {o.model_name} v{o.version} is production{frm}; by {o.actor}; "
              f"audit run {o.audit_run_id}" + ("; resumed" if o.resumed else ""))


def cmd_promote(args: argparse.Namespace) -> int:
    from pipeline.releasing.promotion import promote

    release, uri = store(args)
    _print_outcome(promote(release, uri, args.version, actor(args), override_reason=args.override_reason,
                           progress=progress_for("promote"), home=home(args.config)))
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    release, uri = store(args)
    if args.check:
        from pipeline.releasing.readiness import rehearse

        result = rehearse(release, uri, args.to, actor(args), home=home(args.config), serve=args.serve,
                          progress=progress_for("rollback --check"))
        if not result.ready:
            raise Refused(f"{result.line()}; recorded, nothing moved")
        print(f"{result.line()}; recorded, nothing moved")
        return 0
    if args.serve:
        raise BadInput("--serve rehearses a rollback: use it with --check", path="--serve")
    from pipeline.releasing.promotion import rollback

    _print_outcome(rollback(release, uri, args.to, actor(args), args.reason, progress=progress_for("rollback"),
                            home=home(args.config)))
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    import json

    from pipeline.releasing.history import timeline, to_text

    release, uri = store(args)
    doc = timeline(release, uri)
    print(json.dumps(doc, indent=2) if args.json else to_text(doc))
    return 0


def cmd_resolve(args: argparse.Namespace) -> int:
    import json

    from pipeline.releasing.history import resolve

    release, uri = store(args)
    doc = resolve(release, uri, args.alias)
    for hint in doc["in_progress"]:
        print(f"modelgate: warning: incomplete release operation: {hint}", file=sys.stderr)
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        for key in ("model", "alias", "version", "source", "repo", "revision", "served_name", "uri", "verdict",
                    "gate_run_id"):
            print(f"{key}: {doc[key]}")
    return 0



def register(sub: Any) -> None:
    """The parsers of the release commands (`sub`: the top-level subparsers)."""
    keygen = sub.add_parser("keygen", help="new Ed25519 signing key; prints its release.yaml public_keys entry")
    keygen.add_argument("--out", type=Path, required=True, help="private key file to create (mode 0600)")
    keygen.add_argument("--audit", action="store_true",
                        help="the production environment's audit key (signing.audit_keys), not a gate signing key")
    keygen.set_defaults(func=cmd_keygen)

    def release_cmd(name: str, help_text: str, func: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
        p = with_config(sub.add_parser(name, help=help_text))
        p.add_argument("--tracking-uri", help=TRACKING_URI_HELP)
        p.set_defaults(func=func)
        return p

    def acting(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--actor", help="who is acting (a release manager in release.yaml; default $MODELGATE_ACTOR)")
        return p

    appr = acting(release_cmd("approve", "approve a gated model version (release managers)", cmd_approve))
    appr.add_argument("--version", required=True, help="version number or alias (e.g. candidate)")
    appr.add_argument("--reason", required=True, help="what you checked")
    prom = acting(release_cmd("promote", "make an approved, passed version production", cmd_promote))
    prom.add_argument("--version", required=True, help="version number or alias (e.g. candidate)")
    prom.add_argument("--override-reason", help="promote an inconclusive gate, or over a previous version whose "
                      "weights cannot be verified (no rollback path); recorded with your name")
    back = acting(release_cmd("rollback", "put the previous (or a given) version back into production", cmd_rollback))
    back.add_argument("--to", help="version number or alias (default: previous)")
    back.add_argument("--reason", help="what went wrong (required, except with --check)")
    back.add_argument("--check", action="store_true",
                      help="rehearse: fetch and verify the target (and with --serve boot and probe it), record the "
                      "result, move nothing; exit 0 ready, 5 not ready")
    back.add_argument("--serve", action="store_true", help="with --check: also boot it with vLLM and smoke-probe it")
    hist = release_cmd("history", "timeline of gates, approvals, promotions and rollbacks", cmd_history)
    hist.add_argument("--json", action="store_true")
    res = release_cmd("resolve", "print the pin an alias points at (for deployments)", cmd_resolve)
    res.add_argument("alias", help="production | previous | candidate")
    res.add_argument("--json", action="store_true")
