"""Whose fault a vLLM start-up failure is, read from the server's log by general rules.

The root cause is the first Python traceback in the log (vLLM's engine and API processes print their own
tracebacks after the worker's, each pointing "above"); its exception line is the failure's first error line.
Log prefixes such as `(Worker pid=1) ERROR 11-30 23:30:27 [file.py:953] ` are stripped first.

Rules, in order (the first that applies decides):
1. environment: the failure is about the machine, whatever code raised it: a taken address, permission
   denied, no space left on the device, too many open files.
2. unknown: resource exhaustion (out of memory, cannot allocate, MemoryError): the log tells what ran out,
   not whose demand was too large; an ImportError raised inside the model's loading path (the candidate may
   need a module production lacks); a process killed by a signal without a traceback; no traceback at all.
3. environment: an ImportError / missing shared library outside model loading: the server's own
   installation is broken.
4. candidate: the traceback runs through the loading of the model's files (vLLM's model loader and model
   classes, its config, tokenizer and chat-template utilities, transformers' config/tokenizer/auto classes,
   safetensors, tokenizers, jinja2, the json decoder of a config file, remote model code) or the exception is
   one of those libraries' format errors (SafetensorError, JSONDecodeError, TemplateSyntaxError, ...).
5. unknown: anything else (a traceback in the server's own machinery).
A start-up that timed out is the environment's (serving.startup_timeout_s is a setting of the machine)
unless rule 4 finds a model-loading failure in the log.
An exception whose line only summarizes (pydantic's "1 validation error for ModelConfig", which vLLM raises for
its configuration) is shown by the line under it, the one that says what is wrong, with the release.yaml key
that sets the value when it names one (`max_model_len` is serving.max_model_len).
"Unknown" is settled by a differential check (pipeline/gate/stages/serve.py): the production pin booted
on the same machine with the same settings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

CANDIDATE = "candidate"
ENVIRONMENT = "environment"
UNKNOWN = "unknown"

_PREFIX = re.compile(r"^\([\w ./-]+ pid=\d+\) (DEBUG|INFO|WARNING|ERROR|CRITICAL) [\d-]+ [\d:.]+ \[[^\]]*\] ?")
_BARE_EXCEPTION = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception)\b")
_FRAME = re.compile(r'^\s*File "([^"]+)", line \d+, in (\S+)')
_START = "Traceback (most recent call last):"
_SUMMARY = re.compile(r"\b\d+ validation errors? for \w+\s*$")  # pydantic: the errors follow, one per line
_DETAIL_PREFIX = re.compile(r"^(Value error|Assertion failed), ")
# vLLM arguments that release.yaml's serving section sets (pipeline/config/serving.py)
SERVING_KNOBS = ("max_model_len", "dtype", "tensor_parallel_size", "enforce_eager")

ENVIRONMENT_MARKERS = (
    ("address already in use", "the server's address is taken"),
    ("errno 98", "the server's address is taken"),
    ("permission denied", "permission denied on the machine"),
    ("permissionerror", "permission denied on the machine"),
    ("no space left on device", "the disk is full"),
    ("too many open files", "the machine's open-file limit is reached"),
)
RESOURCE_MARKERS = ("out of memory", "cannot allocate memory", "memoryerror", "std::bad_alloc",
                    "failed to allocate", "outofmemoryerror")
IMPORT_MARKERS = ("importerror", "modulenotfounderror", "cannot open shared object file", "undefined symbol")
# code that reads the model's own files: config, weights, tokenizer, chat template, remote code
CANDIDATE_FRAMES = (
    "vllm/model_executor/model_loader/", "vllm/model_executor/models/", "vllm/transformers_utils/",
    "vllm/tokenizers/", "vllm/entrypoints/chat_utils.py", "vllm/config/model.py",
    "transformers/configuration_utils.py", "transformers/tokenization_utils", "transformers/models/auto/",
    "transformers/modeling_utils.py", "transformers/utils/hub.py", "transformers/dynamic_module_utils.py",
    "tokenizers/", "safetensors/", "jinja2/", "json/decoder.py", "json/__init__.py", "transformers_modules/",
)
CANDIDATE_EXCEPTIONS = ("SafetensorError", "HeaderTooLarge", "JSONDecodeError", "TemplateSyntaxError",
                        "TemplateError", "UndefinedError", "TemplateNotFound")


@dataclass(frozen=True)
class Traceback:
    frames: tuple[str, ...]  # "path:function", innermost last
    exception: str  # the exception line, e.g. "ValueError: bad config"
    line: int = -1  # the exception line's index in the log's lines (-1: none)


@dataclass(frozen=True)
class Diagnosis:
    cause: str  # CANDIDATE, ENVIRONMENT or UNKNOWN
    first_error: str  # the root exception line, else the best line the log has, else ""
    why: str  # the rule that decided, for the report


def strip_prefix(line: str) -> str:
    return _PREFIX.sub("", line)


def tracebacks(log: str) -> list[Traceback]:
    """Every Python traceback in the log, in order, with its frames and exception line."""
    lines = [strip_prefix(ln) for ln in log.splitlines()]
    out: list[Traceback] = []
    i = 0
    while i < len(lines):
        if lines[i].strip() != _START:
            i += 1
            continue
        frames: list[str] = []
        i += 1
        while i < len(lines) and lines[i].strip() != _START:
            line = lines[i]
            frame = _FRAME.match(line)
            if frame:
                frames.append(f"{frame.group(1)}:{frame.group(2)}")
            elif line and not line[0].isspace():
                break  # the first unindented line after the frames: the exception
            i += 1
        exception, at = "", -1
        if i < len(lines) and lines[i].strip() != _START:
            exception, at = lines[i].strip(), i
            i += 1
        out.append(Traceback(tuple(frames), exception, at))
    return out


def _detail(log: str, tb: Traceback) -> str:
    """For an exception line that only summarizes (pydantic's "1 validation error for X"): the first error under
    it, without pydantic's "Value error, " and its "[type=...]" tail, and the serving key that sets the value it
    names; "" for any other exception."""
    if tb.line < 0 or not _SUMMARY.search(tb.exception):
        return ""
    lines = [strip_prefix(ln) for ln in log.splitlines()]
    for line in lines[tb.line + 1:tb.line + 6]:
        if not line.strip():
            continue
        if not line[0].isspace():
            return ""  # no indented error lines under it
        text = line.strip()
        if _FRAME.match(text) or text.startswith("For further information"):
            continue
        detail = _DETAIL_PREFIX.sub("", text.split(" [type=", 1)[0]).strip()
        knobs = [k for k in SERVING_KNOBS if re.search(rf"\b{k}\b", detail)]
        return detail + (f" (release.yaml: serving.{knobs[0]})" if knobs else "")
    return ""


def _error_line(log: str) -> str:
    """Without a traceback: the last line logged at ERROR/CRITICAL level or starting with an exception name, or
    "Killed" ("" when none). INFO and WARNING lines never count, even when they name an error."""
    best = ""
    for raw in log.splitlines():
        prefix = _PREFIX.match(raw)
        line = _PREFIX.sub("", raw).strip()
        if prefix:
            if prefix.group(1) in ("ERROR", "CRITICAL") and line:
                best = line
        elif _BARE_EXCEPTION.match(line) or line == "Killed":
            best = line
    return best


def _candidate_frame(tb: Traceback) -> str | None:
    for frame in reversed(tb.frames):  # the innermost: where the model's files were being read
        path = frame.replace("\\", "/")
        for marker in CANDIDATE_FRAMES:
            if marker in path:
                return re.sub(r"^.*(site-packages/|/lib/python\d+\.\d+/)", "", path.rsplit(":", 1)[0])
    return None


def diagnose(log: str, *, returncode: int | None, timed_out: bool = False) -> Diagnosis:
    """Classify a failed start-up from the server's log (module docstring): who is at fault, the first error
    line, and why. `returncode` is the server's exit code (negative: killed by that signal; None: it was
    still running, e.g. a timeout)."""
    tbs = [tb for tb in tracebacks(log) if tb.exception]
    root = tbs[0] if tbs else None
    first = root.exception if root else _error_line(log)
    text = (root.exception if root else first).lower()
    first = (_detail(log, root) if root else "") or first  # what is wrong, not "1 validation error for X"
    for marker, why in ENVIRONMENT_MARKERS:
        if marker in text:
            return Diagnosis(ENVIRONMENT, first, why)
    if any(marker in text for marker in RESOURCE_MARKERS):
        return Diagnosis(UNKNOWN, first, "a resource ran out: the log does not tell whose demand was too large")
    frame = _candidate_frame(root) if root else None
    if any(marker in text for marker in IMPORT_MARKERS):
        if frame:
            return Diagnosis(UNKNOWN, first, f"an import failed while loading the model ({frame})")
        return Diagnosis(ENVIRONMENT, first, "the server's own installation is broken (an import failed)")
    exc_type = text.split(":", 1)[0]
    if frame or any(name.lower() in exc_type for name in CANDIDATE_EXCEPTIONS):
        where = f"in {frame}" if frame else f"a {exc_type} from a model file format library"
        return Diagnosis(CANDIDATE, first, f"the traceback shows the model's files failing to load ({where})")
    if timed_out:
        return Diagnosis(ENVIRONMENT, first, "the start-up timed out without a model-loading error in the log")
    if root is None and returncode is not None and returncode < 0:
        return Diagnosis(UNKNOWN, first, f"the server was killed by signal {-returncode} without a traceback")
    if root is None:
        return Diagnosis(UNKNOWN, first, "the log holds no traceback")
    return Diagnosis(UNKNOWN, first, "the traceback does not run through model loading")


def root_excerpt(log: str, before: int = 20) -> str:
    """The log's lines that end at the root exception line (its traceback's innermost frames), as logged; ""
    without a traceback. The log's tail often holds only the tracebacks that point "above" to it."""
    tbs = [tb for tb in tracebacks(log) if tb.exception]
    if not tbs:
        return ""
    lines = log.splitlines()
    return "\n".join(lines[max(0, tbs[0].line - before):tbs[0].line + 1])
