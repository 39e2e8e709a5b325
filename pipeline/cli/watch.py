"""After promotion: `modelgate watch` (judge production's serving metrics, roll back on evidence) and `modelgate
alerts` (Prometheus alerting rules, or an Argo Rollouts AnalysisTemplate, from release.yaml's SLOs)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from pipeline.cli.common import TRACKING_URI_HELP, home, store, with_config
from pipeline.errors import EXIT_INCONCLUSIVE, EXIT_PASSED, EXIT_REJECTED, BadInput

PROMETHEUS_ENV = "MODELGATE_PROMETHEUS_URL"


def prometheus_url(args: argparse.Namespace, configured: str | None, file: Path, required: bool) -> str | None:
    url = args.prometheus_url or os.environ.get(PROMETHEUS_ENV) or configured
    if url is None and required:
        raise BadInput(f"no Prometheus to ask: set watch.prometheus_url, ${PROMETHEUS_ENV} or --prometheus-url",
                       file=str(file), path="watch.prometheus_url")
    if url is not None and not url.startswith(("http://", "https://")):
        raise BadInput(f"not an http(s) URL: {url!r}", path="--prometheus-url")
    return url


def cmd_alerts(args: argparse.Namespace) -> int:
    import yaml

    from pipeline.watch import alerts

    if args.served_name:
        from pipeline.config.release import load_release

        release = load_release(args.config)
        served = args.served_name
    else:
        from pipeline.releasing.history import resolve

        release, uri = store(args)
        served = resolve(release, uri, "production")["served_name"]
    try:
        if args.format == "argo":
            doc = alerts.analysis_template(release, served, prometheus_url(args, release.watch.prometheus_url,
                                                                           release.path, False))
        else:
            doc = alerts.rules(release, served)
    except ValueError as exc:
        raise BadInput(str(exc), path="--served-name") from None
    text = yaml.safe_dump(doc, sort_keys=False, width=1000)
    if args.output:
        args.output.write_text(text)
        print(f"wrote {args.output} ({args.format}, {served})", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def cmd_watch(args: argparse.Namespace) -> int:
    import json

    from pipeline.util.progress import progress_for
    from pipeline.watch import judge
    from pipeline.watch.run import watch

    release, uri = store(args)
    url = prometheus_url(args, release.watch.prometheus_url, release.path, True)
    assert url is not None
    quiet = args.json
    result = watch(release, uri, url, progress=(lambda _line: None) if quiet else progress_for("watch"),
                   home=home(args.config))
    if args.json:
        print(json.dumps(result.as_dict(), indent=2, default=str))
    else:
        tail = f"; rolled back to v{result.rolled_back_to}" if result.rolled_back_to else ""
        print(f"watch: {result.production.model} v{result.production.version} ({result.production.served_name}): "
              f"{result.status}{tail}")
    return {judge.HEALTHY: EXIT_PASSED, judge.DEGRADED: EXIT_REJECTED}.get(result.status, EXIT_INCONCLUSIVE)


def register(sub: Any) -> None:
    w = with_config(sub.add_parser("watch", help="judge production's serving metrics (Prometheus) since its "
                                                  "promotion; exit 0 healthy, 1 degraded, 4 no data, 3 unreachable"))
    w.add_argument("--tracking-uri", help=TRACKING_URI_HELP)
    w.add_argument("--prometheus-url", help=f"Prometheus (default: ${PROMETHEUS_ENV}, then watch.prometheus_url)")
    w.add_argument("--json", action="store_true", help="print the judgement as JSON")
    w.set_defaults(func=cmd_watch)
    a = with_config(sub.add_parser("alerts", help="Prometheus alerting rules (or an Argo Rollouts AnalysisTemplate) "
                                                   "from release.yaml's SLOs"))
    a.add_argument("--tracking-uri", help=TRACKING_URI_HELP)
    a.add_argument("--served-name", help="the served model name to select (default: what `resolve production` "
                                         "reports, verified)")
    a.add_argument("--format", choices=("prometheus", "argo"), default="prometheus")
    a.add_argument("--prometheus-url", help="argo: the AnalysisTemplate's default Prometheus address")
    a.add_argument("--output", type=Path, help="write here instead of stdout")
    a.set_defaults(func=cmd_alerts)
