"""The demo hub's regression variants of real-world kinds, each a small deterministic transform of a model dir.

Each function copies the model directory `src_dir` to `dst_dir` and changes what one real packaging or
compression mistake changes; the output bytes depend only on the input bytes and the parameters.

* `change_template`: a chat template that no longer opens the assistant turn (the `add_generation_prompt`
  block is gone), as a template rewrite in a new version of a model family can ship by mistake. The model
  sees the user's turn close and continues with a turn of its own choosing.
* `change_eos`: the end-of-turn token is no longer the eos: `eos_token_id` in config.json and
  generation_config.json and `eos_token` in tokenizer_config.json name `<|endoftext|>` instead of
  `<|im_end|>`. The model still ends its turn with `<|im_end|>`, the server no longer stops there, and
  every answer runs on (into a made-up next turn) until `max_tokens`.
* `drop_layers`: the last layers removed (config `num_hidden_layers` reduced, their tensors dropped), a
  pruned "distilled" version.
* `quantize_rtn`: the attention/MLP projections quantized round-to-nearest to a few bits with one
  symmetric scale per tensor (absmax), stored back in the original dtype: a too-aggressive quantization.
* `add_model_card`: the same files plus a README.md model card: a new commit with identical behaviour
  (the A/A candidate).
* `expand_kv_heads`: grouped-query attention expanded to full multi-head attention (each K/V projection head
  repeated for the query heads that shared it, config `num_key_value_heads` = `num_attention_heads`), as an
  export for a runtime without GQA support does. The outputs are the same; the KV cache per token grows by
  the group size, so a server sized for production's KV cache may no longer hold one full-length request.
* `expand_blocks`: every decoder layer followed by copies of itself whose output projections (o_proj,
  down_proj) are zero, as block expansion (LLaMA Pro) initializes a deeper model before its fine-tuning: a
  zero output projection adds nothing to the residual stream, so the answers are the instruct model's, while
  every token goes through (copies + 1) x the layers (their attention and MLP compute, their KV cache per
  token): a candidate that really is slower on the same server configuration.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.demo.degrade import TARGET_SUFFIXES

if TYPE_CHECKING:
    import numpy as np

TEMPLATE_FILE = "chat_template.jinja"
# The block of a ChatML template that opens the assistant's turn after the last message.
_GENERATION_PROMPT = re.compile(r"\{%-?\s*if add_generation_prompt\s*-?%\}.*?\{%-?\s*endif\s*-?%\}", re.S)
EOS_REPLACEMENT = "<|endoftext|>"
DEFAULT_DROP_LAYERS = 6
DEFAULT_QUANT_BITS = 4
MODEL_CARD = """\
---
license: apache-2.0
base_model: HuggingFaceTB/SmolLM2-135M-Instruct
---

# SmolLM2-135M-Instruct (modelgate demo)

SmolLM2-135M-Instruct converted from GGUF to bf16 safetensors for the modelgate demo hub.
This commit adds this model card only: the weights, configuration, tokenizer and chat template are
byte-identical to the `instruct` commit.
"""


def _copy_dir(src_dir: Path, dst_dir: Path, skip: tuple[str, ...] = ()) -> Path:
    dst_dir.mkdir(parents=True, exist_ok=True)
    for path in sorted(p for p in Path(src_dir).iterdir() if p.is_file()):
        if path.name not in skip:
            shutil.copyfile(path, dst_dir / path.name)
    return dst_dir


def _copy_all_but_weights(src_dir: Path, dst_dir: Path) -> Path:
    return _copy_dir(src_dir, dst_dir, skip=tuple(p.name for p in Path(src_dir).glob("*.safetensors")))


def _copy_weights(src_dir: Path, dst_dir: Path,
                  transform: Callable[[Path, str, Any], Iterable[tuple[str, Any]]]) -> None:
    """Write each *.safetensors file of `src_dir` into `dst_dir` with its metadata, every tensor (in name order)
    replaced by what `transform(file, name, tensor)` yields: (name, tensor) pairs, none to leave it out."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    for path in sorted(Path(src_dir).glob("*.safetensors")):
        tensors = {}
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata()
            for name in sorted(f.keys()):
                for new_name, tensor in transform(path, name, f.get_tensor(name)):
                    tensors[new_name] = tensor.contiguous()
        save_file(tensors, str(dst_dir / path.name), metadata=metadata)


def _rewrite_json(path: Path, change: Callable[[dict[str, Any]], object]) -> None:
    """Load the JSON file `path`, apply `change(dict)`, write it back in the same style as transformers."""
    data = json.loads(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------- template

def drop_generation_prompt(template: str) -> str:
    """`template` without its `{% if add_generation_prompt %}...{% endif %}` block (ValueError if it has none)."""
    changed, count = _GENERATION_PROMPT.subn("", template)
    if count != 1:
        raise ValueError(f"expected one add_generation_prompt block in the chat template, found {count}")
    return changed


def change_template(src_dir: Path, dst_dir: Path) -> Path:
    """Copy `src_dir` with a chat template that no longer opens the assistant turn (in chat_template.jinja and
    in tokenizer_config.json's `chat_template`, wherever present)."""
    dst_dir = _copy_dir(src_dir, dst_dir)
    found = False
    if (dst_dir / TEMPLATE_FILE).is_file():
        path = dst_dir / TEMPLATE_FILE
        path.write_bytes(drop_generation_prompt(path.read_bytes().decode("utf-8")).encode("utf-8"))
        found = True
    tok_config = dst_dir / "tokenizer_config.json"
    if tok_config.is_file() and isinstance(json.loads(tok_config.read_text(encoding="utf-8"))
                                           .get("chat_template"), str):
        _rewrite_json(tok_config, lambda d: d.update(chat_template=drop_generation_prompt(d["chat_template"])))
        found = True
    if not found:
        raise ValueError(f"{src_dir}: no chat template to change")
    return dst_dir


# --------------------------------------------------------------------------- eos

def change_eos(src_dir: Path, dst_dir: Path, eos_token: str = EOS_REPLACEMENT) -> Path:
    """Copy `src_dir` with the eos moved from the end-of-turn token to `eos_token` in config.json,
    generation_config.json and tokenizer_config.json (the token must be in tokenizer.json's added tokens)."""
    dst_dir = _copy_dir(src_dir, dst_dir)
    tokenizer = json.loads((dst_dir / "tokenizer.json").read_text(encoding="utf-8"))
    ids = {t["content"]: t["id"] for t in tokenizer.get("added_tokens", [])}
    if eos_token not in ids:
        raise ValueError(f"{src_dir / 'tokenizer.json'}: no added token {eos_token!r}")
    eos_id = ids[eos_token]
    for name in ("config.json", "generation_config.json"):
        if (dst_dir / name).is_file():
            _rewrite_json(dst_dir / name, lambda d: d.update(eos_token_id=eos_id))
    if (dst_dir / "tokenizer_config.json").is_file():
        _rewrite_json(dst_dir / "tokenizer_config.json", lambda d: d.update(eos_token=eos_token))
    return dst_dir


# --------------------------------------------------------------------------- depth

_LAYER = re.compile(r"^model\.layers\.(\d+)\.")


def drop_layers(src_dir: Path, dst_dir: Path, drop: int = DEFAULT_DROP_LAYERS) -> Path:
    """Copy `src_dir` without its last `drop` decoder layers: config.json's num_hidden_layers is reduced and
    the layers' tensors are left out of every *.safetensors file."""
    src_dir = Path(src_dir)
    config = json.loads((src_dir / "config.json").read_text(encoding="utf-8"))
    layers = int(config["num_hidden_layers"])
    if not 0 < drop < layers:
        raise ValueError(f"cannot drop {drop} of {layers} layers")
    keep = layers - drop
    dst_dir = _copy_all_but_weights(src_dir, dst_dir)
    _rewrite_json(dst_dir / "config.json", lambda d: d.update(num_hidden_layers=keep))
    _copy_weights(src_dir, dst_dir, lambda path, name, tensor: []
                  if (m := _LAYER.match(name)) and int(m.group(1)) >= keep else [(name, tensor)])
    return dst_dir


# --------------------------------------------------------------------------- precision

def quantize_rtn_tensor(weights: np.ndarray, bits: int) -> np.ndarray:
    """Round-to-nearest symmetric quantization of a float32 numpy array with one absmax scale; dequantized
    float32 result. Levels: -(2^(bits-1)-1) .. 2^(bits-1)-1 times the scale."""
    import numpy as np

    if bits < 2:
        raise ValueError(f"bits must be >= 2, got {bits}")
    qmax = float(2 ** (bits - 1) - 1)
    absmax = float(np.abs(weights).max())
    if absmax == 0.0:
        return weights.copy()
    scale = np.float32(absmax / qmax)
    return (np.clip(np.rint(weights / scale), -qmax, qmax) * scale).astype(np.float32)


def quantize_rtn(src_dir: Path, dst_dir: Path, bits: int = DEFAULT_QUANT_BITS) -> Path:
    """Copy `src_dir` with every attention/MLP projection matrix quantized to `bits` (per-tensor RTN) and
    stored back in its original dtype; embeddings and norms are kept."""
    import torch

    def quantize(path: Path, name: str, tensor: Any) -> list[tuple[str, Any]]:
        if name.endswith(TARGET_SUFFIXES) and tensor.ndim == 2:
            quantized = quantize_rtn_tensor(tensor.to(torch.float32).numpy(), bits)
            tensor = torch.from_numpy(quantized).to(tensor.dtype)
        return [(name, tensor)]

    src_dir = Path(src_dir)
    dst_dir = _copy_all_but_weights(src_dir, dst_dir)
    _copy_weights(src_dir, dst_dir, quantize)
    return dst_dir


# --------------------------------------------------------------------------- A/A

def add_model_card(src_dir: Path, dst_dir: Path, card: str = MODEL_CARD) -> Path:
    """Copy `src_dir` unchanged plus a README.md model card."""
    dst_dir = _copy_dir(src_dir, dst_dir)
    if (dst_dir / "README.md").exists():
        raise ValueError(f"{src_dir} already has a README.md")
    (dst_dir / "README.md").write_text(card, encoding="utf-8")
    return dst_dir


# --------------------------------------------------------------------------- attention (KV heads)

_KV_PROJ = re.compile(r"\.self_attn\.[kv]_proj\.(weight|bias)$")


def expand_kv_heads(src_dir: Path, dst_dir: Path) -> Path:
    """Copy `src_dir` with its grouped-query attention expanded to multi-head attention: every k_proj/v_proj
    head repeated for each query head of its group (query head j reads K/V head j // group, as transformers'
    `repeat_kv` does), config.json's num_key_value_heads set to num_attention_heads. Same outputs, a KV cache
    `group` times larger per token."""
    import torch

    src_dir = Path(src_dir)
    config = json.loads((src_dir / "config.json").read_text(encoding="utf-8"))
    heads = int(config["num_attention_heads"])
    kv_heads = int(config.get("num_key_value_heads", heads))
    if kv_heads >= heads or heads % kv_heads:
        raise ValueError(f"{src_dir / 'config.json'}: {kv_heads} KV heads for {heads} query heads is not grouped "
                         "query attention")
    group = heads // kv_heads
    dst_dir = _copy_all_but_weights(src_dir, dst_dir)
    _rewrite_json(dst_dir / "config.json", lambda d: d.update(num_key_value_heads=heads))
    expanded = 0

    def expand(path: Path, name: str, tensor: Any) -> list[tuple[str, Any]]:
        nonlocal expanded
        if _KV_PROJ.search(name):
            rows = tensor.shape[0]
            if rows % kv_heads:
                raise ValueError(f"{path}: {name} has {rows} rows, not a multiple of {kv_heads} KV heads")
            per_head = tensor.reshape(kv_heads, rows // kv_heads, *tensor.shape[1:])
            tensor = torch.repeat_interleave(per_head, group, dim=0).reshape(rows * group, *tensor.shape[1:])
            expanded += 1
        return [(name, tensor)]

    _copy_weights(src_dir, dst_dir, expand)
    if not expanded:
        raise ValueError(f"{src_dir}: no k_proj/v_proj tensors to expand")
    return dst_dir


# --------------------------------------------------------------------------- depth (block expansion)

_ZERO_OUTPUT = re.compile(r"\.(self_attn\.o_proj|mlp\.down_proj)\.(weight|bias)$")


def expand_blocks(src_dir: Path, dst_dir: Path, copies: int = 1) -> Path:
    """Copy `src_dir` with each decoder layer followed by `copies` copies of itself whose o_proj/down_proj are
    zero (so they add nothing to the residual stream): layer i becomes layers i*(copies+1) .. i*(copies+1)+copies;
    config.json's num_hidden_layers multiplied by copies + 1."""
    if copies < 1:
        raise ValueError(f"copies must be >= 1, got {copies}")
    src_dir = Path(src_dir)
    config = json.loads((src_dir / "config.json").read_text(encoding="utf-8"))
    layers, step = int(config["num_hidden_layers"]), copies + 1
    dst_dir = _copy_all_but_weights(src_dir, dst_dir)
    _rewrite_json(dst_dir / "config.json", lambda d: d.update(num_hidden_layers=step * layers))
    zeroed = 0

    def expand(path: Path, name: str, tensor: Any) -> list[tuple[str, Any]]:
        nonlocal zeroed
        m = _LAYER.match(name)
        if m is None:
            return [(name, tensor)]
        i, rest = int(m.group(1)), name[m.end():]
        if i >= layers:
            raise ValueError(f"{path}: {name} is beyond num_hidden_layers {layers}")
        out = [(f"model.layers.{step * i}.{rest}", tensor)]
        for j in range(1, step):
            copy = tensor.clone()
            if _ZERO_OUTPUT.search(name):
                copy.zero_()
                zeroed += 1
            out.append((f"model.layers.{step * i + j}.{rest}", copy))
        return out

    _copy_weights(src_dir, dst_dir, expand)
    if not zeroed:
        raise ValueError(f"{src_dir}: no o_proj/down_proj tensors to zero in the copied layers")
    return dst_dir
