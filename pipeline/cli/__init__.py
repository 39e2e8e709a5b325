"""The `modelgate` command line, one module per command group, each owning its commands and their parsers:

    app.py      the top-level parser and `main` (the one error handler, exit codes, SIGTERM)
    common.py   what the groups share: the parser class, --config, --tracking-uri, the release store
    gate.py     gate, plan, sync                     model.py    lock, fetch
    demo.py     demo init, and the release commands on the demo's own release profile and keys
    release.py  keygen, approve, promote, rollback, history, resolve
    report.py   report                               github.py   github comment|status|approver|change-author

The console script is `pipeline.cli:main`; `python -m pipeline` runs the same.
"""

from pipeline.cli.app import build_parser, main

__all__ = ["build_parser", "main"]
