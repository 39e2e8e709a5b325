"""Recorded production traffic for the real-stack replay gate (tests/e2e/test_variants_e2e.py's eos gate).

    replay_gates(tmp_path, demo_hub)   gates.replay over a small generated traffic file (pipeline/demo/traffic.py):
                                       most answers recorded by production (`instruct`), RESERVED by an older one
    TOOL_SERVING                       the serving arguments production's tool-calling clients need
    assert_no_personal_data(report, mlflow_uri, tmp_path)   no email, phone or card number of the traffic in any
                                       file of the run directory or artifact of its MLflow run
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from pipeline.demo import traffic
from pipeline.util import pii
from tests.support.releases import SINGLE_PROCESS_WORKER

RECORDS = 16  # requests recorded (all replayed): every check gets a few, eos fails not_truncated on (nearly) all
RESERVED = 3  # of them answered by an older production: production is served and asked those in the gate
MAX_TOKENS = 32  # the recorded answers stopped well within it; the eos variant's run on to it
TOOL_SERVING = {"extra_args": [*SINGLE_PROCESS_WORKER["extra_args"], "--enable-auto-tool-choice", "--tool-call-parser",
                               "hermes"]}


def traffic_file(tmp_path: Path, demo_hub: dict[str, Any]) -> Path:
    served = "chat@" + demo_hub["variants"]["instruct"]["revision"][:12]  # production is `instruct`
    records = traffic.generate(RECORDS, seed=11, served_name=served)
    for rec in records[:RESERVED]:
        rec["response"]["model"] = "chat@000000000000"
    for rec in records:
        rec["request"]["max_tokens"] = MAX_TOKENS
    return traffic.write(tmp_path / "traffic" / "recorded.jsonl", records)


def replay_gates(tmp_path: Path, demo_hub: dict[str, Any]) -> dict[str, Any]:
    path = traffic_file(tmp_path, demo_hub)
    return {"replay": {"path": str(path), "concurrency": 4, "pass_rate": {"margin": 0.15}}}


def personal_values(path: Path) -> set[str]:
    values: set[str] = set()
    for line in path.read_text().splitlines():
        for message in json.loads(line)["request"]["messages"]:
            values |= pii.found(message["content"])
    return values


def assert_no_personal_data(report: dict[str, Any], mlflow_uri: str, tmp_path: Path) -> None:
    from mlflow.artifacts import download_artifacts

    values = personal_values(tmp_path / "traffic" / "recorded.jsonl")
    assert any("@example.com" in v for v in values), values
    run_dir = Path(report["run_dir"])
    downloaded = Path(download_artifacts(run_id=report["tracking"]["run_id"], dst_path=str(tmp_path / "artifacts"),
                                         tracking_uri=mlflow_uri))
    files = [p for p in [*run_dir.rglob("*"), *downloaded.rglob("*")] if p.is_file()]
    assert "replay.jsonl" in {p.name for p in files}
    for path in files:
        text = path.read_bytes().decode("utf-8", "replace")
        for value in values:
            assert value not in text, f"{value!r} leaked into {path}"


EMAIL = re.compile(r"[\w.+-]+@example\.com")


def good(body: dict[str, Any]) -> tuple[str | None, list[dict[str, Any]] | None, str]:
    """What production recorded for each kind of demo request (pipeline/demo/traffic.py), echoing the
    customer's email back as support answers do."""
    fmt = (body.get("response_format") or {}).get("type")
    user = body["messages"][-1]["content"]
    order = (re.search(r"NW-\d{6}", user) or re.search(r".", "NW-000000"))
    order_id = order.group() if order and order.group().startswith("NW-") else "NW-000000"
    if fmt == "json_schema":
        return json.dumps({"order_id": order_id, "issue": "late", "wants": "refund"}), None, "stop"
    if fmt == "json_object":
        return json.dumps({"intent": "orders", "urgency": "normal"}), None, "stop"
    if body.get("tools"):
        choice = body.get("tool_choice")
        name = choice["function"]["name"] if isinstance(choice, dict) else "lookup_order"
        args = {"lookup_order": {"order_id": order_id}, "create_return": {"order_id": order_id, "reason": "other"},
                "check_stock": {"product": "rain jacket"}}[name]
        return None, [{"name": name, "arguments": json.dumps(args)}], "tool_calls"
    email = EMAIL.search(user)
    return ("Thanks for reaching out! I'm sorry for the trouble. I have checked this for you and our team will "
            f"follow up by email{' at ' + email.group() if email else ''} within one business day."), None, "stop"
