"""GitHub, through github3.py: the gate's PR comment and commit status, promotion deployments, who approved a
workflow run's environment, and who authored a merged change (its pull request's author, not the commit's).

    gh = client("owner/name")                      # token: GITHUB_TOKEN; api_url: GitHub or Enterprise
    gh.upsert_comment(12, markdown, COMMENT_MARKER) # one comment per PR, edited in place on later runs
    gh.set_status(sha, "success", description="...")
    dep = gh.ensure_deployment(sha, "production", {"promotion_id": ...}, "promote v3")
    gh.deployment_status(dep, "success", "v3 is production", environment_url=...)
    gh.environment_approvals(run_id)               # [Approval(login, state, comment)]
    gh.change_author(sha)                          # the merged pull request's author, or None

Each method is one idempotent operation, retried as a whole (github_retry.py): a comment or deployment
whose POST timed out after GitHub took it is found on the next attempt instead of being created twice.
github3's exceptions become `GitHubError` here; nothing above this module imports github3.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypedDict, TypeVar, Unpack

from pipeline.core.verdict import Verdict
from pipeline.errors import BadInput
from pipeline.integrations.github_retry import Retry, call

if TYPE_CHECKING:
    import github3
    from github3.repos.deployment import Deployment as GhDeployment
    from github3.repos.repo import Repository

T = TypeVar("T")

DEFAULT_API_URL = "https://api.github.com"
COMMENT_MARKER = "<!-- modelgate:gate -->"
STATUS_CONTEXT = "modelgate/gate"
STATUS_STATES = ("success", "failure", "pending", "error")
DEPLOYMENT_STATES = ("error", "failure", "inactive", "in_progress", "queued", "pending", "success")
# gate verdict -> commit status state
STATE_FOR_VERDICT: dict[Verdict, str] = {Verdict.PASSED: "success", Verdict.REJECTED: "failure",
                                         Verdict.INCONCLUSIVE: "pending", Verdict.ERROR: "error",
                                         Verdict.INTERRUPTED: "error"}
DESCRIPTION_MAX = 140  # GitHub's limit for commit and deployment status descriptions
COMMENT_MAX = 65536  # GitHub's limit for a comment body
API_VERSION = "2022-11-28"


def _cut(text: str, limit: int) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True)
class Deployment:
    id: int
    url: str  # the API URL
    statuses_url: str
    environment: str
    ref: str
    sha: str
    payload: dict[str, Any] = field(default_factory=dict)
    created: bool = True  # False when an earlier run's deployment (same promotion_id) was found


@dataclass(frozen=True)
class Approval:
    login: str
    state: str  # approved | rejected | pending
    comment: str


def _session(api_url: str, token: str, timeout_s: float) -> github3.GitHub:
    import github3

    api = api_url.rstrip("/")
    if api.endswith("/api/v3"):  # GitHub Enterprise Server: github3 appends /api/v3 to the host URL itself
        gh = github3.GitHubEnterprise(api[: -len("/api/v3")], token=token)
    else:
        gh = github3.GitHub(token=token)
        gh.session.base_url = api
    gh.session.headers["X-GitHub-Api-Version"] = API_VERSION
    gh.session.default_connect_timeout = gh.session.default_read_timeout = timeout_s
    return gh


class GitHubClient:
    def __init__(self, repository: str, api_url: str = DEFAULT_API_URL, token: str | None = None, *,
                 retry: Retry | None = None, timeout_s: float = 20.0):
        owner, _, name = (repository or "").partition("/")
        if not owner or not name or "/" in name:
            raise BadInput(f"GitHub repository must be owner/name, got {repository!r}")
        token = token if token is not None else os.environ.get("GITHUB_TOKEN", "")
        if not token:
            raise BadInput("GITHUB_TOKEN is not set: GitHub calls need a token")
        self.repository, self.owner, self.name = repository, owner, name
        self.api_url = api_url or DEFAULT_API_URL
        self.retry = retry or Retry.from_env()
        self._token = token
        self._gh = _session(self.api_url, token, timeout_s)
        self._repo: Repository | None = None

    def __repr__(self) -> str:  # never the token
        return f"<GitHubClient {self.repository} at {self.api_url}>"

    def _call(self, name: str, fn: Callable[[], T]) -> T:
        return call(f"{name} on {self.repository}", fn, self.retry, secret=self._token)

    def _repository(self) -> Repository:
        if self._repo is None:
            self._repo = self._gh.repository(self.owner, self.name)
        return self._repo

    # -- pull request comment -------------------------------------------------------------------------

    def upsert_comment(self, pr_number: int, body: str, marker: str = COMMENT_MARKER) -> str:
        """Post one comment on the PR, or edit the earlier one carrying `marker`. Returns its URL."""
        if int(pr_number) <= 0:
            raise BadInput(f"a pull request number is positive, got {pr_number}")
        if marker not in body:
            body = f"{marker}\n{body}"
        if len(body) > COMMENT_MAX:
            body = body[: COMMENT_MAX - 40] + "\n\n…(cut at GitHub's comment limit)\n"

        def run() -> str:
            issue = self._repository().issue(int(pr_number))
            for comment in issue.comments():
                if marker in (comment.body or ""):
                    if comment.body != body:
                        comment.edit(body)
                    return comment.html_url
            return issue.create_comment(body).html_url

        return self._call(f"upsert_comment(pr {pr_number})", run)

    # -- commit status --------------------------------------------------------------------------------

    def set_status(self, sha: str, state: str, context: str = STATUS_CONTEXT, description: str = "",
                   target_url: str | None = None) -> str:
        """Set the commit status `context` on `sha`. Returns the status's API URL."""
        if state not in STATUS_STATES:
            raise BadInput(f"commit status state must be one of {', '.join(STATUS_STATES)}, got {state!r}")

        def run() -> str:
            status = self._repository().create_status(sha, state, target_url=target_url, context=context,
                                                      description=_cut(description, DESCRIPTION_MAX))
            return status.url

        return self._call(f"set_status({context}={state})", run)

    # -- deployments ----------------------------------------------------------------------------------

    def ensure_deployment(self, ref: str, environment: str, payload: dict[str, Any],
                          description: str = "") -> Deployment:
        """The deployment of `ref` to `environment` for payload["promotion_id"]: found, or created once."""
        promotion_id = (payload or {}).get("promotion_id")
        if not promotion_id:
            raise BadInput("a deployment payload needs a promotion_id (it makes re-runs idempotent)")
        if not ref:
            raise BadInput("a deployment needs a ref (commit, branch or tag)")

        def run() -> Deployment:
            from github3.repos.deployment import Deployment as GhDeployment

            repo = self._repository()
            url = repo._build_url("deployments", base_url=repo._api)
            for found in repo._iter(-1, url, GhDeployment, params={"environment": environment}):
                if _payload(found.payload).get("promotion_id") == promotion_id:
                    return _deployment(found, created=False)
            made = repo.create_deployment(ref, required_contexts=[], payload=payload, auto_merge=False,
                                          description=description, environment=environment)
            return _deployment(made, created=True)

        return self._call(f"ensure_deployment({environment})", run)

    def deployment_status(self, deployment: Deployment, state: str, description: str = "", *,
                          environment_url: str | None = None, log_url: str | None = None) -> str:
        """Add a status to the deployment. Returns the status's API URL."""
        if state not in DEPLOYMENT_STATES:
            raise BadInput(f"deployment state must be one of {', '.join(DEPLOYMENT_STATES)}, got {state!r}")
        data = {"state": state, "description": _cut(description, DESCRIPTION_MAX)}
        data.update({k: v for k, v in (("environment_url", environment_url), ("log_url", log_url)) if v})

        def run() -> str:
            gh = self._gh
            return gh._json(gh._post(deployment.statuses_url, data=data), 201)["url"]

        return self._call(f"deployment_status({deployment.id}={state})", run)

    # -- environment approvals ------------------------------------------------------------------------

    def environment_approvals(self, run_id: int) -> list[Approval]:
        """Who approved (or rejected) the run's pending environment deployments, oldest first."""
        def run() -> list[Approval]:
            gh = self._gh
            url = gh._build_url("repos", self.owner, self.name, "actions", "runs", str(int(run_id)), "approvals")
            items = gh._json(gh._get(url), 200) or []
            return [Approval(i["user"]["login"], i["state"], i.get("comment") or "") for i in items]

        return self._call(f"environment_approvals(run {run_id})", run)


    # -- the change's author ---------------------------------------------------------------------------

    def change_author(self, commit: str) -> str | None:
        """The login of whoever opened the merged pull request that brought `commit` in (GitHub's pull requests
        associated with a commit); None when no merged pull request contains it. A merge or squash commit is its
        pull request's `merge_commit_sha`: that one is preferred, else the first merged one GitHub lists."""
        commit = (commit or "").strip().lower()
        if not COMMIT.fullmatch(commit):
            raise BadInput(f"a commit is 7 to 40 hex digits, got {commit!r}", path="--commit")

        def run() -> str | None:
            gh = self._gh
            url = gh._build_url("repos", self.owner, self.name, "commits", commit, "pulls")
            pulls = gh._json(gh._get(url, params={"per_page": 100}), 200) or []
            return merged_author(pulls, commit)

        return self._call(f"change_author({commit[:12]})", run)


COMMIT = re.compile(r"[0-9a-f]{7,40}")


def merged_author(pulls: list[dict[str, Any]], commit: str) -> str | None:
    """The author of the merged pull request whose merge commit is `commit`, else of the first merged one."""
    merged = [p for p in pulls if p.get("merged_at") and (p.get("user") or {}).get("login")]
    if not merged:
        return None
    own = [p for p in merged if (p.get("merge_commit_sha") or "").startswith(commit)]
    login: str = (own or merged)[0]["user"]["login"]
    return login


def _payload(value: object) -> dict[str, Any]:
    if isinstance(value, str):
        try:
            value = json.loads(value or "{}")
        except ValueError:
            return {}
    return value if isinstance(value, dict) else {}


def _deployment(dep: GhDeployment, *, created: bool) -> Deployment:
    return Deployment(id=dep.id, url=dep.url, statuses_url=dep.statuses_url, environment=dep.environment,
                      ref=dep.ref, sha=dep.sha, payload=_payload(dep.payload), created=created)


class ClientOptions(TypedDict, total=False):
    """The keyword-only options of GitHubClient that `client` passes on."""

    retry: Retry | None
    timeout_s: float


def client(repository: str, api_url: str | None = None, token: str | None = None,
           **kwargs: Unpack[ClientOptions]) -> GitHubClient:
    """A client for `repository`; api_url defaults to $GITHUB_API_URL, then api.github.com."""
    return GitHubClient(repository, api_url or os.environ.get("GITHUB_API_URL") or DEFAULT_API_URL, token, **kwargs)
