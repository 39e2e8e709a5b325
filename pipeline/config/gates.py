"""`gates:` in release.yaml: the format, evals and replay gates, their thresholds, the advisory sample (the load
gate is in load_gate.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, cast

from pydantic import ConfigDict, Field, with_config
from typing_extensions import TypedDict

from pipeline.config.fields import SECTION, UNIQUE, Absent, Count, EnvName, Fraction, HttpUrl, Positive, Text, doc

ChatTemplate = Literal["auto", True, False]
MetricName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")]


@dataclass(frozen=True)
class Threshold:
    """A pass rate's or metric's rule: an absolute floor for the candidate, a non-inferiority margin against the
    production baseline."""

    __pydantic_config__ = SECTION

    floor: Annotated[Fraction | Absent, doc("absolute minimum for the candidate")] = None
    margin: Annotated[Fraction, doc("non-inferiority margin vs the production baseline")] = 0.05


@dataclass(frozen=True)
class FormatGate:
    """`gates.format`: every case of the prompt suites as a chat completion, its output checked. No section: the
    format stage does not run (and the report says so)."""

    __pydantic_config__ = SECTION

    enabled: Annotated[bool, doc("run the format stage")] = True
    prompts_dir: Annotated[Text, doc("the prompt suites' directory, relative to release.yaml")] = "prompts"
    concurrency: Annotated[int, doc("requests in flight", ge=1, le=256)] = 4
    pass_rate: Annotated[Threshold, doc("the pass rate's floor and margin")] = Threshold()


@dataclass(frozen=True)
class Prompting:
    """How lm-eval prompts a task: `gates.evals.chat_template` / `fewshot_as_multiturn`, or `per_task.<task>`.

    chat_template: True/False, or "auto": through the candidate's chat template when its tokenizer has one (as
    vLLM's chat endpoint serves it). fewshot_as_multiturn: under a template, a task with shots gets them as
    user/assistant turns (no effect on tasks without shots or without a template).
    """

    chat_template: ChatTemplate
    fewshot_as_multiturn: bool


@dataclass(frozen=True)
class TaskPrompting:
    """`gates.evals.per_task.<task>`: this task's prompting; a key left out keeps the evals-level value."""

    __pydantic_config__ = SECTION

    chat_template: Annotated[ChatTemplate | Absent, doc("as gates.evals.chat_template, for this task")] = None
    fewshot_as_multiturn: Annotated[bool | Absent, doc("as gates.evals.fewshot_as_multiturn, for this task")] = None


@dataclass(frozen=True)
class EvalsGate:
    """`gates.evals`: lm-eval tasks (evalsets) on the candidate, each metric compared with production. It runs
    when it names tasks."""

    __pydantic_config__ = SECTION

    enabled: Annotated[bool, doc("run the evals (only when tasks are given)")] = True
    include_path: Annotated[Text, doc("the evalsets' directory (lm-eval task YAMLs), relative to "
                                      "release.yaml")] = "evalsets"
    tasks: Annotated[tuple[Text, ...], UNIQUE, doc("lm-eval task names", min_length=1)] = ()
    num_concurrent: Annotated[int, doc("requests in flight", ge=1, le=256)] = 4
    limit: Annotated[int | None, doc("items per task (tests); null or absent: all", ge=1)] = None
    loglikelihood: Annotated[Literal["prefix_cached", "echo"], doc(
        "how multiple-choice (loglikelihood) requests are scored: forced decoding on vLLM's prefix cache "
        "(pipeline/tools/lmeval_model.py) or lm-eval's echo requests with prompt logprobs")] = "prefix_cached"
    chat_template: Annotated[ChatTemplate, doc(
        "every task: through the candidate's chat template (auto: when its tokenizer has one)")] = "auto"
    fewshot_as_multiturn: Annotated[bool, doc(
        "under a chat template, a task's shots as user/assistant turns (tasks with shots)")] = True
    per_task: Annotated[dict[Text, TaskPrompting], doc(
        "per task (a name in tasks): overrides of chat_template / fewshot_as_multiturn")] = \
        field(default_factory=dict)
    metrics: Annotated[dict[MetricName, Threshold], doc("thresholds per \"task/metric\"")] = \
        field(default_factory=dict)

    @property
    def prompting(self) -> Prompting:
        """Every task's prompting, unless per_task says otherwise."""
        return Prompting(self.chat_template, self.fewshot_as_multiturn)

    def prompting_for(self, task: str) -> Prompting:
        own = self.per_task.get(task)
        if own is None:
            return self.prompting
        return Prompting(self.chat_template if own.chat_template is None else own.chat_template,
                         self.fewshot_as_multiturn if own.fewshot_as_multiturn is None else own.fewshot_as_multiturn)


@with_config(ConfigDict(extra="forbid"))
class ReplayChecks(TypedDict, total=False):
    """`gates.replay.checks`: a derived check's own margin and floor (checks/replay.py derives them)."""

    json_schema: Threshold
    json_object: Threshold
    tool_call: Threshold
    not_truncated: Threshold
    stop: Threshold
    non_empty: Threshold
    length: Threshold


REPLAY_CHECKS: tuple[str, ...] = tuple(ReplayChecks.__annotations__)


@dataclass(frozen=True)
class ReplaySample:
    """`gates.replay.sample`: which recorded requests are replayed."""

    __pydantic_config__ = SECTION

    size: Annotated[int | None, doc("requests replayed (null or absent: all, after duplicates are removed)",
                                    ge=1)] = None
    seed: Annotated[int, doc("seed of the sample")] = 0
    strata: Annotated[Text | None, doc("a tag (the record's tags.<name>): each value gets its share of the "
                                       "sample")] = None


@dataclass(frozen=True)
class LengthRatio:
    """`gates.replay.length_ratio`: the candidate's output length over production's must be within [min, max]."""

    __pydantic_config__ = SECTION

    min: Annotated[float, doc("the lowest ratio that passes", gt=0)] = 0.5
    max: Annotated[float, doc("the highest ratio that passes", gt=0)] = 2.0


@dataclass(frozen=True)
class ReplayTraces:
    """`gates.replay.traces` (source mlflow_traces): production's requests as its instrumented client traced them
    into the tracking server (MLflow tracing, e.g. `mlflow.openai.autolog()`): each trace's chat-completion span
    (its inputs a request with `messages`, its outputs the completion) is one recorded request."""

    __pydantic_config__ = SECTION

    experiment: Annotated[Text, doc("the MLflow experiment holding production's traces")]
    window_hours: Annotated[Positive, doc("the window: traces started within this many hours before `until`")] = 168.0
    until: Annotated[Any, doc("ISO 8601 time the window ends (default: now)")] = None
    max_traces: Annotated[int, doc("at most this many traces are read (the newest first)", ge=1)] = 5000


@dataclass(frozen=True)
class ProductionEndpoint:
    """`gates.replay.production_endpoint`: where production already serves, so that a request production's
    record does not answer is asked there instead of booting production on staging. It is used only while it
    serves production's own served name (`<prefix>@<rev12>`); otherwise the gate boots production and says why."""

    __pydantic_config__ = SECTION

    url: Annotated[HttpUrl, doc("the production server's base URL (OpenAI-compatible, with or without /v1)")]
    api_key_env: Annotated[EnvName | Absent, doc("the environment variable holding its API key")] = None


@dataclass(frozen=True)
class ReplayGate:
    """`gates.replay`: recorded production chat requests (JSONL) replayed against the candidate, each judged by
    the checks its own request implies (checks/replay.py), paired with production's answers (stages/replay.py).
    No section: no replay."""

    __pydantic_config__ = SECTION

    path: Annotated[Text | Absent, doc("source jsonl: a JSONL file or a directory of *.jsonl files, relative to "
                                       "release.yaml: recorded requests, or OpenAI Batch API input files")] = None
    source: Annotated[Literal["jsonl", "mlflow_traces"], doc(
        "where the traffic is: files (path), or production's traces in the tracking server (traces)")] = "jsonl"
    traces: Annotated[ReplayTraces | Absent, doc("source mlflow_traces: the experiment and the window")] = None
    batch_output: Annotated[Text | Absent, doc(
        "the OpenAI Batch API output file (or a directory of them) of the batch input files in `path`: production's "
        "answers, by custom_id")] = None
    enabled: Annotated[bool, doc("run the replay")] = True
    skip_invalid: Annotated[bool, doc("malformed lines are counted and shown instead of being bad input")] = False
    concurrency: Annotated[int, doc("requests in flight", ge=1, le=256)] = 4
    sample: ReplaySample = ReplaySample()
    pass_rate: Annotated[Threshold, doc(
        "every derived check's margin and floor (per check: checks.<name>)")] = Threshold()
    checks: ReplayChecks = field(default_factory=lambda: ReplayChecks())
    length_ratio: LengthRatio = LengthRatio()
    production_endpoint: Annotated[ProductionEndpoint | Absent, doc(
        "ask the running production server (instead of booting production on staging) what its record does not "
        "answer")] = None

    @property
    def size(self) -> int | None:
        return self.sample.size

    @property
    def seed(self) -> int:
        return self.sample.seed

    @property
    def strata(self) -> str | None:
        return self.sample.strata

    @property
    def length_min(self) -> float:
        return self.length_ratio.min

    @property
    def length_max(self) -> float:
        return self.length_ratio.max

    def threshold(self, check: str) -> Threshold:
        return cast(dict[str, Threshold], self.checks).get(check, self.pass_rate)


NO_REPLAY = ReplayGate(enabled=False)


@dataclass(frozen=True)
class AdvisorySample:
    """`gates.advisory.sample`: an advisory (pull request) gate runs `prompt_cases` prompt cases over all suites
    (a sample seeded by the candidate's revision) and the first `eval_items` items of each eval task (lm-eval's
    --limit); None: all. A release gate always runs everything."""

    __pydantic_config__ = SECTION

    prompt_cases: Annotated[Count | Absent, doc(
        "prompt cases over all suites, a sample seeded by the candidate's revision")] = None
    eval_items: Annotated[Count | Absent, doc("the first N items of each eval task (lm-eval --limit)")] = None

    @property
    def configured(self) -> bool:
        return self.prompt_cases is not None or self.eval_items is not None
