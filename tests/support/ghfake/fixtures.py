"""pytest fixtures for the fake GitHub (registered by tests/conftest.py).

`github_fake_server`: one server per session. `github_fake`: the same server, emptied for each test, with
the repository `acme/support-bot`; after the test it asserts the pipeline made no request that GitHub's
OpenAPI description forbids (a test that sends bad requests on purpose clears `violations` itself).
"""

from __future__ import annotations

import pytest

from .server import FakeGitHub

FAKE_REPO = "acme/support-bot"


@pytest.fixture(scope="session")
def github_fake_server():
    fake = FakeGitHub().start()
    yield fake
    fake.stop()


@pytest.fixture
def github_fake(github_fake_server):
    fake = github_fake_server
    fake.reset()
    fake.state.add_repo(FAKE_REPO)
    yield fake
    violations, fake.violations[:] = list(fake.violations), []
    assert not violations, "requests GitHub's OpenAPI description does not allow:\n" + "\n".join(violations)
    unhandled = [f"{r.method} {r.path} ({r.operation})" for r in fake.requests if r.status == 501]
    assert not unhandled, "operations the fake GitHub does not implement yet:\n" + "\n".join(unhandled)
