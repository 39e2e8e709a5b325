"""`modelgate report`: render a gate report (markdown, JSON, HTML). `gate_report` reads one for every command that
takes a report.json."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.errors import BadInput, InfraError

if TYPE_CHECKING:
    from pipeline.report.document import GateReport


def gate_report(path: Path) -> tuple[GateReport, str]:
    """The report and its markdown rendering (rendering it also proves its details hold what we show)."""
    from pipeline.report import markdown
    from pipeline.report.document import GateReport

    if not path.is_file():
        raise BadInput("no such report file", file=str(path))
    try:
        report = GateReport.load(path)
        return report, markdown.render(report)
    except (ValueError, InfraError, AttributeError) as exc:
        raise BadInput(f"not a gate report: {' '.join(str(exc).split())[:200]}", file=str(path)) from exc
    except (KeyError, TypeError) as exc:
        raise BadInput(f"not a gate report: field {exc} missing or of the wrong type", file=str(path)) from exc


def cmd_report(args: argparse.Namespace) -> int:
    import json

    from pipeline.report import html

    report, markdown = gate_report(Path(args.path))
    if args.format == "json":
        text = json.dumps(report.to_dict(), indent=2)
    elif args.format == "html":
        text = html.render(report, report_path=Path(args.path))
    else:
        text = markdown
    if args.output:
        try:
            Path(args.output).write_text(text, encoding="utf-8")
        except OSError as exc:
            raise InfraError(f"cannot write {args.output}: {exc.strerror or exc}") from exc
        print(f"wrote {args.format} report to {args.output}")
    else:
        print(text, end="" if text.endswith("\n") else "\n")
    return 0



def register(sub: Any) -> None:
    """The parser of `report` (`sub`: the top-level subparsers)."""
    rep = sub.add_parser("report", help="render a gate report")
    rep.add_argument("path", help="a report.json")
    rep.add_argument("--format", choices=["markdown", "json", "html"], default="markdown")
    rep.add_argument("--output", "-o", help="write to this file instead of stdout")
    rep.set_defaults(func=cmd_report)
