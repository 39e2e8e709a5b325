"""Progress lines on stderr: `[  12.3s] serve: waiting for vLLM /health ...`. Secrets are redacted.

`Progress` is the one type of a progress callback (a function taking one line); every function that reports
progress takes it as `progress`.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from pipeline.util.secrets import redact

Progress = Callable[[str], None]

_T0 = time.monotonic()


def progress_for(stage: str) -> Progress:
    def say(message: str) -> None:
        print(f"[{time.monotonic() - _T0:7.1f}s] {stage}: {redact(message)}", file=sys.stderr, flush=True)

    return say
