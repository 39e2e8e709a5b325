"""The files of one gate's run directory, named once.

    runs/<gate id>/
      report.json          the gate report (report/document.py), written before MLflow is touched
      report.md            its markdown rendering (the PR comment)
      report.html          its HTML rendering (one self-contained page; MLflow previews it inline)
      items.json           the per-item results the next gate's comparison pairs with (MLflow artifact)
      server.log           the staging vLLM server's log
      <stage>/             each stage's files (format/cases.jsonl, evals/items.jsonl, load/..., compare/...)
      baseline/            the production baseline re-evaluated in this gate: server.log, format/, evals/
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

REPORT_FILE = "report.json"
MARKDOWN_FILE = "report.md"
HTML_FILE = "report.html"
ITEMS_FILE = "items.json"
SERVER_LOG = "server.log"
BASELINE_DIR = "baseline"


@dataclass(frozen=True)
class RunDir:
    path: Path

    @property
    def report(self) -> Path:
        return self.path / REPORT_FILE

    @property
    def markdown(self) -> Path:
        return self.path / MARKDOWN_FILE

    @property
    def html(self) -> Path:
        return self.path / HTML_FILE

    @property
    def items(self) -> Path:
        return self.path / ITEMS_FILE

    @property
    def server_log(self) -> Path:
        return self.path / SERVER_LOG

    def stage(self, name: str) -> Path:
        """The folder of stage `name`'s files (not created here)."""
        return self.path / name

    @property
    def baseline(self) -> RunDir:
        """Where the re-evaluated baseline's files go: the same layout one level down."""
        return RunDir(self.path / BASELINE_DIR)
