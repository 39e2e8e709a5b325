"""lm-eval stops as soon as the server under it is gone: run_lmeval checks the server every half second while
lm-eval runs (the gate passes VllmServer.check_alive), and what the check raises ends lm-eval's process group
at once instead of lm-eval retrying every request against a dead server."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from pipeline.errors import ServerError
from pipeline.tools.lmeval import run_lmeval
from tests.support.paths import REPO

# a stand-in `python -m lm_eval` that prints a line and then waits for requests that never come back
HANGING_LM_EVAL = "import sys, time\nprint('fake lm-eval: running', flush=True)\ntime.sleep(600)\n"


def test_a_failed_server_check_stops_lm_eval_at_once(tmp_path, monkeypatch):
    fake = tmp_path / "fake" / "lm_eval"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "__main__.py").write_text(HANGING_LM_EVAL)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "fake"))
    calls: list[float] = []
    pids: list[int] = []

    def server_gone_after_a_second() -> None:
        calls.append(time.monotonic())
        if calls[-1] - calls[0] > 1.0:
            raise ServerError("vLLM died with exit code -9", log_tail="killed")

    real_popen = subprocess.Popen

    def recording_popen(*args, **kwargs):
        proc = real_popen(*args, **kwargs)
        pids.append(proc.pid)
        return proc

    monkeypatch.setattr(subprocess, "Popen", recording_popen)
    lines: list[str] = []
    with pytest.raises(ServerError, match="vLLM died with exit code -9"):
        run_lmeval("http://127.0.0.1:9", "m", tmp_path, ["support_intent"], REPO / "evalsets", tmp_path / "out",
                   limit=5, progress=lines.append, loglikelihood="echo", check_alive=server_gone_after_a_second)
    assert len(calls) >= 3  # checked every half second while it ran
    assert "lm-eval: fake lm-eval: running" in lines
    assert len(pids) == 1
    with pytest.raises(ProcessLookupError):  # its process group was stopped (it sleeps 600 s), not abandoned
        os.kill(pids[0], 0)
