"""The bad-input corpus (tests/corpus/bad_inputs/): every malformed input is refused the same way.

Each case is a directory with a `case.yaml` (see tests/corpus/bad_inputs/README.md) and the input files it
needs. Adding a case is adding a directory. Every case runs `python -m pipeline <argv>` in a copy of its
directory and must give: exit 2; exactly one `modelgate: error:` line on stderr, the last one, naming the file
and the path inside it; no traceback; no MLflow run (a fresh sqlite store stays empty); no git tag; no vLLM.
"""

from __future__ import annotations

import re
import shutil
import sqlite3
from pathlib import Path

import pytest
import yaml

from tests.support import cli
from tests.support.git import GIT_ENV, git
from tests.support.model_repo import TINY_MODEL, ModelRepo, build_model_repo
from tests.support.processes import scan

pytestmark = pytest.mark.integration

CORPUS = Path(__file__).resolve().parents[1] / "corpus" / "bad_inputs"
CASES = sorted(p.parent.name for p in CORPUS.glob("*/case.yaml"))
CASE_KEYS = {"about", "argv", "model_repo", "env", "expect"}
EXPECT_KEYS = {"file", "path", "contains"}
PLACEHOLDER = re.compile(r"@@([A-Z0-9_]+)(?::([^@]+))?@@")

# the corpus's children run git with no user config and no HOME
CORPUS_ENV = {**GIT_ENV, "HOME": "/nonexistent"}


def build_case_model(path: Path, spec: dict) -> ModelRepo:
    """TINY_MODEL with the case's files added or overridden and its `remove` list taken out, committed."""
    files = {**TINY_MODEL, **(spec.get("files") or {})}
    for name in spec.get("remove") or []:
        files.pop(name)
    return build_model_repo(path, files)


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
        model = build_case_model(work / "hub" / "model", case["model_repo"])
        values["REVISION"], digests = model.revision, model.digests
    for path in [p for p in work.rglob("*") if p.is_file() and "hub" not in p.relative_to(work).parts]:
        text = path.read_text()
        if "@@" in text:
            path.write_text(fill(text, values, digests))
    git(work, "init", "--quiet")  # the team repository: no version tag may appear in it
    store = tmp_path / "mlflow.db"
    shutil.copy(empty_store, store)
    home = tmp_path / "home"  # this case's only: the leftover check below looks for processes carrying it
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{store}", "MODELGATE_HOME": str(home), **CORPUS_ENV,
           **{k: None if v is None else fill(str(v), values, digests) for k, v in (case.get("env") or {}).items()}}
    argv = [fill(str(a), values, digests) for a in case["argv"]]
    proc = cli.run_subprocess(*argv, cwd=work, env=env, timeout=120)
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
    assert scan(MODELGATE_HOME=str(home)) == {}, shown  # no process of this case is left (vLLM or any)
