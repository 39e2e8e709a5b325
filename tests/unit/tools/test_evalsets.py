"""Fast checks of the demo evalset (evalsets/) and of the lm-eval output parser. No model server."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from pipeline.errors import BadInput
from pipeline.tools.lmeval import (
    build_command,
    doc_hash,
    evalset_digest,
    parse_output,
    parse_samples,
    resolve_task_yamls,
)
from tests.support.paths import REPO

EVALSETS = REPO / "evalsets"
FIXTURES = REPO / "tests" / "fixtures" / "lmeval"
TASKS = ["support_intent", "support_facts"]
INTENTS = ["refund", "delivery", "account", "product", "cancel", "complaint"]


def _jsonl(name: str) -> list[dict]:
    return [json.loads(line) for line in (EVALSETS / name).read_text(encoding="utf-8").splitlines() if line]


@pytest.fixture(scope="module")
def loaded_tasks(tmp_path_factory):
    """The tasks as lm-eval builds them: TaskManager(include_path=evalsets), datasets offline."""
    from lm_eval.tasks import TaskManager

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("HF_DATASETS_OFFLINE", "1")
        mp.chdir(tmp_path_factory.mktemp("elsewhere"))  # data paths must not depend on the CWD
        tm = TaskManager(include_path=str(EVALSETS), include_defaults=False)
        assert set(TASKS) <= set(tm.all_subtasks)
        return tm.load(TASKS)["tasks"]


def test_tasks_load_and_build_docs(loaded_tasks):
    assert set(loaded_tasks) == set(TASKS)
    counts = {name: len(list(t.test_docs())) for name, t in loaded_tasks.items()}
    assert counts == {"support_intent": 120, "support_facts": 120}
    assert sum(counts.values()) >= 240
    intent, facts = loaded_tasks["support_intent"], loaded_tasks["support_facts"]
    assert intent.config.output_type == "multiple_choice"
    assert facts.config.output_type == "generate_until"
    assert facts.config.generation_kwargs["until"] == ["\n"]
    assert facts.config.generation_kwargs["max_gen_toks"] == 16
    assert len(list(intent.fewshot_docs())) == 6 and len(list(facts.fewshot_docs())) == 3


def test_prompts_render(loaded_tasks):
    intent = loaded_tasks["support_intent"]
    doc = intent.test_docs()[0]
    assert intent.doc_to_choice(doc) == INTENTS
    assert intent.doc_to_choice(doc)[intent.doc_to_target(doc)] == doc["label"]
    ctx = intent.fewshot_context(doc, num_fewshot=6)
    assert ctx.endswith(f"Message: {doc['text']}\nIntent:")
    assert ctx.count("\nIntent:") == 7  # 6 shots + the item
    facts = loaded_tasks["support_facts"]
    fdoc = facts.test_docs()[0]
    assert facts.doc_to_target(fdoc) == fdoc["answer"]
    assert facts.fewshot_context(fdoc, num_fewshot=3).endswith(f"Question: {fdoc['question']}\nAnswer:")


def test_intent_labels_valid_and_balanced():
    items = _jsonl("support_intent.jsonl")
    for it in items:
        assert it["label"] in INTENTS
        assert INTENTS[it["gold"]] == it["label"]
    assert Counter(it["label"] for it in items) == {k: 20 for k in INTENTS}
    shots = _jsonl("support_intent_fewshot.jsonl")
    assert sorted(s["label"] for s in shots) == sorted(INTENTS)


def test_facts_answer_is_stated_in_policy():
    for it in _jsonl("support_facts.jsonl") + _jsonl("support_facts_fewshot.jsonl"):
        words = re.findall(r"[A-Za-z0-9]+", it["policy"])
        assert it["answer"] in words, it
        assert it["policy"].count(".") >= 3  # target fact + 2 distractors
    kinds = Counter(it["kind"] for it in _jsonl("support_facts.jsonl"))
    assert len(kinds) == 12 and set(kinds.values()) == {10}


def test_no_duplicates_and_shots_disjoint():
    intent, facts = _jsonl("support_intent.jsonl"), _jsonl("support_facts.jsonl")
    for items, key in ((intent, lambda d: d["text"]), (facts, lambda d: (d["policy"], d["question"]))):
        assert len({key(d) for d in items}) == len(items)
        assert len({d["id"] for d in items}) == len(items)
    assert not {d["text"] for d in intent} & {d["text"] for d in _jsonl("support_intent_fewshot.jsonl")}
    assert not {d["policy"] for d in facts} & {d["policy"] for d in _jsonl("support_facts_fewshot.jsonl")}


def test_committed_data_matches_generator():
    proc = subprocess.run([sys.executable, str(EVALSETS / "build_data.py"), "--check"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_evalset_digest_tracks_content(tmp_path):
    base = evalset_digest(EVALSETS, TASKS)
    assert re.fullmatch(r"[0-9a-f]{64}", base)
    assert evalset_digest(EVALSETS, list(reversed(TASKS))) == base
    assert evalset_digest(EVALSETS, ["support_demo"]) == base  # the tag names the same two tasks
    assert evalset_digest(EVALSETS, ["support_intent"]) != base

    copy = tmp_path / "evalsets"
    shutil.copytree(EVALSETS, copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert evalset_digest(copy, TASKS) == base  # location-independent
    data = copy / "support_facts.jsonl"
    data.write_text(data.read_text().replace('"answer": "75"', '"answer": "76"', 1))
    changed = evalset_digest(copy, TASKS)
    assert changed != base
    assert evalset_digest(copy, ["support_intent"]) == evalset_digest(EVALSETS, ["support_intent"])
    (copy / "loader.py").write_text((copy / "loader.py").read_text() + "\n# edit\n")
    assert evalset_digest(copy, TASKS) != changed


def test_unknown_task_is_bad_input():
    with pytest.raises(BadInput):
        evalset_digest(EVALSETS, ["support_intent", "no_such_task"])
    assert {p.name for p in resolve_task_yamls(EVALSETS, ["support_demo"])} == {
        "support_intent.yaml", "support_facts.yaml"}


def test_build_command():
    cmd = build_command("http://127.0.0.1:8011", "demo", Path("/m"), TASKS, EVALSETS, Path("/o"),
                        num_concurrent=8, limit=5)
    args = cmd[cmd.index("--model_args") + 1].split(",")
    assert "base_url=http://127.0.0.1:8011/v1/completions" in args
    assert {"model=demo", "tokenizer=/m", "tokenized_requests=False", "num_concurrent=8"} <= set(args)
    assert cmd[cmd.index("--model") + 1] == "modelgate-completions"  # local-completions + prefix-cached scoring
    assert cmd[cmd.index("--tasks") + 1] == "support_intent,support_facts"
    assert "--log_samples" in cmd and cmd[cmd.index("--limit") + 1] == "5"
    for url in ("http://h:1/v1", "http://h:1/v1/", "http://h:1/v1/completions"):
        c = build_command(url, "m", Path("/m"), TASKS, EVALSETS, Path("/o"))
        assert "base_url=http://h:1/v1/completions," in c[c.index("--model_args") + 1]
        assert "--limit" not in c


def test_parse_captured_run():
    """tests/fixtures/lmeval holds a real lm-eval 0.4.13 run (--limit 5) against SmolLM2-135M on vLLM."""
    results = next(FIXTURES.glob("results_*.json"))
    run = parse_output(results)
    assert run.lm_eval_version == "0.4.13"
    assert set(run.tasks) == set(TASKS)
    assert run.n_items == 10 and len(run.items) == 10
    assert set(run.tasks["support_intent"].metrics) == {"acc", "acc_norm"}
    assert set(run.tasks["support_facts"].metrics) == {"exact_match"}
    assert run.tasks["support_intent"].stderr["acc"] is not None
    assert run.tasks["support_intent"].n_shot == 6
    by_id = {d["id"]: d for d in _jsonl("support_intent.jsonl") + _jsonl("support_facts.jsonl")}
    for task, scores in run.tasks.items():
        recs = [it for it in run.items if it["task"] == task]
        assert [r["doc_id"] for r in recs] == list(range(5))
        for r in recs:
            assert doc_hash(by_id[r["item_id"]]) == r["doc_hash"]  # hash of the evalset row itself
            for m in scores.metrics:
                assert r[m] in (0.0, 1.0)
        for m, v in scores.metrics.items():
            assert v == pytest.approx(sum(r[m] for r in recs) / len(recs))
        assert run.scores(task, next(iter(scores.metrics))).keys() == {r["doc_hash"] for r in recs}


def test_parse_samples_keeps_filter_names(tmp_path):
    line = {"doc_id": 3, "doc": {"id": "x", "q": 1}, "filter": "strict", "metrics": ["exact_match"],
            "exact_match": 1.0}
    p = tmp_path / "samples_t_1.jsonl"
    p.write_text(json.dumps(line) + "\n")
    [rec] = parse_samples(p, "t")
    assert rec == {"task": "t", "doc_id": 3, "doc_hash": doc_hash({"q": 1, "id": "x"}), "item_id": "x",
                   "exact_match,strict": 1.0}


def _facts_metrics():
    sys.path.insert(0, str(EVALSETS))
    try:
        import facts_metrics
    finally:
        sys.path.remove(str(EVALSETS))
    return facts_metrics


@pytest.mark.parametrize("answer, reference, f1", [
    (" 75", "75", 1.0), (" 7 days", "7", 2 / 3), (" USPS", "FIRST25", 0.0), ("", "7", 0.0), ("", "", 1.0),
    ("The Denver.", "denver", 1.0), ("30 30", "30", 2 / 3),
])
def test_support_facts_token_f1(answer, reference, f1):
    result = _facts_metrics().process_results({"answer": reference}, [answer])
    assert result["f1"] == pytest.approx(f1) and math.isfinite(result["f1"])


def test_support_facts_exact_match_is_unchanged_by_the_f1_hook():
    """The recorded lm-eval samples (exact_match computed by lm-eval's own metric options) score the same."""
    metrics = _facts_metrics()
    recorded = next(FIXTURES.glob("samples_support_facts_*.jsonl"))
    samples = [json.loads(line) for line in recorded.read_text().splitlines()]
    assert len(samples) >= 5
    for s in samples:
        assert metrics.process_results(s["doc"], s["filtered_resps"])["exact_match"] == s["exact_match"]


def test_support_facts_computes_exact_match_and_f1_per_item(loaded_tasks):
    facts = loaded_tasks["support_facts"]
    assert facts.aggregation().keys() == {"exact_match", "f1"}
    doc = facts.test_docs()[2]
    assert facts.process_results(doc, [" 7 days"]) == {"exact_match": 0.0, "f1": pytest.approx(2 / 3)}


def test_parse_samples_keeps_scores_and_skips_non_numbers(tmp_path):
    path = tmp_path / "samples_t.jsonl"
    rows = [{"doc_id": 0, "doc": {"id": "a"}, "filter": "none", "metrics": ["f1", "bleu", "exact_match"],
             "f1": 0.6666, "bleu": [["gold"], "pred"], "exact_match": True},
            {"doc_id": 1, "doc": {"id": "b"}, "filter": "none", "metrics": ["f1"], "f1": float("nan")}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")  # lm-eval writes NaN as the JSON token NaN
    first, second = parse_samples(path, "t")
    assert first["f1"] == 0.6666 and first["exact_match"] == 1.0 and "bleu" not in first
    assert math.isnan(second["f1"])  # kept: the gate names it (evals.item_values)


def test_item_values_rejects_a_nan_score_naming_task_metric_and_item(tmp_path):
    from pipeline.gate.stages.evals import item_values
    from pipeline.tools.lmeval import LmEvalRun

    run = LmEvalRun(tasks={}, items=[
        {"task": "t", "doc_id": 0, "doc_hash": "h0", "item_id": "a", "f1": 0.5},
        {"task": "t", "doc_id": 1, "doc_hash": "h1", "item_id": "b", "f1": float("nan")}],
        lm_eval_version="", wall_time_s=0, eval_time_s=None, n_items=2, items_per_s=0, num_concurrent=1, limit=None,
        command=[], results_file="")
    assert item_values(run, ["t/acc"]) == {"t/acc": {}}
    with pytest.raises(BadInput) as err:
        item_values(run, ["t/f1"], include_path=tmp_path)
    assert str(err.value) == (f"{tmp_path / 't.yaml'}: metric_list.f1: metric f1 scored the candidate's output nan on "
                              "item b (doc_id 1): a metric must give every output a finite score (fix the metric "
                              "function)")
    assert err.value.exit_code == 2


def test_the_digest_names_prefix_cached_scoring_only_where_a_task_is_scored_by_loglikelihood():
    """prefix-cached and echo scoring agree except on near-ties, so a baseline scored the other way is not paired:
    the digest differs for the multiple-choice task (also named through its tag), not for a generation task."""
    from pipeline.tools.lmeval import evalset_digest

    assert evalset_digest(EVALSETS, TASKS, loglikelihood="echo") == evalset_digest(EVALSETS, TASKS)
    assert evalset_digest(EVALSETS, TASKS, loglikelihood="prefix_cached") != evalset_digest(EVALSETS, TASKS)
    assert evalset_digest(EVALSETS, ["support_demo"], loglikelihood="prefix_cached") == \
        evalset_digest(EVALSETS, TASKS, loglikelihood="prefix_cached")
    assert evalset_digest(EVALSETS, ["support_facts"], loglikelihood="prefix_cached") == \
        evalset_digest(EVALSETS, ["support_facts"])
