"""The smoke probe's split between transport (InfraError) and content (recorded evidence), against a small
local HTTP server that answers as a vLLM server would, or as a broken one would."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pipeline.errors import InfraError
from pipeline.serving.probe import answer_fault, probe

NAME = "chat@abc"


def chat_answer(text: str, finish: str | None = "stop") -> dict:
    return {"id": "c1", "object": "chat.completion", "model": NAME,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
            "usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}}


def sse(text: str, finish: str | None = "stop", done: bool = True) -> bytes:
    chunks = [{"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}]
    chunks += [{"choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}]}
               for word in text.split(" ") if text]
    chunks.append({"choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
    body = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks)
    return (body + ("data: [DONE]\n\n" if done else "")).encode()


class Answers:
    """What the fake server says: models list, the chat answer (status, JSON) and the stream (status, bytes)."""

    def __init__(self) -> None:
        self.models: tuple[int, dict] = (200, {"object": "list", "data": [{"id": NAME}]})
        self.chat: tuple[int, dict | str] = (200, chat_answer("Hello there"))
        self.stream: tuple[int, bytes] = (200, sse("Hello there"))


@pytest.fixture
def server() -> Iterator[tuple[str, Answers]]:
    answers = Answers()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def send(self, status: int, body: bytes, ctype: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            status, doc = answers.models
            self.send(status, json.dumps(doc).encode(), "application/json")

        def do_POST(self) -> None:
            request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if request.get("stream"):
                status, body = answers.stream
                self.send(status, body, "text/event-stream" if status == 200 else "application/json")
            else:
                status, doc = answers.chat
                self.send(status, (doc if isinstance(doc, str) else json.dumps(doc)).encode(), "application/json")

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", answers
    finally:
        httpd.shutdown()
        httpd.server_close()


def run(url: str, **kw: object):
    return probe(url, NAME, "Say hello.", 16, timeout_s=5, retries=0, **kw)


def error_body(message: str, code: int) -> dict:
    return {"object": "error", "message": message, "type": "BadRequestError", "param": None, "code": code}


def test_a_normal_answer_is_recorded(server):
    url, _ = server
    result = run(url)
    assert result.chat_text == "Hello there" and result.chat_finish_reason == "stop"
    assert result.stream_text == "Hellothere" and result.stream_finish_reason == "stop"
    assert result.stream_ttft_s is not None and result.chat_usage["completion_tokens"] == 3
    assert result.refusals == () and result.notes == ()


def test_empty_text_is_evidence_not_an_error(server):
    url, answers = server
    answers.chat = (200, chat_answer(""))
    answers.stream = (200, sse(""))
    result = run(url)
    assert result.chat_text == "" and result.stream_text == "" and result.stream_ttft_s is None
    assert result.refusals == ()
    assert result.notes == ("the model answered the chat completion with empty text (finish reason stop)",
                            "the model answered the stream completion with empty text (finish reason stop)")
    evidence = result.evidence("Say hello.", 16)
    assert evidence["chat_text"] == "" and evidence["notes"] == list(result.notes)


def test_text_cut_at_max_tokens_and_garbage_are_recorded(server):
    url, answers = server
    answers.chat = (200, chat_answer("\x00\ufffd }{ ]]", finish="length"))
    answers.stream = (200, sse("zzz zzz", finish="length"))
    result = run(url)
    assert result.chat_text == "\x00\ufffd }{ ]]" and result.chat_finish_reason == "length"
    assert result.notes == ("the chat answer was cut at max_tokens (16)",
                            "the stream answer was cut at max_tokens (16)")


@pytest.mark.parametrize("status", [400, 422, 500])
def test_an_error_answer_caused_by_the_request_processing_is_the_candidates(server, status):
    url, answers = server
    message = "Chat template error: jinja2.exceptions.UndefinedError: 'messages' is undefined"
    answers.chat = (status, error_body(message, status))
    answers.stream = (status, json.dumps(error_body(message, status)).encode())
    result = run(url)
    assert [(r.request, r.status, r.message) for r in result.refusals] == [
        ("chat", status, message), ("stream", status, message)]
    assert result.refusals[0].line() == f"the chat completion was answered with HTTP {status}: {message}"
    assert result.notes == ()  # nothing else is said about answers that were refusals


@pytest.mark.parametrize("status", [401, 403, 404, 429, 502, 503, 504])
def test_an_error_answer_of_the_environment_is_an_infra_error(server, status):
    url, answers = server
    answers.chat = (status, error_body("nope", status))
    with pytest.raises(InfraError, match=f"chat request was answered with HTTP {status}.*nope"):
        run(url)


def test_the_rule_in_one_place():
    assert {s: answer_fault(s) for s in (400, 401, 403, 404, 422, 429, 500, 502, 503)} == {
        400: "candidate", 401: "environment", 403: "environment", 404: "environment", 422: "candidate",
        429: "environment", 500: "candidate", 502: "environment", 503: "environment"}


def test_models_route_failing_or_not_serving_the_name_is_infra(server):
    url, answers = server
    answers.models = (200, {"data": [{"id": "someone-else"}]})
    with pytest.raises(InfraError, match="does not serve 'chat@abc'"):
        run(url)
    answers.models = (401, {"error": {"message": "Unauthorized"}})
    with pytest.raises(InfraError, match="/v1/models answered HTTP 401: Unauthorized"):
        run(url)




@pytest.mark.parametrize(("body", "match"), [
    (sse("Hello", done=False), "ended without `data: \\[DONE\\]`"),
    (b"data: {\"choices\": [\n\ndata: [DONE]\n\n", "broken SSE framing: a data line is not JSON"),
    (b"data: [1, 2]\n\ndata: [DONE]\n\n", "not a JSON object"),
    (sse("Hello", finish=None), "final choice has no finish reason"),
    (b"data: {\"error\": {\"message\": \"overloaded\", \"code\": 503}}\n\ndata: [DONE]\n\n",
     "stream carried an error with code 503"),
])
def test_broken_stream_framing_is_infra(server, body, match):
    url, answers = server
    answers.stream = (200, body)
    with pytest.raises(InfraError, match=match):
        run(url)


def test_an_error_inside_the_stream_caused_by_the_model_is_the_candidates(server):
    url, answers = server
    answers.stream = (200, b"data: {\"error\": {\"message\": \"detokenizer failed\", \"code\": 400}}\n\n"
                           b"data: [DONE]\n\n")
    result = run(url)
    assert [(r.request, r.status) for r in result.refusals] == [("stream", 400)]
    assert "detokenizer failed" in result.refusals[0].message


def test_a_chat_answer_without_finish_reason_or_not_json_is_infra(server):
    url, answers = server
    answers.chat = (200, chat_answer("hi", finish=None))
    with pytest.raises(InfraError, match="no finish reason"):
        run(url)
    answers.chat = (200, "<html>proxy</html>")
    with pytest.raises(InfraError, match="chat answer is not JSON"):
        run(url)


def test_no_server_is_infra_after_retries():
    from pipeline.serving.vllm_server import free_port

    with pytest.raises(InfraError, match="got no answer after 2 attempts"):
        probe(f"http://127.0.0.1:{free_port()}", NAME, "hi", 4, timeout_s=2, retries=1)


# --- the serve stage on an external endpoint: what it makes of the probe's answers ---------------------------


def serve_stage(url: str, tmp_path):
    from types import SimpleNamespace

    from pipeline.config.release import Serving
    from pipeline.gate.context import GateContext
    from pipeline.gate.stages import serve

    release = SimpleNamespace(candidate=None, served_name=lambda pin: NAME,
                              serving=Serving(mode="external", external_url=f"{url}/v1", request_timeout_s=5))
    return serve.run(GateContext(release=release, run_dir=tmp_path, home=tmp_path))


def test_serve_passes_an_empty_answer_with_a_note_and_keeps_it(server, tmp_path):
    from pipeline.core.result import Status

    url, answers = server
    answers.chat = (200, chat_answer(""))
    answers.stream = (200, sse(""))
    result = serve_stage(url, tmp_path)
    assert result.status == Status.PASSED
    assert "the model answered the chat completion with empty text (finish reason stop)" in result.reasons
    assert result.details["probe"]["chat_text"] == "" and "probe_ttft_s" not in result.metrics


def test_serve_rejects_a_candidate_whose_template_the_server_cannot_render(server, tmp_path):
    from pipeline.core.result import Status

    url, answers = server
    message = "As of transformers v4.44, default chat template is no longer allowed"
    answers.chat = (400, error_body(message, 400))
    result = serve_stage(url, tmp_path)
    assert result.status == Status.FAILED
    assert result.reasons == [f"the candidate failed the smoke probe: the chat completion was answered with "
                              f"HTTP 400: {message}"]
    assert result.details["probe"]["refusals"][0]["status"] == 400
    assert result.details["probe"]["stream_text"] == "Hellothere"  # the other answer is kept too


def test_serve_errors_on_the_environments_answer(server, tmp_path):
    from pipeline.core.result import Status

    url, answers = server
    answers.chat = (503, error_body("Service Unavailable", 503))
    result = serve_stage(url, tmp_path)
    assert result.status == Status.ERROR and "HTTP 503" in result.reasons[0]


def test_the_older_vllm_error_shape_inside_the_stream_and_a_misshapen_chunk(server):
    url, answers = server
    answers.stream = (200, b'data: {"object": "error", "message": "template failed", "code": 400}\n\n'
                           b"data: [DONE]\n\n")
    assert [(r.request, r.status) for r in run(url).refusals] == [("stream", 400)]
    answers.stream = (200, b'data: {"choices": ["not a choice"]}\n\ndata: [DONE]\n\n')
    with pytest.raises(InfraError, match="not shaped like the OpenAI API's"):
        run(url)
