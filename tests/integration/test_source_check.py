"""A gate never passes a pin its source cannot serve (the source is asked on every gate; a cache hit does not
skip it), and it never serves cached bytes it has not hashed in its own run.

The real CLI (`python -m pipeline`) on real git repositories and an MLflow sqlite store: the model cache is
filled by a first `modelgate fetch`, then release.yaml's candidate.repo is changed to a repository that does
not hold the pinned commit, or a cached file is changed with its size and mtime kept.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration
GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.invalid", "GIT_CONFIG_NOSYSTEM": "1"}
MODEL = {"config.json": '{"architectures": ["LlamaForCausalLM"], "model_type": "llama"}\n',
         "model.safetensors": "bytes standing in for weights\n"}


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "init.defaultBranch=main", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, **GIT_ENV}, check=True).stdout.strip()


def model_repo(path: Path, files: dict[str, str]) -> str:
    path.mkdir(parents=True)
    for name, text in files.items():
        (path / name).write_text(text)
    git(path, "init", "-q")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "model")
    return git(path, "rev-parse", "HEAD")


@pytest.fixture
def team(tmp_path):
    """A team repository whose release.yaml pins `hub/model` at its one commit, with every file's sha256."""
    sha = model_repo(tmp_path / "hub" / "model", MODEL)
    release = {"schema_version": 1, "model": {"name": "support-bot"},
               "candidate": {"source": "git", "repo": "hub/model", "revision": sha,
                             "files": {n: hashlib.sha256(t.encode()).hexdigest() for n, t in MODEL.items()}},
               "gates": {}}
    (tmp_path / "release.yaml").write_text(yaml.safe_dump(release, sort_keys=False))
    return tmp_path


def modelgate(team: Path, *argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MODELGATE_HOME": str(team / "home"), "MLFLOW_TRACKING_URI": f"sqlite:///{team}/mlflow.db"}
    return subprocess.run([sys.executable, "-m", "pipeline", *argv], cwd=team, capture_output=True, text=True,
                          env=env, timeout=300)


def registered_versions(team: Path) -> int:
    db = team / "mlflow.db"
    if not db.exists():
        return 0
    with sqlite3.connect(db) as con:
        tables = {r[0] for r in con.execute("select name from sqlite_master where type='table'")}
        return con.execute("select count(*) from model_versions").fetchone()[0] if "model_versions" in tables else 0


def test_gate_with_a_repo_that_does_not_serve_the_pinned_commit_is_exit_2_even_on_a_cache_hit(team):
    first = modelgate(team, "fetch", "--config", "release.yaml")
    assert first.returncode == 0, first.stderr
    sha = yaml.safe_load((team / "release.yaml").read_text())["candidate"]["revision"]
    model_repo(team / "hub" / "other", {"README.md": "another model\n"})
    data = yaml.safe_load((team / "release.yaml").read_text())
    data["candidate"]["repo"] = "hub/other"
    (team / "release.yaml").write_text(yaml.safe_dump(data, sort_keys=False))

    proc = modelgate(team, "gate", "--config", "release.yaml")

    assert proc.returncode == 2, proc.stderr
    error = proc.stderr.strip().splitlines()[-1]
    assert error.startswith("modelgate: error: ") and "release.yaml" in error and "candidate.revision" in error
    assert f"commit {sha} does not exist in '{team / 'hub' / 'other'}'" in error
    assert "cache hit" not in proc.stderr and "Traceback" not in proc.stderr
    assert registered_versions(team) == 0  # nothing registered: a version whose source cannot serve it


def test_gate_refuses_a_cached_file_changed_with_its_size_and_mtime_kept(team):
    first = modelgate(team, "fetch", "--config", "release.yaml")
    assert first.returncode == 0, first.stderr
    cached = Path(first.stdout.strip().splitlines()[-1]) / "model.safetensors"
    before = cached.stat()
    cached.chmod(0o644)
    cached.write_text("BYTES standing in for weights\n")  # one byte changed, same size
    os.utime(cached, ns=(before.st_atime_ns, before.st_mtime_ns))

    proc = modelgate(team, "gate", "--config", "release.yaml")

    assert proc.returncode == 2, proc.stderr
    error = proc.stderr.strip().splitlines()[-1]
    assert "candidate.files.model.safetensors" in error and "changed since it was verified" in error, error
    assert registered_versions(team) == 0
