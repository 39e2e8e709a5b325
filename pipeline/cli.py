"""The `modelgate` command line. Heavy imports happen inside each command so `--help` stays fast.

One error handler maps every ModelgateError to one line on stderr and its exit code (errors.py);
argparse usage errors exit 2 too. SIGTERM is turned into `Interrupted` so servers are torn down.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType, ModuleType
from typing import TYPE_CHECKING, NoReturn

from pipeline.errors import EXIT_BAD_INPUT, EXIT_INTERRUPTED, BadInput, Interrupted, ModelgateError

if TYPE_CHECKING:
    from pipeline.config.release import Release
    from pipeline.integrations.github import GitHubClient
    from pipeline.releasing.promotion import Outcome
    from pipeline.report.document import GateReport


def _home(config: Path) -> Path:
    env = os.environ.get("MODELGATE_HOME")
    return Path(env).resolve() if env else config.resolve().parent / ".modelgate"


def cmd_gate(args: argparse.Namespace) -> int:
    from pipeline.config.release import load_release
    from pipeline.gate.run import run_gate
    from pipeline.releasing import signing
    from pipeline.report import console
    from pipeline.util.secrets import redact

    if args.kind == signing.ADVISORY and args.signing_key_file:
        raise BadInput("an advisory gate is never signed: drop --signing-key-file (or use --kind release)",
                       path="--signing-key-file")
    signer = signing.load_signer(args.signing_key_file) if args.kind == signing.RELEASE else None
    release = load_release(args.config)
    report = run_gate(release, home=_home(args.config), run_dir=args.run_dir, tracking_uri=args.tracking_uri,
                      pr=args.pr, enforce_eager=args.enforce_eager, author=args.author, kind=args.kind,
                      signer=signer)
    print(redact(console.render(report.redacted())))
    return report.exit_code


def cmd_keygen(args: argparse.Namespace) -> int:
    import yaml

    from pipeline.releasing.signing import generate

    path, entry = generate(args.out)
    secret, environment, field = (("MODELGATE_AUDIT_KEY", "production", "audit_keys") if args.audit else
                                  ("MODELGATE_SIGNING_KEY", "release-gate", "public_keys"))
    print(f"wrote the Ed25519 private key to {path} (mode 0600): store it as the secret {secret} "
          f"of the GitHub environment {environment}, then delete this file", file=sys.stderr)
    print(f"# add to release.yaml under signing.{field} (a reviewed change):")
    print(yaml.safe_dump([entry], sort_keys=False).rstrip())
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from pipeline.config.release import load_release
    from pipeline.gate.plan import plan

    release = load_release(args.config)
    result = plan(release, args.metric, args.margin, power=args.power, discordance=args.discordance, sd=args.sd,
                  tracking_uri=args.tracking_uri)
    print("\n".join(result.lines()))
    return 0


def cmd_lock(args: argparse.Namespace) -> int:
    from pipeline.model.lock import lock
    from pipeline.util.progress import progress_for

    files = lock(args.config, _home(args.config), revision=args.revision, progress=progress_for("lock"))
    print(f"locked {len(files)} file(s) in {args.config}")
    return 0


def cmd_fetch(args: argparse.Namespace) -> int:
    from pipeline.config.release import load_release
    from pipeline.model.fetch import fetch
    from pipeline.util.progress import progress_for

    release = load_release(args.config)
    pin = release.candidate
    model_dir = fetch(pin, release.repo_location(pin), _home(args.config), file=str(release.path),
                      allowlist=release.remote_code_allowlist, progress=progress_for("fetch"))
    print(model_dir.path)
    return 0


def cmd_demo_init(args: argparse.Namespace) -> int:
    from pipeline.demo.hub import publish_demo_hub
    from pipeline.util.progress import progress_for

    home = Path(args.home).resolve() if args.home else _home(args.config)
    manifest = publish_demo_hub(home, progress=progress_for("demo"))
    for name, variant in manifest["variants"].items():
        print(f"{name:<10} {variant['revision']}")
    print(f"hub: {manifest['repo_path']}")
    return 0


def cmd_sync(args: argparse.Namespace) -> int:
    from pipeline.gate.sync import kept_run_dirs, sync_all
    from pipeline.util.progress import progress_for

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


def cmd_report(args: argparse.Namespace) -> int:
    import json

    from pipeline.report import html

    report, markdown = _gate_report(Path(args.path))
    if args.format == "json":
        text = json.dumps(report.to_dict(), indent=2)
    elif args.format == "html":
        text = html.render(report, report_path=Path(args.path))
    else:
        text = markdown
    if args.output:
        try:
            Path(args.output).write_text(text, encoding="utf-8")
        except OSError as exc:
            from pipeline.errors import InfraError

            raise InfraError(f"cannot write {args.output}: {exc.strerror or exc}") from exc
        print(f"wrote {args.format} report to {args.output}")
    else:
        print(text, end="" if text.endswith("\n") else "\n")
    return 0


def _store(args: argparse.Namespace) -> tuple[Release, str]:
    """release.yaml and the tracking store a release command works on (checked before anything changes)."""
    from pipeline.config.release import load_release
    from pipeline.integrations import tracking
    from pipeline.util.secrets import register_secret_env

    release = load_release(args.config)
    register_secret_env(release.secret_env)
    uri = tracking.resolve_uri(args.tracking_uri, configured=release.tracking_uri, root=release.root)
    tracking.preflight(uri)
    return release, uri


def _actor(args: argparse.Namespace) -> str | None:
    return args.actor or os.environ.get("MODELGATE_ACTOR")


def cmd_approve(args: argparse.Namespace) -> int:
    from pipeline.releasing.approval import approve

    release, uri = _store(args)
    a = approve(release, uri, args.version, _actor(args), args.reason)
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
    from pipeline.util.progress import progress_for

    release, uri = _store(args)
    _print_outcome(promote(release, uri, args.version, _actor(args), override_reason=args.override_reason,
                           progress=progress_for("promote"), home=_home(args.config)))
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    from pipeline.util.progress import progress_for

    release, uri = _store(args)
    if args.check:
        from pipeline.errors import Refused
        from pipeline.releasing.readiness import rehearse

        result = rehearse(release, uri, args.to, _actor(args), home=_home(args.config), serve=args.serve,
                          progress=progress_for("rollback --check"))
        if not result.ready:
            raise Refused(f"{result.line()}; recorded, nothing moved")
        print(f"{result.line()}; recorded, nothing moved")
        return 0
    if args.serve:
        raise BadInput("--serve rehearses a rollback: use it with --check", path="--serve")
    from pipeline.releasing.promotion import rollback

    _print_outcome(rollback(release, uri, args.to, _actor(args), args.reason, progress=progress_for("rollback"),
                            home=_home(args.config)))
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    import json

    from pipeline.releasing.history import timeline, to_text

    release, uri = _store(args)
    doc = timeline(release, uri)
    print(json.dumps(doc, indent=2) if args.json else to_text(doc))
    return 0


def cmd_resolve(args: argparse.Namespace) -> int:
    import json

    from pipeline.releasing.history import resolve

    release, uri = _store(args)
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


def _github(args: argparse.Namespace) -> tuple[ModuleType, GitHubClient]:
    """A GitHub client for --repo/--api-url (defaults: $GITHUB_REPOSITORY, $GITHUB_API_URL); token: GITHUB_TOKEN."""
    from pipeline.integrations import github

    repo = args.repo or os.environ.get("GITHUB_REPOSITORY")
    if not repo:
        raise BadInput("no repository: pass --repo owner/name or set GITHUB_REPOSITORY")
    return github, github.client(repo, args.api_url)


def _gate_report(path: Path) -> tuple[GateReport, str]:
    """The report and its markdown rendering (rendering it also proves its details hold what we show)."""
    from pipeline.errors import InfraError
    from pipeline.report import markdown
    from pipeline.report.document import GateReport

    if not path.is_file():
        raise BadInput("no such report file", file=str(path))
    try:
        report = GateReport.load(path)
        return report, markdown.render(report)
    except (ValueError, InfraError, AttributeError) as exc:
        raise BadInput(f"not a gate report: {' '.join(str(exc).split())[:200]}", file=str(path)) from exc
    except (KeyError, TypeError) as exc:
        raise BadInput(f"not a gate report: field {exc} missing or of the wrong type", file=str(path)) from exc


def cmd_github_comment(args: argparse.Namespace) -> int:
    from pipeline.report import markdown as md

    report, markdown = _gate_report(args.report)
    if args.details_url:
        markdown = md.render(report, details_url=args.details_url)
    github, client = _github(args)
    print(client.upsert_comment(args.pr, markdown, github.COMMENT_MARKER))
    return 0


def cmd_github_status(args: argparse.Namespace) -> int:
    report, _ = _gate_report(args.report)
    github, client = _github(args)
    state = github.STATE_FOR_VERDICT[report.verdict]  # every verdict has one (a loaded report has a real verdict)
    reasons = report.reasons
    description = f"{report.verdict}" + (f": {reasons[0]}" if reasons else "")
    client.set_status(args.sha, state, github.STATUS_CONTEXT, description, args.target_url)
    print(f"{github.STATUS_CONTEXT}: {state} on {args.sha}")
    return 0


def cmd_github_approver(args: argparse.Namespace) -> int:
    from pipeline.errors import Refused

    _, client = _github(args)
    logins = list(dict.fromkeys(a.login for a in client.environment_approvals(args.run_id) if a.state == "approved"))
    if not logins:
        raise Refused(f"workflow run {args.run_id} has no environment approval on record")
    print("\n".join(logins))
    return 0


def cmd_github_change_author(args: argparse.Namespace) -> int:
    """The change's author for the self-approval rule: the merged pull request's author (GitHub API), never the
    commit's (on a merge commit that is whoever merged). No merged pull request: bad input (exit 2)."""
    _, client = _github(args)
    login = client.change_author(args.commit)
    if login is None:
        raise BadInput(f"commit {args.commit} belongs to no merged pull request of {client.repository}: its author "
                       "cannot be taken from GitHub")
    print(login)
    return 0


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2, like every other bad input
        self.exit(EXIT_BAD_INPUT, f"modelgate: error: {message} (see `{self.prog} --help`)\n")


# the precedence of integrations.tracking.resolve_uri
TRACKING_URI_HELP = ("MLflow tracking URI (default: $MLFLOW_TRACKING_URI, then release.yaml tracking.uri, "
                     "then mlflow/mlflow.db)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="modelgate", description="Evaluation-gated release pipeline for self-hosted LLMs.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--config", type=Path, default=Path("release.yaml"),
                       help="release.yaml (default: ./release.yaml)")
        return p

    gate = with_config(sub.add_parser("gate", help="run the gate on the pinned candidate"))
    gate.add_argument("--pr", type=int, help="pull request number, recorded with the gate")
    gate.add_argument("--author", help="who authored the change (a release manager cannot approve their own); "
                      "default: $MODELGATE_AUTHOR, then the HEAD commit's author email")
    gate.add_argument("--run-dir", type=Path, help="where the local report goes (default: runs/<gate id>)")
    gate.add_argument("--tracking-uri", help=TRACKING_URI_HELP)
    gate.add_argument("--enforce-eager", action=argparse.BooleanOptionalAction, default=None,
                      help="override serving.enforce_eager (faster start, slower decode)")
    gate.add_argument("--kind", choices=["release", "advisory"], default="release",
                      help="release (default): the full configuration, registered and signed, promotable; "
                      "advisory (pull requests): recorded in the advisory experiment, never registered")
    gate.add_argument("--signing-key-file", type=Path, help="Ed25519 private key (PEM) signing a release gate "
                      "(default: $MODELGATE_SIGNING_KEY; without either the record is unsigned, not promotable)")
    gate.set_defaults(func=cmd_gate)

    keygen = sub.add_parser("keygen", help="new Ed25519 signing key; prints its release.yaml public_keys entry")
    keygen.add_argument("--out", type=Path, required=True, help="private key file to create (mode 0600)")
    keygen.add_argument("--audit", action="store_true",
                        help="the production environment's audit key (signing.audit_keys), not a gate signing key")
    keygen.set_defaults(func=cmd_keygen)

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

    sync = with_config(sub.add_parser("sync", help="record gate reports kept locally while MLflow was unreachable"))
    which = sync.add_mutually_exclusive_group(required=True)
    which.add_argument("--run-dir", type=Path, help="one gate's run directory (holds report.json)")
    which.add_argument("--all", action="store_true", help="every kept report under runs/ beside --config")
    sync.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, then the "
                      "store the gate tried)")
    sync.set_defaults(func=cmd_sync)

    rep = sub.add_parser("report", help="render a gate report")
    rep.add_argument("path", help="a report.json")
    rep.add_argument("--format", choices=["markdown", "json", "html"], default="markdown")
    rep.add_argument("--output", "-o", help="write to this file instead of stdout")
    rep.set_defaults(func=cmd_report)

    gh = sub.add_parser("github", help="GitHub: the gate's PR comment and commit status, run approvers, change "
                        "authors")
    gh_sub = gh.add_subparsers(dest="github_command", required=True, parser_class=_Parser)

    def on_github(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--repo", help="owner/name (default: $GITHUB_REPOSITORY)")
        p.add_argument("--api-url", help="API base, e.g. https://HOST/api/v3 for GitHub Enterprise "
                       "(default: $GITHUB_API_URL, then https://api.github.com)")
        return p

    comment = on_github(gh_sub.add_parser("comment", help="post (or update in place) the gate report on a PR"))
    comment.add_argument("--pr", type=int, required=True, help="pull request number")
    comment.add_argument("--report", type=Path, required=True, help="the gate's report.json")
    comment.add_argument("--details-url", help="link to the full report and plots (e.g. the workflow run)")
    comment.set_defaults(func=cmd_github_comment)
    status = on_github(gh_sub.add_parser("status", help="set the modelgate/gate commit status from a report"))
    status.add_argument("--sha", required=True, help="the commit")
    status.add_argument("--report", type=Path, required=True, help="the gate's report.json")
    status.add_argument("--target-url", help="link shown with the status (e.g. the workflow run)")
    status.set_defaults(func=cmd_github_status)
    approver = on_github(gh_sub.add_parser("approver", help="print who approved a workflow run's environment"))
    approver.add_argument("--run-id", type=int, required=True, help="the workflow run id")
    approver.set_defaults(func=cmd_github_approver)
    author = on_github(gh_sub.add_parser("change-author", help="print who authored a merged change: its pull "
                                         "request's author (the self-approval rule's author)"))
    author.add_argument("--commit", required=True, help="the commit on the main branch (a merge, squash or rebase)")
    author.set_defaults(func=cmd_github_change_author)
    return parser


def _on_sigterm(signum: int, frame: FrameType | None) -> NoReturn:
    raise Interrupted("SIGTERM")


# MLflow's client retries a refused connection for minutes by default; a gate should fail closed in seconds
# (the report is kept locally and `modelgate sync` uploads it later). A user's own settings win.
# Its artifact downloads (promote reads the signed statement) print no progress bar: stderr is one line per error.
MLFLOW_CLIENT_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                          "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for key, value in MLFLOW_CLIENT_DEFAULTS.items():
        os.environ.setdefault(key, value)
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("modelgate: interrupted by SIGINT", file=sys.stderr)
        return EXIT_INTERRUPTED
    except ModelgateError as exc:
        from pipeline.util.secrets import redact

        kind = "error" if isinstance(exc, BadInput) else type(exc).__name__
        print(f"modelgate: {kind}: {redact(exc.one_line())}", file=sys.stderr)
        tail = getattr(exc, "log_tail", "")
        if tail:
            print(f"--- last lines of {getattr(exc, 'log_file', None)} ---\n{redact(tail)}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # a disk or file problem no stage caught: infrastructure, one line, exit 3
        from pipeline.errors import EXIT_INFRA
        from pipeline.util.secrets import redact

        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        print(f"modelgate: InfraError: {redact(type(exc).__name__ + ': ' + str(exc.strerror or exc))}{where}",
              file=sys.stderr)
        return EXIT_INFRA
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
