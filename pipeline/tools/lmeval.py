"""Run lm-evaluation-harness against an OpenAI-compatible server and parse what it wrote.

lm-eval runs as a subprocess (``python -m lm_eval run --model local-completions ...``) rather than
through ``lm_eval.simple_evaluate``: the child can be interrupted as one process group (SIGINT, then
SIGKILL) without leaving threads of its request pool behind, its progress lines are streamed to
``progress`` while they happen, its global state (logging, seeds, sys.modules of task code) stays
out of the pipeline process, and the exact command is recorded so anyone can re-run it by hand.

Public API:
    run_lmeval(base_url, model_name, tokenizer_dir, tasks, include_path, output_dir, ...) -> LmEvalRun
    evalset_digest(include_path, tasks, modes=None) -> str
    has_chat_template(model_dir) -> bool        ChatMode: how one task is prompted (raw or chat template)
    parse_output(results_file) -> LmEvalRun      (parse an existing results_<ts>.json + samples)
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import yaml

from pipeline.errors import BadInput, InfraError, Interrupted
from pipeline.util.procgroup import stop_group

_TQDM = re.compile(r"(\d+)%\|")
# how loglikelihood requests (multiple_choice tasks) are scored: forced decoding on vLLM's prefix cache
# (lm-eval model modelgate-completions, pipeline/tools/lmeval_model.py) or lm-eval's local-completions echo
# requests with prompt logprobs (vLLM reads no prefix cache for those: every choice prefills its whole context)
LOGLIKELIHOOD_MODES = ("prefix_cached", "echo")
WAITING_NICENESS = 10  # a prestarted run's niceness until released
GO_ENV = "MODELGATE_LMEVAL_GO"  # a file: a prestarted run holds its first request until it exists (lm_eval_entry)
MAX_RETRIES = 3  # attempts per request (lm-eval's max_retries), each bounded by the per-request timeout


@dataclass
class TaskScores:
    """Aggregated scores of one task. Metric keys are lm-eval's, minus the ``,none`` filter suffix."""

    task: str
    n_items: int
    metrics: dict[str, float]
    stderr: dict[str, float | None]
    n_shot: int | None = None
    version: Any = None


@dataclass
class LmEvalRun:
    """One lm-eval run: per-task scores, per-item records, and how long it took.

    ``items`` holds one dict per evaluated document:
    ``{"task", "doc_id", "doc_hash", "item_id", <metric>: value, ...}`` where ``doc_hash`` is the sha256
    of the document's canonical JSON (sorted keys, no whitespace) and metric values are floats as lm-eval
    logged them: 0/1 for acc / acc_norm / exact_match, any number for a score (token F1: 0..1); values that
    are not numbers (corpus-level metrics log (gold, prediction) pairs) are left out. ``(task, doc_hash)``
    pairs items across runs for paired tests.
    """

    tasks: dict[str, TaskScores]
    items: list[dict[str, Any]]
    lm_eval_version: str
    wall_time_s: float
    eval_time_s: float | None
    n_items: int
    items_per_s: float
    num_concurrent: int
    limit: int | None
    command: list[str]
    results_file: str
    samples_files: dict[str, str] = field(default_factory=dict)
    items_file: str = ""
    commands: list[list[str]] = field(default_factory=list)  # one lm-eval invocation per prompting mode
    results_files: list[str] = field(default_factory=list)
    modes: dict[str, dict[str, bool]] = field(default_factory=dict)  # task -> ChatMode.to_dict()

    def scores(self, task: str, metric: str) -> dict[str, float]:
        """doc_hash -> per-item value of ``metric`` for ``task`` (for paired comparisons)."""
        return {it["doc_hash"]: float(it[metric]) for it in self.items if it["task"] == task and metric in it}

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("items")
        return d


def doc_hash(doc: dict[str, Any]) -> str:
    """sha256 of a document's canonical JSON."""
    canon = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canon.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class ChatMode:
    """How lm-eval prompts one task: raw text, or the candidate's chat template (as vLLM's chat endpoint).

    ``apply_chat_template``: lm-eval renders each request's messages (the task ``description`` as the system
    message, the document as the user message, generation prompt added) with the tokenizer's own template and
    sends the rendered tokens to /v1/completions. ``fewshot_as_multiturn``: the shots are user/assistant turns
    instead of one user message.
    """

    apply_chat_template: bool = False
    fewshot_as_multiturn: bool = False

    def to_dict(self) -> dict[str, bool]:
        return {"apply_chat_template": self.apply_chat_template, "fewshot_as_multiturn": self.fewshot_as_multiturn}

    @property
    def label(self) -> str:
        if not self.apply_chat_template:
            return "raw completions"
        return "chat template" + (", few-shot as multi-turn" if self.fewshot_as_multiturn else "")


RAW = ChatMode()


def has_chat_template(model_dir: Path) -> bool:
    """True when the tokenizer in ``model_dir`` carries a chat template (what vLLM's chat endpoint applies).

    transformers reads it from ``chat_template.jinja`` (or the older ``chat_template.json``) next to the
    tokenizer, else from ``chat_template`` in ``tokenizer_config.json``.
    """
    model_dir = Path(model_dir)
    if (model_dir / "chat_template.jinja").is_file():
        return True
    for name in ("chat_template.json", "tokenizer_config.json"):
        try:
            data = json.loads((model_dir / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and data.get("chat_template"):
            return True
    return False


# ---------------------------------------------------------------- evalset discovery and digest


class _TagLoader(yaml.SafeLoader):
    """SafeLoader that keeps ``!function mod.fn`` as a plain string instead of importing it."""


_TagLoader.add_constructor(
    "!function", lambda loader, node: _FunctionRef(loader.construct_scalar(cast(yaml.ScalarNode, node))))


class _FunctionRef(str):
    pass


def _load_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_TagLoader)  # noqa: S506 (SafeLoader subclass)
    except FileNotFoundError:
        raise BadInput("file not found", file=str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"cannot read: {exc}", file=str(path)) from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
        raise BadInput(f"{where}invalid YAML: {problem}", file=str(path)) from exc
    return data if isinstance(data, dict) else {}


def _required(path: Path, yaml_file: Path, where: str) -> Path:
    """`path`, referenced by `yaml_file` at `where`; BadInput naming the YAML and the key when it is missing."""
    if not path.is_file():
        raise BadInput(f"references {path.name!r}, which does not exist (looked for {path})", file=str(yaml_file),
                       path=where)
    return path


def _task_files(yaml_path: Path, seen: set[Path]) -> list[Path]:
    """The YAML, its ``include``s, its data files and any ``!function`` modules, resolved next to it."""
    yaml_path = yaml_path.resolve()
    if yaml_path in seen:
        return []
    seen.add(yaml_path)
    files, cfg, here = [yaml_path], _load_yaml(yaml_path), yaml_path.parent
    includes = cfg.get("include") or []
    for inc in [includes] if isinstance(includes, str) else includes:
        _required((here / inc).resolve(), yaml_path, "include")
        files += _task_files(here / inc, seen)
    data_files = (cfg.get("dataset_kwargs") or {}).get("data_files") or {}
    named = data_files.items() if isinstance(data_files, dict) else [(None, data_files)]
    for split, name in named:
        where = "dataset_kwargs.data_files" + (f".{split}" if split is not None else "")
        for n in [name] if isinstance(name, str) else name:
            files.append(_required((here / n).resolve(), yaml_path, where))
    for key, value in cfg.items():
        if isinstance(value, _FunctionRef):
            module = (here / (value.rpartition(".")[0].replace(".", "/") + ".py")).resolve()
            files.append(_required(module, yaml_path, key))
    return files


# per-item metrics lm-eval computes when a task has no metric_list, by output_type
DEFAULT_METRICS = {"multiple_choice": ("acc", "acc_norm"), "generate_until": ("exact_match",),
                   "loglikelihood": ("perplexity", "acc"),
                   "loglikelihood_rolling": ("word_perplexity", "byte_perplexity", "bits_per_byte")}


def task_config(include_path: Path, task: str) -> dict[str, Any] | None:
    """The task's YAML keys merged through its includes (its own keys win), None for a tag or unknown name."""
    for yaml_path in resolve_task_yamls(include_path, [task]):
        merged: dict[str, Any] = {}
        chain, seen = [yaml_path.resolve()], set()
        while chain:  # the task's own keys win over its includes'
            path = chain.pop(0)
            if path in seen or not path.is_file():
                continue
            seen.add(path)
            cfg = _load_yaml(path)
            for key, value in cfg.items():
                merged.setdefault(key, value)
            includes = cfg.get("include") or []
            chain += [(path.parent / inc).resolve() for inc in ([includes] if isinstance(includes, str) else includes)]
        if merged.get("task") != task:
            return None  # a tag (group of tasks): its members are looked up when they are named
        return merged
    return None


def task_metrics(include_path: Path, task: str) -> set[str] | None:
    """The metric names `task` computes (its metric_list, through includes), None when they cannot be known."""
    merged = task_config(include_path, task)
    if merged is None:
        return None
    metric_list = merged.get("metric_list")
    if isinstance(metric_list, list):
        return {m["metric"] for m in metric_list if isinstance(m, dict) and isinstance(m.get("metric"), str)}
    defaults = DEFAULT_METRICS.get(str(merged.get("output_type")))
    return set(defaults) if defaults else None


def task_shots(include_path: Path, task: str) -> int | None:
    """The task's ``num_fewshot`` (0 when unset), None for a tag (a group of tasks)."""
    merged = task_config(include_path, task)
    if merged is None:
        return None
    shots = merged.get("num_fewshot")
    return shots if isinstance(shots, int) and not isinstance(shots, bool) else 0


def _index(include_path: Path) -> dict[str, list[Path]]:
    """task or tag name -> YAML files defining it, for every YAML under ``include_path``."""
    index: dict[str, list[Path]] = {}
    for path in sorted(Path(include_path).rglob("*.yaml")):
        cfg = _load_yaml(path)
        task = cfg.get("task")
        names: list[str] = [task] if isinstance(task, str) else []
        tags = cfg.get("tag") or []
        names += [tags] if isinstance(tags, str) else list(tags)
        for name in names:
            index.setdefault(name, []).append(path)
    return index


def defined_tasks(include_path: Path) -> set[str]:
    """Every task and tag name the YAMLs under ``include_path`` define."""
    return set(_index(include_path))


def resolve_task_yamls(include_path: Path, tasks: list[str]) -> list[Path]:
    """YAML files for ``tasks`` (task or tag names); BadInput if one is not defined there."""
    index, out = _index(include_path), []
    missing = [t for t in tasks if t not in index]
    if missing:
        raise BadInput(f"task(s) not found in evalset dir: {', '.join(missing)}", file=str(include_path))
    for t in tasks:
        out += [p for p in index[t] if p not in out]
    return out


# a task (or an include) whose output type is scored by loglikelihood requests
_LOGLIKELIHOOD_TASK = re.compile(r"^output_type:\s*[\"']?(multiple_choice|loglikelihood)\b", re.M)


def evalset_digest(include_path: Path, tasks: list[str], modes: dict[str, ChatMode] | None = None,
                   loglikelihood: str = "echo") -> str:
    """sha256 over the task YAMLs, their includes, data files and loader modules (path + content), over how
    each task is prompted (``modes``: task -> ChatMode) when any task goes through a chat template, and over
    how loglikelihoods are scored (``loglikelihood``) when it is not lm-eval's own echo path and a task is
    scored by loglikelihood: the two paths agree except on near-ties (bf16), so per-item results are paired
    only with a baseline scored the same way (a baseline scored otherwise is re-evaluated).

    Changes whenever an item, a prompt template, the loader, the prompting or the scoring changes; independent
    of CWD. All tasks raw (or ``modes`` None) and echo scoring give the digest of the evalsets alone.
    """
    include_path = Path(include_path).resolve()
    seen: set[Path] = set()
    files: list[Path] = []
    for y in resolve_task_yamls(include_path, tasks):
        files += _task_files(y, seen)
    h = hashlib.sha256()
    for f in sorted(set(files)):
        rel = os.path.relpath(f, include_path)
        h.update(f"{rel}\0{hashlib.sha256(f.read_bytes()).hexdigest()}\n".encode())
    if modes and any(m.apply_chat_template for m in modes.values()):
        prompting = {t: modes.get(t, RAW).to_dict() for t in sorted(tasks)}
        h.update(b"prompting\0" + json.dumps(prompting, sort_keys=True).encode() + b"\n")
    if loglikelihood != "echo" and any(_LOGLIKELIHOOD_TASK.search(f.read_text(encoding="utf-8", errors="replace"))
                                       for f in files if f.suffix in (".yaml", ".yml")):
        h.update(b"loglikelihood\0" + loglikelihood.encode() + b"\n")
    return h.hexdigest()


# ---------------------------------------------------------------- running lm-eval


def build_command(
    base_url: str, model_name: str, tokenizer_dir: Path, tasks: list[str], include_path: Path,
    raw_dir: Path, num_concurrent: int = 4, limit: int | None = None, max_retries: int | None = None,
    timeout_s: float | None = None, mode: ChatMode = RAW, loglikelihood: str = "prefix_cached",
) -> list[str]:
    """The lm-eval 0.4.13 command line for one run (``base_url`` is the server root or .../v1).

    ``loglikelihood``: "prefix_cached" runs lm-eval's CLI through ``pipeline.tools.lm_eval_entry`` with
    ``--model modelgate-completions`` (local-completions whose loglikelihoods are scored by forced decoding on
    the prefix cache; generations unchanged); "echo" runs ``python -m lm_eval`` with ``local-completions``.

    Raw mode sends the prompt text (vLLM tokenizes it as /v1/completions does). Chat mode adds
    ``--apply_chat_template`` (and ``--fewshot_as_multiturn true|false``: lm-eval turns it on by itself) and
    ``tokenized_requests=True``: lm-eval 0.4.13's API models render a chat template only through the
    huggingface tokenizer when requests are tokenized (otherwise they send the message list as JSON, which
    /v1/completions rejects); the rendered prompt is tokenized without special tokens, as vLLM's chat endpoint
    tokenizes its rendered prompt, and sent as token ids.
    """
    url = base_url.rstrip("/")
    if not url.endswith("/completions"):
        url = (url if url.endswith("/v1") else url + "/v1") + "/completions"
    model_args = ",".join([
        f"base_url={url}", f"model={model_name}", f"tokenizer={Path(tokenizer_dir).resolve()}",
        "tokenizer_backend=huggingface", f"tokenized_requests={mode.apply_chat_template}",
        f"num_concurrent={num_concurrent}", f"max_retries={max_retries or MAX_RETRIES}",
        *([f"timeout={max(1, int(timeout_s))}"] if timeout_s else []),  # per request (lm-eval's default: 300 s)
    ])
    if loglikelihood not in LOGLIKELIHOOD_MODES:
        raise ValueError(f"loglikelihood must be one of {', '.join(LOGLIKELIHOOD_MODES)}, not {loglikelihood!r}")
    module, model = ("pipeline.tools.lm_eval_entry", "modelgate-completions") if loglikelihood == "prefix_cached" \
        else ("lm_eval", "local-completions")
    cmd = [
        sys.executable, "-m", module, "run", "--model", model, "--model_args", model_args,
        "--tasks", ",".join(tasks), "--include_path", str(Path(include_path).resolve()),
        "--output_path", str(raw_dir), "--log_samples", "--seed", "0,1234,1234,1234",
    ]
    if mode.apply_chat_template:
        cmd += ["--apply_chat_template", "--fewshot_as_multiturn", str(mode.fewshot_as_multiturn).lower()]
    if limit is not None:
        cmd += ["--limit", str(int(limit))]
    return cmd


def lmeval_env(api_key: str | None) -> dict[str, str]:
    """lm-eval's environment: no secrets of ours; the endpoint's key as OPENAI_API_KEY (never a user's own)."""
    from pipeline.util.secrets import child_env

    env = dict(child_env(), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
    # the child imports this very pipeline package (pipeline.tools.lm_eval_entry), whatever is installed
    here = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join([here, *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]])
    if api_key:
        env["OPENAI_API_KEY"] = api_key
    return env


def _stream(proc: subprocess.Popen, log_path: Path, progress: Callable[[str], Any]) -> list[str]:
    """Copy the child's output to ``log_path``; forward lines to ``progress`` (progress bars every 10%)."""
    tail: list[str] = []
    last_pct: dict[str, int] = {}
    buf = b""
    stream = proc.stdout
    assert stream is not None, "the child was started with stdout=PIPE"
    with open(log_path, "ab") as log:
        while True:
            chunk = stream.read1(4096) if hasattr(stream, "read1") else stream.read(4096)
            if not chunk:
                break
            log.write(chunk)
            buf += chunk
            *lines, buf = re.split(rb"[\r\n]", buf)
            for raw in lines:
                line = raw.decode("utf-8", "replace").strip()
                if not line:
                    continue
                tail = (tail + [line])[-40:]
                m = _TQDM.search(line)
                if m:
                    label, pct = line[: m.start()], int(m.group(1))
                    if pct < 100 and pct - last_pct.get(label, -100) < 10:
                        continue
                    last_pct[label] = pct
                progress(f"lm-eval: {line}")
    return tail


def mode_groups(tasks: list[str], modes: dict[str, ChatMode] | None) -> list[tuple[ChatMode, list[str]]]:
    """Tasks grouped by prompting mode, in the order of ``tasks`` (lm-eval applies a template per run)."""
    groups: dict[ChatMode, list[str]] = {}
    for task in tasks:
        groups.setdefault((modes or {}).get(task, RAW), []).append(task)
    return list(groups.items())


def run_lmeval(
    base_url: str,
    model_name: str,
    tokenizer_dir: Path,
    tasks: list[str],
    include_path: Path,
    output_dir: Path,
    num_concurrent: int = 4,
    limit: int | None = None,
    progress: Callable[[str], Any] = print,
    api_key: str | None = None,
    timeout_s: float | None = None,
    modes: dict[str, ChatMode] | None = None,
    loglikelihood: str = "prefix_cached",
    prestarted: Prestarted | None = None,
) -> LmEvalRun:
    """Run ``tasks`` from ``include_path`` against ``base_url`` (served as ``model_name``).

    Writes lm-eval's raw output under ``output_dir/raw/``, its log to ``output_dir/lm_eval.log``,
    per-item records to ``output_dir/items.jsonl`` and the summary to ``output_dir/lmeval_run.json``.
    ``limit`` caps the items of EACH task (lm-eval's ``--limit``). ``modes`` (task -> ChatMode, default raw):
    tasks with different modes run as separate lm-eval invocations on the same server, one after the other,
    merged into one LmEvalRun (``commands`` holds each). Raises BadInput for unknown tasks,
    InfraError if lm-eval fails, Interrupted on KeyboardInterrupt (the child group is stopped first).
    ``api_key`` reaches lm-eval's ``local-completions`` as OPENAI_API_KEY in its environment (it reads no
    other source), never on its command line. ``loglikelihood``: how loglikelihood requests are scored
    (LOGLIKELIHOOD_MODES, see ``build_command``). ``prestarted``: the first invocation, started earlier by
    ``prestart`` with the same arguments (its start-up already done), released now instead of started.
    """
    plan = _plan(base_url, model_name, tokenizer_dir, tasks, include_path, output_dir, num_concurrent=num_concurrent,
                 limit=limit, api_key=api_key, timeout_s=timeout_s, modes=modes, loglikelihood=loglikelihood)
    output_dir, log_path = plan.output_dir, plan.log_path
    if prestarted is None:
        log_path.write_bytes(b"")
    runs: list[LmEvalRun] = []
    t0 = time.monotonic()
    for mode, group, cmd in plan.invocations:
        progress(f"lm-eval: {', '.join(group)} ({mode.label}), num_concurrent={num_concurrent}, limit={limit}, "
                 f"loglikelihood: {loglikelihood}")
        if prestarted is not None and prestarted.cmd == cmd:
            runs.append(prestarted.release(progress, timeout_s))
        else:
            runs.append(_run_once(cmd, plan.env, plan.raw_dir, log_path, progress, timeout_s))
        prestarted = None
    wall = time.monotonic() - t0
    run = runs[0]
    for other in runs[1:]:
        run.tasks.update(other.tasks)
        run.items += other.items
        run.samples_files.update(other.samples_files)
        run.n_items += other.n_items
        run.eval_time_s = None if run.eval_time_s is None or other.eval_time_s is None \
            else round(run.eval_time_s + other.eval_time_s, 3)
    run.results_files = [r.results_file for r in runs]
    run.commands = [r.command for r in runs]
    run.modes = {t: (modes or {}).get(t, RAW).to_dict() for t in tasks}
    run.wall_time_s = round(wall, 3)
    run.items_per_s = round(run.n_items / wall, 3) if wall > 0 else 0.0
    run.num_concurrent, run.limit = num_concurrent, limit
    run.items_file = str(output_dir / "items.jsonl")
    with open(run.items_file, "w", encoding="utf-8") as fh:
        for it in run.items:
            fh.write(json.dumps(it, sort_keys=True) + "\n")
    (output_dir / "lmeval_run.json").write_text(json.dumps(run.to_dict(), indent=2, default=str) + "\n")
    progress(f"lm-eval: {run.n_items} items in {wall:.1f}s ({run.items_per_s:.2f} items/s): "
             + "; ".join(f"{t} " + ", ".join(f"{k}={v:.3f}" for k, v in s.metrics.items())
                         for t, s in run.tasks.items()))
    return run


def _run_once(cmd: list[str], env: dict[str, str], raw_dir: Path, log_path: Path,
              progress: Callable[[str], Any], timeout_s: float | None) -> LmEvalRun:
    """One lm-eval invocation (its output appended to ``log_path``), parsed."""
    before = set(raw_dir.rglob("results_*.json"))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                            cwd=raw_dir.parent, start_new_session=True)
    tail: list[str] = []

    def stream() -> None:
        tail[:] = _stream(proc, log_path, progress)

    rc = _await(proc, stream)
    return _finished(cmd, rc, tail, raw_dir, before, log_path, timeout_s)


def _await(proc: subprocess.Popen, follow: Callable[[], None]) -> int:
    """Run `follow()` (reading the child's output) and wait for the child; its exit code. On Ctrl-C (Interrupted)
    or any other exception the child's group is stopped first."""
    try:
        follow()
        return proc.wait()
    except KeyboardInterrupt:
        stop_group(proc)
        raise Interrupted("SIGINT") from None
    except BaseException:
        stop_group(proc)
        raise


def _finished(cmd: list[str], rc: int, tail: list[str], raw_dir: Path, before: set[Path], log_path: Path,
              timeout_s: float | None) -> LmEvalRun:
    if rc != 0:
        limits = f" (per-request timeout serving.request_timeout_s={timeout_s:g} s, {MAX_RETRIES} attempts)" \
            if timeout_s else ""
        raise InfraError(f"lm-eval exited with {rc}{limits}; see {log_path}: " + " | ".join(tail[-5:]))
    new = sorted(set(raw_dir.rglob("results_*.json")) - before)
    if not new:
        raise InfraError(f"lm-eval wrote no results file under {raw_dir}")
    run = parse_output(new[-1])
    run.command = cmd
    return run


class _Relay:
    """Progress lines of a prestarted run, held until its stage attaches its own progress, then forwarded."""

    def __init__(self) -> None:
        self.held: list[str] = []
        self.target: Callable[[str], Any] | None = None
        self.lock = threading.Lock()

    def __call__(self, line: str) -> None:
        with self.lock:
            if self.target is None:
                self.held.append(line)
            else:
                self.target(line)

    def attach(self, target: Callable[[str], Any]) -> None:
        with self.lock:
            for line in self.held:
                target(line)
            self.held.clear()
            self.target = target


class Prestarted:
    """The first lm-eval invocation of a stage, started before the stage (the gate starts it while vLLM boots) so
    its imports, task building and tokenizing overlap the boot; the model class holds its first
    request until `release()` creates the go file (GO_ENV, pipeline.tools.lm_eval_entry). Only the
    prefix-cached model class (ours) can hold; `stop()` (the gate's cleanup) ends it if it was never released."""

    def __init__(self, cmd: list[str], env: dict[str, str], raw_dir: Path, log_path: Path) -> None:
        self.cmd, self.raw_dir, self.log_path = cmd, raw_dir, log_path
        self.go_file = raw_dir.parent / ".lm_eval.go"
        self.go_file.unlink(missing_ok=True)
        self.before = set(raw_dir.rglob("results_*.json"))
        self.relay = _Relay()
        self.tail: list[str] = []
        self.started = time.monotonic()
        self.lead_s: float | None = None  # how long it had been starting when released
        # at a lower priority while it waits: started during the boot, its imports must not slow vLLM's own
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     env={**env, GO_ENV: str(self.go_file)}, cwd=raw_dir.parent,
                                     start_new_session=True, preexec_fn=lambda: os.nice(WAITING_NICENESS))
        self.reader = threading.Thread(target=self._read, name="lm-eval-output", daemon=True)
        self.reader.start()

    def _read(self) -> None:
        self.tail = _stream(self.proc, self.log_path, self.relay)

    def release(self, progress: Callable[[str], Any], timeout_s: float | None) -> LmEvalRun:
        self.lead_s = round(time.monotonic() - self.started, 3)
        try:  # back to normal priority for its requests (lowering niceness needs root or CAP_SYS_NICE)
            os.setpriority(os.PRIO_PGRP, self.proc.pid, os.getpriority(os.PRIO_PROCESS, 0))
        except OSError:
            progress("lm-eval: could not restore its priority (no CAP_SYS_NICE): it runs at niceness "
                     f"+{WAITING_NICENESS}")
        progress(f"lm-eval: started {self.lead_s:.1f}s before this stage, released now")
        self.relay.attach(progress)
        self.go_file.touch()

        def follow() -> None:  # the reader thread copies its output; joined in steps so Ctrl-C gets through
            while self.reader.is_alive():
                self.reader.join(timeout=0.2)

        try:
            rc = _await(self.proc, follow)
        finally:
            self.go_file.unlink(missing_ok=True)
        return _finished(self.cmd, rc, self.tail, self.raw_dir, self.before, self.log_path, timeout_s)

    def stop(self) -> None:
        if self.proc.poll() is None:
            stop_group(self.proc)
        self.go_file.unlink(missing_ok=True)


def prestart(base_url: str, model_name: str, tokenizer_dir: Path, tasks: list[str], include_path: Path,
             output_dir: Path, num_concurrent: int = 4, limit: int | None = None, api_key: str | None = None,
             timeout_s: float | None = None, modes: dict[str, ChatMode] | None = None,
             loglikelihood: str = "prefix_cached") -> Prestarted | None:
    """Start the first invocation `run_lmeval` with the same arguments would run, held before its first request;
    None where it cannot be held (the "echo" path runs lm-eval's own model class)."""
    if loglikelihood != "prefix_cached" or not tasks:
        return None
    plan = _plan(base_url, model_name, tokenizer_dir, tasks, include_path, output_dir, num_concurrent=num_concurrent,
                 limit=limit, api_key=api_key, timeout_s=timeout_s, modes=modes, loglikelihood=loglikelihood)
    plan.log_path.write_bytes(b"")
    return Prestarted(plan.invocations[0][2], plan.env, plan.raw_dir, plan.log_path)


@dataclass(frozen=True)
class _Plan:
    """What run_lmeval runs and where, built once for it and for prestart (so a prestarted command is the
    command run_lmeval would run): the output directories, the child environment, one command per mode group."""
    output_dir: Path
    raw_dir: Path
    log_path: Path
    env: dict[str, str]
    invocations: list[tuple[ChatMode, list[str], list[str]]]  # (mode, tasks, command)


def _plan(base_url: str, model_name: str, tokenizer_dir: Path, tasks: list[str], include_path: Path,
          output_dir: Path, *, num_concurrent: int, limit: int | None, api_key: str | None, timeout_s: float | None,
          modes: dict[str, ChatMode] | None, loglikelihood: str) -> _Plan:
    output_dir = Path(output_dir).resolve()
    raw_dir = output_dir / "raw"
    raw_dir.mkdir(parents=True, exist_ok=True)
    resolve_task_yamls(include_path, tasks)  # fail fast on unknown task names
    invocations = [(mode, group, build_command(base_url, model_name, tokenizer_dir, group, include_path, raw_dir,
                                               num_concurrent=num_concurrent, limit=limit, timeout_s=timeout_s,
                                               mode=mode, loglikelihood=loglikelihood))
                   for mode, group in mode_groups(tasks, modes)]
    return _Plan(output_dir, raw_dir, output_dir / "lm_eval.log", lmeval_env(api_key), invocations)


# ---------------------------------------------------------------- parsing lm-eval's output


def _metric_key(key: str) -> str:
    return key[: -len(",none")] if key.endswith(",none") else key


def parse_samples(path: Path, task: str) -> list[dict[str, Any]]:
    """Per-item records from one ``samples_<task>_<ts>.jsonl`` written by ``--log_samples``."""
    out = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            s = json.loads(line)
            filt = s.get("filter", "none")
            rec: dict[str, Any] = {
                "task": task, "doc_id": s["doc_id"], "doc_hash": doc_hash(s["doc"]),
                "item_id": s["doc"].get("id") if isinstance(s["doc"], dict) else None,
            }
            for m in s.get("metrics", []):
                # numbers as they are (0/1 for acc / exact_match, fractions for scores like token F1, NaN kept
                # for the gate to name); not a number (a corpus metric's (gold, prediction) pair): no per-item value
                if isinstance(s.get(m), (int, float)):
                    rec[m if filt == "none" else f"{m},{filt}"] = float(s[m])
            out.append(rec)
    return sorted(out, key=lambda r: r["doc_id"])


def parse_output(results_file: Path) -> LmEvalRun:
    """Parse a ``results_<ts>.json`` and its sibling ``samples_*_<ts>.jsonl`` files.

    Run fields that only the caller knows (wall time, concurrency, command) are left at defaults.
    """
    results_file = Path(results_file)
    res = json.loads(results_file.read_text(encoding="utf-8"))
    ts = results_file.name[len("results_"): -len(".json")]
    tasks: dict[str, TaskScores] = {}
    items: list[dict[str, Any]] = []
    samples_files: dict[str, str] = {}
    for task, vals in res.get("results", {}).items():
        if task in res.get("group_subtasks", {}):
            continue  # group rows are aggregates of their subtasks
        metrics, stderr = {}, {}
        for k, v in vals.items():
            if k in ("name", "alias", "sample_len") or "_stderr," in k:
                continue
            if isinstance(v, (int, float)):
                metrics[_metric_key(k)] = float(v)
                se = vals.get(k.replace(",", "_stderr,", 1))
                stderr[_metric_key(k)] = float(se) if isinstance(se, (int, float)) else None
        n = (res.get("n-samples", {}).get(task) or {}).get("effective", vals.get("sample_len", 0))
        tasks[task] = TaskScores(task, int(n), metrics, stderr, res.get("n-shot", {}).get(task),
                                 res.get("versions", {}).get(task))
        sf = results_file.parent / f"samples_{task}_{ts}.jsonl"
        if sf.exists():
            samples_files[task] = str(sf)
            items += parse_samples(sf, task)
    n_items = sum(t.n_items for t in tasks.values())
    return LmEvalRun(
        tasks=tasks, items=items, lm_eval_version=str(res.get("lm_eval_version", "")),
        wall_time_s=0.0, eval_time_s=_float(res.get("total_evaluation_time_seconds")), n_items=n_items,
        items_per_s=0.0, num_concurrent=0, limit=None, command=[], results_file=str(results_file),
        samples_files=samples_files,
    )


def _float(v: Any) -> float | None:
    try:
        return round(float(v), 3)
    except (TypeError, ValueError):
        return None
