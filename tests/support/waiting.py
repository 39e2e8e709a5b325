"""Waiting in tests: on a condition, or on a line of a child's output, always with a deadline that fires
even when nothing happens (no fixed sleeps that decide what a test hits)."""

from __future__ import annotations

import queue
import subprocess
import threading
import time
from collections.abc import Callable
from typing import IO, NoReturn, TypeVar

import pytest

T = TypeVar("T")


def wait_for(condition: Callable[[], T], timeout_s: float, interval_s: float = 0.1) -> T:
    """Call `condition` until it returns something true, or `timeout_s` passes; its last value."""
    deadline = time.monotonic() + timeout_s
    while not (value := condition()) and time.monotonic() < deadline:
        time.sleep(interval_s)
    return value


class Watched:
    """A child process with text pipes whose stdout and stderr are read by threads as they come, so a wait for
    a line keeps its deadline when the child is silent, and neither pipe fills up.

        watched = Watched(subprocess.Popen(cmd, stdout=PIPE, stderr=PIPE, text=True))
        watched.wait_for_line("evals: started", "lm-eval:", timeout_s=600)
        code, out, err = watched.finish(timeout_s=180)
    """

    def __init__(self, proc: subprocess.Popen):
        self.proc = proc
        self.out: list[str] = []
        self.err: list[str] = []
        self._err_lines: queue.Queue[str | None] = queue.Queue()
        self._readers = [threading.Thread(target=self._read, args=(proc.stdout, self.out, None), daemon=True),
                         threading.Thread(target=self._read, args=(proc.stderr, self.err, self._err_lines),
                                          daemon=True)]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(stream: IO[str], into: list[str], lines: queue.Queue | None) -> None:
        for line in stream:
            into.append(line)
            if lines is not None:
                lines.put(line)
        if lines is not None:
            lines.put(None)  # end of output

    def wait_for_line(self, *markers: str, timeout_s: float = 600) -> str:
        """Wait until a stderr line holds each marker in turn; the last such line. Fails the test (and stops
        the child) when the deadline passes or the output ends first."""
        deadline = time.monotonic() + timeout_s
        line = ""
        for marker in markers:
            while True:
                try:
                    got = self._err_lines.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    self.give_up(f"no stderr line with {marker!r} within {timeout_s:.0f} s")
                if got is None:
                    self.give_up(f"stderr ended before a line with {marker!r}")
                line = got
                if marker in line:
                    break
        return line

    def give_up(self, why: str) -> NoReturn:
        self.proc.terminate()
        pytest.fail(f"{why}; stderr so far:\n" + "".join(self.err))

    def finish(self, timeout_s: float = 600) -> tuple[int, str, str]:
        """Wait for the child to exit; (exit code, all stdout, all stderr). A child still running after
        `timeout_s` is killed before the timeout is raised, so a failed test leaves no process behind."""
        try:
            code = self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)
            raise
        for reader in self._readers:
            reader.join(timeout=30)
        return code, "".join(self.out), "".join(self.err)
