"""Dataset loader for the evalset YAMLs: jsonl paths are resolved against THIS directory.

lm-eval 0.4.13 hands ``dataset_kwargs.data_files`` to ``datasets.load_dataset`` unchanged, so a
relative path there is resolved against the process's working directory, not the YAML. The task
YAMLs therefore say ``custom_dataset: !function loader.load_jsonl`` (lm-eval resolves
``!function`` relative to the YAML file) and keep ``dataset_kwargs: {data_files: {split: file}}``;
this function turns each file into an absolute path next to the YAMLs and loads it with the
``datasets`` json builder. Works from any CWD, with HF_DATASETS_OFFLINE=1, and needs no
generated temp YAML.
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent


def load_jsonl(data_files: dict[str, str] | None = None, **_ignored):
    """Return a ``datasets.DatasetDict`` with one split per ``data_files`` entry.

    Extra keyword arguments (lm-eval passes the task metadata and model args) are ignored.
    """
    import datasets

    if not data_files:
        raise ValueError("dataset_kwargs.data_files is required")
    files = {split: str((HERE / name).resolve()) for split, name in data_files.items()}
    return datasets.load_dataset("json", data_files=files)
