"""A team repository for release tests: release.yaml in a real git repo (with a bare remote) naming its release
managers, and gates recorded through the real `run_gate` + `record` path into a real MLflow server, with
stand-in stages (the promotion rules read what a gate recorded; how the stages judged is tested elsewhere)."""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Callable
from pathlib import Path

import yaml

from pipeline.gate.result import StageResult, Status
from tests.support.cli import run_in_process
from tests.support.git import AUTHOR, git
from tests.support.releases import write_release
from tests.support.signing import KEY, SigningKey

MANAGERS = ["alice", "bob@example.com"]

# Called with each new team's release.yaml, e.g. to give it users on an authenticated tracking server
# (tests/support/fixtures.py: release_tracking).
ON_NEW_TEAM: list[Callable[[Path], None]] = []


def revision(n: int) -> str:
    return hashlib.sha1(f"model revision {n}".encode()).hexdigest()


def make_team(root: Path, model: str, *, approvals: int = 1, github: dict | None = None,
              public_keys: list[dict] | None = None) -> Path:
    """A git repository holding release.yaml, with a bare `origin` the version tags are pushed to. release.yaml
    trusts the session's signing key (tests/support/signing.py), or `public_keys` ([]: none)."""
    root.mkdir(parents=True, exist_ok=True)
    remote = root.parent / f"{root.name}-origin.git"
    subprocess.run(["git", "init", "--quiet", "--bare", str(remote)], check=True)
    git(root, "init", "--quiet")
    git(root, "remote", "add", "origin", str(remote))
    config = write_release(
        root, model=model, serving=None,
        candidate={"source": "git", "repo": "hub/model", "revision": revision(1),
                   "files": {"config.json": "a" * 64, "model.safetensors": "b" * 64}},
        promotion={"release_managers": MANAGERS, "approvals_required": approvals, "git_remote": "origin",
                   **({"github": github} if github else {})},
        signing={"public_keys": [KEY.entry()] if public_keys is None else public_keys})
    git(root, "add", "release.yaml")
    git(root, "commit", "--quiet", "-m", "release.yaml")
    for hook in ON_NEW_TEAM:
        hook(config)
    return config


def model_of(config: Path) -> str:
    return yaml.safe_load(config.read_text())["model"]["name"]


def revision_of(config: Path) -> str:
    return yaml.safe_load(config.read_text())["candidate"]["revision"]


def set_candidate(config: Path, n: int) -> None:
    data = yaml.safe_load(config.read_text())
    data["candidate"]["revision"] = revision(n)
    data["candidate"]["files"]["model.safetensors"] = hashlib.sha256(f"weights {n}".encode()).hexdigest()
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    git(config.parent, "commit", "--quiet", "--allow-empty", "-am", f"pin revision {n}")


def _stage(status: Status, metric: float):
    def run(ctx):
        return StageResult("format", status, metrics={"pass_rate": metric},
                           reasons=[] if status == Status.PASSED else [f"stand-in stage {status.value}"])
    return run


def _cases_stage(status: Status, cases: int):
    """A stand-in format stage that judged `cases` prompt cases (cases.jsonl and the per-item results written as
    the real stage writes them): the failing ones are the last when the stage failed."""
    import json

    def run(ctx):
        failing = cases // 2 if status != Status.PASSED else 0
        rows, items = [], {}
        for i in range(cases):
            key, ok = f"support/case_{i:02d}", i < cases - failing
            failures = [] if ok else [{"expectation": "json_schema", "reason": "not valid JSON: Expecting value at "
                                       "line 1 column 1", "path": None}]
            rows.append({"key": key, "suite": "support", "case_id": f"case_{i:02d}", "passed": ok, "critical": False,
                         "failures": failures, "expectations": ["json_schema", "max_chars"],
                         "output": '{"intent": "refund"}' if ok else "Sure! Here is the JSON you asked for",
                         "finish_reason": "stop", "latency_s": 0.25 + i / 100, "completion_tokens": 9})
            items[key] = 1.0 if ok else 0.0
        out = ctx.files.stage("format")
        out.mkdir(parents=True, exist_ok=True)
        (out / "cases.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        ctx.items["format/pass"] = items
        rate = sum(items.values()) / cases
        return StageResult("format", status, metrics={"pass_rate": rate, "cases": cases},
                           reasons=[f"{int(sum(items.values()))}/{cases} cases passed ({rate:.1%})"],
                           artifacts={"cases.jsonl": str(out / "cases.jsonl")})
    return run


def record_gate(config: Path, uri: str, n: int, verdict: Status = Status.PASSED, author: str = AUTHOR,
                cases: int = 0, *, key: SigningKey | None = KEY, kind: str = "release") -> str:
    """Pin revision n, run the gate machinery with one stand-in stage, return the registered version (an advisory
    gate: its run id). A release gate is signed with `key` (None: unsigned)."""
    from pipeline.config.release import load_release
    from pipeline.gate.run import run_gate

    set_candidate(config, n)
    release = load_release(config)
    stage = _cases_stage(verdict, cases) if cases else _stage(verdict, 0.9 if verdict == Status.PASSED else 0.4)
    report = run_gate(release, home=config.parent / ".modelgate", tracking_uri=uri, author=author,
                      stages=(("format", stage),), kind=kind, signer=key.signer() if key else None)
    return report.tracking.run_id if kind == "advisory" else report.tracking.model_version


def modelgate(config: Path, uri: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`modelgate <args> --config <config>` in this process against the tracking server `uri`."""
    return run_in_process(*args, "--config", str(config),
                          env={"MLFLOW_TRACKING_URI": uri, "MODELGATE_ACTOR": None, **env})


def approve(config: Path, uri: str, version: str, actor: str = "alice", reason: str = "checked the report"):
    return modelgate(config, uri, "approve", "--version", version, "--actor", actor, "--reason", reason)


def promote(config: Path, uri: str, version: str, actor: str = "alice", *extra: str):
    return modelgate(config, uri, "promote", "--version", version, "--actor", actor, *extra)


def released(config: Path, uri: str, n: int) -> str:
    """Gate pin `n` (passed), approve it and promote it: the version now in production."""
    version = record_gate(config, uri, n)
    assert approve(config, uri, version).returncode == 0
    proc = promote(config, uri, version)
    assert proc.returncode == 0, proc.stderr
    return version


def alias(uri: str, model: str, name: str) -> str | None:
    """The version an alias points at; None only when the alias is not set (any other MLflow error is raised)."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        return MlflowClient(tracking_uri=uri).get_model_version_by_alias(model, name).version
    except MlflowException as exc:
        if "not found" in str(exc):
            return None
        raise
