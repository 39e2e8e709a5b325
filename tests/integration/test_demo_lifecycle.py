"""The demo's own release environment (`modelgate demo`, pipeline/cli/demo.py): keys generated on this machine for
the demo (0600, outside git) and release.demo.yaml trusting only them, so that approve, promote, a second version,
a rollback and the history run on the demo with no file edited by hand; and the committed release.yaml refuses a
record the demo signed. The gates are recorded through the real `run_gate` + `record` path with a stand-in stage
(the real demo gate on vLLM: scripts/demo.sh); every release command runs through the CLI on a real MLflow
server and a real git repository."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest
import yaml

from pipeline.cli.demo import KEYS
from pipeline.config.release import load_release
from pipeline.core.result import StageResult, Status
from pipeline.demo.profile import PROFILE
from pipeline.gate.run import run_gate
from pipeline.releasing import signing
from tests.support.cli import run_in_process
from tests.support.git import AUTHOR, commit_all, git
from tests.support.releases import write_demo_release
from tests.support.team import alias

MODEL = "smollm2-demo-lifecycle"


def _gate(profile: Path, uri: str, home: Path) -> str:
    """The gate machinery on the demo profile, signed with the demo's gate key; the registered version."""
    signer = signing.load_signer(file=home / "demo" / KEYS["gate"])
    report = run_gate(load_release(profile), home=home, tracking_uri=uri, author=AUTHOR, signer=signer,
                      stages=(("format", lambda ctx: StageResult("format", Status.PASSED)),))
    assert report.verdict.value == "passed" and report.tracking.model_version
    return report.tracking.model_version


def test_the_demo_lifecycle_runs_on_its_own_keys_and_the_committed_release_yaml_refuses_them(
        demo_hub, mlflow_server, tmp_path):
    home = Path(demo_hub["repo_path"]).parents[1]  # the demo hub's model home (its demo/ holds the keys)
    team = tmp_path / "team"
    config = write_demo_release(team, demo_hub, "instruct", model=MODEL,
                                promotion={"release_managers": ["alice", "bob"], "approvals_required": 1})
    (team / ".gitignore").write_text(f"/{PROFILE}\n")
    commit_all(team, "the team's release.yaml")
    env = {"MLFLOW_TRACKING_URI": mlflow_server, "MODELGATE_HOME": str(home), "MODELGATE_ACTOR": None,
           signing.AUDIT_KEY_ENV: None, signing.SIGNING_KEY_ENV: None}

    def demo(*args: str):
        return run_in_process("demo", *args, "--config", str(config), env=env)

    made = demo("init")
    assert made.returncode == 0, made.stderr
    profile = team / PROFILE
    assert f"release profile: {profile}" in made.stdout
    # the keys: private halves 0600 beside the hub, outside the team's git; only the profile trusts them
    for name in KEYS.values():
        assert stat.S_IMODE(((home / "demo") / name).stat().st_mode) == 0o600
    trusted = yaml.safe_load(profile.read_text())["signing"]
    ids = {k["id"] for k in trusted["public_keys"] + trusted["audit_keys"]}
    assert len(ids) == 2 and not any(i in config.read_text() for i in ids)
    assert git(team, "status", "--porcelain") == ""  # nothing to commit: the profile is ignored

    v1 = _gate(profile, mlflow_server, home)
    approved = demo("approve", "--version", "pinned", "--actor", "alice", "--reason", "read the report")
    assert approved.returncode == 0, approved.stderr
    # the committed release.yaml does not trust the demo's key: its record is refused, nothing moves
    audit_pem = ((home / "demo") / KEYS["audit"]).read_text()
    refused = run_in_process("promote", "--config", str(config), "--version", v1, "--actor", "bob",
                             env={**env, signing.AUDIT_KEY_ENV: audit_pem})
    assert refused.returncode == 5 and refused.stderr.count("\n") == 1, refused.stderr
    assert alias(mlflow_server, MODEL, "production") is None
    promoted = demo("promote", "--version", "pinned", "--actor", "bob")
    assert promoted.returncode == 0, promoted.stderr
    assert alias(mlflow_server, MODEL, "production") == v1

    # a second version: the hub's `aa` variant (a new commit, identical behaviour), pinned by the demo
    from pipeline.cli.demo import prepare

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MODELGATE_HOME", str(home))
        assert prepare(config, "aa") == profile
    assert load_release(profile).candidate.revision == demo_hub["variants"]["aa"]["revision"]
    assert load_release(config).candidate.revision == demo_hub["variants"]["instruct"]["revision"]
    v2 = _gate(profile, mlflow_server, home)
    assert demo("approve", "--version", "pinned", "--actor", "alice", "--reason", "A/A").returncode == 0
    assert demo("promote", "--version", "pinned", "--actor", "bob").returncode == 0
    assert alias(mlflow_server, MODEL, "production") == v2
    back = demo("rollback", "--actor", "alice", "--reason", "rehearsing the rollback")
    assert back.returncode == 0, back.stderr
    assert alias(mlflow_server, MODEL, "production") == v1
    history = demo("history")
    assert history.returncode == 0, history.stderr
    for step in (rf"approve\s+v{v1} by alice", rf"promote\s+v{v1} by bob", rf"promote\s+v{v2} from v{v1} by bob",
                 rf"rollback\s+v{v1} from v{v2} by alice: rehearsing the rollback"):
        assert re.search(step, history.stdout), (step, history.stdout)
    assert "UNVERIFIED" not in history.stdout
    assert audit_pem.strip() not in made.stdout + approved.stdout + promoted.stdout + back.stdout + history.stdout


def test_a_demo_command_with_an_unknown_variant_is_bad_input(demo_hub, tmp_path):
    home = Path(demo_hub["repo_path"]).parents[1]
    config = write_demo_release(tmp_path, demo_hub, "instruct", model=MODEL)
    done = run_in_process("demo", "gate", "--variant", "nope", "--config", str(config),
                          env={"MODELGATE_HOME": str(home)})
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "--variant" in done.stderr, done.stderr
    assert "no demo hub variant 'nope'" in done.stderr and not (tmp_path / PROFILE).exists()


pytestmark = pytest.mark.integration
