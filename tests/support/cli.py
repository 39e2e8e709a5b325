"""Running `modelgate` in tests, two ways:

- `run_in_process(*argv)`: the CLI's own entry point `cli.main` in this process (~2 s faster than a child that
  imports MLflow again), with stdout, stderr and the exit code caught as from a subprocess.
- `run_subprocess(*argv)` / `start(*argv)`: `python -m pipeline` as a child process, as CI and users run it
  (signals, process groups, a fresh interpreter). `command(*argv)` is its argv.

`env` adds to os.environ; a value None removes the variable.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

from tests.support.paths import REPO
from tests.support.waiting import Watched

Env = Mapping[str, str | None]


def command(*argv: str) -> list[str]:
    """The argv of `modelgate <argv>` run by this interpreter."""
    return [sys.executable, "-m", "pipeline", *argv]


def child_env(env: Env | None = None) -> dict[str, str]:
    """os.environ with `env` applied (None removes), and this checkout's code first on the path."""
    full = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    for key, value in (env or {}).items():
        if value is None:
            full.pop(key, None)
        else:
            full[key] = value
    return full


def run_subprocess(*argv: str, env: Env | None = None, cwd: Path | None = None,
                   timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """`python -m pipeline <argv>` as a child; waits for it; output captured as text."""
    return subprocess.run(command(*argv), capture_output=True, text=True, env=child_env(env), cwd=cwd,
                          timeout=timeout)


def start(*argv: str, env: Env | None = None, python: list[str] | None = None,
          wrap: Callable[[list[str]], list[str]] | None = None) -> Watched:
    """`python -m pipeline <argv>` (or `python <python...> <argv>`, e.g. ["-c", HARNESS]) started as a child
    whose output is read as it comes (see waiting.Watched); `wrap` may put the command inside another (e.g.
    a mount namespace, tests/support/tinydisk.py)."""
    cmd = [sys.executable, *python, *argv] if python else command(*argv)
    if wrap is not None:
        cmd = wrap(cmd)
    return Watched(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                    env=child_env(env), preexec_fn=_as_in_a_terminal))


def _as_in_a_terminal() -> None:
    """The child takes SIGINT as a gate run in a terminal does (Ctrl-C), even when the test run itself was
    started as a background job, which inherits SIGINT ignored (a shell's `cmd &`): Python then never installs
    its KeyboardInterrupt handler, and the tests that interrupt a gate would time out."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_in_process(*argv: str, env: Env | None = None) -> subprocess.CompletedProcess[str]:
    """`modelgate <argv>` through `cli.main` in this process, os.environ patched with `env` for the call;
    exit code, stdout and stderr as from a subprocess."""
    from pipeline import cli

    out, err = io.StringIO(), io.StringIO()
    saved = dict(os.environ)
    for key, value in (env or {}).items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = cli.main(list(argv))
            except SystemExit as exc:  # argparse usage errors
                code = exc.code if isinstance(exc.code, int) else 2
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return subprocess.CompletedProcess(["modelgate", *argv], code, out.getvalue(), err.getvalue())


def gate_env(mlflow_uri: str, home: Path | str) -> dict[str, str | None]:
    """The environment of a gate on the real stack: its tracking server and model home, unbuffered output."""
    return {"MLFLOW_TRACKING_URI": mlflow_uri, "MODELGATE_HOME": str(home), "PYTHONUNBUFFERED": "1"}


def run_gate(config: Path, mlflow_uri: str, home: Path | str, *args: str, env: Env | None = None,
             timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """`modelgate gate --config <config> <args>` as a child, with `gate_env` (plus `env`)."""
    return run_subprocess("gate", "--config", str(config), *args, env={**gate_env(mlflow_uri, home), **(env or {})},
                          timeout=timeout)
