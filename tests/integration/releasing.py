"""A team repository for release tests: release.yaml in a real git repo (with a bare remote), and gates
recorded through the real `run_gate` + `record` path into a real MLflow server, with stand-in stages
(the promotion rules read what a gate recorded; how the stages judged is tested elsewhere)."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import yaml

from pipeline.gate.result import StageResult, Status

MANAGERS = ["alice", "bob@example.com"]
AUTHOR = "dev@example.com"


def git(root: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "dev", "GIT_AUTHOR_EMAIL": AUTHOR,
           "GIT_COMMITTER_NAME": "dev", "GIT_COMMITTER_EMAIL": AUTHOR}
    return subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True, text=True,
                          env=env).stdout.strip()


def revision(n: int) -> str:
    return hashlib.sha1(f"model revision {n}".encode()).hexdigest()


def make_team(root: Path, model: str, *, approvals: int = 1, github: dict | None = None) -> Path:
    """A git repository holding release.yaml, with a bare `origin` the version tags are pushed to."""
    root.mkdir(parents=True, exist_ok=True)
    remote = root.parent / f"{root.name}-origin.git"
    subprocess.run(["git", "init", "--quiet", "--bare", str(remote)], check=True)
    git(root, "init", "--quiet")
    git(root, "remote", "add", "origin", str(remote))
    data = {
        "schema_version": 1,
        "model": {"name": model},
        "candidate": {"source": "git", "repo": "hub/model", "revision": revision(1),
                      "files": {"config.json": "a" * 64, "model.safetensors": "b" * 64}},
        "promotion": {"release_managers": MANAGERS, "approvals_required": approvals, "git_remote": "origin",
                      **({"github": github} if github else {})},
    }
    (root / "release.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    git(root, "add", "release.yaml")
    git(root, "commit", "--quiet", "-m", "release.yaml")
    return root / "release.yaml"


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


def record_gate(config: Path, uri: str, n: int, verdict: Status = Status.PASSED, author: str = AUTHOR) -> str:
    """Pin revision n, run the gate machinery with one stand-in stage, return the registered version."""
    from pipeline.config.release import load_release
    from pipeline.gate.run import run_gate

    set_candidate(config, n)
    release = load_release(config)
    report = run_gate(release, home=config.parent / ".modelgate", tracking_uri=uri, author=author,
                      stages=(("format", _stage(verdict, 0.9 if verdict == Status.PASSED else 0.4)),))
    return report.tracking.model_version


def modelgate(config: Path, uri: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    """`modelgate <args> --config <config>` in this process (the CLI's own entry point, ~2 s faster than a
    child that imports MLflow again): exit code, stdout and stderr as from a subprocess."""
    import contextlib
    import io

    from pipeline import cli

    out, err = io.StringIO(), io.StringIO()
    saved = dict(os.environ)
    os.environ.update({"MLFLOW_TRACKING_URI": uri, **env})
    os.environ.pop("MODELGATE_ACTOR", None)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = cli.main([*args, "--config", str(config)])
            except SystemExit as exc:  # argparse usage errors
                code = exc.code if isinstance(exc.code, int) else 2
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return subprocess.CompletedProcess(["modelgate", *args], code, out.getvalue(), err.getvalue())
