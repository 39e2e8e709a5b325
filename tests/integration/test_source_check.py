"""A gate never passes a pin its source cannot serve (the source is asked on every gate; a cache hit does not
skip it), and it never serves cached bytes it has not hashed in its own run.

The real CLI (`python -m pipeline`) on real git repositories and an MLflow sqlite store: the model cache is
filled by a first `modelgate fetch`, then release.yaml's candidate.repo is changed to a repository that does
not hold the pinned commit, or a cached file is changed with its size and mtime kept.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.support.model_repo import build_model_repo
from tests.support.team import PINNED_MODEL

pytestmark = pytest.mark.integration


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


def test_gate_with_a_repo_that_does_not_serve_the_pinned_commit_is_exit_2_even_on_a_cache_hit(pinned_team):
    first = modelgate(pinned_team, "fetch", "--config", "release.yaml")
    assert first.returncode == 0, first.stderr
    sha = yaml.safe_load((pinned_team / "release.yaml").read_text())["candidate"]["revision"]
    build_model_repo(pinned_team / "hub" / "other", {"README.md": "another model\n"})
    data = yaml.safe_load((pinned_team / "release.yaml").read_text())
    data["candidate"]["repo"] = "hub/other"
    (pinned_team / "release.yaml").write_text(yaml.safe_dump(data, sort_keys=False))

    proc = modelgate(pinned_team, "gate", "--config", "release.yaml")

    assert proc.returncode == 2, proc.stderr
    error = proc.stderr.strip().splitlines()[-1]
    assert error.startswith("modelgate: error: ") and "release.yaml" in error and "candidate.revision" in error
    assert f"commit {sha} does not exist in '{pinned_team / 'hub' / 'other'}'" in error
    assert "cache hit" not in proc.stderr and "Traceback" not in proc.stderr
    assert registered_versions(pinned_team) == 0  # nothing registered: a version whose source cannot serve it


def test_gate_refuses_a_cached_file_changed_with_its_size_and_mtime_kept(pinned_team):
    first = modelgate(pinned_team, "fetch", "--config", "release.yaml")
    assert first.returncode == 0, first.stderr
    cached = Path(first.stdout.strip().splitlines()[-1]) / "model.safetensors"
    before = cached.stat()
    cached.chmod(0o644)
    cached.write_text("B" + PINNED_MODEL["model.safetensors"][1:])  # one byte changed, same size
    os.utime(cached, ns=(before.st_atime_ns, before.st_mtime_ns))

    proc = modelgate(pinned_team, "gate", "--config", "release.yaml")

    assert proc.returncode == 2, proc.stderr
    error = proc.stderr.strip().splitlines()[-1]
    assert "candidate.files.model.safetensors" in error and "changed since it was verified" in error, error
    assert registered_versions(pinned_team) == 0
