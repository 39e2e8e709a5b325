"""Deterministic weight degradation of a safetensors model directory (the demo's "bad candidate").

Every attention and MLP projection matrix W gets gaussian noise: W + noise_scale * std(W) * N(0, 1).
The noise comes from numpy's PCG64 seeded per tensor from (seed, tensor name), so the result does not
depend on tensor order, thread count or CPU SIMD paths, and the output file is byte-identical across runs.
Embeddings and norms are left alone, so the model still loads and produces text, just worse text.
On SmolLM2-135M the projections are very sensitive: 0.2 already gives loops of junk, 0.1 is mostly still
right; the default 0.14 keeps fluent English but answers wrongly ("The capital of France is France.").
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

DEFAULT_NOISE_SCALE = 0.14
DEFAULT_SEED = 20240101
# Suffixes of the Llama-style projection weights that get noise.
TARGET_SUFFIXES = (
    "q_proj.weight", "k_proj.weight", "v_proj.weight", "o_proj.weight",
    "gate_proj.weight", "up_proj.weight", "down_proj.weight",
)


def _tensor_seed(seed: int, name: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{name}".encode()).digest()[:8], "little")


def degrade_safetensors(src: Path, dst: Path, noise_scale: float = DEFAULT_NOISE_SCALE,
                        seed: int = DEFAULT_SEED) -> list[str]:
    """Write a noised copy of the safetensors file `src` to `dst`; return the names of the noised tensors."""
    import numpy as np
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    noised: list[str] = []
    with safe_open(str(src), framework="pt") as f:
        metadata = f.metadata()
        for name in sorted(f.keys()):
            tensor = f.get_tensor(name)
            if name.endswith(TARGET_SUFFIXES) and tensor.ndim == 2:
                weights = tensor.to(torch.float32).numpy()
                # std in float64, rounded to 6 significant digits so tiny reduction-order
                # differences cannot change the result.
                std = float(f"{float(weights.astype(np.float64).std()):.6g}")
                rng = np.random.Generator(np.random.PCG64(_tensor_seed(seed, name)))
                noise = rng.standard_normal(weights.shape, dtype=np.float32)
                noisy = weights + np.float32(noise_scale * std) * noise
                tensor = torch.from_numpy(noisy).to(tensor.dtype)
                noised.append(name)
            tensors[name] = tensor.contiguous()
    save_file(tensors, str(dst), metadata=metadata)
    return noised


def degrade_model_dir(src_dir: Path, dst_dir: Path, noise_scale: float = DEFAULT_NOISE_SCALE,
                      seed: int = DEFAULT_SEED) -> Path:
    """Copy model directory `src_dir` to `dst_dir`, noising every `*.safetensors` file in it. Returns `dst_dir`."""
    src_dir, dst_dir = Path(src_dir), Path(dst_dir)
    dst_dir.mkdir(parents=True, exist_ok=True)
    for path in sorted(src_dir.iterdir()):
        if not path.is_file():
            continue
        if path.suffix == ".safetensors":
            degrade_safetensors(path, dst_dir / path.name, noise_scale=noise_scale, seed=seed)
        else:
            shutil.copyfile(path, dst_dir / path.name)
    return dst_dir
