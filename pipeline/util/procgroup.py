"""Stopping a child that runs in its own process group (lm-eval, the serving benchmark): SIGINT to the
whole group, then SIGKILL if it has not exited within the grace period, so no helper process survives."""

from __future__ import annotations

import os
import signal
import subprocess
import time


def stop_group(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    for sig, wait in ((signal.SIGINT, grace_s), (signal.SIGKILL, grace_s)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        # the leader is gone; a member that ignores SIGINT (a shell's background job) is not: SIGKILL it
        deadline = time.monotonic() + min(grace_s, 2.0)
        while _group_alive(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not _group_alive(proc.pid):
            return


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
