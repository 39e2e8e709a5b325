"""The repository's own release.yaml pins exactly what `modelgate demo init` publishes on this machine."""

import pytest

from pipeline.config.release import load_release
from pipeline.demo.hub import VARIANTS
from tests.support import cli
from tests.support.paths import REPO

pytestmark = pytest.mark.e2e


def test_release_yaml_pins_the_demo_hub_instruct_commit(demo_hub):
    release = load_release(REPO / "release.yaml")
    instruct = demo_hub["variants"]["instruct"]
    assert release.candidate.revision == instruct["revision"]
    assert release.candidate.files == instruct["files"]
    assert release.repo_location(release.candidate) == str((REPO / ".modelgate/hub/SmolLM2-135M-Instruct").resolve())


def test_demo_init_is_idempotent_and_prints_the_variants(demo_hub):
    proc = cli.run_subprocess("demo", "init", "--config", str(REPO / "release.yaml"), timeout=600)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for name in VARIANTS:
        assert f"{name:<10} {demo_hub['variants'][name]['revision']}" in out
