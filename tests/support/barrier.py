"""Start several `modelgate` commands so they act at the same moment: each child imports the CLI (and MLflow)
first, says it is ready, then waits for one shared file before calling `cli.main`, so the operations race for
real instead of in launch order."""

from __future__ import annotations

from pathlib import Path

from tests.support import cli
from tests.support.waiting import Watched, wait_for

HARNESS = """
import os, sys, time
from pathlib import Path
from pipeline import cli
import mlflow.tracking  # the slow import happens before the barrier, not after it
go, ready = Path(sys.argv[1]), Path(sys.argv[2])
ready.write_text(str(os.getpid()))
deadline = time.monotonic() + 60
while not go.exists():
    if time.monotonic() > deadline:
        sys.exit("barrier: nobody said go within 60 s")
    time.sleep(0.001)
sys.exit(cli.main(sys.argv[3:]))
"""


def start_together(directory: Path, commands: list[list[str]], env: dict[str, str | None]) -> list[Watched]:
    """Start every command, wait until all are ready, then release them at once; the watched children."""
    directory.mkdir(parents=True, exist_ok=True)
    go = directory / "go"
    go.unlink(missing_ok=True)
    ready = [directory / f"ready-{i}" for i in range(len(commands))]
    for path in ready:
        path.unlink(missing_ok=True)
    children = [cli.start(str(go), str(flag), *argv, env=env, python=["-c", HARNESS])
                for flag, argv in zip(ready, commands, strict=True)]
    if not wait_for(lambda: all(p.exists() for p in ready), timeout_s=120, interval_s=0.01):
        for child in children:
            child.proc.kill()
        raise AssertionError("the racing commands did not get ready within 120 s")
    go.touch()
    return children
