"""The test helpers themselves: waits keep their deadline on a silent child, the /proc scanner sees only this
session's live processes, both CLI runners give exit code and output, each team's model is its test's own."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import pytest

from tests.support import cli, processes
from tests.support.team import team_model
from tests.support.waiting import Watched, wait_for


def child(code: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=cli.child_env(env))


def test_wait_for_line_gives_up_at_its_deadline_when_the_child_is_silent():
    watched = Watched(child("import sys, time; print('hello', file=sys.stderr, flush=True); time.sleep(60)"))
    assert "hello" in watched.wait_for_line("hello", timeout_s=30)
    t0 = time.monotonic()
    with pytest.raises(pytest.fail.Exception, match="no stderr line with 'never' within 1 s"):
        watched.wait_for_line("never", timeout_s=1)
    assert time.monotonic() - t0 < 5
    assert watched.finish(timeout_s=10)[0] != 0  # stopped when the wait gave up


def test_wait_for_line_fails_when_the_output_ends_first():
    watched = Watched(child("print('done')"))
    with pytest.raises(pytest.fail.Exception, match="stderr ended before a line with 'x'"):
        watched.wait_for_line("x", timeout_s=30)
    assert watched.finish(timeout_s=10) == (0, "done\n", "")


def test_wait_for_returns_the_first_true_value_or_the_last_at_the_deadline():
    calls = []
    assert wait_for(lambda: calls.append(1) or len(calls) >= 3, timeout_s=10, interval_s=0.01) is True
    assert wait_for(lambda: [], timeout_s=0.05, interval_s=0.01) == []


def test_scan_finds_this_sessions_marked_process_until_it_exits(tmp_path):
    proc = child("import time; time.sleep(60)", MODELGATE_HOME=str(tmp_path))
    try:
        assert wait_for(lambda: proc.pid in processes.scan(MODELGATE_HOME=str(tmp_path)), timeout_s=10)
        assert processes.scan(MODELGATE_HOME=str(tmp_path / "other")) == {}
        assert proc.pid not in processes.scan(vllm=True)
        assert processes.gate_processes(tmp_path)[0].startswith(f"{proc.pid} ")
    finally:
        proc.kill()
    assert wait_for(lambda: not processes.alive(proc.pid), timeout_s=10)  # a zombie until reaped: not alive
    assert processes.scan(MODELGATE_HOME=str(tmp_path)) == {}
    proc.wait()


def test_both_cli_runners_give_exit_code_and_output():
    inside = cli.run_in_process("nonsense")
    outside = cli.run_subprocess("nonsense", timeout=120)
    assert inside.returncode == outside.returncode == 2
    assert "invalid choice" in inside.stderr and "invalid choice" in outside.stderr


def test_each_tests_team_has_a_model_of_its_own_named_after_it():
    """The `team` fixture's model: the tracking servers are the session's, so no two tests may share a model,
    not the cases of one parametrized test nor two tests whose long names differ only past the cut."""
    long = "test_a_valid_signature_over_a_record_changed_since_is_refused"
    ids = [f"tests/integration/test_signed_promotion.py::{long}[{case}]" for case in ("baseline tag", "file digest")]
    ids += [f"tests/integration/test_{m}.py::test_x[sqlite]" for m in ("promotion", "release_policy")]
    ids += [f"tests/integration/test_promotion.py::{test}" for test in ("test_x[postgres-auth]", long)]
    names = [team_model(i) for i in ids]
    assert len(set(names)) == len(names)
    assert all(re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", n) and len(n) <= 61 for n in names), names
    assert names[0].startswith("signed-promotion-a-valid-signature-over-a-record-") and team_model(ids[0]) == names[0]
