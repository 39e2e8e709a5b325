"""Test helpers and fixtures, importable by every test module (no test module imports another, nor a conftest).

    paths          REPO, the repository root
    releases       release.yaml: VALID_RELEASE, the one writer `write_release`, the demo hub pin
    git            one `git` runner with a fixed identity and no user or system config
    model_repo     a tiny model committed to a real git repository (the hub a pin points at)
    team           a team repository with release managers; gates recorded with stand-in stages, signed
    signing        the session's Ed25519 release-gate key (and others) for signed gate records
    cli            `modelgate` in this process (`run_in_process`) or as a child (`run_subprocess`, `start`)
    processes      one /proc scanner: this session's processes (vLLM, lm-eval, benchmark), zombies excluded
    waiting        waits on a condition or an output line, each with a deadline
    reports        a sample gate report
    quality        the quality gates of the e2e modules: one team repository and one production release per session
    mlflow_server  a real `mlflow server` on loopback
    ghfake         a fake GitHub REST API checked against GitHub's OpenAPI description
    fixtures       the pytest fixtures (registered by tests/conftest.py)
"""
