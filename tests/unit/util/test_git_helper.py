"""Every git call goes through pipeline.util.git: a failure the caller must not ignore is a GitError (an
infrastructure error naming the subcommand, the directory and git's words); other failures are returned."""

import pytest

from pipeline.errors import InfraError
from pipeline.util.git import GitError, git, is_valid_tag_name, reason, subcommand


def test_checked_failure_names_subcommand_directory_and_reason(tmp_path):
    with pytest.raises(GitError) as info:
        git("rev-parse", "HEAD", cwd=tmp_path)
    assert isinstance(info.value, InfraError)
    assert str(info.value).startswith(f"git rev-parse in {tmp_path} failed: fatal:")


def test_unchecked_failure_is_returned(tmp_path):
    proc = git("rev-parse", "HEAD", cwd=tmp_path, check=False)
    assert proc.returncode != 0 and reason(proc.stderr).startswith("fatal:")


def test_input_and_env_reach_git(tmp_path):
    git("init", "--quiet", cwd=tmp_path)
    sha = git("hash-object", "--stdin", cwd=tmp_path, input="hello\n").stdout.strip()
    assert sha == "ce013625030ba8dba906f756967f9e9ca394464a"
    out = git("var", "GIT_COMMITTER_IDENT", cwd=tmp_path, env={"GIT_COMMITTER_NAME": "Ada",
                                                                 "GIT_COMMITTER_EMAIL": "ada@example.invalid"})
    assert out.stdout.startswith("Ada <ada@example.invalid>")


def test_subcommand_skips_global_options():
    assert subcommand(("-c", "core.autocrlf=false", "--git-dir", "x", "fetch", "--quiet")) == "fetch"
    assert subcommand(("--git-dir=x", "archive")) == "archive"


def test_tag_names():
    assert is_valid_tag_name("model/v1")
    assert not is_valid_tag_name("bad..name")
