"""Multiple-choice scoring on the prefix cache (pipeline/tools/lmeval_model.py): the request plan, the parsing of
vLLM's next-token logprobs, and the lm-eval model class against a stand-in /v1/completions server whose "model"
is a fixed function, so every loglikelihood it returns can be computed here independently."""

from __future__ import annotations

import json
import math
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from pipeline.tools.lmeval import build_command
from pipeline.tools.lmeval_model import (
    NotRawLogprobs,
    PrefixCachedCompletions,
    PromptPlan,
    combine,
    parse_choice,
    plan,
)
from tests.support.paths import REPO
from tests.support.releases import release_data

VOCAB = 40


def toy_logprobs(prompt: list[int]) -> list[float]:
    """The stand-in model: a fixed next-token distribution for each prompt."""
    logits = [((sum(prompt) * 31 + len(prompt) * 7 + t * 17) % VOCAB) / 4.0 for t in range(VOCAB)]
    top = max(logits)
    lse = top + math.log(sum(math.exp(x - top) for x in logits))
    return [x - lse for x in logits]


def response(sampled: int, values: dict[int, float]) -> dict:
    return {"choices": [{"index": 0, "text": "x", "logprobs": {
        "tokens": [f"token_id:{sampled}"], "token_logprobs": [values[sampled]],
        "top_logprobs": [{f"token_id:{t}": v for t, v in values.items()}]}}]}


class FakeCompletions(BaseHTTPRequestHandler):
    """/v1/completions for `logprob_token_ids` requests, as vLLM answers them (greedy token + the asked ones)."""

    requests: list[dict] = []

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append(body)
        lps = toy_logprobs(body["prompt"])
        greedy = max(range(VOCAB), key=lambda t: lps[t])
        wanted = {t: lps[t] for t in [greedy, *body["logprob_token_ids"]]}
        data = json.dumps(response(greedy, wanted)).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_server():
    FakeCompletions.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeCompletions)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1/completions"
    server.shutdown()
    server.server_close()


def test_plan_sends_each_context_once_first_then_the_longer_prompts():
    inputs = [[1, 2, 3, 9], [1, 2, 3, 8, 7], [1, 2, 3, 8, 6], [1, 2, 3, 9], [5, 6, 7]]
    groups = plan(inputs, [3, 3, 3, 3, 2])
    assert groups == [[PromptPlan((1, 2, 3), [9, 8]), PromptPlan((1, 2, 3, 8), [7, 6])],
                      [PromptPlan((5, 6), [7])]]
    with pytest.raises(ValueError, match="needs a context and a continuation"):
        plan([[1, 2]], [2])


def test_combine_sums_the_tokens_and_requires_every_one_greedy():
    scores = {((1, 2), 3): (-0.5, True), ((1, 2, 3), 4): (-1.25, False), ((1, 2), 5): (-2.0, True)}
    assert combine([[1, 2, 3, 4], [1, 2, 5]], [2, 2], scores) == [(-1.75, False), (-2.0, True)]


def test_parse_choice_reads_the_asked_tokens_and_the_greedy_one():
    got, greedy = parse_choice(response(4, {4: -0.1, 7: -3.0, 9: -5.5}), [7, 9])
    assert got == {7: -3.0, 9: -5.5} and greedy == -0.1
    got, greedy = parse_choice(response(4, {4: -0.1, 7: -3.0}), [4, 7])
    assert got == {4: -0.1, 7: -3.0} and got[4] == greedy


def test_parse_choice_refuses_what_cannot_be_raw_logprobs():
    with pytest.raises(NotRawLogprobs, match="logprobs-mode"):  # logits (vLLM --logprobs-mode raw_logits)
        parse_choice(response(4, {4: 12.5, 7: 3.0}), [7])
    with pytest.raises(NotRawLogprobs, match="greedily"):  # a token above the "greedy" one: penalties applied
        parse_choice(response(4, {4: -2.0, 7: -0.5}), [7])
    with pytest.raises(ValueError, match="no logprob for token"):
        parse_choice(response(4, {4: -0.1}), [7])
    with pytest.raises(ValueError, match="expected a token as 'token_id:N'"):
        parse_choice({"choices": [{"logprobs": {"tokens": ["hi"], "token_logprobs": [-0.1],
                                                "top_logprobs": [{"hi": -0.1}]}}]}, [7])


def expected(inp: list[int], ctxlen: int) -> tuple[float, bool]:
    total, greedy = 0.0, True
    for i in range(ctxlen, len(inp)):
        lps = toy_logprobs(inp[:i])
        total += lps[inp[i]]
        greedy = greedy and lps[inp[i]] == max(lps)
    return total, greedy


def test_the_model_class_scores_every_request_with_one_request_per_distinct_prompt(fake_server):
    lm = PrefixCachedCompletions(base_url=fake_server, model="m", tokenizer_backend="none", num_concurrent=3,
                                 max_retries=1, top_logprobs=2)
    lm.tokenizer = object()  # requests arrive tokenized; lm-eval only asserts a tokenizer exists
    ctx_a, ctx_b = [3, 1, 4, 1, 5], [2, 7, 1, 8]
    conts = [[9], [2, 6], [5], [3, 5, 8], [9]]  # a two- and a three-token continuation, a repeated one
    requests = [((f"c{i}", "x"), ctx_a if i % 2 == 0 else ctx_b, cont) for i, cont in enumerate(conts)]
    requests.append((("a", "y"), ctx_a, [2, 6]))
    greedy_b = max(range(VOCAB), key=lambda t: toy_logprobs(ctx_b)[t])
    requests.append((("g", "z"), ctx_b, [greedy_b]))  # the greedy token
    got = lm._loglikelihood_tokens(requests, disable_tqdm=True)
    want = [expected(ctx + cont, len(ctx)) for _, ctx, cont in requests]
    assert got == want and any(g for _, g in want) and not all(g for _, g in want)
    prompts = [tuple(r["prompt"]) for r in FakeCompletions.requests]
    # ctx_a: its own prompt (targets 9, 5, 2: two requests of top_logprobs=2 tokens) and ctx_a+[2]; ctx_b: its
    # own (targets 2, 3 and the greedy one) and ctx_b+[2], ctx_b+[3], ctx_b+[3, 5]
    b_asks = math.ceil(len({2, 3, greedy_b}) / 2)
    assert sorted(prompts) == sorted([tuple(ctx_a)] * 2 + [(*ctx_a, 2)] + [tuple(ctx_b)] * b_asks
                                     + [(*ctx_b, 2), (*ctx_b, 3), (*ctx_b, 3, 5)])
    for longer in ((*ctx_a, 2), (*ctx_b, 2), (*ctx_b, 3), (*ctx_b, 3, 5)):  # after their context (prefix cache)
        ctx = ctx_a if longer[0] == ctx_a[0] else ctx_b
        assert prompts.index(longer) > max(i for i, p in enumerate(prompts) if p == tuple(ctx))
    body = FakeCompletions.requests[0]
    assert body["max_tokens"] == 1 and body["temperature"] == 0 and body["return_tokens_as_token_ids"] is True
    assert "echo" not in body and "prompt_logprobs" not in body and body["repetition_penalty"] == 1.0


def test_long_continuations_and_rolling_windows_go_through_echo(fake_server, monkeypatch):
    lm = PrefixCachedCompletions(base_url=fake_server, model="m", tokenizer_backend="none", num_concurrent=1,
                                 max_retries=1, max_continuation_tokens=2)
    lm.tokenizer = object()
    echoed: list = []
    monkeypatch.setattr("lm_eval.models.openai_completions.LocalCompletionsAPI._loglikelihood_tokens",
                        lambda self, reqs, **kw: echoed.extend(reqs) or [(-9.0, False)] * len(reqs))
    requests = [(("c", "x"), [1, 2], [3]), (("c", "y"), [1, 2], [3, 4, 5]), (None, [1], [2])]
    got = lm._loglikelihood_tokens(requests, disable_tqdm=True)
    assert echoed == requests[1:] and got[1:] == [(-9.0, False)] * 2 and got[0] == expected([1, 2, 3], 2)


def test_the_command_runs_lm_evals_cli_with_our_model_by_default_and_echo_on_request():
    evalsets = REPO / "evalsets"
    new = build_command("http://h:1", "m", Path("/m"), ["support_intent"], evalsets, Path("/o"))
    assert new[1:5] == ["-m", "pipeline.tools.lm_eval_entry", "run", "--model"]
    assert new[new.index("--model") + 1] == "modelgate-completions"
    old = build_command("http://h:1", "m", Path("/m"), ["support_intent"], evalsets, Path("/o"),
                        loglikelihood="echo")
    assert old[1:3] == ["-m", "lm_eval"] and old[old.index("--model") + 1] == "local-completions"
    assert new[new.index("--model_args"):] == old[old.index("--model_args"):]
    with pytest.raises(ValueError, match="loglikelihood must be one of"):
        build_command("http://h:1", "m", Path("/m"), ["t"], evalsets, Path("/o"), loglikelihood="fast")


def test_release_yaml_selects_the_scoring_and_defaults_to_the_prefix_cache(write_release):
    from pipeline.config.release import load_release
    from pipeline.errors import ConfigError

    gates = {"evals": {"tasks": ["support_intent"]}}
    assert load_release(write_release(release_data(gates=gates))).evals_gate.loglikelihood == "prefix_cached"
    gates["evals"]["loglikelihood"] = "echo"
    assert load_release(write_release(release_data(gates=gates))).evals_gate.loglikelihood == "echo"
    gates["evals"]["loglikelihood"] = "fast"
    with pytest.raises(ConfigError) as info:
        load_release(write_release(release_data(gates=gates)))
    assert info.value.path == "gates.evals.loglikelihood"


def test_a_prestarted_lm_eval_run_holds_its_first_request_until_released(tmp_path):
    """lm_eval_entry's hold: the model's request methods wait for the go file (tools/lmeval.Prestarted creates it
    when the evals stage starts), then run; a run whose gate is gone exits instead of waiting forever."""
    import os
    import threading
    import time

    from pipeline.tools import lm_eval_entry

    go = tmp_path / ".lm_eval.go"
    threading.Timer(0.3, go.touch).start()
    t0 = time.monotonic()
    lm_eval_entry.wait_for(go, os.getppid(), poll_s=0.01)
    assert go.exists() and time.monotonic() - t0 >= 0.25
    go.unlink()
    with pytest.raises(SystemExit, match="the gate that started this lm-eval run is gone"):
        lm_eval_entry.wait_for(go, parent=-1)


def test_a_prestarted_runs_progress_is_held_until_its_stage_attaches():
    from pipeline.tools.lmeval.run import _Relay

    relay, seen = _Relay(), []
    relay("lm-eval: imports done")
    relay("lm-eval: tokenizing 100%")
    assert seen == []
    relay.attach(seen.append)
    relay("lm-eval: requesting")
    assert seen == ["lm-eval: imports done", "lm-eval: tokenizing 100%", "lm-eval: requesting"]
