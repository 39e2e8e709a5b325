"""The GitHub integration against the fake GitHub (tests/support/ghfake), which checks every request against GitHub's
OpenAPI description; the `github_fake` fixture fails a test whose calls broke it."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import httpx
import pytest

from pipeline import cli
from pipeline.errors import BadInput, GitHubError
from pipeline.integrations import github
from pipeline.integrations.github_retry import Retry
from tests.support import cli as modelgate_cli
from tests.support.ghfake.fixtures import FAKE_REPO
from tests.support.paths import REPO

pytestmark = pytest.mark.integration

SHA = "0123456789abcdef0123456789abcdef01234567"
FAST = Retry(attempts=3, base_delay_s=0.01, max_wait_s=2.0)


def make_client(fake, api_url=None, token=None, retry=FAST, timeout_s=0.5, repo=FAKE_REPO):
    return github.client(repo, api_url or fake.url, token=fake.token if token is None else token, retry=retry,
                         timeout_s=timeout_s)


def write_report(tmp_path: Path, verdict: str = "passed", reasons=("evals: passed",)) -> Path:
    report = {"schema_version": 1, "gate_id": "g1", "model_name": "support-bot", "verdict": verdict,
              "exit_code": 0, "reasons": list(reasons), "served_name": "support-bot@0123456",
              "candidate": {"source": "git", "repo": "hub/model", "revision": SHA, "uri": "git:hub/model@" + SHA},
              "stages": [{"name": "evals", "status": "passed", "duration_s": 1.5, "reasons": [], "details": {},
                          "metrics": {"accuracy": 0.91}}],
              "run_dir": str(tmp_path), "tracking": {"run_id": "abc123", "experiment": "support-bot"}}
    path = tmp_path / f"report-{verdict}.json"
    path.write_text(json.dumps(report))
    return path


# -- the calls ------------------------------------------------------------------------------------------


def test_comment_is_created_once_then_edited_in_place(github_fake):
    gh = make_client(github_fake)
    first = gh.upsert_comment(12, "verdict: passed", github.COMMENT_MARKER)
    second = gh.upsert_comment(12, "verdict: rejected", github.COMMENT_MARKER)
    comments = github_fake.state.comments_on(FAKE_REPO, 12)
    assert first == second and len(comments) == 1
    assert comments[0]["body"] == f"{github.COMMENT_MARKER}\nverdict: rejected"
    gh.upsert_comment(12, "verdict: rejected", github.COMMENT_MARKER)  # unchanged: no edit at all
    assert [r.method for r in github_fake.requests].count("PATCH") == 1


def test_comment_marker_is_found_beyond_the_first_page(github_fake):
    gh = make_client(github_fake)
    gh.upsert_comment(5, "ours", github.COMMENT_MARKER)
    state = github_fake.state
    ours = state.comments_on(FAKE_REPO, 5)[0]
    ours_id = ours["id"]
    for i in range(130):  # other people's comments after ours: ours is still on page 1 ...
        state.comments[ours_id + 1 + i] = {**ours, "id": ours_id + 1 + i, "body": f"lgtm {i}"}
    del state.comments[ours_id]  # ... unless it is the newest: move it past the first 100
    moved = {k: v.replace(str(ours_id), str(ours_id + 500)) if k.endswith("url") else v for k, v in ours.items()}
    state.comments[ours_id + 500] = {**moved, "id": ours_id + 500}
    url = gh.upsert_comment(5, "ours, updated", github.COMMENT_MARKER)
    assert len(state.comments_on(FAKE_REPO, 5)) == 131
    assert state.comments[ours_id + 500]["body"].endswith("ours, updated") and url == moved["html_url"]
    assert any(r.query.get("page") == ["2"] for r in github_fake.requests)


@pytest.mark.parametrize("verdict, state", [("passed", "success"), ("rejected", "failure"),
                                            ("inconclusive", "pending"), ("error", "error"),
                                            ("interrupted", "error")])
def test_status_from_each_verdict(github_fake, tmp_path, monkeypatch, capsys, verdict, state):
    monkeypatch.setenv("GITHUB_TOKEN", github_fake.token)
    monkeypatch.setenv("GITHUB_REPOSITORY", FAKE_REPO)
    monkeypatch.setenv("GITHUB_API_URL", github_fake.url)
    report = write_report(tmp_path, verdict, reasons=["compare: " + "x" * 300])
    code = cli.main(["github", "status", "--sha", SHA, "--report", str(report),
                     "--target-url", "https://ci.example/run/1"])
    assert code == 0, capsys.readouterr().err
    [status] = github_fake.state.statuses_for(FAKE_REPO, SHA)
    assert (status["state"], status["context"]) == (state, "modelgate/gate")
    assert len(status["description"]) == 140 and status["description"].startswith(verdict)
    assert status["target_url"] == "https://ci.example/run/1"


def test_status_of_a_verdict_no_gate_produces_is_bad_input(github_fake, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GITHUB_TOKEN", github_fake.token)
    monkeypatch.setenv("GITHUB_API_URL", github_fake.url)
    report = write_report(tmp_path, "failed")
    assert cli.main(["github", "status", "--repo", FAKE_REPO, "--sha", SHA, "--report", str(report)]) == 2
    assert "not a gate report" in capsys.readouterr().err
    assert github_fake.state.statuses_for(FAKE_REPO, SHA) == []


def test_deployment_is_idempotent_by_promotion_id(github_fake):
    gh = make_client(github_fake)
    payload = {"promotion_id": "p-1", "model": "support-bot", "version": "3"}
    first = gh.ensure_deployment(SHA, "production", payload, "promote support-bot v3")
    again = gh.ensure_deployment(SHA, "production", payload, "promote support-bot v3")
    other = gh.ensure_deployment(SHA, "production", {**payload, "promotion_id": "p-2"}, "promote again")
    staging = gh.ensure_deployment(SHA, "staging", payload, "same id, other environment")
    assert first.created and not again.created and again.id == first.id
    assert len({first.id, other.id, staging.id}) == 3
    assert first.payload["promotion_id"] == "p-1"
    sent = github_fake.state.deployments[first.id]["_request"]
    assert sent["auto_merge"] is False and sent["required_contexts"] == []
    gh.deployment_status(first, "success", "v3 is production", environment_url="https://bot.example",
                         log_url="https://ci.example/run/7")
    [status] = github_fake.state.deployment_statuses[first.id]
    assert (status["state"], status["environment_url"], status["log_url"]) == \
        ("success", "https://bot.example", "https://ci.example/run/7")


def test_environment_approvals(github_fake):
    github_fake.state.set_approvals(FAKE_REPO, 4242, [("alice", "approved", "ship it"), ("bob", "rejected", "")])
    approvals = make_client(github_fake).environment_approvals(4242)
    assert [(a.login, a.state, a.comment) for a in approvals] == [("alice", "approved", "ship it"),
                                                                  ("bob", "rejected", "")]


MERGE = "fedcba9876543210fedcba9876543210fedcba98"  # a merge commit on main: its git author is whoever merged


def test_change_author_is_the_merged_pull_requests_author_not_the_merger(github_fake):
    github_fake.state.add_pull(FAKE_REPO, 7, "erin", [SHA], merge_commit=MERGE)
    gh = make_client(github_fake)
    assert gh.change_author(MERGE) == "erin"  # the merge commit: the PR's author, whoever pressed merge
    assert gh.change_author(SHA.upper()) == "erin"  # a commit of the PR (a rebase merge), any case
    [request, *_] = github_fake.requests
    assert request.path == f"/repos/{FAKE_REPO}/commits/{MERGE}/pulls"
    assert request.operation == "repos/list-pull-requests-associated-with-commit"


def test_change_author_prefers_the_pull_request_merged_as_that_commit(github_fake):
    """A commit in two merged pull requests (one into a feature branch, one into main): the one whose merge commit
    it is names the author."""
    github_fake.state.add_pull(FAKE_REPO, 3, "mallory", [MERGE])
    github_fake.state.add_pull(FAKE_REPO, 4, "erin", [SHA], merge_commit=MERGE)
    assert make_client(github_fake).change_author(MERGE) == "erin"


def test_change_author_of_a_commit_in_no_merged_pull_request_is_none(github_fake):
    github_fake.state.add_pull(FAKE_REPO, 9, "erin", [SHA], merged=False)  # open: not merged
    gh = make_client(github_fake)
    assert gh.change_author(SHA) is None
    assert gh.change_author(MERGE) is None  # in no pull request at all
    with pytest.raises(BadInput, match="7 to 40 hex digits"):
        gh.change_author("main")


def test_github_enterprise_base_url(github_fake):
    gh = make_client(github_fake, api_url=github_fake.ghe_url)  # http://127.0.0.1:PORT/api/v3
    gh.upsert_comment(3, "on GHE", github.COMMENT_MARKER)
    gh.upsert_comment(3, "on GHE, again", github.COMMENT_MARKER)
    gh.set_status(SHA, "success", description="ok")
    dep = gh.ensure_deployment(SHA, "production", {"promotion_id": "ghe-1"}, "promote")
    gh.deployment_status(dep, "success", "done")
    gh.environment_approvals(1)
    assert len(github_fake.state.comments_on(FAKE_REPO, 3)) == 1
    assert github_fake.requests and all(r.path.startswith("/api/v3/") for r in github_fake.requests)


def test_every_pipeline_call_matches_the_openapi_description(github_fake):
    for url in (github_fake.url, github_fake.ghe_url):
        github_fake.reset()
        github_fake.state.add_repo(FAKE_REPO)
        gh = make_client(github_fake, api_url=url)
        gh.upsert_comment(1, "a", github.COMMENT_MARKER)
        gh.upsert_comment(1, "b", github.COMMENT_MARKER)
        for state in github.STATUS_STATES:
            gh.set_status(SHA, state, description="d", target_url="https://ci.example/1")
        gh.set_status(SHA, "success")  # no description, no target url
        dep = gh.ensure_deployment("main", "production", {"promotion_id": "x", "version": 1}, "d")
        gh.ensure_deployment("main", "production", {"promotion_id": "x", "version": 1}, "d")
        for state in github.DEPLOYMENT_STATES:
            gh.deployment_status(dep, state, "d", environment_url="https://e.example", log_url="https://l.example")
        gh.environment_approvals(99)
        gh.change_author(SHA)
        assert github_fake.violations == []
        assert {r.operation for r in github_fake.requests} == {
            "repos/get", "issues/get", "issues/list-comments", "issues/create-comment", "issues/update-comment",
            "repos/create-commit-status", "repos/list-deployments", "repos/create-deployment",
            "repos/create-deployment-status", "actions/get-reviews-for-run",
            "repos/list-pull-requests-associated-with-commit"}


# -- the fake really checks ----------------------------------------------------------------------------


@pytest.mark.parametrize("method, path, body, expected, why", [
    ("POST", f"/repos/{FAKE_REPO}/statuses/{SHA}", {"state": "great"}, 422, "'great' is not one of"),
    ("POST", f"/repos/{FAKE_REPO}/deployments", {"environment": "production"}, 422, "'ref' is a required"),
    ("POST", f"/repos/{FAKE_REPO}/deployments", {"ref": "main", "auto_merge": "no"}, 422, "is not of type"),
    ("POST", f"/repos/{FAKE_REPO}/issues/1/comments", {}, 422, "'body' is a required"),
    ("GET", f"/repos/{FAKE_REPO}/deployments?per_page=lots", None, 422, "per_page"),
    ("GET", f"/repos/{FAKE_REPO}/deployments?colour=blue", None, 422, "unknown query parameter 'colour'"),
    ("GET", f"/repos/{FAKE_REPO}/actions/runs/abc/approvals", None, 422, "run_id"),
    ("PUT", f"/repos/{FAKE_REPO}/statuses/{SHA}", {"state": "success"}, 404, "has no PUT operation"),
    ("GET", f"/repos/{FAKE_REPO}/no-such-thing", None, 404, "no such path"),
    ("GET", "/api/v3/repos/acme/support-bot/issues/1/comments?bogus=1", None, 422, "unknown query parameter"),
])
def test_the_fake_rejects_requests_the_description_forbids(github_fake, method, path, body, expected, why):
    resp = httpx.request(method, github_fake.url + path, json=body,
                         headers={"Authorization": f"token {github_fake.token}"}, timeout=5)
    assert resp.status_code == expected
    assert len(github_fake.violations) == 1 and why in github_fake.violations[0]
    assert resp.json()["message"] == github_fake.violations[0]
    github_fake.violations.clear()  # expected here; the fixture fails any test that leaves one


# -- failures, retries, and the token ---------------------------------------------------------------------


def test_server_errors_are_retried(github_fake):
    github_fake.fail_next(2, "error", path=r"/statuses/")
    make_client(github_fake).set_status(SHA, "pending", description="running")
    assert [r.status for r in github_fake.requests if "/statuses/" in r.path] == [500, 500, 201]


def test_server_errors_that_persist_end_in_a_github_error(github_fake):
    github_fake.fail_next(10, "error", status=502)
    with pytest.raises(GitHubError) as err:
        make_client(github_fake).set_status(SHA, "pending")
    assert err.value.attempts == 3 and err.value.status == 502 and err.value.exit_code == 3
    assert str(err.value) == (f"GitHub set_status(modelgate/gate=pending) on {FAKE_REPO}: 502 Server Error "
                              "(after 3 attempts)")


def test_rate_limit_waits_for_the_reset_then_succeeds(github_fake):
    github_fake.fail_next(1, "ratelimit", reset_in=0.3)  # x-ratelimit-reset: 0.3 to 1.3 s away
    start = time.monotonic()
    url = make_client(github_fake).upsert_comment(9, "hi", github.COMMENT_MARKER)
    waited = time.monotonic() - start
    assert url and github_fake.requests[0].status == 403
    assert 0.25 < waited < 3  # as GitHub told, not the 0.01 s backoff


def test_rate_limit_that_persists_is_a_clear_error(github_fake):
    github_fake.fail_next(10, "ratelimit", reset_in=3600)  # an hour away: every wait is capped
    retry = Retry(attempts=3, base_delay_s=0.01, max_wait_s=0.05)
    with pytest.raises(GitHubError, match=r"403 API rate limit exceeded .*\(rate limited\) \(after 3 attempts\)"):
        make_client(github_fake, retry=retry).set_status(SHA, "success")
    assert len(github_fake.requests) == 3


def test_secondary_rate_limit_429_honours_retry_after(github_fake):
    github_fake.fail_next(1, "secondary", retry_after=0)
    make_client(github_fake).environment_approvals(1)
    assert [r.status for r in github_fake.requests] == [429, 200]


def test_timeouts_are_retried_a_bounded_number_of_times(github_fake):
    github_fake.hang_s = 1.0
    try:
        github_fake.fail_next(10, "hang")
        start = time.monotonic()
        with pytest.raises(GitHubError, match=r"no answer \(ReadTimeout\) \(after 2 attempts\)") as err:
            make_client(github_fake, retry=Retry(2, 0.01, 0.1), timeout_s=0.3).environment_approvals(7)
        assert err.value.status is None and time.monotonic() - start < 2
    finally:
        github_fake.hang_s = 3.0
    assert len(github_fake.requests) == 2


def test_a_deployment_whose_answer_was_lost_is_found_not_duplicated(github_fake):
    github_fake.hang_s = 1.0
    try:  # GitHub creates the deployment but the answer never arrives: the retry must find it
        github_fake.fail_next(1, "late", path=r"/deployments$", method="POST")
        dep = make_client(github_fake, timeout_s=0.3).ensure_deployment(SHA, "production", {"promotion_id": "p9"})
        github_fake.fail_next(1, "late", path=r"/comments$", method="POST")  # the same for the PR comment
        make_client(github_fake, timeout_s=0.3).upsert_comment(4, "once")
    finally:
        github_fake.hang_s = 3.0
    assert len(github_fake.state.deployments_in(FAKE_REPO)) == 1 and not dep.created
    assert len(github_fake.state.comments_on(FAKE_REPO, 4)) == 1


def test_forbidden_without_rate_limit_is_not_retried(github_fake):
    github_fake.fail_next(5, "error", status=403)
    with pytest.raises(GitHubError, match="403 Server Error: the token lacks a permission .*not retried"):
        make_client(github_fake).set_status(SHA, "success")
    assert len(github_fake.requests) == 1


def test_bad_credentials_are_not_retried(github_fake):
    with pytest.raises(GitHubError, match="401 Bad credentials: the token is invalid") as err:
        make_client(github_fake, token="ghp_wrongTOKENwrongTOKEN123").upsert_comment(1, "x")
    assert err.value.attempts == 1 and len(github_fake.requests) == 1


def test_unknown_repository_is_404_without_retry(github_fake):
    with pytest.raises(GitHubError, match="404 Not Found: not found, or the token cannot see it"):
        make_client(github_fake, repo="acme/nope").set_status(SHA, "success")
    assert len(github_fake.requests) == 1


def test_bad_arguments_fail_before_any_request(github_fake):
    gh = make_client(github_fake)
    with pytest.raises(BadInput):
        gh.set_status(SHA, "great")
    with pytest.raises(BadInput, match="promotion_id"):
        gh.ensure_deployment(SHA, "production", {}, "d")
    with pytest.raises(BadInput, match="owner/name"):
        make_client(github_fake, repo="just-a-name")
    assert github_fake.requests == []


def test_the_token_never_appears_in_errors_or_logs(github_fake, monkeypatch, caplog):
    token = "ghp_SECRETsecretSECRET0123456789"
    monkeypatch.setattr(github_fake, "token", token)
    caplog.set_level(logging.DEBUG)
    messages = []
    for kind, n in (("error", 10), ("ratelimit", 10)):
        github_fake.fail_next(n, kind, reset_in=0)
        with pytest.raises(GitHubError) as err:
            make_client(github_fake, token=token, retry=Retry(2, 0.01, 0.05)).upsert_comment(1, "x")
        messages.append(str(err.value))
        github_fake.faults.clear()
    with pytest.raises(GitHubError) as err:
        make_client(github_fake, token=token + "x").set_status(SHA, "success")
    messages.append(str(err.value))
    assert repr(make_client(github_fake, token=token)).count("ghp_") == 0
    assert token not in "\n".join(messages) and token not in caplog.text
    assert "retry 1/1" in caplog.text  # the retries were logged, without the token


# -- the command line, as a subprocess --------------------------------------------------------------------


def run_cli(*args, env=None):
    """`modelgate github <args>` as a child with no GitHub variables but those in `env`."""
    unset = {key: None for key in ("GITHUB_TOKEN", "GITHUB_REPOSITORY", "GITHUB_API_URL")}
    return modelgate_cli.run_subprocess("github", *args, env={**unset, **(env or {})}, cwd=REPO, timeout=60)


def test_cli_comment_posts_then_updates(github_fake, tmp_path):
    env = {"GITHUB_TOKEN": github_fake.token, "GITHUB_REPOSITORY": FAKE_REPO}
    report = write_report(tmp_path, "passed")
    first = run_cli("comment", "--pr", "21", "--report", str(report), "--api-url", github_fake.url, env=env)
    assert first.returncode == 0, first.stderr
    rejected = write_report(tmp_path, "rejected", ["evals: accuracy fell"])
    second = run_cli("comment", "--pr", "21", "--report", str(rejected), "--api-url", github_fake.url, env=env)
    assert second.returncode == 0, second.stderr
    [comment] = github_fake.state.comments_on(FAKE_REPO, 21)
    assert first.stdout.strip() == second.stdout.strip() == comment["html_url"]
    assert comment["body"].startswith(github.COMMENT_MARKER) and "modelgate: REJECTED: support" in comment["body"]
    assert "accuracy fell" in comment["body"]


def test_cli_approver_prints_the_approving_login(github_fake):
    github_fake.state.set_approvals(FAKE_REPO, 77, [("carol", "approved", "ok"), ("dave", "rejected", "no")])
    env = {"GITHUB_TOKEN": github_fake.token, "GITHUB_REPOSITORY": FAKE_REPO, "GITHUB_API_URL": github_fake.url}
    done = run_cli("approver", "--run-id", "77", env=env)
    assert (done.returncode, done.stdout) == (0, "carol\n"), done.stderr
    none = run_cli("approver", "--run-id", "78", env=env)
    assert none.returncode == 5 and "no environment approval" in none.stderr


def test_cli_change_author_prints_the_pull_requests_author_exit_2_without_one_exit_3_when_github_fails(github_fake):
    github_fake.state.add_pull(FAKE_REPO, 12, "erin", [SHA], merge_commit=MERGE)
    env = {"GITHUB_TOKEN": github_fake.token, "GITHUB_REPOSITORY": FAKE_REPO, "GITHUB_API_URL": github_fake.url,
           "MODELGATE_GITHUB_RETRY": "2,0.01,0.05"}
    done = run_cli("change-author", "--commit", MERGE, env=env)
    assert (done.returncode, done.stdout) == (0, "erin\n"), done.stderr
    other = "1111111111111111111111111111111111111111"
    none = run_cli("change-author", "--commit", other, env=env)
    assert (none.returncode, none.stdout) == (2, ""), none.stderr
    assert none.stderr.strip() == (f"modelgate: error: commit {other} belongs to no merged pull request of "
                                   f"{FAKE_REPO}: its author cannot be taken from GitHub")
    github_fake.fail_next(20, "error")
    failed = run_cli("change-author", "--commit", MERGE, env=env)
    assert (failed.returncode, failed.stdout) == (3, ""), failed.stderr
    assert failed.stderr.splitlines()[-1] == (f"modelgate: GitHubError: GitHub change_author({MERGE[:12]}) on "
                                              f"{FAKE_REPO}: 500 Server Error (after 2 attempts)")
    assert github_fake.token not in done.stderr + none.stderr + failed.stderr


def test_cli_missing_token_or_repo_is_bad_input(github_fake, tmp_path):
    report = str(write_report(tmp_path))
    no_token = run_cli("comment", "--repo", FAKE_REPO, "--pr", "1", "--report", report,
                       "--api-url", github_fake.url, env={})
    assert no_token.returncode == 2 and no_token.stderr.strip() == \
        "modelgate: error: GITHUB_TOKEN is not set: GitHub calls need a token"
    no_repo = run_cli("status", "--sha", SHA, "--report", report, env={"GITHUB_TOKEN": github_fake.token})
    assert no_repo.returncode == 2 and "GITHUB_REPOSITORY" in no_repo.stderr
    assert github_fake.requests == []


def test_cli_github_failure_is_exit_3_without_the_token(github_fake, tmp_path):
    github_fake.fail_next(20, "error")
    env = {"GITHUB_TOKEN": github_fake.token, "GITHUB_REPOSITORY": FAKE_REPO, "GITHUB_API_URL": github_fake.url,
           "MODELGATE_GITHUB_RETRY": "2,0.01,0.05"}
    done = run_cli("status", "--sha", SHA, "--report", str(write_report(tmp_path)), env=env)
    assert done.returncode == 3, done.stderr
    retry_line, error_line = done.stderr.splitlines()
    assert retry_line.endswith("500 Server Error; retry 1/1 in 0.01s")
    assert error_line == (f"modelgate: GitHubError: GitHub set_status(modelgate/gate=success) on {FAKE_REPO}: "
                          "500 Server Error (after 2 attempts)")
    assert github_fake.token not in done.stderr + done.stdout
