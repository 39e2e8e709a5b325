"""A team repository for release tests: release.yaml in a real git repo (with a bare remote) naming its release
managers, and gates recorded through the real `run_gate` + `record` path into a real MLflow server, with
stand-in stages (the promotion rules read what a gate recorded; how the stages judged is tested elsewhere).
Each pin n is a real commit of the team's own model hub (`hub/model`, a git repository), so a promotion can
prove the rollback path by fetching the previous version; `forget_pin` and `swap_weights` break that path.

The `team` fixture (tests/support/fixtures.py) is `make_team` with a model of the test's own (`team_model`);
`pinned_team` is `make_pinned_team`: release.yaml alone, pinning a hub, for the CLI's source checks."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import yaml

from pipeline.core.result import StageResult, Status
from tests.support.cli import run_in_process
from tests.support.git import AUTHOR, GIT_ENV, git
from tests.support.model_repo import build_model_repo
from tests.support.releases import write_release
from tests.support.signing import AUDIT_KEY, KEY, SigningKey, audit_env

MANAGERS = ["alice", "bob@example.com"]

# Called with each new team's release.yaml, e.g. to give it users on an authenticated tracking server
# (tests/support/fixtures.py: release_tracking).
ON_NEW_TEAM: list[Callable[[Path], None]] = []


# pin n of a team's hub: these files, committed alone (no parent) with a fixed identity and date, so the commit is
# the same in every team's hub and `revision(n)` needs no repository
HUB_CONFIG = '{"architectures": ["LlamaForCausalLM"], "model_type": "llama"}\n'
_COMMIT_ID = "dev <dev@example.com> 1700000000 +0000"


def pin_files(n: int) -> dict[str, bytes]:
    """The bytes of every file of pin n (what the hub serves at `revision(n)`)."""
    return {"config.json": HUB_CONFIG.encode(), "model.safetensors": f"weights {n}".encode()}


def pin_digests(n: int) -> dict[str, str]:
    return {name: hashlib.sha256(data).hexdigest() for name, data in pin_files(n).items()}


def _git_object(kind: str, body: bytes) -> bytes:
    return hashlib.sha1(f"{kind} {len(body)}\0".encode() + body).digest()


def revision(n: int) -> str:
    """The commit of pin n in a team's hub (git's object hashing, computed here)."""
    tree = b"".join(f"100644 {name}\0".encode() + _git_object("blob", data)
                    for name, data in sorted(pin_files(n).items()))
    commit = (f"tree {_git_object('tree', tree).hex()}\nauthor {_COMMIT_ID}\ncommitter {_COMMIT_ID}\n\n"
              f"pin {n}\n").encode()
    return _git_object("commit", commit).hex()


def hub_of(config: Path) -> Path:
    """The team's model hub, a git repository (release.yaml's candidate.repo `hub/model`)."""
    return config.parent / "hub" / "model"


def publish_pin(hub: Path, n: int) -> str:
    """Commit pin n into `hub` (on branch pin-n) if it is not there; its commit, which is `revision(n)`."""
    env = {**GIT_ENV, "GIT_AUTHOR_DATE": "1700000000 +0000", "GIT_COMMITTER_DATE": "1700000000 +0000"}

    def run(*args: str, stdin: bytes | None = None) -> str:
        return subprocess.run(["git", "-C", str(hub), *args], input=stdin, check=True, capture_output=True,
                              env={**os.environ, **env}).stdout.decode().strip()

    if not (hub / ".git").exists():
        hub.mkdir(parents=True, exist_ok=True)
        run("init", "--quiet")
    entries = [f"100644 blob {run('hash-object', '-w', '--stdin', stdin=data)}\t{name}"
               for name, data in sorted(pin_files(n).items())]
    tree = run("mktree", stdin=("\n".join(entries) + "\n").encode())
    commit = run("commit-tree", tree, "-m", f"pin {n}")
    assert commit == revision(n), (commit, revision(n))
    run("update-ref", f"refs/heads/pin-{n}", commit)
    return commit


def forget_pin(config: Path, n: int) -> None:
    """The hub no longer serves pin n: its branch deleted and the commit garbage-collected (a rewritten hub)."""
    hub = hub_of(config)
    git(hub, "update-ref", "-d", f"refs/heads/pin-{n}")
    git(hub, "reflog", "expire", "--expire=now", "--all")
    git(hub, "gc", "--quiet", "--prune=now")


def swap_weights(config: Path, n: int, data: bytes = b"other weights") -> None:
    """The hub serves other bytes for model.safetensors of pin n, at the same commit and path (`git replace`
    of the file's blob: what a compromised or corrupted hub looks like to a fetch)."""
    hub = hub_of(config)
    original = git(hub, "rev-parse", f"{revision(n)}:model.safetensors")
    other = subprocess.run(["git", "-C", str(hub), "hash-object", "-w", "--stdin"], input=data, check=True,
                           capture_output=True).stdout.decode().strip()
    git(hub, "replace", "-f", original, other)


def make_team(root: Path, model: str, *, approvals: int = 1, github: dict | None = None,
              public_keys: list[dict] | None = None, audit_keys: list[dict] | None = None) -> Path:
    """A git repository holding release.yaml, with a bare `origin` the version tags are pushed to. release.yaml
    trusts the session's signing key (tests/support/signing.py), or `public_keys` ([]: none), and the session's
    audit key, or `audit_keys`."""
    root.mkdir(parents=True, exist_ok=True)
    remote = root.parent / f"{root.name}-origin.git"
    subprocess.run(["git", "init", "--quiet", "--bare", str(remote)], check=True)
    git(root, "init", "--quiet")
    git(root, "remote", "add", "origin", str(remote))
    config = write_release(
        root, model=model, serving=None,
        candidate={"source": "git", "repo": "hub/model", "revision": revision(1), "files": pin_digests(1)},
        promotion={"release_managers": MANAGERS, "approvals_required": approvals, "git_remote": "origin",
                   **({"github": github} if github else {})},
        signing={"public_keys": [KEY.entry()] if public_keys is None else public_keys,
                 "audit_keys": [AUDIT_KEY.entry()] if audit_keys is None else audit_keys})
    git(root, "add", "release.yaml")
    git(root, "commit", "--quiet", "-m", "release.yaml")
    with (root / ".git" / "info" / "exclude").open("a") as fh:
        fh.write("hub/\n.modelgate/\n")
    publish_pin(hub_of(config), 1)
    for hook in ON_NEW_TEAM:
        hook(config)
    return config


def team_model(nodeid: str) -> str:
    """The model of the team made for the test `nodeid`, its own: every test of a session shares the tracking
    servers (and parametrized cases their test's name). The module and test in words, cut to fit, and a digest of
    the whole node id, e.g. `promotion-faults-promotion-killed-before-a-step-is-co-1a2b3c4d`."""
    path, _, name = nodeid.partition("::")
    module = Path(path).stem.removeprefix("test_")
    words = re.sub(r"[^a-z0-9]+", "-", f"{module} {name.removeprefix('test_')}".lower()).strip("-")
    return f"{words[:52].rstrip('-')}-{hashlib.sha256(nodeid.encode()).hexdigest()[:8]}"


# the model of a pinned team (make_pinned_team): a config and bytes standing in for weights
PINNED_MODEL = {"config.json": HUB_CONFIG, "model.safetensors": "bytes standing in for weights\n"}


def make_pinned_team(root: Path, files: dict[str, str] = PINNED_MODEL) -> Path:
    """The simplest team, for the CLI's fetch and source checks: a release.yaml (model `support-bot`, no gates, no
    promotion, no git repository around it) pinning `hub/model`, a git repository of `files`, at its one commit
    with every file's sha256. `root`, which holds release.yaml."""
    hub = build_model_repo(root / "hub" / "model", files)
    release = {"schema_version": 1, "model": {"name": "support-bot"},
               "candidate": {"source": "git", "repo": "hub/model", "revision": hub.revision, "files": hub.digests},
               "gates": {}}
    (root / "release.yaml").write_text(yaml.safe_dump(release, sort_keys=False))
    return root


def model_of(config: Path) -> str:
    return yaml.safe_load(config.read_text())["model"]["name"]


def revision_of(config: Path) -> str:
    return yaml.safe_load(config.read_text())["candidate"]["revision"]


def set_candidate(config: Path, n: int) -> None:
    data = yaml.safe_load(config.read_text())
    data["candidate"]["revision"] = publish_pin(hub_of(config), n)
    data["candidate"]["files"] = pin_digests(n)
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    git(config.parent, "commit", "--quiet", "--allow-empty", "-am", f"pin revision {n}")


def _stage(status: Status, metric: float):
    def run(ctx):
        return StageResult("format", status, metrics={"pass_rate": metric},
                           reasons=[] if status == Status.PASSED else [f"stand-in stage {status.value}"])
    return run


def _cases_stage(status: Status, cases: int):
    """A stand-in format stage that judged `cases` prompt cases (cases.jsonl and the per-item results written as
    the real stage writes them): the failing ones are the last when the stage failed."""
    import json

    def run(ctx):
        failing = cases // 2 if status != Status.PASSED else 0
        rows, items = [], {}
        for i in range(cases):
            key, ok = f"support/case_{i:02d}", i < cases - failing
            failures = [] if ok else [{"expectation": "json_schema", "reason": "not valid JSON: Expecting value at "
                                       "line 1 column 1", "path": None}]
            rows.append({"key": key, "suite": "support", "case_id": f"case_{i:02d}", "passed": ok, "critical": False,
                         "failures": failures, "expectations": ["json_schema", "max_chars"],
                         "output": '{"intent": "refund"}' if ok else "Sure! Here is the JSON you asked for",
                         "finish_reason": "stop", "latency_s": 0.25 + i / 100, "completion_tokens": 9})
            items[key] = 1.0 if ok else 0.0
        out = ctx.files.stage("format")
        out.mkdir(parents=True, exist_ok=True)
        (out / "cases.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        ctx.items["format/pass"] = items
        rate = sum(items.values()) / cases
        return StageResult("format", status, metrics={"pass_rate": rate, "cases": cases},
                           reasons=[f"{int(sum(items.values()))}/{cases} cases passed ({rate:.1%})"],
                           artifacts={"cases.jsonl": str(out / "cases.jsonl")})
    return run


def record_gate(config: Path, uri: str, n: int, verdict: Status = Status.PASSED, author: str = AUTHOR,
                cases: int = 0, *, key: SigningKey | None = KEY, kind: str = "release") -> str:
    """Pin revision n, run the gate machinery with one stand-in stage, return the registered version (an advisory
    gate: its run id). A release gate is signed with `key` (None: unsigned)."""
    from pipeline.config.release import load_release
    from pipeline.gate.run import run_gate

    set_candidate(config, n)
    release = load_release(config)
    stage = _cases_stage(verdict, cases) if cases else _stage(verdict, 0.9 if verdict == Status.PASSED else 0.4)
    report = run_gate(release, home=config.parent / ".modelgate", tracking_uri=uri, author=author,
                      stages=(("format", stage),), kind=kind, signer=key.signer() if key else None)
    return report.tracking.run_id if kind == "advisory" else report.tracking.model_version


def modelgate(config: Path, uri: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`modelgate <args> --config <config>` in this process against the tracking server `uri`, holding the audit
    key as the promote and rollback workflows do (`MODELGATE_AUDIT_KEY=None`: without it)."""
    return run_in_process(*args, "--config", str(config),
                          env={"MLFLOW_TRACKING_URI": uri, "MODELGATE_ACTOR": None,
                               "MODELGATE_HOME": str(config.parent / ".modelgate"), **audit_env(), **env})


def approve(config: Path, uri: str, version: str, actor: str = "alice", reason: str = "checked the report"):
    return modelgate(config, uri, "approve", "--version", version, "--actor", actor, "--reason", reason)


def promote(config: Path, uri: str, version: str, actor: str = "alice", *extra: str):
    return modelgate(config, uri, "promote", "--version", version, "--actor", actor, *extra)


def released(config: Path, uri: str, n: int) -> str:
    """Gate pin `n` (passed), approve it and promote it: the version now in production."""
    version = record_gate(config, uri, n)
    assert approve(config, uri, version).returncode == 0
    proc = promote(config, uri, version)
    assert proc.returncode == 0, proc.stderr
    return version


def alias(uri: str, model: str, name: str) -> str | None:
    """The version an alias points at; None only when the alias is not set (any other MLflow error is raised)."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        return MlflowClient(tracking_uri=uri).get_model_version_by_alias(model, name).version
    except MlflowException as exc:
        if "not found" in str(exc):
            return None
        raise


def refused(proc: subprocess.CompletedProcess[str], *words: str) -> str:
    """Exit 5 with one line on stderr holding every word (the release policy's refusal); that line."""
    assert proc.returncode == 5, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("modelgate: Refused: "), proc.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]
