"""Evals on the path production uses: per-task chat-template prompting (config, resolution, lm-eval command,
evalset digest, MLflow params). No model server; the rendered prompts are checked end to end in
tests/e2e/test_quality_e2e.py."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pipeline.config.release import Prompting, load_release
from pipeline.errors import EXIT_BAD_INPUT, ConfigError
from pipeline.gate.stages.evals import chat_modes, missing_template
from pipeline.tools.lmeval import (
    RAW,
    ChatMode,
    build_command,
    evalset_digest,
    has_chat_template,
    mode_groups,
    task_shots,
)
from tests.support.paths import REPO
from tests.support.releases import release_data

EVALSETS = REPO / "evalsets"
TASKS = ["support_intent", "support_facts"]
CHAT = ChatMode(apply_chat_template=True, fewshot_as_multiturn=True)


def evals_release(write_release, **evals):
    return load_release(write_release(release_data(gates={"evals": {"tasks": TASKS, **evals}})))


def model_dir(tmp_path: Path, kind: str) -> Path:
    """A tokenizer directory with its chat template in chat_template.jinja, in tokenizer_config.json, or none."""
    d = tmp_path / kind
    d.mkdir()
    config = {"eos_token": "<|im_end|>"}
    if kind == "jinja":
        (d / "chat_template.jinja").write_text("{% for m in messages %}{{ m['content'] }}{% endfor %}")
    elif kind == "config":
        config["chat_template"] = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    (d / "tokenizer_config.json").write_text(json.dumps(config))
    return d


def test_prompting_defaults_to_the_chat_template_when_the_model_has_one(write_release, tmp_path):
    cfg = evals_release(write_release).evals_gate
    assert cfg.prompting == Prompting(chat_template="auto", fewshot_as_multiturn=True)
    assert cfg.prompting_for("support_facts") == cfg.prompting and cfg.per_task == {}
    for kind in ("jinja", "config"):
        d = model_dir(tmp_path, kind)
        assert has_chat_template(d)
        assert chat_modes(cfg, EVALSETS, d) == {"support_intent": CHAT, "support_facts": CHAT}, kind
        assert missing_template(cfg, d) == []
    bare = model_dir(tmp_path, "none")
    assert not has_chat_template(bare)
    assert chat_modes(cfg, EVALSETS, bare) == {"support_intent": RAW, "support_facts": RAW}


def test_per_task_settings_override_the_defaults(write_release, tmp_path):
    cfg = evals_release(write_release, fewshot_as_multiturn=False,
                        per_task={"support_facts": {"chat_template": False},
                                  "support_intent": {"fewshot_as_multiturn": True}}).evals_gate
    assert cfg.prompting_for("support_facts") == Prompting(chat_template=False, fewshot_as_multiturn=False)
    assert cfg.prompting_for("support_intent") == Prompting(chat_template="auto", fewshot_as_multiturn=True)
    modes = chat_modes(cfg, EVALSETS, model_dir(tmp_path, "jinja"))
    assert modes == {"support_intent": CHAT, "support_facts": RAW}
    single = chat_modes(evals_release(write_release, fewshot_as_multiturn=False).evals_gate, EVALSETS,
                        model_dir(tmp_path, "config"))
    assert set(single.values()) == {ChatMode(apply_chat_template=True, fewshot_as_multiturn=False)}


def test_forced_template_on_a_model_without_one_is_the_candidates_failure(write_release, tmp_path):
    cfg = evals_release(write_release, per_task={"support_intent": {"chat_template": True}}).evals_gate
    bare = model_dir(tmp_path, "none")
    assert missing_template(cfg, bare) == ["support_intent"]
    assert chat_modes(cfg, EVALSETS, bare) == {"support_intent": CHAT, "support_facts": RAW}
    off = evals_release(write_release, chat_template=False).evals_gate
    assert chat_modes(off, EVALSETS, model_dir(tmp_path, "jinja")) == {"support_intent": RAW, "support_facts": RAW}


def test_multiturn_only_for_tasks_with_shots(write_release, tmp_path):
    evalsets = tmp_path / "evalsets"
    shutil.copytree(EVALSETS, evalsets)
    yaml_file = evalsets / "support_facts.yaml"
    yaml_file.write_text(yaml_file.read_text().replace("num_fewshot: 3", "num_fewshot: 0"))
    assert task_shots(evalsets, "support_facts") == 0 and task_shots(evalsets, "support_intent") == 6
    assert task_shots(evalsets, "support_demo") is None  # a tag: lm-eval decides per member task
    modes = chat_modes(evals_release(write_release).evals_gate, evalsets, model_dir(tmp_path, "jinja"))
    assert modes == {"support_intent": CHAT, "support_facts": ChatMode(True, False)}


@pytest.mark.parametrize("evals, path, words", [
    ({"chat_template": "yes"}, "gates.evals.chat_template", "is not one of"),
    ({"fewshot_as_multiturn": "auto"}, "gates.evals.fewshot_as_multiturn", "is not of type 'boolean'"),
    ({"per_task": {"support_facts": {"chat": True}}}, "gates.evals.per_task.support_facts", "unknown key 'chat'"),
    ({"per_task": {"support_facts": {"chat_template": 1}}}, "gates.evals.per_task.support_facts.chat_template",
     "is not one of"),
    ({"per_task": {"support_factz": {"chat_template": False}}}, "gates.evals.per_task.support_factz",
     "is not one of gates.evals.tasks (support_intent, support_facts)"),
    ({"chat_templates": True}, "gates.evals", "unknown key 'chat_templates'"),
])
def test_bad_prompting_config_names_file_and_path(write_release, evals, path, words):
    file = write_release(release_data(gates={"evals": {"tasks": TASKS, **evals}}))
    with pytest.raises(ConfigError) as info:
        load_release(file)
    err = info.value
    assert err.exit_code == EXIT_BAD_INPUT and err.file == str(file) and err.path == path
    line = err.one_line()
    assert "\n" not in line and str(file) in line and path in line and words in line, line


def test_command_flags_per_mode():
    raw = build_command("http://h:1", "m", Path("/m"), TASKS, EVALSETS, Path("/o"))
    assert "tokenized_requests=False" in raw[raw.index("--model_args") + 1].split(",")
    assert "--apply_chat_template" not in raw and "--fewshot_as_multiturn" not in raw
    chat = build_command("http://h:1", "m", Path("/m"), TASKS, EVALSETS, Path("/o"), mode=CHAT, limit=3)
    # lm-eval 0.4.13's API models render the template only with tokenized requests (else: JSON messages)
    assert "tokenized_requests=True" in chat[chat.index("--model_args") + 1].split(",")
    assert chat[chat.index("--model") + 1] == "modelgate-completions"  # local-completions + prefix-cached scoring
    assert "--apply_chat_template" in chat and chat[chat.index("--fewshot_as_multiturn") + 1] == "true"
    single = build_command("http://h:1", "m", Path("/m"), TASKS, EVALSETS, Path("/o"), mode=ChatMode(True, False))
    assert single[single.index("--fewshot_as_multiturn") + 1] == "false"  # lm-eval turns it on unless told


def test_tasks_with_different_modes_run_as_separate_invocations():
    single = ChatMode(True, False)
    assert mode_groups(TASKS, None) == [(RAW, TASKS)]
    assert mode_groups(TASKS, {"support_intent": CHAT, "support_facts": CHAT}) == [(CHAT, TASKS)]
    assert mode_groups(["a", "b", "c"], {"a": CHAT, "b": single, "c": CHAT}) == [(CHAT, ["a", "c"]),
                                                                                   (single, ["b"])]
    assert mode_groups(["a", "b"], {"b": CHAT}) == [(RAW, ["a"]), (CHAT, ["b"])]


def test_digest_includes_how_the_tasks_were_prompted():
    plain = evalset_digest(EVALSETS, TASKS)
    # all raw: the evalsets' digest as before chat modes existed (recorded baselines stay paired)
    assert evalset_digest(EVALSETS, TASKS, {t: RAW for t in TASKS}) == plain
    chat = evalset_digest(EVALSETS, TASKS, {t: CHAT for t in TASKS})
    mixed = evalset_digest(EVALSETS, TASKS, {"support_intent": CHAT, "support_facts": RAW})
    single = evalset_digest(EVALSETS, TASKS, {t: ChatMode(True, False) for t in TASKS})
    assert len({plain, chat, mixed, single}) == 4
    assert evalset_digest(EVALSETS, list(reversed(TASKS)), {t: CHAT for t in TASKS}) == chat


def test_prompting_is_recorded_as_mlflow_params():
    from pipeline.core.result import StageResult, Status
    from pipeline.gate.record import _prompting_params

    class Report:
        stages = (StageResult("evals", Status.PASSED, details={"prompting": {
            "support_intent": CHAT.to_dict(), "support_facts": RAW.to_dict()}}),)

        def stage(self, name):
            return next((s for s in self.stages if s.name == name), None)

    assert _prompting_params(Report()) == {  # type: ignore[arg-type]
        "evals.chat_template.support_facts": "false", "evals.fewshot_as_multiturn.support_facts": "false",
        "evals.chat_template.support_intent": "true", "evals.fewshot_as_multiturn.support_intent": "true"}


FAKE_LM_EVAL = '''
"""A stand-in for `python -m lm_eval run`: writes the captured run's results and samples for --tasks."""
import json, shutil, sys, time
from pathlib import Path

args = sys.argv[1:]
tasks = args[args.index("--tasks") + 1].split(",")
out = Path(args[args.index("--output_path") + 1]) / "demo"
out.mkdir(parents=True, exist_ok=True)
fixtures = Path(FIXTURES)
source = next(fixtures.glob("results_*.json"))
old = source.name[len("results_"):-len(".json")]
ts = time.strftime("%Y-%m-%dT%H-%M-%S") + f".{time.time_ns() % 10**6:06d}"
res = json.loads(source.read_text())
for key in ("results", "n-samples", "n-shot", "versions"):
    res[key] = {t: v for t, v in res.get(key, {}).items() if t in tasks}
for task in tasks:
    shutil.copy(fixtures / f"samples_{task}_{old}.jsonl", out / f"samples_{task}_{ts}.jsonl")
(out / f"results_{ts}.json").write_text(json.dumps(res))
print("fake lm-eval:", " ".join(args[args.index("--tasks"):]), flush=True)
'''


def test_tasks_prompted_differently_run_as_two_invocations_merged_into_one_run(tmp_path, monkeypatch):
    """run_lmeval with a per-task mix: one lm-eval per mode (a stand-in lm_eval module replays the captured
    run), one merged LmEvalRun with every task's items, both commands, one log."""
    from pipeline.tools.lmeval import run_lmeval

    fake = tmp_path / "fake" / "lm_eval"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "__main__.py").write_text(f"FIXTURES = {str(REPO / 'tests/fixtures/lmeval')!r}\n" + FAKE_LM_EVAL)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "fake"))
    lines: list[str] = []
    run = run_lmeval("http://127.0.0.1:9", "m", tmp_path, TASKS, EVALSETS, tmp_path / "out", limit=5,
                     progress=lines.append, modes={"support_intent": CHAT, "support_facts": RAW},
                     loglikelihood="echo")  # the stand-in is `python -m lm_eval`
    assert [c[c.index("--tasks") + 1] for c in run.commands] == ["support_intent", "support_facts"]
    assert "--apply_chat_template" in run.commands[0] and "--apply_chat_template" not in run.commands[1]
    assert set(run.tasks) == set(TASKS) and run.n_items == 10 == len(run.items)
    assert {it["task"] for it in run.items} == set(TASKS) and len(run.results_files) == 2
    assert run.modes == {"support_intent": CHAT.to_dict(), "support_facts": RAW.to_dict()}
    log = (tmp_path / "out" / "lm_eval.log").read_text()
    assert "fake lm-eval: --tasks support_intent" in log and "fake lm-eval: --tasks support_facts" in log
    assert any("support_intent (chat template, few-shot as multi-turn)" in line for line in lines)
    saved = [json.loads(line) for line in (tmp_path / "out" / "items.jsonl").read_text().splitlines()]
    assert len(saved) == 10 and json.loads((tmp_path / "out" / "lmeval_run.json").read_text())["commands"]
