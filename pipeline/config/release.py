"""release.yaml: load, validate against the packaged JSON Schema, and build the typed, frozen `Release`.

Every error is a `ConfigError` that names the file, the full path inside it (`serving.max_model_len`)
and the problem, on one line.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast, get_args

from pipeline.config.request_profile import RequestProfile, profile_from_dict
from pipeline.config.yamlio import load_yaml
from pipeline.errors import ConfigError
from pipeline.util.jsonpath import format_path

if TYPE_CHECKING:
    from jsonschema.exceptions import ValidationError

DEFAULT_SECRET_ENV = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "GITHUB_TOKEN", "MLFLOW_TRACKING_PASSWORD",
                      "MLFLOW_TRACKING_TOKEN", "AWS_SECRET_ACCESS_KEY", "MODELGATE_SIGNING_KEY",
                      "MODELGATE_AUDIT_KEY")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")

# the choices the JSON Schema (schemas/release.schema.json) enumerates; a unit test keeps the two equal
PinSource = Literal["huggingface", "git"]
ServingMode = Literal["spawn", "external"]
Dtype = Literal["auto", "bfloat16", "float16", "float32"]
LoadPromptSource = Literal["random", "suites"]


def pin_source(value: str) -> PinSource:
    """A pin's source from untyped data (a report, a registry tag); ValueError when it is not one."""
    if value not in get_args(PinSource):
        raise ValueError(f"pin source {value!r} is not one of {', '.join(get_args(PinSource))}")
    return cast(PinSource, value)


@dataclass(frozen=True)
class Pin:
    """A model at an exact commit, with the expected sha256 of every file (the lock)."""

    source: PinSource
    repo: str  # HF repo id, git URL, or a path (relative paths are resolved against release.yaml)
    revision: str  # 40-hex commit
    files: dict[str, str] = field(default_factory=dict)
    allow_pickle: bool = False
    trust_remote_code: bool = False

    @property
    def short(self) -> str:
        return self.revision[:12]

    def uri(self) -> str:
        scheme = "hf" if self.source == "huggingface" else "git"
        return f"{scheme}://{self.repo}@{self.revision}"


@dataclass(frozen=True)
class Probe:
    prompt: str = "Say hello in five words."
    max_tokens: int = 16


@dataclass(frozen=True)
class Serving:
    mode: ServingMode = "spawn"
    external_url: str | None = None
    api_key_env: str | None = None  # external mode: env var holding the endpoint's key (spawn: random per gate)
    host: str = "127.0.0.1"
    port: int | None = None  # None: a free port picked at start
    dtype: Dtype = "bfloat16"
    max_model_len: int = 2048
    tensor_parallel_size: int = 1
    enforce_eager: bool = False
    extra_args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    startup_timeout_s: float = 600.0
    request_timeout_s: float = 120.0
    probe: Probe = Probe()
    request_profile: RequestProfile = RequestProfile()  # how production's clients call the model


@dataclass(frozen=True)
class Threshold:
    floor: float | None = None  # absolute minimum for the candidate
    margin: float = 0.05  # non-inferiority margin against the production baseline


@dataclass(frozen=True)
class FormatGate:
    enabled: bool = True
    prompts_dir: str = "prompts"
    concurrency: int = 4
    pass_rate: Threshold = Threshold()


@dataclass(frozen=True)
class Prompting:
    """How lm-eval prompts a task: `gates.evals.chat_template` / `fewshot_as_multiturn`, or `per_task.<task>`.

    chat_template: True/False, or "auto": through the candidate's chat template when its tokenizer has one (as
    vLLM's chat endpoint serves it). fewshot_as_multiturn: under a template, a task with shots gets them as
    user/assistant turns (no effect on tasks without shots or without a template).
    """

    chat_template: bool | Literal["auto"] = "auto"
    fewshot_as_multiturn: bool = True


@dataclass(frozen=True)
class EvalsGate:
    enabled: bool = True
    include_path: str = "evalsets"
    tasks: tuple[str, ...] = ()
    num_concurrent: int = 4
    limit: int | None = None  # items per task (tests); None: all
    # loglikelihood requests (multiple_choice tasks): "prefix_cached" forced decoding on vLLM's prefix cache
    # (pipeline/tools/lmeval_model.py), or "echo": lm-eval's local-completions prompt-logprob requests
    loglikelihood: Literal["prefix_cached", "echo"] = "prefix_cached"
    metrics: dict[str, Threshold] = field(default_factory=dict)  # "task/metric" -> thresholds
    prompting: Prompting = Prompting()  # every task's, unless per_task says otherwise
    per_task: dict[str, Prompting] = field(default_factory=dict)  # task -> its prompting (defaults filled in)

    def prompting_for(self, task: str) -> Prompting:
        return self.per_task.get(task, self.prompting)


@dataclass(frozen=True)
class LoadPrompts:
    # random: vLLM's random dataset (token-exact input/output lengths, fixed seed); suites: the chat messages of
    # the prompt suites (gates.format.prompts_dir) through /v1/chat/completions, output_len tokens each
    source: LoadPromptSource = "random"
    input_len: int = 128
    output_len: int = 64
    requests_per_concurrency: int = 8  # a level sends this x its concurrency requests
    requests_per_level: int | None = None  # or a fixed count
    seed: int = 0

    def requests_for(self, concurrency: int) -> int:
        return self.requests_per_level or self.requests_per_concurrency * concurrency

    def requests_for_rate(self, rate: float) -> int:
        """A request-rate level sends requests_per_level requests, else ~RATE_LEVEL_SECONDS of arrivals (at least
        MIN_RATE_REQUESTS)."""
        return self.requests_per_level or max(MIN_RATE_REQUESTS, math.ceil(rate * RATE_LEVEL_SECONDS))


RATE_LEVEL_SECONDS = 10.0
MIN_RATE_REQUESTS = 16


@dataclass(frozen=True)
class LoadSlo:
    """Checked at every level; None: not checked."""

    p95_e2el_ms: float | None = None
    p95_ttft_ms: float | None = None
    p95_tpot_ms: float | None = None
    min_output_throughput: float | None = None  # output tokens/s
    max_failed: int = 0


@dataclass(frozen=True)
class LoadKnee:
    """`gates.load.knee`: a bounded search for the highest request rate (Poisson arrivals) that meets every
    latency SLO. From `start_rate` the rate grows by `growth` until a rate fails (or `max_rate`), or shrinks by it
    while the start fails; then the interval (last passing, first failing) is bisected (geometric mean) until
    first failing / last passing <= 1 + `precision`. At most `max_steps` benchmark runs and `max_seconds`.
    `min_rate`: the gate fails when the highest passing rate is below it (None: reported only)."""

    start_rate: float = 1.0
    max_rate: float = 64.0
    growth: float = 2.0
    precision: float = 0.25
    max_steps: int = 8
    max_seconds: float = 600.0
    min_rate: float | None = None


@dataclass(frozen=True)
class LoadGate:
    enabled: bool = True
    peak_concurrency: int = 1
    levels: tuple[float, ...] = (1, 3, 5)  # multipliers of peak_concurrency (closed loop)
    prompts: LoadPrompts = LoadPrompts()
    slo: LoadSlo = LoadSlo()
    regression_pct: float = 20.0
    price_per_hour: float | None = None
    request_rate: float | None = None  # arrival cap of the concurrency levels
    rates: tuple[float, ...] = ()  # request-rate levels: requests/s, open loop (vllm bench --request-rate)
    burstiness: float = 1.0  # of the rate levels' arrivals (vllm bench --burstiness): 1 Poisson, <1 burstier
    knee: LoadKnee | None = None

    def concurrency(self, level: float) -> int:
        return max(1, round(self.peak_concurrency * level))


REPLAY_CHECKS = ("json_schema", "json_object", "tool_call", "not_truncated", "stop", "non_empty", "length")


@dataclass(frozen=True)
class ReplayGate:
    """`gates.replay`: recorded production chat requests (JSONL) replayed against the candidate, each judged by
    the checks its own request implies (checks/replay.py), paired with production's answers (stages/replay.py)."""

    enabled: bool = False
    path: str = ""  # a JSONL file or a directory of *.jsonl, relative to release.yaml
    skip_invalid: bool = False  # malformed lines counted and shown instead of bad input
    concurrency: int = 4
    size: int | None = None  # requests sampled (None: all)
    seed: int = 0
    strata: str | None = None  # tag whose values each get their share of the sample
    pass_rate: Threshold = Threshold()  # every check's margin and floor ...
    checks: dict[str, Threshold] = field(default_factory=dict)  # ... unless the check has its own
    length_min: float = 0.5  # candidate's output length / production's: within [length_min, length_max]
    length_max: float = 2.0

    def threshold(self, check: str) -> Threshold:
        return self.checks.get(check, self.pass_rate)


@dataclass(frozen=True)
class GitHubTarget:
    repository: str  # owner/name
    api_url: str = "https://api.github.com"  # GitHub Enterprise: https://HOST/api/v3
    environment: str = "production"
    environment_url: str | None = None


@dataclass(frozen=True)
class PromotionPolicy:
    """`promotion:` in release.yaml. Without release managers nobody can approve or promote."""

    release_managers: tuple[str, ...] = ()
    approvals_required: int = 1
    tag_format: str = "{model}/v{version}"
    git_remote: str | None = None
    audit_experiment: str | None = None  # default: "<tracking experiment>/audit"
    github: GitHubTarget | None = None

    def is_manager(self, identity: str) -> bool:
        return identity.casefold() in {m.casefold() for m in self.release_managers}


@dataclass(frozen=True)
class AdvisorySample:
    """`gates.advisory.sample`: an advisory (pull request) gate runs `prompt_cases` prompt cases over all suites
    (a sample seeded by the candidate's revision) and the first `eval_items` items of each eval task (lm-eval's
    --limit); None: all. A release gate always runs everything."""

    prompt_cases: int | None = None
    eval_items: int | None = None

    @property
    def configured(self) -> bool:
        return self.prompt_cases is not None or self.eval_items is not None


@dataclass(frozen=True)
class Release:
    path: Path  # the release.yaml this came from
    model_name: str
    served_name_prefix: str
    candidate: Pin
    serving: Serving
    remote_code_allowlist: tuple[str, ...]
    secret_env: tuple[str, ...]
    gates: dict[str, dict[str, Any]]
    format_gate: FormatGate
    evals_gate: EvalsGate
    load_gate: LoadGate
    alpha: float
    tracking_experiment: str
    tracking_uri: str | None
    raw: dict[str, Any]
    promotion: PromotionPolicy = PromotionPolicy()
    advisory_experiment_name: str | None = None  # tracking.advisory_experiment
    advisory_sample: AdvisorySample = AdvisorySample()  # gates.advisory.sample
    signing_keys: tuple[Any, ...] = ()  # signing.PublicKey: who may sign a promotable gate record
    audit_keys: tuple[Any, ...] = ()  # signing.PublicKey: who may seal an audit event (releasing/seal.py)
    replay_gate: ReplayGate = ReplayGate()  # gates.replay

    @property
    def advisory_experiment(self) -> str:
        """Where advisory (pull request) gates are recorded; never promotable."""
        return self.advisory_experiment_name or f"{self.tracking_experiment}/advisory"

    @property
    def audit_experiment(self) -> str:
        return self.promotion.audit_experiment or f"{self.tracking_experiment}/audit"

    @property
    def root(self) -> Path:
        """The team repository: the directory holding release.yaml."""
        return self.path.parent

    def served_name(self, pin: Pin) -> str:
        return f"{self.served_name_prefix}@{pin.short}"

    def repo_location(self, pin: Pin) -> str:
        """A git URL or absolute path for a git pin (relative paths are relative to release.yaml)."""
        if pin.source != "git" or "://" in pin.repo or pin.repo.startswith("git@"):
            return pin.repo
        return str((self.root / pin.repo).resolve())


@lru_cache(maxsize=1)
def release_schema() -> dict[str, Any]:
    text = resources.files("pipeline.config").joinpath("schemas/release.schema.json").read_text()
    return json.loads(text)


def _describe(error: ValidationError) -> tuple[str, str]:
    """A jsonschema ValidationError -> (path, human message)."""
    path = format_path(error.absolute_path, empty="(top level)")
    validator = error.validator
    if validator == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        allowed = ", ".join(sorted(error.schema.get("properties", {})))
        return path, f"unknown key {', '.join(map(repr, extra))} (allowed: {allowed})"
    if validator == "required":
        return path, error.message.replace("is a required property", "is required")
    if path.endswith("revision") and validator in ("pattern", "type"):
        return path, revision_problem(error.instance)
    if validator == "pattern" and re.search(r"files\.", path):
        return path, f"{error.instance!r} is not a sha256 (64 lowercase hex digits)"
    if validator == "const" and path == "schema_version":
        return path, f"unsupported schema_version {error.instance!r} (this modelgate reads 1)"
    return path, error.message


def revision_problem(revision: Any) -> str:
    shown = repr(revision)
    if not isinstance(revision, str):
        return (f"revision {shown} is not a string (YAML reads an unquoted all-digit value as a number: quote "
                "it); pins must be a full 40-hex commit sha")
    if revision.lower() in {"main", "master", "latest", "head"}:
        why = "a branch name moves"
    elif re.fullmatch(r"[0-9a-fA-F]{4,39}", revision):
        why = "a short sha is ambiguous and can collide"
    elif re.fullmatch(r"[0-9A-F]{40}", revision):
        why = "write it in lowercase"
    else:
        why = "a branch or tag name can be moved to other weights"
    return (f"revision {shown} is not a pinned commit ({why}); pins must be a full 40-hex commit sha "
            "so the gate judges exactly the weights that ship (run `modelgate lock --revision <sha>`)")


def validate(data: Any, file: str) -> None:
    from jsonschema import Draft202012Validator

    if not isinstance(data, dict):
        raise ConfigError("must be a mapping at the top level" + (" (the file is empty)" if data is None else ""),
                          file=file, path="(top level)")
    validator = Draft202012Validator(release_schema())
    errors = sorted(validator.iter_errors(data), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    if errors:
        # the shallowest error is usually the cause (an unknown key above a nested complaint)
        path, message = _describe(errors[0])
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        raise ConfigError(message + more, file=file, path=path)


def load_release(path: str | Path) -> Release:
    path = Path(path).resolve()
    data = load_yaml(path)
    validate(data, str(path))
    return build_release(data, path)


def pin_from_dict(d: dict[str, Any]) -> Pin:
    return Pin(
        source=pin_source(d["source"]),
        repo=d["repo"],
        revision=d["revision"],
        files=dict(sorted((d.get("files") or {}).items())),
        allow_pickle=bool(d.get("allow_pickle", False)),
        trust_remote_code=bool(d.get("trust_remote_code", False)),
    )


def build_release(data: dict[str, Any], path: Path) -> Release:
    file = str(path)
    serving_d = dict(data.get("serving") or {})
    probe = Probe(**(serving_d.pop("probe", None) or {}))
    profile = profile_from_dict(serving_d.pop("request_profile", None), file=file)
    serving_d["extra_args"] = tuple(serving_d.get("extra_args", ()))
    serving = Serving(probe=probe, request_profile=profile, **serving_d)
    if serving.mode == "external" and not serving.external_url:
        raise ConfigError("mode 'external' needs serving.external_url", file=file, path="serving.external_url")
    candidate = pin_from_dict(data["candidate"])
    for name in candidate.files:
        if ".." in Path(name).parts:
            raise ConfigError(f"file name {name!r} leaves the model directory", file=file,
                              path=f"candidate.files.{name}")
    security = data.get("security") or {}
    tracking = data.get("tracking") or {}
    model = data["model"]
    return Release(
        path=path,
        model_name=model["name"],
        served_name_prefix=model.get("served_name_prefix", "chat"),
        candidate=candidate,
        serving=serving,
        remote_code_allowlist=tuple(security.get("remote_code_allowlist", ())),
        secret_env=tuple(dict.fromkeys([*DEFAULT_SECRET_ENV, *security.get("secret_env", ()),
                                        *([serving.api_key_env] if serving.api_key_env else [])])),
        gates={k: v for k, v in (data.get("gates") or {}).items() if isinstance(v, dict) and k != "advisory"},
        replay_gate=_replay_gate((data.get("gates") or {}).get("replay"), file),
        format_gate=_format_gate((data.get("gates") or {}).get("format")),
        evals_gate=_evals_gate((data.get("gates") or {}).get("evals") or {}, file),
        load_gate=_load_gate((data.get("gates") or {}).get("load"), file),
        alpha=float((data.get("gates") or {}).get("alpha", 0.05)),
        tracking_experiment=tracking.get("experiment", f"modelgate/{model['name']}"),
        tracking_uri=tracking.get("uri"),
        raw=data,
        promotion=_promotion(data.get("promotion") or {}),
        advisory_experiment_name=tracking.get("advisory_experiment"),
        advisory_sample=AdvisorySample(**(((data.get("gates") or {}).get("advisory") or {}).get("sample") or {})),
        signing_keys=_signing_keys(data.get("signing") or {}, file),
        audit_keys=_signing_keys(data.get("signing") or {}, file, "audit_keys"),
    )


def _signing_keys(d: dict[str, Any], file: str, field: str = "public_keys") -> tuple[Any, ...]:
    entries = d.get(field) or []
    if not entries:
        return ()
    from pipeline.releasing.signing import parse_public_keys

    return parse_public_keys(entries, file, field)


def _promotion(d: dict[str, Any]) -> PromotionPolicy:
    d = dict(d)
    github = GitHubTarget(**d.pop("github")) if d.get("github") else None
    d.pop("github", None)
    return PromotionPolicy(release_managers=tuple(d.pop("release_managers", ())), github=github, **d)


def _format_gate(d: dict[str, Any] | None) -> FormatGate:
    """No `gates.format` section: the format stage does not run (and says so in the report)."""
    if d is None:
        return FormatGate(enabled=False)
    d = dict(d)
    return FormatGate(pass_rate=Threshold(**d.pop("pass_rate", {})), **d)


def _evals_gate(d: dict[str, Any], file: str) -> EvalsGate:
    d = dict(d)
    metrics = {k: Threshold(**v) for k, v in sorted(d.pop("metrics", {}).items())}
    tasks = tuple(d.pop("tasks", ()))
    enabled = d.pop("enabled", bool(tasks))
    prompting = Prompting(**{k: d.pop(k) for k in ("chat_template", "fewshot_as_multiturn") if k in d})
    per_task: dict[str, Prompting] = {}
    for task, overrides in (d.pop("per_task", None) or {}).items():
        if task not in tasks:
            raise ConfigError(f"{task!r} is not one of gates.evals.tasks ({', '.join(tasks) or 'none'})",
                              file=file, path=f"gates.evals.per_task.{task}")
        per_task[task] = Prompting(**{**prompting.__dict__, **overrides})
    return EvalsGate(enabled=enabled and bool(tasks), tasks=tasks, metrics=metrics, prompting=prompting,
                     per_task=per_task, **d)


def _replay_gate(d: dict[str, Any] | None, file: str) -> ReplayGate:
    """No `gates.replay` section: no replay."""
    if d is None:
        return ReplayGate()
    d = dict(d)
    sample = d.pop("sample", None) or {}
    length = d.pop("length_ratio", None) or {}
    gate = ReplayGate(enabled=d.pop("enabled", True), pass_rate=Threshold(**d.pop("pass_rate", None) or {}),
                      checks={k: Threshold(**v) for k, v in sorted((d.pop("checks", None) or {}).items())},
                      length_min=float(length.get("min", ReplayGate.length_min)),
                      length_max=float(length.get("max", ReplayGate.length_max)), **sample, **d)
    if gate.length_min > gate.length_max:
        raise ConfigError(f"min {gate.length_min:g} is above max {gate.length_max:g}", file=file,
                          path="gates.replay.length_ratio")
    return gate


def _load_gate(d: dict[str, Any] | None, file: str) -> LoadGate:
    """No `gates.load` section: no load test. `load: {}` runs it with the defaults."""
    if d is None:
        return LoadGate(enabled=False)
    d = dict(d)
    prompts = LoadPrompts(**d.pop("prompts", None) or {})
    slo = LoadSlo(**d.pop("slo", None) or {})
    levels = tuple(d.pop("levels", LoadGate.levels))
    rates = tuple(float(r) for r in d.pop("rates", ()))
    knee = LoadKnee(**d.pop("knee")) if d.get("knee") is not None else None
    d.pop("knee", None)
    if not levels and not rates and knee is None:
        raise ConfigError("no load to run: give concurrency levels, request rates or a knee search", file=file,
                          path="gates.load.levels")
    if knee is not None and knee.max_rate < knee.start_rate:
        raise ConfigError(f"max_rate {knee.max_rate:g} is below start_rate {knee.start_rate:g}", file=file,
                          path="gates.load.knee.max_rate")
    if knee is not None and not any((slo.p95_e2el_ms, slo.p95_ttft_ms, slo.p95_tpot_ms)):
        raise ConfigError("a knee search needs a latency SLO to search against (p95_e2el_ms, p95_ttft_ms or "
                          "p95_tpot_ms)", file=file, path="gates.load.slo")
    return LoadGate(prompts=prompts, slo=slo, levels=levels, rates=rates, knee=knee, **d)
