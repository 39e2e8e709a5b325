import subprocess
import sys

import pytest
import yaml

from pipeline.cli import main
from pipeline.config.release import load_release
from pipeline.model.lock import rewrite_candidate
from tests.support.model_repo import build_model_repo
from tests.support.reports import sample_report

RELEASE_TEXT = """\
# the team's release file
schema_version: 1
model:
  name: support-bot   # registered model name
candidate:
  source: git
  repo: {repo}
  revision: {rev}     # will be replaced
  files:
    old.bin: {old}
serving:
  enforce_eager: true
"""


def test_rewrite_keeps_comments_and_other_blocks():
    text = RELEASE_TEXT.format(repo="hub", rev="main", old="0" * 64)
    out = rewrite_candidate(text, "a" * 40, {"config.json": "c" * 64, "model.safetensors": "d" * 64}, file="r")
    data = yaml.safe_load(out)
    assert data["candidate"]["revision"] == "a" * 40
    assert data["candidate"]["files"] == {"config.json": "c" * 64, "model.safetensors": "d" * 64}
    assert data["serving"] == {"enforce_eager": True}
    assert "# the team's release file" in out and "# registered model name" in out


def test_lock_command_writes_digests_of_the_commit(tmp_path, capsys):
    path, sha, digests = build_model_repo(tmp_path / "hub")
    config = tmp_path / "release.yaml"
    config.write_text(RELEASE_TEXT.format(repo="hub", rev="main", old="0" * 64))
    assert main(["lock", "--config", str(config), "--revision", sha]) == 0
    release = load_release(config)
    assert release.candidate.revision == sha
    assert release.candidate.files == digests
    assert "locked 3 file(s)" in capsys.readouterr().out


@pytest.mark.parametrize("argv, words", [
    (["lock", "--config", "{config}", "--revision", "main"], "branch name moves"),
    (["gate", "--config", "{missing}"], "file not found"),
    (["gate", "--pr", "abc"], "invalid int value"),
    (["nonsense"], "invalid choice"),
])
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, argv, words):
    config = tmp_path / "release.yaml"
    config.write_text(RELEASE_TEXT.format(repo="hub", rev="a" * 40, old="0" * 64))
    argv = [a.format(config=config, missing=tmp_path / "missing.yaml") for a in argv]
    code = run_cli(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert words in err and len(err.splitlines()) == 1 and err.startswith("modelgate: error:")


def run_cli(argv):
    """main() returns the exit code; argparse errors raise SystemExit with it."""
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


def test_help_is_fast_and_imports_nothing_heavy():
    code = ("import sys, time; t=time.monotonic(); import pipeline.cli as c; c.build_parser().format_help();"
            "heavy=[m for m in ('vllm','torch','mlflow','lm_eval','transformers','jsonschema','pydantic')"
            " if m in sys.modules];"
            "print(heavy, time.monotonic()-t)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.startswith("[]"), out


@pytest.mark.parametrize("suite_text, gates, words", [
    ("suite: s\ncases:\n  - id: a\n    messages: [{role: user, content: hi}]\n    expect: {regex: '('}\n",
     {"format": {}}, "cases[id=a].expect.regex"),
    (None, {"evals": {"tasks": ["no_such_task"]}}, "gates.evals.tasks[0]: task 'no_such_task' is not defined"),
    (None, {"evals": {"tasks": ["t"], "metrics": {"other/acc": {"floor": 0.1}}}}, "gates.evals.metrics.other/acc"),
])
def test_bad_suite_or_evalset_exits_2_before_anything_runs(tmp_path, capsys, suite_text, gates, words):
    (tmp_path / "prompts").mkdir()
    (tmp_path / "evalsets").mkdir()
    (tmp_path / "evalsets" / "t.yaml").write_text("task: t\ndataset_path: json\noutput_type: multiple_choice\n")
    if suite_text:
        (tmp_path / "prompts" / "bad.yaml").write_text(suite_text)
    config = tmp_path / "release.yaml"
    config.write_text(RELEASE_TEXT.format(repo="hub", rev="a" * 40, old="ab" * 32)
                      + "gates: " + repr(gates).replace("'", '"') + "\n")
    assert run_cli(["gate", "--config", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and len(err.splitlines()) == 1
    assert not (tmp_path / "mlflow").exists() and not (tmp_path / "runs").exists()


def test_report_command_renders_and_refuses_a_missing_file(tmp_path, capsys):

    path = sample_report(tmp_path).save(tmp_path)
    assert run_cli(["report", str(path), "--format", "markdown"]) == 0
    assert "modelgate: REJECTED: bot v7" in capsys.readouterr().out
    assert run_cli(["report", str(tmp_path / "nope.json")]) == 2
    assert "nope.json: no such report file" in capsys.readouterr().err


def test_unreachable_tracking_server_fails_closed_before_any_work(tmp_path, capsys):
    from pipeline.serving.vllm_server import free_port

    config = tmp_path / "release.yaml"
    config.write_text(RELEASE_TEXT.format(repo="hub", rev="a" * 40, old="ab" * 32))
    url = f"http://user:s3cretpass@127.0.0.1:{free_port()}"
    assert run_cli(["gate", "--config", str(config), "--tracking-uri", url]) == 3
    err = capsys.readouterr().err
    assert "is unreachable" in err and "cannot promote anything" in err
    assert "s3cretpass" not in err  # credentials in the URI are never shown
    assert not (tmp_path / "runs").exists() and not (tmp_path / ".modelgate").exists()
