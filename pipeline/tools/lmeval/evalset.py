"""The evalsets: lm-eval task YAMLs under evalsets/ (their includes and data files), which tasks they define, the
metrics and shots each task reports, how each task is prompted (`ChatMode`), and the evalset digest that says
whether a baseline was evaluated on the same items the same way."""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import yaml

from pipeline.errors import BadInput


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


