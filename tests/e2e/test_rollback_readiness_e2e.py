"""A rollback rehearsal on the real stack: a gated demo model version is fetched from the demo hub,
verified, booted with vLLM and smoke-probed by `modelgate rollback --check --serve` (one vLLM boot). The version
is registered through the real gate machinery with a stand-in stage (no boot for it: what matters here is the
rehearsal's own boot)."""

from __future__ import annotations

import json

import pytest

from pipeline.core.result import StageResult, Status
from tests.support import cli
from tests.support.git import AUTHOR, commit_all
from tests.support.processes import vllm_processes
from tests.support.releases import write_demo_release
from tests.support.signing import KEY, audit_env, trusted_signing

pytestmark = pytest.mark.e2e

MODEL = "smollm2-rollback-rehearsal"
PROMOTION = {"release_managers": ["alice", "bob"], "approvals_required": 1}


def _format_passed(ctx):
    return StageResult("format", Status.PASSED, metrics={"pass_rate": 1.0})


def gate_variant(team, manifest, variant, uri, home) -> str:
    """Pin the demo hub's `variant`, record a passed, signed release gate of it (stand-in stage); the registered
    version. Signed: a rollback target that was never production needs a signed record, as a promotion does."""
    from pipeline.config.release import load_release
    from pipeline.gate.run import run_gate

    config = write_demo_release(team, manifest, variant, model=MODEL, promotion=PROMOTION,
                                signing=trusted_signing())
    commit_all(team, f"pin {variant}")
    report = run_gate(load_release(config), home=home, tracking_uri=uri, author=AUTHOR,
                      stages=(("format", _format_passed),), signer=KEY.signer())
    return report.tracking.model_version


def release_cmd(team, uri, home, *args, expect=0):
    proc = cli.run_subprocess(*args, "--config", str(team / "release.yaml"),
                              env={**cli.gate_env(uri, home), **audit_env()}, timeout=600)
    assert proc.returncode == expect, proc.stdout + proc.stderr[-3000:]
    return proc


def test_rollback_check_with_serve_boots_and_probes_a_real_model(tmp_path, demo_hub, mlflow_server):
    """The rehearsal targets a passed version directly (`--to`): no promotion is needed for it (proving the
    previous version at a promotion on the real model is part of test_quality_e2e's release flow)."""
    import time

    uri, home, team = mlflow_server, tmp_path / "home", tmp_path / "team"
    version = gate_variant(team, demo_hub, "instruct", uri, home)
    t0 = time.monotonic()
    proc = release_cmd(team, uri, home, "rollback", "--check", "--serve", "--to", version, "--actor", "alice")
    print(f"rollback --check --serve: {time.monotonic() - t0:.1f} s (fetch, verify, vLLM boot, probe, record)")
    assert f"rollback to {MODEL} v{version} is ready (rehearsal with serve)" in proc.stdout
    assert "served by vLLM as chat@" in proc.stdout and "answered a chat and a streamed completion" in proc.stdout
    assert "nothing moved" in proc.stdout and vllm_processes() == []
    doc = json.loads(release_cmd(team, uri, home, "history", "--json").stdout)
    assert doc["aliases"]["production"] is None, "nothing moved"
    proven = doc["rollback_readiness"][version]
    assert (proven["proven_how"], proven["proven_by"]) == ("rehearsal with serve", "alice")
