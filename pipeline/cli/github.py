"""`modelgate github ...`: the gate's PR comment and commit status, a workflow run's approvers, a change's author."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from pipeline.cli.common import Parser
from pipeline.cli.report import gate_report
from pipeline.errors import BadInput, Refused

if TYPE_CHECKING:
    from pipeline.integrations.github import GitHubClient


def _github(args: argparse.Namespace) -> tuple[ModuleType, GitHubClient]:
    """A GitHub client for --repo/--api-url (defaults: $GITHUB_REPOSITORY, $GITHUB_API_URL); token: GITHUB_TOKEN."""
    from pipeline.integrations import github

    repo = args.repo or os.environ.get("GITHUB_REPOSITORY")
    if not repo:
        raise BadInput("no repository: pass --repo owner/name or set GITHUB_REPOSITORY")
    return github, github.client(repo, args.api_url)


def cmd_github_comment(args: argparse.Namespace) -> int:
    from pipeline.report import markdown as md

    report, markdown = gate_report(args.report)
    if args.details_url:
        markdown = md.render(report, details_url=args.details_url)
    github, client = _github(args)
    print(client.upsert_comment(args.pr, markdown, github.COMMENT_MARKER))
    return 0


def cmd_github_status(args: argparse.Namespace) -> int:
    report, _ = gate_report(args.report)
    github, client = _github(args)
    state = github.STATE_FOR_VERDICT[report.verdict]  # every verdict has one (a loaded report has a real verdict)
    reasons = report.reasons
    description = f"{report.verdict}" + (f": {reasons[0]}" if reasons else "")
    client.set_status(args.sha, state, github.STATUS_CONTEXT, description, args.target_url)
    print(f"{github.STATUS_CONTEXT}: {state} on {args.sha}")
    return 0


def cmd_github_approver(args: argparse.Namespace) -> int:
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



def register(sub: Any) -> None:
    """The parsers of `github comment|status|approver|change-author` (`sub`: the top-level subparsers)."""
    gh = sub.add_parser("github", help="GitHub: the gate's PR comment and commit status, run approvers, change "
                        "authors")
    gh_sub = gh.add_subparsers(dest="github_command", required=True, parser_class=Parser)

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
