"""``python -m pipeline.tools.lm_eval_entry run ...``: ``python -m lm_eval`` with modelgate's model registered.

Same arguments as ``python -m lm_eval``. It imports ``pipeline.tools.lmeval_model`` (which registers
``--model modelgate-completions`` with lm-eval's model registry) before lm-eval parses them, then runs lm-eval's
own ``__main__`` as ``python -m lm_eval`` would.
"""

from __future__ import annotations

import runpy

import pipeline.tools.lmeval_model  # noqa: F401  (registers modelgate-completions with lm-eval)


def main() -> None:
    runpy.run_module("lm_eval", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
