"""The bad-input corpus (tests/corpus/bad_inputs/): every malformed input is refused the same way.

Each case is a directory with a `case.yaml` (see tests/corpus/bad_inputs/README.md) and the input files it
needs. Adding a case is adding a directory. Every case runs `python -m pipeline <argv>` in a copy of its
directory and must give: exit 2; exactly one `modelgate: error:` line on stderr, the last one, naming the file
and the path inside it; no traceback; no MLflow run (a fresh sqlite store stays empty); no git tag; no vLLM.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

CORPUS = Path(__file__).resolve().parents[1] / "corpus" / "bad_inputs"
CASES = sorted(p.parent.name for p in CORPUS.glob("*/case.yaml"))
CASE_KEYS = {"about", "argv", "model_repo", "env", "expect"}
EXPECT_KEYS = {"file", "path", "contains"}
PLACEHOLDER = re.compile(r"@@([A-Z0-9_]+)(?::([^@]+))?@@")

# the tiny model every `model_repo` case starts from; a case adds, overrides or removes files
BASE_MODEL = {
    "config.json": '{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 8}\n',
    "tokenizer_config.json": '{"model_max_length": 128}\n',
    "model.safetensors": "not really tensors, but bytes with a digest\n",
}
GIT_ENV = {"GIT_AUTHOR_NAME": "corpus", "GIT_AUTHOR_EMAIL": "corpus@example.invalid",
           "GIT_COMMITTER_NAME": "corpus", "GIT_COMMITTER_EMAIL": "corpus@example.invalid",
           "GIT_CONFIG_NOSYSTEM": "1", "HOME": "/nonexistent"}


def git(cwd: Path, *args: str) -> str:
    out = subprocess.run(["git", "-c", "init.defaultBranch=main", *args], cwd=cwd, capture_output=True,
                         text=True, env={**os.environ, **GIT_ENV}, check=True)
    return out.stdout.strip()


def build_model_repo(path: Path, spec: dict) -> tuple[str, dict[str, str]]:
    files = {**BASE_MODEL, **(spec.get("files") or {})}
    for name in spec.get("remove") or []:
        files.pop(name)
    path.mkdir(parents=True)
    for name, content in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(content)
    git(path, "init", "--quiet")
    git(path, "add", "-A")
    git(path, "commit", "--quiet", "-m", "model")
    digests = {name: hashlib.sha256((path / name).read_bytes()).hexdigest() for name in files}
    return git(path, "rev-parse", "HEAD"), digests


def fill(text: str, values: dict[str, str], digests: dict[str, str]) -> str:
    def one(m: re.Match) -> str:
        name, arg = m.group(1), m.group(2)
        if name == "SHA256":
            return digests[arg]
        return values[name]

    return PLACEHOLDER.sub(one, text)


@pytest.fixture(scope="session")
def empty_store(tmp_path_factory) -> Path:
    """An empty MLflow sqlite store (schema created once; every case gets a fresh copy)."""
    from mlflow.tracking import MlflowClient

    db = tmp_path_factory.mktemp("store") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{db}").search_experiments()
    return db


def vllm_pids(marker: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            args = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in environ and (b"vllm" in args or b"VLLM::" in args):
            found.append(entry.name)
    return found


def test_corpus_is_big_enough_and_well_formed():
    assert len(CASES) >= 40, CASES
    for name in CASES:
        case = yaml.safe_load((CORPUS / name / "case.yaml").read_text())
        assert set(case) <= CASE_KEYS and {"argv", "expect", "about"} <= set(case), name
        assert set(case["expect"]) <= EXPECT_KEYS and "file" in case["expect"] and "path" in case["expect"], name
        assert case["expect"]["file"] or case["expect"]["path"], f"{name}: names neither a file nor a path"


@pytest.mark.parametrize("name", CASES)
def test_bad_input(name, tmp_path, empty_store):
    case = yaml.safe_load((CORPUS / name / "case.yaml").read_text())
    work = (tmp_path / "case").resolve()
    shutil.copytree(CORPUS / name, work, ignore=shutil.ignore_patterns("case.yaml"))
    values = {"CASE": str(work), "REPO": str(work / "hub" / "model"),
              "REVISION": "0123456789abcdef0123456789abcdef01234567"}
    digests: dict[str, str] = {}
    if case.get("model_repo") is not None:
        values["REVISION"], digests = build_model_repo(work / "hub" / "model", case["model_repo"])
    for path in [p for p in work.rglob("*") if p.is_file() and "hub" not in p.relative_to(work).parts]:
        text = path.read_text()
        if "@@" in text:
            path.write_text(fill(text, values, digests))
    git(work, "init", "--quiet")  # the team repository: no version tag may appear in it
    store = tmp_path / "mlflow.db"
    shutil.copy(empty_store, store)
    marker = f"MODELGATE_CORPUS_CASE={name}-{os.getpid()}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{store}", "MODELGATE_HOME": str(tmp_path / "home"),
           "MODELGATE_CORPUS_CASE": marker.split("=", 1)[1], **GIT_ENV,
           **{k: fill(str(v), values, digests) for k, v in (case.get("env") or {}).items()}}
    for unset in [k for k, v in (case.get("env") or {}).items() if v is None]:
        env.pop(unset)
    argv = [fill(str(a), values, digests) for a in case["argv"]]
    proc = subprocess.run([sys.executable, "-m", "pipeline", *argv], cwd=work, capture_output=True, text=True,
                          env=env, timeout=120)
    shown = (f"{name}: {case['about']}\nexit {proc.returncode}\nstdout: {proc.stdout[-1500:]}\n"
             f"stderr: {proc.stderr[-3000:]}")

    assert proc.returncode == 2, shown
    assert "Traceback" not in proc.stderr + proc.stdout, shown
    lines = proc.stderr.rstrip("\n").split("\n")
    errors = [ln for ln in lines if ln.startswith("modelgate: error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], shown
    # every other stderr line is a progress line of a stage that ran before the input was found bad
    assert all(re.match(r"\[\s*\d+\.\ds\] \w+: ", ln) for ln in lines[:-1]), shown
    line = errors[0]
    expect = case["expect"]
    path = fill(expect["path"], values, digests) if expect["path"] else None
    if expect["file"]:  # named as resolved, or as given on the command line
        given = fill(expect["file"], values, digests)
        names = {str((work / given).resolve()), given}
        assert any(line.startswith(f"modelgate: error: {f}: {path or ''}") for f in names), shown
    else:
        assert path in line, shown
    for text in expect.get("contains") or []:
        assert fill(text, values, digests) in line, shown

    with sqlite3.connect(store) as db:  # no MLflow run (nor model version) was created
        tables = {r[0] for r in db.execute("select name from sqlite_master where type='table'")}
        assert db.execute("select count(*) from runs").fetchone()[0] == 0, shown
        if "model_versions" in tables:
            assert db.execute("select count(*) from model_versions").fetchone()[0] == 0, shown
    assert git(work, "tag", "--list") == "", shown
    if (work / "hub" / "model").is_dir():
        assert git(work / "hub" / "model", "tag", "--list") == "", shown
    assert "starting vLLM" not in proc.stderr and not list(work.rglob("server.log")), shown
    assert vllm_pids(marker) == [], shown
