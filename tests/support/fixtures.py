"""pytest fixtures shared by the test suites (registered by tests/conftest.py through `pytest_plugins`)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.support import processes, releases
from tests.support.mlflow_server import MlflowServer
from tests.support.paths import REPO


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real MLflow tracking server (sqlite backend, proxied artifacts) on 127.0.0.1, one per session: its URI."""
    server = MlflowServer(tmp_path_factory.mktemp("mlflow"))
    server.start()
    yield server.uri
    server.stop()


@pytest.fixture(scope="session")
def prometheus(tmp_path_factory):
    """A real Prometheus on 127.0.0.1 scraping, every second, a vLLM-format exporter the test drives
    (tests/support/prometheus.py): (PrometheusServer, VllmExporter), one per session, always torn down."""
    from tests.support.prometheus import PrometheusServer, VllmExporter

    exporter = VllmExporter()
    server = PrometheusServer(tmp_path_factory.mktemp("prometheus"), f"127.0.0.1:{exporter.port}")
    try:
        yield server.start(), exporter
    finally:
        server.stop()
        exporter.close()


@pytest.fixture(scope="session")
def team_server(tmp_path_factory):
    """The team's tracking server for real (tests/support/team_server.py): PostgreSQL + `mlflow server --app-name
    basic-auth` on 127.0.0.1, one per session, always torn down: a TeamServer (uri, admin credential)."""
    from tests.support.team_server import TeamServer

    server = TeamServer(tmp_path_factory.mktemp("team-server")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def team_users(team_server, tmp_path_factory):
    """modelgate-pr and modelgate-release created by mlflow/setup_users.py (its main, as the admin) for a team's
    release.yaml: {"pr": Credential, "release": Credential, "config": Path, "output": str}."""
    from tests.support.team import make_team
    from tests.support.team_server import new_users, setup_team

    config = make_team(tmp_path_factory.mktemp("users") / "team", "perm-model")
    pr, release = new_users()
    return {"pr": pr, "release": release, "config": config, "output": setup_team(team_server, config, (pr, release))}


@pytest.fixture(params=["sqlite", "postgres-auth"])
def release_tracking(request, monkeypatch):
    """A release test's tracking server, both ways: the session's sqlite server (no auth), and the team's server
    (PostgreSQL + basic-auth) with the release credential in MLFLOW_TRACKING_USERNAME/PASSWORD, as CI passes it
    (in-process commands and children both see it), each new team set up by mlflow/setup_users.py. Its URI."""
    if request.param == "sqlite":
        return request.getfixturevalue("mlflow_server")
    from tests.support import team
    from tests.support.team_server import setup_team

    server, users = request.getfixturevalue("team_server"), request.getfixturevalue("team_users")
    for key, value in users["release"].env().items():
        monkeypatch.setenv(key, value)
    # as a team does before its first gate: mlflow/setup_users.py for each new team's release.yaml
    monkeypatch.setattr(team, "ON_NEW_TEAM", [*team.ON_NEW_TEAM, lambda config: setup_team(server, config)])
    return server.uri


@pytest.fixture
def team(tmp_path, request):
    """A release test's team (tests/support/team.py: make_team) in tmp_path/team, its model the test's own
    (team_model): its release.yaml. Which tracking server it is used with is the test's to request
    (`mlflow_server`, or `release_tracking` for both); a team set up otherwise calls make_team itself."""
    from tests.support.team import make_team, team_model

    return make_team(tmp_path / "team", team_model(request.node.nodeid))


@pytest.fixture
def pinned_team(tmp_path):
    """The simplest team (tests/support/team.py: make_pinned_team): release.yaml in tmp_path pinning `hub/model`
    at its one commit with every file's sha256, and nothing else. tmp_path."""
    from tests.support.team import make_pinned_team

    return make_pinned_team(tmp_path)


@pytest.fixture
def write_release(tmp_path):
    """write_release(data or text, name="release.yaml") -> path of a release.yaml in the test's tmp_path."""

    def write(data, name: str = "release.yaml") -> Path:
        return releases.write_release(tmp_path, data, name=name)

    return write


@pytest.fixture(scope="module")
def model_home(tmp_path_factory):
    """A MODELGATE_HOME (model cache) shared by the gates of one test module."""
    return tmp_path_factory.mktemp("modelgate-home")


@pytest.fixture(scope="session")
def demo_hub():
    """The demo hub's manifest: variant -> revision and file digests (idempotent: built once per machine)."""
    from pipeline.demo.hub import publish_demo_hub

    home = Path(os.environ.get("MODELGATE_HOME", REPO / ".modelgate"))
    return publish_demo_hub(home, progress=lambda m: print(f"[demo hub] {m}", file=sys.stderr))


@pytest.fixture
def no_new_vllm_before():
    """Marks the vLLM processes alive before the test, so `processes.vllm_processes()` lists only new ones."""
    processes.remember_present_vllm()
    yield


@pytest.fixture(scope="session")
def quality_team(tmp_path_factory, demo_hub):
    """A team repository with the project's prompts/ and evalsets/ (tests/support/quality.py), one per session."""
    from tests.support.quality import make_team

    return make_team(tmp_path_factory.mktemp("team"))


@pytest.fixture(scope="session")
def quality_production(quality_team, demo_hub, mlflow_server, tmp_path_factory):
    """The first release, `instruct` gated on absolute floors, approved and promoted (one gate per session,
    shared by the e2e modules that pair candidates with it): proc, report, version, home."""
    from tests.support.quality import release_production

    return release_production(quality_team, demo_hub, mlflow_server, tmp_path_factory.mktemp("home"))


# the demo pin's gate shared by tests/e2e/test_gate_e2e.py and tests/e2e/test_load_e2e.py: one boot for both
DEMO_GATE_LOAD = {"peak_concurrency": 1, "levels": [1, 2],
                  "prompts": {"input_len": 32, "output_len": 16, "requests_per_level": 4, "seed": 1},
                  "slo": {"p95_e2el_ms": 60000, "p95_ttft_ms": 30000, "min_output_throughput": 0.5},
                  "price_per_hour": 0.10}


@pytest.fixture(scope="session")
def demo_gate(demo_hub, mlflow_server, tmp_path_factory):
    """`modelgate gate --pr 17` of the demo pin (serve, then a small load test: DEMO_GATE_LOAD), run once per session:
    {"proc": CompletedProcess, "home": its model cache, "tmp": a directory for downloads}."""
    from tests.support import cli

    root = tmp_path_factory.mktemp("demo-gate")
    config = releases.write_demo_release(root / "team", demo_hub, gates={"load": DEMO_GATE_LOAD})
    proc = cli.run_gate(config, mlflow_server, root / "home", "--pr", "17", timeout=900)
    return {"proc": proc, "home": root / "home", "tmp": root}

