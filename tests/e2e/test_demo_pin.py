"""The repository's own release.yaml pins exactly what `modelgate demo init` publishes on this machine."""

import subprocess

import pytest

from pipeline.config.release import load_release
from tests.conftest import REPO
from tests.e2e.conftest import modelgate_cmd

pytestmark = pytest.mark.e2e


def test_release_yaml_pins_the_demo_hub_instruct_commit(demo_hub):
    release = load_release(REPO / "release.yaml")
    instruct = demo_hub["variants"]["instruct"]
    assert release.candidate.revision == instruct["revision"]
    assert release.candidate.files == instruct["files"]
    assert release.repo_location(release.candidate) == str((REPO / ".modelgate/hub/SmolLM2-135M-Instruct").resolve())


def test_demo_init_is_idempotent_and_prints_the_variants(demo_hub):
    out = subprocess.run(modelgate_cmd("demo", "init", "--config", str(REPO / "release.yaml")), capture_output=True,
                         text=True, timeout=600, check=True).stdout
    for name in ("instruct", "degraded", "corrupt", "pickle"):
        assert f"{name:<10} {demo_hub['variants'][name]['revision']}" in out
