"""What the fake GitHub remembers, and one handler per REST operation the pipeline uses.

Responses start from the OpenAPI description's own example for the operation (so they carry the fields
GitHub sends and github3 expects), with ids, urls, bodies and timestamps filled in from the stored state.
"""

from __future__ import annotations

import hashlib
import html
import itertools
import json
import re
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any


@dataclass
class Reply:
    status: int
    body: Any = None
    headers: dict[str, str] | None = None


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


NOT_FOUND = Reply(404, {"message": "Not Found", "documentation_url": "https://docs.github.com/rest",
                        "status": "404"})


class State:
    """In-memory repositories, comments, statuses, deployments, run approvals and pull requests."""

    def __init__(self, login: str = "modelgate-bot"):
        self.login = login
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self.repos: set[str] = set()
        self.comments: dict[int, dict] = {}  # id -> comment JSON (+ "_issue": (repo, number))
        self.statuses: list[dict] = []  # + "_repo", "_sha"
        self.deployments: dict[int, dict] = {}  # + "_repo", "_request"
        self.deployment_statuses: dict[int, list[dict]] = {}
        self.approvals: dict[tuple[str, int], list[tuple[str, str, str]]] = {}
        self.pulls: dict[str, list[dict]] = {}  # repo -> pull requests: number, author, merged, commits, merge commit
        self._ids = itertools.count(1001)

    # -- helpers for tests --------------------------------------------------------------------------------

    def add_repo(self, full_name: str) -> None:
        self.repos.add(full_name)

    def set_approvals(self, repo: str, run_id: int, approvals: list[tuple[str, str, str]]) -> None:
        self.approvals[(repo, int(run_id))] = list(approvals)

    def add_pull(self, repo: str, number: int, author: str, commits: list[str], *, merged: bool = True,
                 merge_commit: str | None = None) -> None:
        """A pull request of `repo` by `author` holding `commits` (and, merged, its merge commit)."""
        self.pulls.setdefault(repo, []).append({"number": number, "author": author, "merged": merged,
                                                "commits": [*commits, *([merge_commit] if merge_commit else [])],
                                                "merge_commit": merge_commit})

    def comments_on(self, repo: str, number: int) -> list[dict]:
        return [c for c in self.comments.values() if c["_issue"] == (repo, int(number))]

    def statuses_for(self, repo: str, sha: str) -> list[dict]:
        return [s for s in self.statuses if (s["_repo"], s["_sha"]) == (repo, sha)]

    def deployments_in(self, repo: str) -> list[dict]:
        return [d for d in self.deployments.values() if d["_repo"] == repo]

    # -- dispatch -----------------------------------------------------------------------------------------

    def handle(self, op, base: str, path: str, query: dict[str, list[str]], body: Any) -> Reply:
        handler = getattr(self, "op_" + re.sub(r"\W", "_", op.id), None)
        if handler is None:
            return Reply(501, {"message": f"the fake GitHub does not implement {op.id}"})
        params = op.path_params
        repo = f"{params.get('owner')}/{params.get('repo')}"
        if "owner" in params and repo not in self.repos:
            return NOT_FOUND
        with self.lock:
            return handler(op=op, base=base, url=base + path, repo=repo, params=params, query=query,
                           body=body or {})

    def _example(self, op, status: str, base: str, repo: str) -> dict:
        text = json.dumps(op.example(status)).replace("https://api.github.com", base)
        return json.loads(text.replace("octocat/Hello-World", repo))

    def _user(self, base: str, login: str) -> dict:
        return {"login": login, "id": int(hashlib.sha1(login.encode()).hexdigest()[:6], 16),
                "node_id": "U_" + login, "avatar_url": "", "gravatar_id": "", "url": f"{base}/users/{login}",
                "html_url": f"{base}/{login}", "type": "User", "site_admin": False,
                **{k: f"{base}/users/{login}/{k[:-4]}" for k in (
                    "followers_url", "following_url", "gists_url", "starred_url", "subscriptions_url",
                    "organizations_url", "repos_url", "events_url", "received_events_url")}}

    # -- repository and issues ----------------------------------------------------------------------------

    def op_repos_get(self, op, base, repo, **_):
        data = self._example(op, "200", base, repo)
        owner, name = repo.split("/")
        data.update(name=name, full_name=repo, url=f"{base}/repos/{repo}", owner=self._user(base, owner))
        return Reply(200, data)

    def op_issues_get(self, op, base, repo, params, **_):
        n = int(params["issue_number"])
        data = self._example(op, "200", base, repo)
        data.update(number=n, url=f"{base}/repos/{repo}/issues/{n}", user=self._user(base, "author"),
                    comments=len(self.comments_on(repo, n)), comments_url=f"{base}/repos/{repo}/issues/{n}/comments")
        return Reply(200, data)

    def op_issues_list_comments(self, url, repo, params, query, **_):
        return page(sorted(self.comments_on(repo, int(params["issue_number"])), key=lambda c: c["id"]),
                    url, query)

    def op_issues_create_comment(self, op, base, repo, params, body, **_):
        n, cid = int(params["issue_number"]), next(self._ids)
        data = self._example(op, "201", base, repo)
        data.update(id=cid, url=f"{base}/repos/{repo}/issues/comments/{cid}",
                    html_url=f"{base}/{repo}/pull/{n}#issuecomment-{cid}",
                    issue_url=f"{base}/repos/{repo}/issues/{n}", user=self._user(base, self.login),
                    created_at=now(), updated_at=now(), _issue=(repo, n))
        _set_body(data, body["body"])
        self.comments[cid] = data
        return Reply(201, data)

    def op_issues_update_comment(self, params, body, **_):
        data = self.comments.get(int(params["comment_id"]))
        if data is None:
            return NOT_FOUND
        _set_body(data, body["body"])
        data["updated_at"] = now()
        return Reply(200, data)

    # -- commit statuses ----------------------------------------------------------------------------------

    def op_repos_create_commit_status(self, op, base, repo, params, body, **_):
        data = self._example(op, "201", base, repo)
        sid = next(self._ids)
        data.update(id=sid, url=f"{base}/repos/{repo}/statuses/{params['sha']}", state=body["state"],
                    description=body.get("description"), target_url=body.get("target_url"),
                    context=body.get("context", "default"), creator=self._user(base, self.login),
                    created_at=now(), updated_at=now(), _repo=repo, _sha=params["sha"])
        self.statuses.append(data)
        return Reply(201, data)

    # -- deployments --------------------------------------------------------------------------------------

    def op_repos_list_deployments(self, url, repo, query, **_):
        found = sorted(self.deployments_in(repo), key=lambda d: -d["id"])  # newest first, like GitHub
        for key in ("environment", "ref", "sha", "task"):
            if key in query:
                found = [d for d in found if d[key] == query[key][0]]
        return page(found, url, query)

    def op_repos_create_deployment(self, op, base, repo, body, **_):
        ref = body["ref"]
        sha = ref if re.fullmatch(r"[0-9a-f]{40}", ref) else hashlib.sha1(ref.encode()).hexdigest()
        if "required_contexts" not in body:  # GitHub verifies every context on the commit
            failing = [s for s in self.statuses_for(repo, sha) if s["state"] != "success"]
            if failing:
                return Reply(409, {"message": f"Conflict: Commit status checks failed for {ref}."})
        did = next(self._ids)
        data = self._example(op, "201", base, repo)
        data.update(id=did, url=f"{base}/repos/{repo}/deployments/{did}", ref=ref, sha=sha,
                    statuses_url=f"{base}/repos/{repo}/deployments/{did}/statuses",
                    task=body.get("task", "deploy"), payload=body.get("payload", ""),
                    environment=body.get("environment", "production"), description=body.get("description", ""),
                    creator=self._user(base, self.login), created_at=now(), updated_at=now(),
                    _repo=repo, _request=dict(body))
        self.deployments[did] = data
        self.deployment_statuses[did] = []
        return Reply(201, data)

    def op_repos_create_deployment_status(self, op, base, repo, params, body, **_):
        did = int(params["deployment_id"])
        if did not in self.deployments or self.deployments[did]["_repo"] != repo:
            return NOT_FOUND
        sid = next(self._ids)
        data = self._example(op, "201", base, repo)
        log_url = body.get("log_url") or body.get("target_url", "")
        data.update(id=sid, url=f"{base}/repos/{repo}/deployments/{did}/statuses/{sid}", state=body["state"],
                    description=body.get("description", ""), environment_url=body.get("environment_url", ""),
                    log_url=log_url, target_url=log_url, deployment_url=f"{base}/repos/{repo}/deployments/{did}",
                    environment=body.get("environment") or self.deployments[did]["environment"],
                    creator=self._user(base, self.login), created_at=now(), updated_at=now())
        self.deployment_statuses[did].append(data)
        return Reply(201, data)

    def op_repos_list_deployment_statuses(self, url, params, query, **_):
        return page(self.deployment_statuses.get(int(params["deployment_id"]), [])[::-1], url, query)

    # -- actions ------------------------------------------------------------------------------------------

    def op_actions_get_reviews_for_run(self, op, base, repo, params, **_):
        template = self._example(op, "200", base, repo)[0]
        items = []
        for login, state, comment in self.approvals.get((repo, int(params["run_id"])), []):
            items.append({**template, "user": self._user(base, login), "state": state, "comment": comment})
        return Reply(200, items)


    # -- commits and their pull requests ------------------------------------------------------------------

    def op_repos_list_pull_requests_associated_with_commit(self, op, base, url, repo, params, query, **_):
        template = self._example(op, "200", base, repo)[0]
        items = []
        for pr in self.pulls.get(repo, []):
            if not any(c.startswith(params["commit_sha"]) for c in pr["commits"]):
                continue
            n = pr["number"]
            items.append({**template, "id": 5000 + n, "number": n, "user": self._user(base, pr["author"]),
                          "url": f"{base}/repos/{repo}/pulls/{n}", "html_url": f"{base}/{repo}/pull/{n}",
                          "state": "closed" if pr["merged"] else "open",
                          "merged_at": now() if pr["merged"] else None, "closed_at": now() if pr["merged"] else None,
                          "merge_commit_sha": pr["merge_commit"]})
        return page(items, url, query)


def _set_body(data: dict, body: str) -> None:
    data.update(body=body, body_text=body, body_html=f"<p>{html.escape(body)}</p>")


def page(items: list[dict], url: str, query: dict[str, list[str]]) -> Reply:
    """One page of a list, with GitHub's Link header (per_page, page)."""
    per_page = min(int(query.get("per_page", ["30"])[0]), 100)
    number = int(query.get("page", ["1"])[0])
    chunk = items[(number - 1) * per_page: number * per_page]
    headers = {}
    if number * per_page < len(items):
        from urllib.parse import urlencode

        rest = {k: v[0] for k, v in query.items() if k not in ("page", "per_page")}
        following = f"{url}?" + urlencode({**rest, "per_page": per_page, "page": number + 1})
        headers["Link"] = f'<{following}>; rel="next"'
    return Reply(200, chunk, headers)
