"""``python -m pipeline.tools.lm_eval_entry run ...``: ``python -m lm_eval`` with modelgate's model registered.

Same arguments as ``python -m lm_eval``. It imports ``pipeline.tools.lmeval_model`` (which registers
``--model modelgate-completions`` with lm-eval's model registry) before lm-eval parses them, then runs lm-eval's
own ``__main__`` as ``python -m lm_eval`` would.

With ``MODELGATE_LMEVAL_GO`` set (a prestarted run, tools/lmeval/run.Prestarted), the model's first request waits
until that file exists: lm-eval's imports, task building and tokenizing are done by then. It gives up if its
parent (the gate) is gone.
"""

from __future__ import annotations

import functools
import os
import runpy
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pipeline.tools.lmeval_model  # (registers modelgate-completions with lm-eval)
from pipeline.tools.lmeval.run import GO_ENV


def wait_for(go: Path, parent: int, poll_s: float = 0.05) -> None:
    while not go.exists():
        if os.getppid() != parent:  # the gate is gone: nobody will release this run
            raise SystemExit("modelgate: the gate that started this lm-eval run is gone")
        time.sleep(poll_s)


def hold_first_request(go: Path) -> None:
    """Make the model class's request methods wait for `go` (once it exists, they run at once)."""
    cls = pipeline.tools.lmeval_model.PrefixCachedCompletions
    parent = os.getppid()

    def held(method: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(method)
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            wait_for(go, parent)
            return method(self, *args, **kwargs)
        return wrapper

    for name in ("loglikelihood", "loglikelihood_rolling", "generate_until"):
        setattr(cls, name, held(getattr(cls, name)))


def main() -> None:
    go = os.environ.get(GO_ENV)
    if go:
        hold_first_request(Path(go))
    runpy.run_module("lm_eval", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
